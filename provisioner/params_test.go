package provisioner

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podfs.io/podfs/webhook"
)

// The PV attributes must be the ones the webhook reads.
func TestAttributeNamesMatchWebhook(t *testing.T) {
	if AttrMetaURLSecretKey != webhook.AttrMetaURLSecretKey || AttrStorageURLSecret != webhook.AttrStorageURLSecret || AttrSubDir != webhook.AttrSubDir {
		t.Fatal("volumeAttributes keys differ from the webhook's")
	}
}

func class(params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "podfs"}, Provisioner: DriverName, Parameters: params}
}

func TestParseClass(t *testing.T) {
	good := map[string]string{
		ParamProvisionerSecretName: "podfs-vol", ParamProvisionerSecretNamespace: "podfs-system",
		ParamNodePublishSecretName: "podfs-vol", ParamNodePublishSecretNamespace: "${pvc.namespace}",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "-" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		params map[string]string
		bad    string
	}{
		{"good", good, ""},
		{"shorthand", map[string]string{ParamSecretName: "s", ParamSecretNamespace: "${pvc.namespace}"}, ""},
		{"archive", with(ParamOnDelete, "archive"), ""},
		{"on delete", with(ParamOnDelete, "shred"), "use delete, retain or archive"},
		{"unknown", with("fsType", "ext4"), "unknown parameters fsType"},
		{"no provisioner secret", with(ParamProvisionerSecretName, "-"), ParamProvisionerSecretName},
		{"no node secret", with(ParamNodePublishSecretNamespace, "-"), ParamNodePublishSecretNamespace},
		{"bad template", with(ParamProvisionerSecretNamespace, "${pvc.name}"), "only ${pvc.namespace}, ${pv.name}"},
		{"bad pattern", with(ParamPathPattern, "${pvc.metadata.name}"), "same directory"},
	} {
		_, err := parseClass(class(tc.params))
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.bad)
		}
	}
	p, err := parseClass(class(good))
	if err != nil {
		t.Fatal(err)
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "data"}}
	ref, err := p.nodePublish.resolve(pvc, "pvc-1")
	if err != nil || ref != (secretRef{Namespace: "apps", Name: "podfs-vol"}) {
		t.Errorf("node-publish secret resolves to %+v, %v", ref, err)
	}
	bad := secretRef{Namespace: "${pvc.namespace}", Name: "${pvc.name}_x"}
	if _, err := bad.resolve(pvc, "pvc-1"); err == nil {
		t.Error("a Secret name with '_' resolved")
	}
}

func TestParseSecret(t *testing.T) {
	sec := func(kv ...string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}, Data: map[string][]byte{}}
		for i := 0; i < len(kv); i += 2 {
			s.Data[kv[i]] = []byte(kv[i+1])
		}
		return s
	}
	if _, err := parseSecret(sec(KeyStorageURL, "file:///x")); err == nil || !strings.Contains(err.Error(), "no key metaURL") {
		t.Errorf("missing metaURL: %v", err)
	}
	if _, err := parseSecret(sec(KeyMetaURL, "etcd://h:2379/v", KeyFormat, "true")); err == nil || !strings.Contains(err.Error(), "name is missing") {
		t.Errorf("format without name: %v", err)
	}
	if _, err := parseSecret(sec(KeyMetaURL, "etcd://h:2379/v", KeyFormat, "yes")); err == nil {
		t.Error("format: yes accepted")
	}
	if _, err := parseSecret(sec(KeyMetaURL, "etcd://h:2379/v", KeyFormat, "true", KeyName, "v")); err == nil || !strings.Contains(err.Error(), "storage URL is required") {
		t.Errorf("format of etcd without storage: %v", err)
	}
	vs, err := parseSecret(sec(KeyMetaURL, "bolt:///d/meta.db", KeyFormat, "true", KeyName, "v", KeyBlockSize, "1Mi", KeyCapacity, "1Ti", KeyInodes, "1000"))
	if err != nil {
		t.Fatal(err)
	}
	if f := vs.Format; f == nil || f.BlockSize != 1<<20 || f.Capacity != 1<<40 || f.Inodes != 1000 || f.Storage != "file:///d/data" {
		t.Errorf("format settings %+v", vs.Format)
	}
}

func TestScrubber(t *testing.T) {
	s := &scrubber{}
	s.add("etcd://root:hunter22@127.0.0.1:2379/v", "rados://pool?key=AQBsecretsecret")
	err := s.scrub(errors.New("dial etcd://root:hunter22@127.0.0.1:2379/v: auth hunter22 failed; rados key AQBsecretsecret"))
	for _, leak := range []string{"hunter22", "AQBsecretsecret"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("%q leaks into %q", leak, err)
		}
	}
	if !strings.Contains(err.Error(), "etcd://root:REDACTED@127.0.0.1:2379/v") {
		t.Errorf("the redacted URL is missing from %q", err)
	}
}
