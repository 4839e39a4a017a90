package provisioner

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
)

// TestProvision runs the controller against a real API server and real
// bolt volumes: what it makes for good claims and refuses for bad ones.
func TestProvision(t *testing.T) {
	w := newWorld(t)
	w.start()
	t.Run("create", func(t *testing.T) { w.t = t; testCreate(w) })
	t.Run("retry after a missing Secret", func(t *testing.T) { w.t = t; testRetry(w) })
	t.Run("bad parameters", func(t *testing.T) { w.t = t; testBad(w) })
	t.Run("wait for first consumer", func(t *testing.T) { w.t = t; testWaitForConsumer(w) })
	t.Run("class created after the claim", func(t *testing.T) { w.t = t; testLateClass(w) })
	t.Run("PV refused, directory taken back", func(t *testing.T) { w.t = t; testRollback(w) })
}

func testCreate(w *world) {
	t := w.t
	v := w.newVolume()
	w.namespace("create", v)
	w.class("podfs-create", nil, func(sc *storagev1.StorageClass) { sc.MountOptions = []string{"allow_other"} })
	modes := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany, corev1.ReadOnlyMany, corev1.ReadWriteOnce, corev1.ReadWriteOncePod}
	var claims []*corev1.PersistentVolumeClaim
	for i, mode := range modes {
		claims = append(claims, w.claim("create", fmt.Sprintf("data-%d", i), "podfs-create", "2Gi", mode, nil))
	}
	w.waitPV(claims[0])
	m := w.meta(v) // formatted by the controller
	f, err := m.Load(w.ctx)
	must(t, err)
	for i, pvc := range claims {
		pv := w.waitPV(pvc)
		dir := "create/" + pvc.Name
		wantAttrs := map[string]string{AttrMetaURLSecretKey: KeyMetaURL, AttrStorageURLSecret: KeyStorageURL, AttrSubDir: dir}
		size := pv.Spec.Capacity[corev1.ResourceStorage]
		switch {
		case pv.Annotations[AnnProvisionedBy] != DriverName:
			t.Errorf("%s: annotations %v", pv.Name, pv.Annotations)
		case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != pvc.UID || pv.Spec.ClaimRef.Name != pvc.Name || pv.Spec.ClaimRef.Namespace != "create":
			t.Errorf("%s: claimRef %+v", pv.Name, pv.Spec.ClaimRef)
		case size.Cmp(resource.MustParse("2Gi")) != 0:
			t.Errorf("%s: capacity %s", pv.Name, size.String())
		case !slices.Equal(pv.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{modes[i]}):
			t.Errorf("%s: access modes %v, want %v", pv.Name, pv.Spec.AccessModes, modes[i])
		case pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.StorageClassName != "podfs-create":
			t.Errorf("%s: reclaim %s class %s", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Spec.StorageClassName)
		case !slices.Equal(pv.Spec.MountOptions, []string{"allow_other"}):
			t.Errorf("%s: mount options %v", pv.Name, pv.Spec.MountOptions)
		case !slices.Contains(pv.Finalizers, Finalizer):
			t.Errorf("%s: finalizers %v", pv.Name, pv.Finalizers)
		case pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName || pv.Spec.CSI.VolumeHandle != f.UUID+":"+dir:
			t.Errorf("%s: csi %+v (volume %s)", pv.Name, pv.Spec.CSI, f.UUID)
		case !maps.Equal(pv.Spec.CSI.VolumeAttributes, wantAttrs):
			t.Errorf("%s: volumeAttributes %v, want %v", pv.Name, pv.Spec.CSI.VolumeAttributes, wantAttrs)
		case pv.Spec.CSI.NodePublishSecretRef == nil || *pv.Spec.CSI.NodePublishSecretRef != (corev1.SecretReference{Namespace: "create", Name: "podfs"}):
			t.Errorf("%s: nodePublishSecretRef %+v", pv.Name, pv.Spec.CSI.NodePublishSecretRef)
		}
		ino := w.claimDir(m, dir, pvc.UID)
		w.checkQuota(m, ino, 2<<30)
		w.waitEvent("create", pvc.Name, ReasonProvisioningSucceeded)
	}
	// A missing node-publish Secret makes a warning, not a failure.
	w.class("podfs-nonode", map[string]string{ParamNodePublishSecretName: "missing"}, nil)
	nonode := w.claim("create", "nonode", "podfs-nonode", "1Gi", corev1.ReadWriteMany, nil)
	w.waitPV(nonode)
	if msg := w.waitEvent("create", "nonode", ReasonNodeSecretMissing); !strings.Contains(msg, "Secret create/missing") {
		t.Errorf("event %q does not name the missing Secret", msg)
	}
	// A claim of another provisioner's class is left alone.
	must(t, w.c.Create(w.ctx, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Provisioner: "example.com/other"}))
	other := w.claim("create", "other", "other", "1Gi", corev1.ReadWriteOnce, nil)
	// Provisioned after it: the controller saw the other claim first.
	w.waitPV(w.claim("create", "after-other", "podfs-create", "1Gi", corev1.ReadWriteOnce, nil))
	w.noPV(other)
}

