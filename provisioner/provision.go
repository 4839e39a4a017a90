package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/redact"
)

// Annotations, as Kubernetes and external-provisioner use them.
const (
	AnnProvisionedBy          = "pv.kubernetes.io/provisioned-by"
	AnnStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	annBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
	AnnSelectedNode           = "volume.kubernetes.io/selected-node"
	// The provisioner Secret, kept on the PV for deleting and expanding
	// after the class may be gone (external-provisioner's names).
	AnnDeletionSecretName      = "volume.kubernetes.io/provisioner-deletion-secret-name"
	AnnDeletionSecretNamespace = "volume.kubernetes.io/provisioner-deletion-secret-namespace"
	// AnnOnDelete keeps the class's onDelete on the PV.
	AnnOnDelete = "podfs.io/on-delete"
	// Finalizer holds a PV with reclaim policy Delete until its directory
	// is handled, also when someone deletes the PV directly.
	Finalizer = "podfs.io/provisioner"
)

// Event reasons.
const (
	ReasonProvisioningFailed    = "ProvisioningFailed"
	ReasonProvisioningSucceeded = "ProvisioningSucceeded"
	ReasonResizeFailed          = "VolumeResizeFailed"
	ReasonResizeSucceeded       = "VolumeResizeSuccessful"
	ReasonDeleteFailed          = "VolumeFailedDelete"
	// ReasonNodeSecretMissing warns that pods will not start until the
	// node-publish Secret exists (the PV is made all the same: the Secret
	// may well come later).
	ReasonNodeSecretMissing = "NodePublishSecretMissing"
)

// PVName is the PV a claim gets: the same for every attempt, so retries
// and restarts find what an earlier attempt made.
func PVName(pvc *corev1.PersistentVolumeClaim) string { return "pvc-" + string(pvc.UID) }

// reconcileClaim provisions a claim of a podfs class, or expands a bound one.
func (c *Controller) reconcileClaim(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pvc corev1.PersistentVolumeClaim
	if err := c.client.Get(ctx, req.NamespacedName, &pvc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pvc.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	if pvc.Spec.VolumeName != "" {
		return reconcile.Result{}, c.expand(ctx, &pvc)
	}
	sc, ok, err := c.classOf(ctx, &pvc)
	if err != nil || !ok {
		return reconcile.Result{}, err
	}
	if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer &&
		pvc.Annotations[AnnSelectedNode] == "" {
		c.log.Debug("waiting for the first consumer", "claim", req.String())
		return reconcile.Result{}, nil
	}
	pvName := PVName(&pvc)
	var existing corev1.PersistentVolume
	err = c.api.Get(ctx, types.NamespacedName{Name: pvName}, &existing)
	if err == nil {
		return reconcile.Result{}, nil // made by an earlier attempt; the PV controller binds it
	}
	if !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("read PersistentVolume %s: %w", pvName, err)
	}
	sec := &scrubber{}
	if err := c.provision(ctx, &pvc, sc, pvName, sec); err != nil {
		err = sec.scrub(err)
		c.log.Warn("provisioning failed", "claim", req.String(), "class", sc.Name, "err", err)
		c.events.Event(&pvc, corev1.EventTypeWarning, ReasonProvisioningFailed, "podfs: "+err.Error())
		return reconcile.Result{}, err
	}
	c.log.Info("provisioned", "claim", req.String(), "class", sc.Name, "volume", pvName)
	c.events.Eventf(&pvc, corev1.EventTypeNormal, ReasonProvisioningSucceeded, "Successfully provisioned volume %s", pvName)
	c.checkNodeSecret(ctx, &pvc, pvName)
	return reconcile.Result{}, nil
}

