// Package provisioner is podfs's dynamic provisioning: a controller that
// turns each PersistentVolumeClaim of a StorageClass with provisioner
// csi.podfs.io into a directory of a shared podfs volume, limited by a
// directory quota of the claim's size, and a PersistentVolume whose CSI
// source the webhook and the CSI node serve; it grows the quota when a
// claim is expanded and applies the class's onDelete (delete, retain or
// archive) when a released volume's reclaim policy is Delete.
//
// podfs runs this controller itself, on controller-runtime inside the podfs
// binary (podfs controller), instead of the upstream external-provisioner
// and external-resizer sidecars: sig-storage-lib-external-provisioner v13
// needs k8s.io/* v0.37, which the controller-runtime line podfs builds on
// (v0.21, k8s.io/* v0.33) cannot share, and the upstream images cannot be
// pulled in an offline cluster. It follows the external-provisioner
// contract all the same (StorageClass secret parameters and their
// templates, the provisioned-by annotation, PV names pvc-<claim uid>,
// WaitForFirstConsumer's selected-node annotation, events), so a cluster
// behaves as its users expect. See docs/provisioning.md.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podfs.io/podfs/pkg/meta"
)

// Options configure a Controller.
type Options struct {
	RestConfig *rest.Config
	// LeaderElection makes only one of several replicas act, through a
	// Lease named LeaderElectionID in LeaderElectionNamespace.
	LeaderElection          bool
	LeaderElectionID        string // default "podfs-controller"
	LeaderElectionNamespace string
	MetricsAddr             string // "" or "0" = no metrics server
	HealthAddr              string // "" or "0" = no health probes
	// Workers is how many claims and volumes are worked on at once (default 4 each).
	Workers int
	// RetryBase and RetryMax bound the backoff of failed attempts (default
	// 1 s and 5 min): a missing Secret is retried until it appears.
	RetryBase, RetryMax time.Duration
	// AttemptTimeout bounds one attempt at a claim or volume (default 2
	// min), so an engine that stops answering cannot hold a worker forever.
	AttemptTimeout time.Duration
	// Volumes holds the metadata clients; default a new one (closed by Run).
	Volumes *Volumes
	// Quotas turns a volume's client into what sets directory quotas;
	// default MetaQuotas.
	Quotas func(meta.Meta) Quotas
	// Now is the clock for archive names; default time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Controller is a configured, not yet running controller.
type Controller struct {
	opts   Options
	mgr    manager.Manager
	client client.Client
	api    client.Reader // uncached: Secrets are never cached or watched
	events record.EventRecorder
	vols   *Volumes
	ownVol bool
	log    *slog.Logger
}

// New prepares the manager and the controllers.
func New(o Options) (*Controller, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LeaderElectionID == "" {
		o.LeaderElectionID = "podfs-controller"
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Minute
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 2 * time.Minute
	}
	if o.Quotas == nil {
		o.Quotas = MetaQuotas
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ctrl.SetLogger(logr.FromSlogHandler(o.Log.Handler()))
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	addr := func(a string) string {
		if a == "" {
			return "0"
		}
		return a
	}
	if o.LeaderElection && o.LeaderElectionNamespace == "" {
		return nil, errors.New("leader election needs the namespace of its Lease (--namespace or $POD_NAMESPACE)")
	}
	mgr, err := ctrl.NewManager(o.RestConfig, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: addr(o.MetricsAddr)},
		HealthProbeBindAddress:        addr(o.HealthAddr),
		LeaderElection:                o.LeaderElection,
		LeaderElectionID:              o.LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	c := &Controller{opts: o, mgr: mgr, client: mgr.GetClient(), api: mgr.GetAPIReader(),
		events: mgr.GetEventRecorderFor("podfs-controller"), vols: o.Volumes, log: o.Log}
	if c.vols == nil {
		c.vols = &Volumes{Log: o.Log}
		c.ownVol = true
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	limiter := func() workqueue.TypedRateLimiter[reconcile.Request] {
		return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](o.RetryBase, o.RetryMax)
	}
	// Names are unique per process already; tests run several controllers.
	skip := true
	err = builder.ControllerManagedBy(mgr).Named("podfs-claims").
		WithOptions(controller.Options{MaxConcurrentReconciles: o.Workers, RateLimiter: limiter(), SkipNameValidation: &skip}).
		For(&corev1.PersistentVolumeClaim{}).
		Watches(&storagev1.StorageClass{}, handler.EnqueueRequestsFromMapFunc(c.claimsOfClass)).
		Complete(c.bounded(c.reconcileClaim))
	if err != nil {
		return nil, fmt.Errorf("claim controller: %w", err)
	}
	err = builder.ControllerManagedBy(mgr).Named("podfs-volumes").
		WithOptions(controller.Options{MaxConcurrentReconciles: o.Workers, RateLimiter: limiter(), SkipNameValidation: &skip}).
		For(&corev1.PersistentVolume{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
			return obj.GetAnnotations()[AnnProvisionedBy] == DriverName
		}))).
		Complete(c.bounded(c.reconcileVolume))
	if err != nil {
		return nil, fmt.Errorf("volume controller: %w", err)
	}
	return c, nil
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer func() {
		if c.ownVol {
			if err := c.vols.Close(context.Background()); err != nil {
				c.log.Warn("closing metadata clients", "err", err)
			}
		}
	}()
	c.log.Info("controller starting", "driver", DriverName, "leader_election", c.opts.LeaderElection)
	return c.mgr.Start(ctx)
}

// Elected is closed once this replica leads (at once without leader election).
func (c *Controller) Elected() <-chan struct{} { return c.mgr.Elected() }

// claimsOfClass enqueues the unbound claims of a class that changed (a
// class created after its claims, or recreated with other parameters).
func (c *Controller) claimsOfClass(ctx context.Context, obj client.Object) []reconcile.Request {
	sc, ok := obj.(*storagev1.StorageClass)
	if !ok || sc.Provisioner != DriverName {
		return nil
	}
	var list corev1.PersistentVolumeClaimList
	if err := c.client.List(ctx, &list); err != nil {
		c.log.Warn("list claims for a class change", "class", sc.Name, "err", err)
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.VolumeName == "" && p.Spec.StorageClassName != nil && *p.Spec.StorageClassName == sc.Name {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
		}
	}
	return out
}

// bounded gives each attempt at most AttemptTimeout.
func (c *Controller) bounded(f reconcile.Func) reconcile.Func {
	return func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		ctx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		defer cancel()
		return f(ctx, req)
	}
}