// claimDir checks that dir is a claim's directory, marked for uid and open
// to every user, and returns its inode.
func (w *world) claimDir(m meta.Meta, dir string, uid types.UID) meta.Ino {
	w.t.Helper()
	ino, err := lookupPath(w.ctx, m, dir)
	if err != nil {
		w.t.Fatalf("directory %s: %v", dir, err)
	}
	owner, err := ownerOf(w.ctx, m, ino)
	must(w.t, err)
	a, err := m.GetAttr(w.ctx, ino)
	must(w.t, err)
	if owner != string(uid) || a.Mode&0o7777 != claimMode {
		w.t.Errorf("directory %s: owner %q (want %q), mode %o", dir, owner, uid, a.Mode&0o7777)
	}
	return ino
}

func (w *world) noDir(m meta.Meta, dir string) {
	w.t.Helper()
	if _, err := lookupPath(w.ctx, m, dir); !errors.Is(err, syscall.ENOENT) {
		w.t.Errorf("directory %s: %v, want it absent", dir, err)
	}
}

func testRetry(w *world) {
	v := w.newVolume()
	w.namespace("retry", testVolume{})
	w.class("podfs-late", map[string]string{ParamSecretName: "late"}, nil)
	pvc := w.claim("retry", "data", "podfs-late", "1Gi", corev1.ReadWriteMany, nil)
	msg := w.waitEvent("retry", "data", ReasonProvisioningFailed)
	if !strings.Contains(msg, "Secret retry/late") || !strings.Contains(msg, "does not exist: create it") {
		w.t.Errorf("event %q does not name the missing Secret and the fix", msg)
	}
	w.noPV(pvc)
	w.secret("retry", "late", map[string]string{KeyMetaURL: v.metaURL, KeyStorageURL: v.storageURL, KeyFormat: "true", KeyName: "vol"})
	w.waitPV(pvc)
	w.claimDir(w.meta(v), "retry/data", pvc.UID)
}