// checkNodeSecret warns when the Secret the pods' sidecars will read is
// missing or lacks metaURL: pods would otherwise fail to start with a
// less telling error.
func (c *Controller) checkNodeSecret(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pvName string) {
	var pv corev1.PersistentVolume
	if err := c.api.Get(ctx, types.NamespacedName{Name: pvName}, &pv); err != nil || pv.Spec.CSI == nil || pv.Spec.CSI.NodePublishSecretRef == nil {
		return
	}
	ref := pv.Spec.CSI.NodePublishSecretRef
	var s corev1.Secret
	err := c.api.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, &s)
	var problem string
	switch {
	case apierrors.IsNotFound(err):
		problem = "does not exist"
	case err != nil:
		return // no RBAC or no answer: nothing certain to say
	case len(s.Data[KeyMetaURL]) == 0:
		problem = "has no key " + KeyMetaURL
	default:
		return
	}
	c.events.Eventf(pvc, corev1.EventTypeWarning, ReasonNodeSecretMissing,
		"podfs: Secret %s/%s, from which pods get the volume's %s and %s, %s: pods using this claim will not start until it does; create it",
		ref.Namespace, ref.Name, KeyMetaURL, KeyStorageURL, problem)
}

// classOf returns the claim's class when podfs is to provision the claim.
func (c *Controller) classOf(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (*storagev1.StorageClass, bool, error) {
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName == "" {
		return nil, false, nil
	}
	// Set by kube-controller-manager for external provisioners; another
	// provisioner named there owns the claim.
	for _, a := range []string{AnnStorageProvisioner, annBetaStorageProvisioner} {
		if v := pvc.Annotations[a]; v != "" && v != DriverName {
			return nil, false, nil
		}
	}
	var sc storagev1.StorageClass
	if err := c.client.Get(ctx, types.NamespacedName{Name: *pvc.Spec.StorageClassName}, &sc); err != nil {
		if apierrors.IsNotFound(err) {
			// A class created later enqueues its claims (claimsOfClass).
			c.log.Debug("the claim's class is not found; waiting for it", "claim", pvc.Namespace+"/"+pvc.Name, "class", *pvc.Spec.StorageClassName)
			return nil, false, nil
		}
		return nil, false, err
	}
	return &sc, sc.Provisioner == DriverName, nil
}

// provision makes the claim's directory and PV; an error leaves neither
// (a directory made by an earlier attempt of the same claim may stay, and
// the next attempt reuses it).
func (c *Controller) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass, pvName string, sec *scrubber) error {
	params, err := parseClass(sc)
	if err != nil {
		return err
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return errors.New("volumeMode Block is not supported: a podfs volume is a file system, use volumeMode Filesystem")
	}
	if pvc.Spec.Selector != nil {
		return errors.New("a claim with spec.selector cannot be provisioned dynamically (the selector picks among existing PVs): remove the selector, or create a matching PV yourself")
	}
	if pvc.Spec.DataSource != nil || pvc.Spec.DataSourceRef != nil {
		return errors.New("podfs cannot provision from a data source (snapshot or clone): remove spec.dataSource")
	}
	if len(pvc.Spec.AccessModes) == 0 {
		return errors.New("the claim has no access modes: set spec.accessModes (ReadWriteMany for a shared volume)")
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.Sign() <= 0 {
		return errors.New("the claim requests no storage: set spec.resources.requests.storage, the directory's quota")
	}
	dirPath, err := params.pattern.Expand(PathInput{Namespace: pvc.Namespace, Name: pvc.Name, UID: string(pvc.UID),
		PVName: pvName, Labels: pvc.Labels, Annotations: pvc.Annotations})
	if err != nil {
		return fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}
	provRef, err := params.provisioner.resolve(pvc, pvName)
	if err != nil {
		return fmt.Errorf("StorageClass %s, %s: %w", sc.Name, ParamProvisionerSecretName, err)
	}
	nodeRef, err := params.nodePublish.resolve(pvc, pvName)
	if err != nil {
		return fmt.Errorf("StorageClass %s, %s: %w", sc.Name, ParamNodePublishSecretName, err)
	}
	vsec, err := c.volumeSecret(ctx, provRef, "StorageClass "+sc.Name, sec)
	if err != nil {
		return err
	}
	m, f, err := c.vols.get(ctx, vsec)
	if err != nil {
		return err
	}
	dir, err := ensureClaimDir(ctx, m, c.opts.Quotas(m), dirPath, string(pvc.UID), uint64(size.Value()))
	if errors.Is(err, errCollision) {
		return fmt.Errorf("volume %q: %w: change the StorageClass's %s, or move that directory away", f.Name, err, ParamPathPattern)
	}
	if err != nil {
		return fmt.Errorf("volume %q: %w", f.Name, err)
	}
	pv := c.buildPV(pvc, sc, params, pvName, f, dirPath, provRef, nodeRef, vsec.StorageURL != "")
	if err := c.client.Create(ctx, pv); err != nil && !apierrors.IsAlreadyExists(err) {
		if dir.created {
			if rerr := deleteClaimDir(ctx, m, dirPath, string(pvc.UID)); rerr != nil {
				c.log.Warn("could not take back the directory of a failed attempt; the next attempt reuses it", "path", dirPath, "err", rerr)
			}
		}
		return fmt.Errorf("create PersistentVolume %s: %w", pvName, err)
	}
	return nil
}

// volumeSecret reads and checks a provisioner Secret (uncached: the
// controller neither lists nor watches Secrets).
func (c *Controller) volumeSecret(ctx context.Context, ref secretRef, from string, sec *scrubber) (*volumeSecret, error) {
	var s corev1.Secret
	err := c.api.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, &s)
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("Secret %s/%s (named by %s) does not exist: create it with keys %s and %s", ref.Namespace, ref.Name, from, KeyMetaURL, KeyStorageURL)
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("the controller may not read Secret %s/%s (named by %s): grant its ServiceAccount get on secrets", ref.Namespace, ref.Name, from)
	case err != nil:
		return nil, fmt.Errorf("read Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	sec.add(string(s.Data[KeyMetaURL]), string(s.Data[KeyStorageURL]))
	return parseSecret(&s)
}

func (c *Controller) buildPV(pvc *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass, params *classParams, pvName string,
	f *meta.Format, dirPath string, provRef, nodeRef secretRef, hasStorage bool) *corev1.PersistentVolume {
	reclaim := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	attrs := map[string]string{AttrMetaURLSecretKey: KeyMetaURL, AttrSubDir: dirPath}
	if hasStorage {
		attrs[AttrStorageURLSecret] = KeyStorageURL
	}
	fsMode := corev1.PersistentVolumeFilesystem
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: pvName,
			Annotations: map[string]string{
				AnnProvisionedBy:           DriverName,
				AnnDeletionSecretName:      provRef.Name,
				AnnDeletionSecretNamespace: provRef.Namespace,
				AnnOnDelete:                params.onDelete,
			},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              sc.Name,
			MountOptions:                  sc.MountOptions,
			VolumeMode:                    &fsMode,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:               DriverName,
				VolumeHandle:         f.UUID + ":" + dirPath,
				VolumeAttributes:     attrs,
				NodePublishSecretRef: &corev1.SecretReference{Namespace: nodeRef.Namespace, Name: nodeRef.Name},
			}},
		},
	}
	if reclaim == corev1.PersistentVolumeReclaimDelete {
		pv.Finalizers = []string{Finalizer}
	}
	return pv
}

