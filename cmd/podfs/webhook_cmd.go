package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"podfs.io/podfs/webhook"
)

func runWebhook(ctx context.Context, log *slog.Logger, args []string) error {
	fs := newFlags("webhook", "[options]", `
Serve the mutating admission webhook at `+webhook.MutatePath+`: pods that use
podfs volumes in namespaces labelled podfs.io/injection=enabled|serverless get
the podfs-sidecar container. By default the webhook keeps its own CA in a
Secret and patches its bundle into the MutatingWebhookConfiguration.`)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file; \"\" = in-cluster configuration")
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace of the webhook (its ConfigMap and CA Secret); default $POD_NAMESPACE")
	configMap := fs.String("config-map", "podfs-webhook", "ConfigMap with the sidecar configuration (key "+webhook.ConfigKey+"); \"\" = built-in defaults")
	image := fs.String("sidecar-image", "", "sidecar image when the ConfigMap names none")
	host := fs.String("host", "", "address to serve the webhook on (\"\" = all)")
	port := fs.Int("port", 9443, "HTTPS port of the webhook")
	certDir := fs.String("cert-dir", "", "directory with mounted tls.crt and tls.key (e.g. cert-manager); \"\" = self-managed CA")
	caSecret := fs.String("ca-secret", "podfs-webhook-ca", "Secret (in --namespace) holding the self-managed CA")
	mwc := fs.String("webhook-config", "podfs-webhook", "MutatingWebhookConfiguration to patch the CA bundle into; \"\" = none")
	dnsNames := fs.String("dns-names", "", "comma-separated DNS names of the serving certificate (default podfs-webhook.<namespace>.svc and .svc.cluster.local)")
	ips := fs.String("ips", "", "comma-separated IP addresses of the serving certificate")
	native := fs.String("native-sidecar", "auto", "inject native sidecars: auto (API server >= 1.29), true, false")
	fs.StringVar(native, "native-sidecars", "auto", "alias of --native-sidecar")
	fs.Func("listen", "HOST:PORT to serve the webhook on (sets --host and --port)", func(v string) error {
		h, p, err := net.SplitHostPort(v)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("port %q", p)
		}
		*host, *port = h, n
		return nil
	})
	certHosts := fs.String("cert-hosts", "", "comma-separated DNS names and IP addresses of the serving certificate (adds to --dns-names and --ips)")
	metrics := fs.String("metrics-addr", ":8080", "Prometheus metrics address; 0 = off")
	health := fs.String("health-addr", ":8081", "healthz/readyz address; 0 = off")
	healthSocket := fs.String("health-socket", "", "also serve healthz/readyz on this unix socket, for exec probes (podfs probe) that must reach this replica; \"\" = none")
	reusePort := fs.Bool("reuse-port", false, "open the webhook port with SO_REUSEPORT so several replicas on one node's host network share it (Linux; probe them through --health-socket)")
	appsDone := fs.Bool("apps-done", true, "run the controller that lets pods with non-native sidecars complete")
	certCheck := fs.Duration("cert-check", time.Hour, "how often to check the certificates for renewal")
	leaderElect := fs.Bool("leader-elect", true, "with several replicas: one (holding a Lease in --namespace) runs apps-done, CA rotation and the caBundle watch; all serve admissions")
	leaderID := fs.String("leader-election-id", "podfs-webhook", "name of the leader election Lease")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("webhook takes no arguments, got %q", fs.Args())
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	opts := webhook.Options{
		RestConfig: cfg, Namespace: *namespace, ConfigMapName: *configMap, DefaultImage: *image,
		Host: *host, Port: *port, CertDir: *certDir, CASecretName: *caSecret, WebhookConfig: *mwc,
		NativeSidecar: *native, MetricsAddr: *metrics, HealthAddr: *health, AppsDone: *appsDone,
		HealthSocket: *healthSocket, ReusePort: *reusePort,
		CertCheck: *certCheck, LeaderElection: *leaderElect, LeaderElectionID: *leaderID, Log: log,
	}
	for _, h := range strings.Split(*certHosts, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if net.ParseIP(h) != nil {
			*ips += "," + h
		} else {
			*dnsNames += "," + h
		}
	}
	*dnsNames = strings.Trim(*dnsNames, ",")
	if *dnsNames != "" {
		opts.DNSNames = strings.Split(*dnsNames, ",")
	} else if *namespace != "" {
		opts.DNSNames = []string{"podfs-webhook." + *namespace + ".svc", "podfs-webhook." + *namespace + ".svc.cluster.local"}
	}
	for _, s := range strings.Split(*ips, ",") {
		if s == "" {
			continue
		}
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return usagef("--ips: %q is not an IP address", s)
		}
		opts.IPs = append(opts.IPs, ip)
	}
	if *configMap != "" && *namespace == "" {
		return usagef("--config-map needs --namespace (or $POD_NAMESPACE)")
	}
	srv, err := webhook.NewServer(ctx, opts)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// restConfig reaches the API server through kubeconfig, or through the pod's
// service account when it is "".
func restConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration (--kubeconfig): %w", err)
	}
	return cfg, nil
}