func testBad(w *world) {
	v := w.newVolume()
	w.namespace("bad", v)
	w.secret("bad", "nometa", map[string]string{KeyStorageURL: v.storageURL})
	w.secret("bad", "unformatted", map[string]string{KeyMetaURL: "bolt://" + w.t.TempDir() + "/none.db"})
	w.secret("bad", "credentials", map[string]string{KeyMetaURL: "etcd://root:hunter22@127.0.0.1:1/v"})
	w.secret("bad", "unreachable", map[string]string{KeyMetaURL: "etcd://127.0.0.1:1/v", KeyStorageURL: "rados://pool?mon_host=127.0.0.1:1&key=AQBhunter22"})
	m := w.format(v)
	_, err := mkdirAll(w.ctx, m, "bad/collide")
	must(w.t, err)
	block := corev1.PersistentVolumeBlock
	for i, tc := range []struct {
		name   string
		params map[string]string
		claim  func(*corev1.PersistentVolumeClaim)
		want   []string
	}{
		{"unknown parameter", map[string]string{"fsType": "ext4"}, nil, []string{"unknown parameters fsType"}},
		{"colliding pattern", map[string]string{ParamPathPattern: "${pvc.metadata.name}"}, nil, []string{"same directory", "${pvc.metadata.uid}"}},
		{"escaping pattern", map[string]string{ParamPathPattern: "../${pvc.metadata.uid}"}, nil, []string{`".." segment`}},
		{"annotation with a slash", map[string]string{ParamPathPattern: "${pvc.metadata.annotations['dir']}/${pvc.metadata.uid}"},
			func(p *corev1.PersistentVolumeClaim) { p.Annotations = map[string]string{"dir": "a/b"} }, []string{"contains '/'"}},
		{"bad onDelete", map[string]string{ParamOnDelete: "shred"}, nil, []string{"use delete, retain or archive"}},
		{"Secret without metaURL", map[string]string{ParamSecretName: "nometa"}, nil, []string{"Secret bad/nometa has no key metaURL"}},
		{"unformatted volume", map[string]string{ParamSecretName: "unformatted"}, nil, []string{"no volume at", "format"}},
		{"credentials in the URL", map[string]string{ParamSecretName: "credentials"}, nil, []string{"cannot reach the volume's metadata at etcd://root:REDACTED@127.0.0.1:1/v"}},
		{"unreachable metadata", map[string]string{ParamSecretName: "unreachable"}, nil, []string{"cannot reach the volume's metadata at etcd://127.0.0.1:1/v", "reachable from the controller"}},
		{"block volume", nil, func(p *corev1.PersistentVolumeClaim) { p.Spec.VolumeMode = &block }, []string{"volumeMode Block is not supported"}},
		{"selector", nil, func(p *corev1.PersistentVolumeClaim) {
			p.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}
		}, []string{"spec.selector", "remove the selector"}},
		{"path collision", nil, nil, []string{"path collision", `"bad/collide" already exists`, "pathPattern"}},
	} {
		class := fmt.Sprintf("bad-%d", i)
		w.class(class, tc.params, nil)
		name := fmt.Sprintf("claim-%d", i)
		if tc.name == "path collision" {
			name = "collide"
		}
		pvc := w.claim("bad", name, class, "1Gi", corev1.ReadWriteMany, tc.claim)
		msg := w.waitEvent("bad", name, ReasonProvisioningFailed)
		for _, want := range tc.want {
			if !strings.Contains(msg, want) {
				w.t.Errorf("%s: event %q lacks %q", tc.name, msg, want)
			}
		}
		if strings.Contains(msg, "hunter22") {
			w.t.Errorf("%s: event %q shows a password", tc.name, msg)
		}
		w.noPV(pvc)
		if tc.name != "path collision" {
			w.noDir(m, "bad/"+name)
		} else if ino, err := lookupPath(w.ctx, m, "bad/collide"); err != nil {
			w.t.Errorf("the colliding directory is gone: %v", err)
		} else if owner, _ := ownerOf(w.ctx, m, ino); owner != "" {
			w.t.Errorf("the colliding directory was marked for %q", owner)
		}
	}
	ents, err := m.Readdir(w.ctx, w.dirIno(m, "bad"), "", 100)
	must(w.t, err)
	for _, e := range ents {
		if strings.HasPrefix(e.Name, tmpPrefix) {
			w.t.Errorf("left behind: bad/%s", e.Name)
		}
	}
	if strings.Contains(w.logs.String(), "hunter22") {
		w.t.Error("the log shows a password")
	}
}

