package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"podfs.io/podfs/csinode"
	"podfs.io/podfs/pkg/metricserver"
)

func runCSINode(ctx context.Context, log *slog.Logger, args []string) error {
	fs := newFlags("csi-node", "[options]", `
Serve the CSI node plugin `+csinode.DriverName+` on a unix socket and register it
with kubelet. NodePublishVolume mounts FUSE at kubelet's target path and offers
the connection to the pod's podfs sidecar; pods without one are refused.`)
	endpoint := fs.String("endpoint", "", "CSI endpoint, a unix socket (default unix://<kubelet-dir>/plugins/"+csinode.DriverName+"/csi.sock)")
	nodeID := fs.String("node-id", "", "node ID reported to kubelet, the node's name (default the host name)")
	kubeletDir := fs.String("kubelet-dir", csinode.DefaultKubeletDir, "kubelet's root directory (its --root-dir)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file to reach the API server (default: the pod's service account)")
	regDir := fs.String("registration-dir", "", "kubelet's plugin registration directory (default <kubelet-dir>/plugins_registry); \"none\" to leave registration to node-driver-registrar")
	metricsAddr := fs.String("metrics-addr", "", "serve the process's Prometheus metrics (Go runtime, process) at http://ADDR/metrics, e.g. :9568; \"\" = none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("csi-node takes no arguments, got %q", fs.Args())
	}

	if *endpoint == "" {
		*endpoint = "unix://" + filepath.Join(*kubeletDir, "plugins", csinode.DriverName, "csi.sock")
	}
	socket, err := csinode.ParseEndpoint(*endpoint)
	if err != nil {
		return usagef("--endpoint: %v", err)
	}
	switch *regDir {
	case "":
		*regDir = filepath.Join(*kubeletDir, "plugins_registry")
	case "none":
		*regDir = ""
	}
	if *nodeID == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --node-id and no host name: %w", err)
		}
		*nodeID = host
	}

	if *metricsAddr != "" {
		stop, err := serveProcessMetrics(*metricsAddr, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	rc, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	kube, err := csinode.NewKube(rc, *nodeID)
	if err != nil {
		return err
	}
	defer kube.Stop()
	d, err := csinode.New(csinode.Config{
		Endpoint:        socket,
		NodeID:          *nodeID,
		KubeletDir:      *kubeletDir,
		Pods:            kube,
		Events:          kube,
		RegistrationDir: *regDir,
		Version:         version,
		Log:             log,
	})
	if err != nil {
		return usagef("%v", err)
	}
	return d.Run(ctx)
}

// serveProcessMetrics serves the default Prometheus registry (the Go runtime
// and process collectors) until the returned stop is called.
func serveProcessMetrics(addr string, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	stop, err := metricserver.Serve(addr, mux, log)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	return stop, nil
}