// scrubber keeps the URLs of the Secrets an attempt read, so that no error
// text (some come from engines that print their endpoints) carries them
// into a log or an event.
type scrubber struct{ secrets []string }

func (s *scrubber) add(vals ...string) {
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			s.secrets = append(s.secrets, v)
		}
	}
}

// parts are the credentials inside a URL: its user information and query
// values, which may show up in a message on their own.
func parts(u string) []string {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return nil
	}
	var out []string
	rest, query, _ := strings.Cut(rest, "?")
	authority, _, _ := strings.Cut(rest, "/")
	if at := strings.LastIndexByte(authority, '@'); at > 0 {
		out = append(out, authority[:at])
		if _, pw, ok := strings.Cut(authority[:at], ":"); ok && len(pw) >= 4 {
			out = append(out, pw)
		}
	}
	for _, kv := range strings.Split(query, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok && redact.IsSecretParam(k) && len(v) >= 4 {
			out = append(out, v)
		}
	}
	return out
}

func (s *scrubber) scrub(err error) error {
	msg := err.Error()
	for _, v := range s.secrets {
		msg = strings.ReplaceAll(msg, v, redact.URL(v))
	}
	for _, v := range s.secrets {
		for _, p := range parts(v) {
			msg = strings.ReplaceAll(msg, p, redact.Mask)
		}
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}
