package provisioner

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
)

// TestDeleteAndExpand releases and expands provisioned volumes, doing by
// hand what kube-controller-manager's PV controller (absent from envtest)
// does: mark a PV Released, bind a claim.
func TestDeleteAndExpand(t *testing.T) {
	w := newWorld(t)
	w.start()
	for _, mode := range []string{OnDeleteDelete, OnDeleteRetain, OnDeleteArchive} {
		t.Run("onDelete "+mode, func(t *testing.T) { w.t = t; testOnDelete(w, mode) })
	}
	t.Run("delete retried", func(t *testing.T) { w.t = t; testDeleteRetry(w) })
	t.Run("expand", func(t *testing.T) { w.t = t; testExpand(w) })
	t.Run("expand retried", func(t *testing.T) { w.t = t; testExpandRetry(w) })
}

// provisioned makes a namespace, class and claim and waits for its PV.
func (w *world) provisioned(ns, class string, params map[string]string, edit func(*storagev1.StorageClass)) (meta.Meta, *corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	w.t.Helper()
	v := w.newVolume()
	w.namespace(ns, v)
	w.class(class, params, edit)
	pvc := w.claim(ns, "data", class, "1Gi", corev1.ReadWriteMany, nil)
	pv := w.waitPV(pvc)
	return w.meta(v), pvc, pv
}

// fill puts a file and a sub-directory with a file into dir.
func (w *world) fill(m meta.Meta, dir string) {
	w.t.Helper()
	ino := w.dirIno(m, dir)
	sub, _, err := m.Mkdir(w.ctx, ino, "sub", 0o755, 0, 0)
	must(w.t, err)
	for _, parent := range []meta.Ino{ino, sub} {
		f, _, err := m.Create(w.ctx, parent, "file", 0o644, 0, 0, 0)
		must(w.t, err)
		must(w.t, m.Release(w.ctx, f))
	}
}

// release deletes the claim and marks its PV Released.
func (w *world) release(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) {
	w.t.Helper()
	must(w.t, w.c.Delete(w.ctx, pvc))
	// Without kube-controller-manager nobody removes pvc-protection.
	testenv.Poll(w.t, "claim "+pvc.Name+" gone", 30e9, func() error {
		var cur corev1.PersistentVolumeClaim
		err := w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc), &cur)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		cur.Finalizers = nil
		_ = w.c.Update(w.ctx, &cur)
		return fmt.Errorf("still there")
	})
	must(w.t, w.c.Get(w.ctx, types.NamespacedName{Name: pv.Name}, pv))
	pv.Status.Phase = corev1.VolumeReleased
	must(w.t, w.c.Status().Update(w.ctx, pv))
}

// waitPVDeleted waits until the PV is gone or only others' finalizers
// (pv-protection) hold it.
func (w *world) waitPVDeleted(name string) {
	w.t.Helper()
	testenv.Poll(w.t, "PV "+name+" deleted", 30e9, func() error {
		var pv corev1.PersistentVolume
		err := w.c.Get(w.ctx, types.NamespacedName{Name: name}, &pv)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if pv.DeletionTimestamp != nil && !slices.Contains(pv.Finalizers, Finalizer) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v)", pv.Finalizers)
	})
}

func testOnDelete(w *world, mode string) {
	ns := "del-" + mode
	m, pvc, pv := w.provisioned(ns, "podfs-"+ns, map[string]string{ParamOnDelete: mode}, nil)
	dir := ns + "/data"
	w.fill(m, dir)
	w.release(pvc, pv)
	w.waitPVDeleted(pv.Name)
	archived := ".podfs-archive/" + dir + "-20261206T103000Z"
	switch mode {
	case OnDeleteDelete:
		w.noDir(m, dir)
		w.noDir(m, archived)
		w.dirIno(m, ns) // the parent stays: other claims may share it
	case OnDeleteRetain:
		w.claimDir(m, dir, pvc.UID)
		w.dirIno(m, dir+"/sub")
	case OnDeleteArchive:
		w.noDir(m, dir)
		w.claimDir(m, archived, pvc.UID)
		w.dirIno(m, archived+"/sub")
	}
}

// testDeleteRetry: with its Secret gone the directory cannot be reached;
// the PV stays with an event saying so until the Secret is back.
func testDeleteRetry(w *world) {
	ns := "del-retry"
	m, pvc, pv := w.provisioned(ns, "podfs-"+ns, nil, nil)
	var secret corev1.Secret
	must(w.t, w.c.Get(w.ctx, types.NamespacedName{Namespace: ns, Name: "podfs"}, &secret))
	must(w.t, w.c.Delete(w.ctx, &secret))
	w.release(pvc, pv)
	msg := w.waitEvent("", pv.Name, ReasonDeleteFailed)
	if !strings.Contains(msg, "Secret "+ns+"/podfs") || !strings.Contains(msg, "does not exist") {
		w.t.Errorf("event %q does not name the missing Secret", msg)
	}
	var cur corev1.PersistentVolume
	must(w.t, w.c.Get(w.ctx, types.NamespacedName{Name: pv.Name}, &cur))
	if cur.DeletionTimestamp != nil || !slices.Contains(cur.Finalizers, Finalizer) {
		w.t.Errorf("the PV was let go while its directory could not be deleted: %+v", cur.ObjectMeta)
	}
	w.claimDir(m, ns+"/data", pvc.UID)
	secret.ResourceVersion = ""
	must(w.t, w.c.Create(w.ctx, &secret))
	w.waitPVDeleted(pv.Name)
	w.noDir(m, ns+"/data")
}

