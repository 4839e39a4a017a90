package provisioner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podfs.io/podfs/pkg/meta"
)

// expand raises a bound claim's quota to its request. The kubelet has
// nothing to do afterwards: statfs inside the pod reads the quota. A
// request below the capacity never reaches here: the API server refuses to
// shrink a bound claim below status.capacity.
func (c *Controller) expand(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Status.Phase != corev1.ClaimBound {
		return nil
	}
	want := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	have, ok := pvc.Status.Capacity[corev1.ResourceStorage]
	if !ok || want.Cmp(have) <= 0 {
		return nil
	}
	var pv corev1.PersistentVolume
	if err := c.client.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, &pv); err != nil {
		return client.IgnoreNotFound(err)
	}
	if pv.Annotations[AnnProvisionedBy] != DriverName || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName ||
		pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != pvc.UID {
		return nil // not a volume this controller made for this claim
	}
	fail := func(err error) error {
		c.log.Warn("expansion failed", "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
		c.events.Event(pvc, corev1.EventTypeWarning, ReasonResizeFailed, "podfs: "+err.Error())
		return err
	}
	var sc storagev1.StorageClass
	if err := c.client.Get(ctx, types.NamespacedName{Name: pv.Spec.StorageClassName}, &sc); err == nil &&
		(sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion) {
		// The API server normally refuses such an edit already.
		_ = fail(fmt.Errorf("StorageClass %s does not allow expansion (allowVolumeExpansion: true): the claim keeps %s", sc.Name, have.String()))
		return nil
	}
	sec := &scrubber{}
	if err := c.raiseQuota(ctx, &pv, uint64(want.Value()), sec); err != nil {
		return fail(sec.scrub(err))
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur corev1.PersistentVolume
		if err := c.api.Get(ctx, types.NamespacedName{Name: pv.Name}, &cur); err != nil {
			return err
		}
		if q := cur.Spec.Capacity[corev1.ResourceStorage]; q.Cmp(want) >= 0 {
			return nil
		}
		cur.Spec.Capacity[corev1.ResourceStorage] = want
		return c.client.Update(ctx, &cur)
	})
	if err != nil {
		return fail(fmt.Errorf("the quota is raised to %s but PersistentVolume %s's capacity could not be updated (retrying): %w", want.String(), pv.Name, err))
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur corev1.PersistentVolumeClaim
		if err := c.api.Get(ctx, types.NamespacedName{Namespace: pvc.Namespace, Name: pvc.Name}, &cur); err != nil {
			return err
		}
		if cur.UID != pvc.UID {
			return nil
		}
		if cur.Status.Capacity == nil {
			cur.Status.Capacity = corev1.ResourceList{}
		}
		cur.Status.Capacity[corev1.ResourceStorage] = want
		if cur.Status.AllocatedResources != nil {
			cur.Status.AllocatedResources[corev1.ResourceStorage] = want
		}
		delete(cur.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
		var keep []corev1.PersistentVolumeClaimCondition
		for _, cond := range cur.Status.Conditions {
			switch cond.Type {
			case corev1.PersistentVolumeClaimResizing, corev1.PersistentVolumeClaimFileSystemResizePending,
				corev1.PersistentVolumeClaimControllerResizeError, corev1.PersistentVolumeClaimNodeResizeError:
				continue
			}
			keep = append(keep, cond)
		}
		cur.Status.Conditions = keep
		return c.client.Status().Update(ctx, &cur)
	})
	if err != nil {
		return fail(fmt.Errorf("the quota and PersistentVolume %s are at %s but the claim's status could not be updated (retrying): %w", pv.Name, want.String(), err))
	}
	c.log.Info("expanded", "claim", pvc.Namespace+"/"+pvc.Name, "from", have.String(), "to", want.String())
	c.events.Eventf(pvc, corev1.EventTypeNormal, ReasonResizeSucceeded, "podfs raised the quota of volume %s from %s to %s", pv.Name, have.String(), want.String())
	return nil
}

// raiseQuota sets the quota of a PV's directory.
func (c *Controller) raiseQuota(ctx context.Context, pv *corev1.PersistentVolume, maxBytes uint64, sec *scrubber) error {
	m, dirPath, err := c.volumeOf(ctx, pv, sec)
	if err != nil {
		return err
	}
	ino, err := lookupPath(ctx, m, dirPath)
	if err != nil {
		return fmt.Errorf("find the volume's directory %q: %w", dirPath, err)
	}
	owner, err := ownerOf(ctx, m, ino)
	if err != nil {
		return err
	}
	if owner != string(pv.Spec.ClaimRef.UID) {
		return fmt.Errorf("%w: directory %q is marked for claim %q, not this one: its quota was left alone", errCollision, dirPath, owner)
	}
	if err := c.opts.Quotas(m).SetQuota(ctx, ino, maxBytes, 0); err != nil {
		return fmt.Errorf("set the quota of %q to %d bytes: %w", dirPath, maxBytes, err)
	}
	return nil
}

// volumeOf connects to a provisioned PV's volume through the provisioner
// Secret its annotations name, and returns its directory.
func (c *Controller) volumeOf(ctx context.Context, pv *corev1.PersistentVolume, sec *scrubber) (meta.Meta, string, error) {
	ref := secretRef{Namespace: pv.Annotations[AnnDeletionSecretNamespace], Name: pv.Annotations[AnnDeletionSecretName]}
	if ref.Name == "" || ref.Namespace == "" {
		return nil, "", fmt.Errorf("PersistentVolume %s lacks the annotations %s and %s naming its provisioner Secret: add them back", pv.Name, AnnDeletionSecretNamespace, AnnDeletionSecretName)
	}
	dirPath := pv.Spec.CSI.VolumeAttributes[AttrSubDir]
	if err := checkSegments(dirPath); err != nil {
		return nil, "", fmt.Errorf("PersistentVolume %s: volumeAttributes %s=%q: %w", pv.Name, AttrSubDir, dirPath, err)
	}
	vsec, err := c.volumeSecret(ctx, ref, "PersistentVolume "+pv.Name, sec)
	if err != nil {
		return nil, "", err
	}
	vsec.Format = nil // a provisioned volume exists
	m, _, err := c.vols.get(ctx, vsec)
	if err != nil {
		return nil, "", err
	}
	return m, dirPath, nil
}
