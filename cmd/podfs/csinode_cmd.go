package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"
	"podfs.io/podfs/csinode"
)

func runCSINode(ctx context.Context, log *slog.Logger, args []string) error {
	fs := newFlags("csi-node", "[options]", `
Serve the CSI node plugin `+csinode.DriverName+` on a unix socket and register it
with kubelet. The plugin publishes the mountpoint each pod's podfs sidecar
serves (`+csinode.DefaultPodsDir+`/<pod-uid>/<volume>) into the pod's volume.`)
	endpoint := fs.String("endpoint", "", "CSI endpoint, a unix socket (default unix://<kubelet-dir>/plugins/"+csinode.DriverName+"/csi.sock)")
	nodeID := fs.String("node-id", "", "node ID reported to kubelet, the node's name (default the host name)")
	kubeletDir := fs.String("kubelet-dir", csinode.DefaultKubeletDir, "kubelet's root directory (its --root-dir)")
	podsDir := fs.String("pods-dir", csinode.DefaultPodsDir, "directory of the per-pod directories the sidecars mount on")
	regDir := fs.String("registration-dir", "", "kubelet's plugin registration directory (default <kubelet-dir>/plugins_registry); \"none\" to leave registration to node-driver-registrar")
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

	// mount-utils logs through klog; send it to the same place.
	klog.SetSlogLogger(log)
	d, err := csinode.New(csinode.Config{
		Endpoint:        socket,
		NodeID:          *nodeID,
		KubeletDir:      *kubeletDir,
		PodsDir:         *podsDir,
		RegistrationDir: *regDir,
		Version:         version,
		Log:             log,
	})
	if err != nil {
		return usagef("%v", err)
	}
	return d.Run(ctx)
}