func (w *world) dirIno(m meta.Meta, dir string) meta.Ino {
	w.t.Helper()
	ino, err := lookupPath(w.ctx, m, dir)
	must(w.t, err)
	return ino
}

func testWaitForConsumer(w *world) {
	w.namespace("wffc", w.newVolume())
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	w.class("podfs-wffc", nil, func(sc *storagev1.StorageClass) { sc.VolumeBindingMode = &wffc })
	pvc := w.claim("wffc", "data", "podfs-wffc", "1Gi", corev1.ReadWriteOnce, nil)
	w.waitLog("waiting for the first consumer", "wffc/data")
	w.noPV(pvc)
	must(w.t, w.c.Get(w.ctx, types.NamespacedName{Namespace: "wffc", Name: "data"}, pvc))
	pvc.Annotations = map[string]string{AnnSelectedNode: "node-1"}
	must(w.t, w.c.Update(w.ctx, pvc))
	w.waitPV(pvc)
}

// testRollback makes the API server refuse the PV (a validating admission
// policy): the attempt's directory must go, and come back once allowed.
func testRollback(w *world) {
	v := w.newVolume()
	w.namespace("rollback", v)
	w.class("podfs-rollback", nil, nil)
	deny := admissionregistrationv1.Deny
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-rollback-pv"},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"persistentvolumes"}},
				}}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "!has(object.spec.claimRef) || object.spec.claimRef.namespace != 'rollback'",
				Message:    "test: no PVs for namespace rollback"}},
		},
	}
	must(w.t, w.c.Create(w.ctx, policy))
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "no-rollback-pv"},
		Spec:       admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name, ValidationActions: []admissionregistrationv1.ValidationAction{deny}},
	}
	must(w.t, w.c.Create(w.ctx, binding))
	// The API server loads policies in the background: wait until it denies.
	probe := &corev1.PersistentVolume{}
	testenv.Poll(w.t, "the policy to deny PVs", 30e9, func() error {
		probe = &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"}, Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			ClaimRef:               &corev1.ObjectReference{Namespace: "rollback", Name: "probe"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "probe.example.com", VolumeHandle: "x"}},
		}}
		err := w.c.Create(w.ctx, probe)
		if err == nil {
			_ = w.c.Delete(w.ctx, probe)
			return errors.New("a PV was admitted")
		}
		if !strings.Contains(err.Error(), "no PVs for namespace rollback") {
			return err
		}
		return nil
	})
	pvc := w.claim("rollback", "data", "podfs-rollback", "1Gi", corev1.ReadWriteMany, nil)
	msg := w.waitEvent("rollback", "data", ReasonProvisioningFailed)
	if !strings.Contains(msg, "create PersistentVolume "+PVName(pvc)) || !strings.Contains(msg, "no PVs for namespace rollback") {
		w.t.Errorf("event %q does not say the PV was refused and why", msg)
	}
	// The directory the attempt made is gone again (checked with the
	// controller stopped, so that no retry is half-way).
	w.stop()
	m := w.meta(v)
	w.noDir(m, "rollback/data")
	w.noPV(pvc)
	must(w.t, w.c.Delete(w.ctx, binding))
	w.start()
	w.waitPV(pvc)
	w.claimDir(m, "rollback/data", pvc.UID)
}

// testLateClass: a claim whose class does not exist yet is provisioned
// once the class appears (the class watch enqueues it; no retry is pending).
func testLateClass(w *world) {
	v := w.newVolume()
	w.namespace("late", v)
	pvc := w.claim("late", "data", "podfs-late-class", "1Gi", corev1.ReadWriteMany, nil)
	w.waitLog("class is not found", "podfs-late-class") // the controller looked
	w.noPV(pvc)
	w.class("podfs-late-class", nil, nil)
	w.waitPV(pvc)
	w.claimDir(w.meta(v), "late/data", pvc.UID)
}
