// Package webhook is podfs's mutating admission webhook: it gives every pod
// that uses a podfs volume, in a namespace labelled podfs.io/injection, one
// podfs-sidecar container serving all its podfs volumes (see
// Mutate for the rules and Config for the configuration and its precedence).
// Server wires the handler into a controller-runtime webhook server with
// informer-cached lookups, a self-managed CA, the configuration ConfigMap
// watch and the apps-done controller.
package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Options configure a Server.
type Options struct {
	RestConfig *rest.Config
	// Namespace the webhook runs in: its ConfigMap and CA Secret live here.
	Namespace     string
	ConfigMapName string // "" = no ConfigMap, defaults only
	DefaultImage  string // the sidecar image when the ConfigMap names none

	Host string // listen address of the webhook server; "" = all
	Port int
	// CertDir holds mounted tls.crt/tls.key (cert-manager); "" = self-managed CA.
	CertDir       string
	CASecretName  string
	WebhookConfig string // MutatingWebhookConfiguration to patch the CA bundle into
	DNSNames      []string
	IPs           []net.IP
	CertCheck     time.Duration // how often certificates are checked for renewal; default 1h

	// NativeSidecar is "auto" (ask the API server: >= 1.29), "true" or "false".
	NativeSidecar string
	MetricsAddr   string // "" or "0" = no metrics server
	HealthAddr    string // "" or "0" = no health probes
	// HealthSocket also serves /healthz and /readyz on this unix socket
	// ("" = none): probes that reach this replica when the port is shared.
	HealthSocket string
	// ReusePort opens the webhook's listener with SO_REUSEPORT, so replicas
	// on one node's host network share Port (see PortServer).
	ReusePort bool
	// AppsDone runs the controller that lets non-native pods complete.
	AppsDone bool
	// LeaderElection makes one replica (a Lease named LeaderElectionID in
	// Namespace) run the apps-done controller, the CA rotation and the
	// caBundle watch; every replica serves admissions, loads the
	// configuration and renews its own serving certificate.
	LeaderElection   bool
	LeaderElectionID string // default "podfs-webhook"
	// Lease timings; zero = controller-runtime's defaults (15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Server is a configured, not yet running webhook.
type Server struct {
	opts    Options
	mgr     manager.Manager
	Handler *Handler
	Certs   *CertManager // nil with CertDir
	config  *ConfigStore
	events  record.EventRecorder
	// Probe checks, kept for the health socket too.
	live, ready map[string]healthz.Checker
}

// NewServer prepares the manager, caches, certificates (the CA bundle is in
// the webhook configuration when it returns) and handler.
func NewServer(ctx context.Context, o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.CertCheck == 0 {
		o.CertCheck = time.Hour
	}
	ctrl.SetLogger(logr.FromSlogHandler(o.Log.Handler()))
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	native, err := detectNative(o.RestConfig, o.NativeSidecar)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: o, config: NewConfigStore(DefaultConfig(o.DefaultImage)),
		live: map[string]healthz.Checker{}, ready: map[string]healthz.Checker{}}
	if o.DefaultImage == "" && o.ConfigMapName == "" {
		return nil, errors.New("no sidecar image: set --sidecar-image or a ConfigMap with image")
	}

	whOpts := crwebhook.Options{Host: o.Host, Port: o.Port, CertDir: o.CertDir}
	direct, err := client.New(o.RestConfig, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	if o.CertDir == "" {
		if o.CASecretName == "" || o.Namespace == "" {
			return nil, errors.New("a self-managed CA needs --namespace and --ca-secret (or give --cert-dir)")
		}
		s.Certs = &CertManager{Client: direct, SecretNamespace: o.Namespace, SecretName: o.CASecretName,
			WebhookConfig: o.WebhookConfig, DNSNames: o.DNSNames, IPs: o.IPs, Log: o.Log}
		if err := s.Certs.Ensure(ctx); err != nil {
			return nil, err
		}
		whOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) {
			c.GetCertificate = s.Certs.GetCertificate
			c.MinVersion = tls.VersionTLS12
		}}
	}

	byObject := map[client.Object]cache.ByObject{
		// Only pods whose sidecar is an ordinary container (apps-done).
		&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{SidecarLabel: SidecarLabelContainer})},
		// Admission only reads these: share the cached object, no copy.
		&corev1.PersistentVolumeClaim{}: {UnsafeDisableDeepCopy: ptr(true)},
		&corev1.PersistentVolume{}:      {UnsafeDisableDeepCopy: ptr(true)},
		&storagev1.StorageClass{}:       {UnsafeDisableDeepCopy: ptr(true)},
		&corev1.Namespace{}:             {UnsafeDisableDeepCopy: ptr(true)},
		// Kubelet versions (native placement): a few fields per node.
		&corev1.Node{}: {Transform: stripNode},
	}
	if s.Certs != nil && o.WebhookConfig != "" {
		// Its own webhook configuration only: the caBundle watch.
		byObject[&admissionregistrationv1.MutatingWebhookConfiguration{}] = cache.ByObject{
			Field: fields.OneTermEqualSelector("metadata.name", o.WebhookConfig)}
	}
	if o.ConfigMapName != "" {
		byObject[&corev1.ConfigMap{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{o.Namespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", o.ConfigMapName),
		}
	}
	metricsAddr, healthAddr := o.MetricsAddr, o.HealthAddr
	if metricsAddr == "" {
		metricsAddr = "0"
	}
	if healthAddr == "" {
		healthAddr = "0"
	}
	mopts := ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: healthAddr,
		WebhookServer:          webhookServer(whOpts, o),
		Cache:                  cache.Options{ByObject: byObject, DefaultTransform: cache.TransformStripManagedFields()},
	}
	if o.LeaderElection {
		if o.Namespace == "" {
			return nil, errors.New("leader election needs --namespace (or $POD_NAMESPACE) for its Lease")
		}
		mopts.LeaderElection = true
		mopts.LeaderElectionID = o.LeaderElectionID
		if mopts.LeaderElectionID == "" {
			mopts.LeaderElectionID = "podfs-webhook"
		}
		mopts.LeaderElectionNamespace = o.Namespace
		// A replica stopping (drain, rollout) hands over at once.
		mopts.LeaderElectionReleaseOnCancel = true
		for _, d := range []struct {
			src time.Duration
			dst **time.Duration
		}{{o.LeaseDuration, &mopts.LeaseDuration}, {o.RenewDeadline, &mopts.RenewDeadline}, {o.RetryPeriod, &mopts.RetryPeriod}} {
			if d.src > 0 {
				*d.dst = ptr(d.src)
			}
		}
	}
	mgr, err := ctrl.NewManager(o.RestConfig, mopts)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	s.mgr = mgr
	s.events = mgr.GetEventRecorderFor("podfs-webhook")

	lk := &CachedLookup{Cache: mgr.GetCache(), API: mgr.GetAPIReader()}
	s.Handler = &Handler{Lookup: lk, Namespaces: lk.NamespaceLabels, Config: s.config, Native: native,
		Secrets: &SecretMetadata{Reader: mgr.GetAPIReader()}, Log: o.Log, Metrics: NewMetrics(ctrlmetrics.Registry)}
	mgr.GetWebhookServer().Register(MutatePath, s.Handler)

	if err := s.addCheck(false, "ping", healthz.Ping); err != nil {
		return nil, err
	}
	if native && (o.NativeSidecar == "" || o.NativeSidecar == "auto") {
		if err := s.watchNodes(ctx, direct); err != nil {
			return nil, err
		}
	}
	if err := s.addCheck(true, "webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, err
	}
	if o.HealthSocket != "" {
		ln, err := listenHealthSocket(o.HealthSocket)
		if err != nil {
			return nil, err
		}
		// An HTTP server of the manager: stopped last, after the webhook.
		if err := mgr.Add(&manager.Server{Name: "health-socket", Listener: ln, Server: &http.Server{
			Handler: healthHandler(s.live, s.ready), ReadHeaderTimeout: 10 * time.Second}}); err != nil {
			ln.Close()
			return nil, err
		}
	}
	// Names are unique per process already; tests run several servers.
	ctrlOpts := controller.Options{SkipNameValidation: ptr(true)}
	if s.Certs != nil {
		// Every replica renews its own serving certificate; the leader alone
		// rotates the CA and keeps the caBundle right.
		if err := mgr.Add(everyReplica(func(ctx context.Context) error { return s.Certs.RunServing(ctx, o.CertCheck) })); err != nil {
			return nil, err
		}
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return s.Certs.Run(ctx, o.CertCheck) })); err != nil {
			return nil, err
		}
		if o.WebhookConfig != "" {
			// Patched at once whenever the object changes: a `helm template |
			// kubectl apply` (or a GitOps sync) that empties caBundle is
			// repaired in a moment, not at the next hourly check.
			err := builder.ControllerManagedBy(mgr).Named("podfs-cabundle").WithOptions(ctrlOpts).
				For(&admissionregistrationv1.MutatingWebhookConfiguration{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
					return obj.GetName() == o.WebhookConfig
				}))).Complete(reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
				return reconcile.Result{}, s.Certs.Ensure(ctx)
			}))
			if err != nil {
				return nil, fmt.Errorf("caBundle watch: %w", err)
			}
		}
	}
	if o.ConfigMapName != "" {
		// Every replica needs the configuration, leader or not.
		cmOpts := ctrlOpts
		cmOpts.NeedLeaderElection = ptr(false)
		err := builder.ControllerManagedBy(mgr).Named("podfs-config").WithOptions(cmOpts).For(&corev1.ConfigMap{},
			builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
				return obj.GetNamespace() == o.Namespace && obj.GetName() == o.ConfigMapName
			}))).Complete(reconcile.Func(s.reconcileConfig))
		if err != nil {
			return nil, fmt.Errorf("config watch: %w", err)
		}
	}
	if o.AppsDone && !allowed(ctx, direct, o.Log, "pods", "list", "watch", "patch") {
		o.Log.Warn("the apps-done controller is off: no RBAC to list, watch and patch pods; pods with non-native sidecars will not complete on their own")
		o.AppsDone = false
	}
	if o.AppsDone {
		if err := builder.ControllerManagedBy(mgr).Named("podfs-apps-done").WithOptions(ctrlOpts).For(&corev1.Pod{}).
			Complete(&AppsDone{Client: mgr.GetClient(), Log: o.Log}); err != nil {
			return nil, fmt.Errorf("apps-done controller: %w", err)
		}
	}
	o.Log.Info("webhook configured", "native_sidecar", native, "self_managed_tls", s.Certs != nil, "config_map", o.ConfigMapName)
	return s, nil
}

