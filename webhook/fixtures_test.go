package webhook

import (
	"context"
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"podfs.io/podfs/sidecar/volumeset"
)

// memLookup is an in-memory Lookup for the pure mutation tests; the envtest
// tests use the informer-backed one against a real API server.
type memLookup struct {
	pvcs    map[string]*corev1.PersistentVolumeClaim // ns/name
	pvs     map[string]*corev1.PersistentVolume
	classes map[string]*storagev1.StorageClass
}

func (m *memLookup) PVC(_ context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	if p, ok := m.pvcs[ns+"/"+name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "persistentvolumeclaims"}, name)
}

func (m *memLookup) PV(_ context.Context, name string) (*corev1.PersistentVolume, error) {
	if p, ok := m.pvs[name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "persistentvolumes"}, name)
}

func (m *memLookup) StorageClass(_ context.Context, name string) (*storagev1.StorageClass, error) {
	if p, ok := m.classes[name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: "storage.k8s.io", Resource: "storageclasses"}, name)
}

// testPV is a podfs PV with the given attributes.
func testPV(name string, attrs map[string]string, secret *corev1.SecretReference) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: volumeset.DriverName, VolumeHandle: name, VolumeAttributes: attrs, NodePublishSecretRef: secret}},
			StorageClassName: "",
		},
	}
}

func testPVC(ns, name, pv, class string, labels map[string]string) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}},
			VolumeName:  pv,
		},
	}
	c.Spec.StorageClassName = &class
	if pv != "" {
		c.Status.Phase = corev1.ClaimBound
	} else {
		c.Status.Phase = corev1.ClaimPending
	}
	return c
}

// fixtureLookup is the world the table tests run in (namespace "apps").
func fixtureLookup() *memLookup {
	m := &memLookup{pvcs: map[string]*corev1.PersistentVolumeClaim{}, pvs: map[string]*corev1.PersistentVolume{}, classes: map[string]*storagev1.StorageClass{}}
	add := func(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) {
		m.pvcs[pvc.Namespace+"/"+pvc.Name] = pvc
		if pv != nil {
			m.pvs[pv.Name] = pv
		}
	}
	add(testPVC("apps", "shared", "pv-shared", "", nil), testPV("pv-shared", map[string]string{AttrMetaURL: "tikv://pd:2379/shared", AttrStorageURL: "rados://data?conf=/etc/ceph/ceph.conf", AttrSubDir: "team-a"}, nil))
	add(testPVC("apps", "models", "pv-models", "podfs-seqread", map[string]string{"podfs.io/profile": "seqread"}),
		testPV("pv-models", map[string]string{AttrMetaURLSecretKey: "meta", AttrStorageURLSecret: "storage", AttrMountOptions: "attr_timeout=10s"}, &corev1.SecretReference{Namespace: "apps", Name: "podfs-creds"}))
	add(testPVC("apps", "cross-ns", "pv-cross", "", nil), testPV("pv-cross", map[string]string{AttrMetaURLSecretKey: "meta"}, &corev1.SecretReference{Namespace: "kube-system", Name: "creds"}))
	add(testPVC("apps", "no-meta", "pv-nometa", "", nil), testPV("pv-nometa", map[string]string{}, nil))
	add(testPVC("apps", "bad-subdir", "pv-badsub", "", nil), testPV("pv-badsub", map[string]string{AttrMetaURL: "bolt:///m.db", AttrSubDir: "../etc"}, nil))
	add(testPVC("apps", "bad-opts", "pv-badopts", "", nil), testPV("pv-badopts", map[string]string{AttrMetaURL: "bolt:///m.db", AttrMountOptions: "allow_other,max_readahead=1M"}, nil))
	add(testPVC("apps", "pending", "", "podfs", nil), nil)
	add(testPVC("apps", "local-wffc", "", "local-path", nil), nil)
	ebs := testPV("pv-ebs", nil, nil)
	ebs.Spec.CSI.Driver = "ebs.csi.aws.com"
	add(testPVC("apps", "ebs", "pv-ebs", "gp3", nil), ebs)
	add(testPVC("apps", "dangling", "pv-gone", "", nil), nil)
	for _, c := range []string{"cached", "cached-b", "bad-cache"} {
		class := map[string]string{"cached": "podfs-cached", "cached-b": "podfs-cached-b", "bad-cache": "podfs-badcache"}[c]
		add(testPVC("apps", c, "pv-"+c, class, nil), testPV("pv-"+c, map[string]string{AttrMetaURL: "tikv://pd:2379/" + c}, nil))
	}
	for i := range 3 {
		n := "data-web-" + string(rune('0'+i))
		add(testPVC("apps", n, "pv-"+n, "", nil), testPV("pv-"+n, map[string]string{AttrMetaURL: "bolt:///var/lib/podfs/" + n + ".db"}, nil))
	}
	m.classes["podfs"] = &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "podfs"}, Provisioner: volumeset.DriverName}
	m.classes["podfs-seqread"] = &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "podfs-seqread"}, Provisioner: volumeset.DriverName}
	m.classes["local-path"] = &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-path"}, Provisioner: "rancher.io/local-path"}
	return m
}

// fixtureConfig has a default and one patch for the seqread class.
func fixtureConfig(t testing.TB) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(`
image: podfs:test
imagePullSecrets: [{name: podfs-pull}]
resources:
  requests: {cpu: 100m, memory: 128Mi}
  limits: {memory: 1Gi}
mountOptions: [allow_other]
env: [{name: PODFS_LOG, value: info}]
cache: {cacheSize: 256Mi}
patches:
- name: seqread
  pvcSelector: {matchLabels: {podfs.io/profile: seqread}}
  mountOptions: [attr_timeout=60s, entry_timeout=60s]
  imagePullSecrets: [{name: podfs-pull}, {name: seqread-pull}]
  resources: {limits: {memory: 4Gi}}
  cache: {readahead: 256Mi}
- name: cached
  storageClassNames: [podfs-cached]
  cache: {cacheDir: /var/cache/podfs, cacheDirSize: 2Gi}
- name: cached-b
  storageClassNames: [podfs-cached-b]
  cache: {cacheDir: /var/cache/podfs-b}
- name: bad-cache
  storageClassNames: [podfs-badcache]
  cache: {cacheDir: /run/podfs/cache}
cacheVolumeSizeLimit: 3Gi
`), "unused")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// applyOps applies ops to pod and returns the patched pod; a patch that does
// not apply fails the test.
func applyOps(t testing.TB, pod *corev1.Pod, ops []Op) *corev1.Pod {
	t.Helper()
	orig, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	pj, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(pj)
	if err != nil {
		t.Fatalf("decode patch %s: %v", pj, err)
	}
	out, err := p.Apply(orig)
	if err != nil {
		t.Fatalf("patch does not apply: %v\npatch: %s\npod: %s", err, pj, orig)
	}
	var res corev1.Pod
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("patched pod does not decode: %v", err)
	}
	return &res
}