func testExpand(w *world) {
	ns := "expand"
	allow := true
	m, pvc, pv := w.provisioned(ns, "podfs-expand", nil, func(sc *storagev1.StorageClass) { sc.AllowVolumeExpansion = &allow })
	dirIno := w.dirIno(m, ns+"/data")
	w.bind(pvc, pv)
	must(w.t, w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc), pvc))
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("3Gi")
	must(w.t, w.c.Update(w.ctx, pvc))
	want := resource.MustParse("3Gi")
	testenv.Poll(w.t, "expansion", 30e9, func() error {
		must(w.t, w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc), pvc))
		must(w.t, w.c.Get(w.ctx, types.NamespacedName{Name: pv.Name}, pv))
		got, cap := pvc.Status.Capacity[corev1.ResourceStorage], pv.Spec.Capacity[corev1.ResourceStorage]
		if got.Cmp(want) != 0 || cap.Cmp(want) != 0 {
			return fmt.Errorf("claim status %s, PV %s", got.String(), cap.String())
		}
		return nil
	})
	w.checkQuota(m, dirIno, 3<<30)
	w.waitEvent(ns, "data", ReasonResizeSucceeded)
	// Shrinking is the API server's to refuse (below status.capacity).
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("2Gi")
	err := w.c.Update(w.ctx, pvc)
	w.t.Logf("shrink: %v", err)
	if err == nil || !strings.Contains(err.Error(), "less than") {
		w.t.Errorf("shrinking the claim: %v, want the API server's refusal", err)
	}
	// So is expanding in a class that does not allow it.
	deny := false
	_, pvc2, pv2 := w.provisioned("expand-no", "podfs-expand-no", nil, func(sc *storagev1.StorageClass) { sc.AllowVolumeExpansion = &deny })
	w.bind(pvc2, pv2)
	must(w.t, w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc2), pvc2))
	pvc2.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("3Gi")
	err = w.c.Update(w.ctx, pvc2)
	w.t.Logf("expand without allowVolumeExpansion: %v", err)
	if err == nil || !strings.Contains(err.Error(), "only dynamically provisioned pvc can be resized") && !strings.Contains(err.Error(), "allowVolumeExpansion") {
		w.t.Errorf("expanding in a class without allowVolumeExpansion: %v, want the API server's refusal", err)
	}
}

// bind does the PV controller's part: the claim names its PV, is Bound
// and has the PV's capacity.
func (w *world) bind(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) {
	w.t.Helper()
	must(w.t, w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc), pvc))
	pvc.Spec.VolumeName = pv.Name
	must(w.t, w.c.Update(w.ctx, pvc))
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.AccessModes = pv.Spec.AccessModes
	pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: pv.Spec.Capacity[corev1.ResourceStorage]}
	must(w.t, w.c.Status().Update(w.ctx, pvc))
}

// testExpandRetry: an expansion that cannot reach the volume (its Secret
// gone) leaves the claim as it was, with an event, and completes once the
// Secret is back.
func testExpandRetry(w *world) {
	ns := "expand-retry"
	allow := true
	m, pvc, pv := w.provisioned(ns, "podfs-"+ns, nil, func(sc *storagev1.StorageClass) { sc.AllowVolumeExpansion = &allow })
	dirIno := w.dirIno(m, ns+"/data")
	w.bind(pvc, pv)
	var secret corev1.Secret
	must(w.t, w.c.Get(w.ctx, types.NamespacedName{Namespace: ns, Name: "podfs"}, &secret))
	must(w.t, w.c.Delete(w.ctx, &secret))
	must(w.t, w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc), pvc))
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("2Gi")
	must(w.t, w.c.Update(w.ctx, pvc))
	msg := w.waitEvent(ns, "data", ReasonResizeFailed)
	if !strings.Contains(msg, "Secret "+ns+"/podfs") || !strings.Contains(msg, "does not exist") {
		w.t.Errorf("event %q does not name the missing Secret", msg)
	}
	must(w.t, w.c.Get(w.ctx, types.NamespacedName{Name: pv.Name}, pv))
	must(w.t, w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc), pvc))
	one := resource.MustParse("1Gi")
	if got, cap := pvc.Status.Capacity[corev1.ResourceStorage], pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(one) != 0 || cap.Cmp(one) != 0 {
		w.t.Errorf("a failed expansion changed the claim (%s) or the PV (%s)", got.String(), cap.String())
	}
	secret.ResourceVersion = ""
	must(w.t, w.c.Create(w.ctx, &secret))
	two := resource.MustParse("2Gi")
	testenv.Poll(w.t, "expansion after the Secret is back", 30e9, func() error {
		must(w.t, w.c.Get(w.ctx, client.ObjectKeyFromObject(pvc), pvc))
		if got := pvc.Status.Capacity[corev1.ResourceStorage]; got.Cmp(two) != 0 {
			return fmt.Errorf("claim status %s", got.String())
		}
		return nil
	})
	w.checkQuota(m, dirIno, 2<<30)
}