// watchNodes narrows native placement to nodes whose kubelet runs native
// sidecars (NodeVersions). Without RBAC to list and watch nodes the API
// server's version alone decides, as --native-sidecar=true would.
func (s *Server) watchNodes(ctx context.Context, direct client.Client) error {
	if !allowed(ctx, direct, s.opts.Log, "nodes", "list", "watch") {
		s.opts.Log.Warn("cannot list and watch nodes: native sidecars are injected without checking the nodes' kubelet versions (grant list/watch on nodes, or set --native-sidecar)")
		return nil
	}
	inf, err := s.mgr.GetCache().GetInformer(ctx, &corev1.Node{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	nv := NewNodeVersions()
	if _, err := inf.AddEventHandler(nv.Handler()); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	s.Handler.Nodes = nv
	// Until the nodes are known, native placement could pick a node too old.
	return s.addCheck(true, "nodes", func(*http.Request) error {
		if !inf.HasSynced() {
			return errors.New("the node informer has not synced yet")
		}
		return nil
	})
}

// webhookServer is controller-runtime's server, or PortServer when the port
// is shared: DefaultServer has no hook for socket options, and it keeps
// controller-runtime's webhook request metrics for the usual case.
func webhookServer(whOpts crwebhook.Options, o Options) crwebhook.Server {
	if !o.ReusePort {
		return crwebhook.NewServer(whOpts)
	}
	return &PortServer{Host: o.Host, Port: o.Port, ReusePort: true, TLSOpts: whOpts.TLSOpts, CertDir: o.CertDir, Log: o.Log}
}

// addCheck adds a liveness (ready false) or readiness check to the
// manager's probes and to the health socket's.
func (s *Server) addCheck(ready bool, name string, c healthz.Checker) error {
	if ready {
		s.ready[name] = c
		return s.mgr.AddReadyzCheck(name, c)
	}
	s.live[name] = c
	return s.mgr.AddHealthzCheck(name, c)
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error { return s.mgr.Start(ctx) }

// Elected is closed once this replica leads (at once without leader election).
func (s *Server) Elected() <-chan struct{} { return s.mgr.Elected() }

// everyReplica is a runnable that runs whether or not this replica leads.
type everyReplica func(ctx context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }

func (everyReplica) NeedLeaderElection() bool { return false }

// Config is the configuration in use.
func (s *Server) Config() *Config { return s.config.Load() }

// reconcileConfig loads the ConfigMap; an invalid one is reported (log and
// a Warning event on the ConfigMap) and the last good configuration kept.
func (s *Server) reconcileConfig(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cm corev1.ConfigMap
	err := s.mgr.GetClient().Get(ctx, types.NamespacedName{Namespace: s.opts.Namespace, Name: s.opts.ConfigMapName}, &cm)
	if apierrors.IsNotFound(err) {
		s.opts.Log.Warn("configuration ConfigMap is gone; keeping the last good configuration", "config_map", req.String())
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	data, ok := cm.Data[ConfigKey]
	if !ok {
		err = fmt.Errorf("ConfigMap %s has no key %s", req, ConfigKey)
	}
	var c *Config
	if err == nil {
		c, err = ParseConfig([]byte(data), s.opts.DefaultImage)
	}
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		s.opts.Log.Error("invalid configuration ConfigMap; keeping the last good configuration", "config_map", req.String(), "err", msg)
		s.events.Event(&cm, corev1.EventTypeWarning, "InvalidConfig", "podfs webhook keeps its last good configuration: "+msg)
		return reconcile.Result{}, nil // retrying will not fix it; the next edit will
	}
	s.config.Store(c)
	s.opts.Log.Info("configuration loaded", "config_map", req.String(), "resource_version", cm.ResourceVersion, "patches", len(c.Patches))
	s.events.Event(&cm, corev1.EventTypeNormal, "ConfigLoaded", "podfs webhook loaded resourceVersion "+cm.ResourceVersion)
	return reconcile.Result{}, nil
}

// allowed asks the API server whether we may do every verb on the core
// resource cluster-wide.
func allowed(ctx context.Context, c client.Client, log *slog.Logger, resource string, verbs ...string) bool {
	for _, v := range verbs {
		r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: v, Resource: resource}}}
		if err := c.Create(ctx, r); err != nil {
			log.Warn("cannot check RBAC", "resource", resource, "verb", v, "err", err)
			return false
		}
		if !r.Status.Allowed {
			return false
		}
	}
	return true
}

// detectNative decides whether to inject native sidecars.
func detectNative(cfg *rest.Config, mode string) (bool, error) {
	switch mode {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "", "auto":
	default:
		return false, fmt.Errorf("--native-sidecar=%q: want auto, true or false", mode)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, fmt.Errorf("discovery client: %w", err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return false, fmt.Errorf("ask the API server its version (or set --native-sidecar): %w", err)
	}
	return NativeSidecarsSupported(v.Major, v.Minor)
}

// NativeSidecarsSupported reports whether Kubernetes major.minor (as
// /version reports them, e.g. "1", "29+") runs native sidecars (>= 1.29,
// where SidecarContainers is on by default).
func NativeSidecarsSupported(major, minor string) (bool, error) {
	maj, err1 := strconv.Atoi(strings.TrimRight(major, "+"))
	mnr, err2 := strconv.Atoi(strings.TrimRight(minor, "+"))
	if err1 != nil || err2 != nil {
		return false, fmt.Errorf("cannot read the API server's version %q.%q; set --native-sidecar", major, minor)
	}
	return maj > 1 || (maj == 1 && mnr >= 29), nil
}
