package provisioner

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// reconcileVolume handles a PV this controller made once its claim is
// gone: with reclaim policy Delete it applies the class's onDelete to the
// directory and deletes the PV; a failure leaves the PV for the next try.
func (c *Controller) reconcileVolume(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pv corev1.PersistentVolume
	if err := c.client.Get(ctx, req.NamespacedName, &pv); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pv.Annotations[AnnProvisionedBy] != DriverName || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName {
		return reconcile.Result{}, nil
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		// Retain (or Recycle, which CSI volumes do not have): the directory
		// stays; a finalizer left from an earlier Delete policy must not
		// block the PV's deletion.
		if pv.DeletionTimestamp != nil {
			return reconcile.Result{}, c.dropFinalizer(ctx, &pv)
		}
		return reconcile.Result{}, nil
	}
	released, err := c.released(ctx, &pv)
	if err != nil || !released {
		return reconcile.Result{}, err
	}
	sec := &scrubber{}
	where, err := c.reclaim(ctx, &pv, sec)
	if err != nil {
		err = sec.scrub(err)
		c.log.Warn("deleting a volume failed", "volume", pv.Name, "err", err)
		c.events.Event(&pv, corev1.EventTypeWarning, ReasonDeleteFailed, "podfs: "+err.Error())
		return reconcile.Result{}, err
	}
	if err := c.dropFinalizer(ctx, &pv); err != nil {
		return reconcile.Result{}, err
	}
	if pv.DeletionTimestamp == nil {
		if err := c.client.Delete(ctx, &pv); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("delete PersistentVolume %s: %w", pv.Name, err)
		}
	}
	c.log.Info("deleted volume", "volume", pv.Name, "on_delete", onDeleteOf(&pv), "directory", where)
	return reconcile.Result{}, nil
}

// released says the PV's claim is gone: the PV controller marked it
// Released, or someone deleted the PV; in both cases the claim it was
// made for must no longer exist.
func (c *Controller) released(ctx context.Context, pv *corev1.PersistentVolume) (bool, error) {
	if pv.Status.Phase != corev1.VolumeReleased && pv.DeletionTimestamp == nil {
		return false, nil
	}
	ref := pv.Spec.ClaimRef
	if ref == nil {
		return pv.DeletionTimestamp != nil, nil
	}
	var pvc corev1.PersistentVolumeClaim
	err := c.api.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, &pvc)
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("check that claim %s/%s of PersistentVolume %s is gone: %w", ref.Namespace, ref.Name, pv.Name, err)
	}
	return pvc.UID != ref.UID, nil
}

func onDeleteOf(pv *corev1.PersistentVolume) string {
	if v := pv.Annotations[AnnOnDelete]; v != "" {
		return v
	}
	return OnDeleteDelete
}

// reclaim applies onDelete to the PV's directory and says where it went.
func (c *Controller) reclaim(ctx context.Context, pv *corev1.PersistentVolume, sec *scrubber) (string, error) {
	mode := onDeleteOf(pv)
	dirPath := pv.Spec.CSI.VolumeAttributes[AttrSubDir]
	if mode == OnDeleteRetain {
		return dirPath, nil
	}
	if mode != OnDeleteDelete && mode != OnDeleteArchive {
		return "", fmt.Errorf("PersistentVolume %s: annotation %s=%q: use delete, retain or archive", pv.Name, AnnOnDelete, mode)
	}
	if pv.Spec.ClaimRef == nil {
		return "", fmt.Errorf("PersistentVolume %s has no claimRef: its directory's owner cannot be checked, so it is left alone; remove the finalizer %s and delete the PV by hand", pv.Name, Finalizer)
	}
	m, dirPath, err := c.volumeOf(ctx, pv, sec)
	if err != nil {
		return "", fmt.Errorf("%w (or set the PV's reclaim policy to Retain to keep the directory)", err)
	}
	uid := string(pv.Spec.ClaimRef.UID)
	if mode == OnDeleteArchive {
		to, err := archiveClaimDir(ctx, m, dirPath, uid, c.opts.Now())
		if err != nil {
			return "", fmt.Errorf("archive the volume's directory: %w", err)
		}
		return to, nil
	}
	if err := deleteClaimDir(ctx, m, dirPath, uid); err != nil {
		return "", fmt.Errorf("delete the volume's directory: %w", err)
	}
	return "", nil
}

func (c *Controller) dropFinalizer(ctx context.Context, pv *corev1.PersistentVolume) error {
	if !slices.Contains(pv.Finalizers, Finalizer) {
		return nil
	}
	orig := pv.DeepCopy()
	pv.Finalizers = slices.DeleteFunc(pv.Finalizers, func(f string) bool { return f == Finalizer })
	if err := c.client.Patch(ctx, pv, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer %s from PersistentVolume %s: %w", Finalizer, pv.Name, err)
	}
	return nil
}
