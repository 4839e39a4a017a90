package webhook

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestConfigCacheVolume: the cache's volume source may be an emptyDir or a
// generic ephemeral volume, and the injected pod gets exactly it; anything
// else (node storage above all) is refused with a message saying what is
// allowed.
func TestConfigCacheVolume(t *testing.T) {
	base := "image: podfs:test\ncache: {cacheDir: /var/cache/podfs}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"hostPath", "cacheVolume: {hostPath: {path: /var/cache}}", "no hostPath"},
		{"two sources", "cacheVolume: {emptyDir: {}, ephemeral: {volumeClaimTemplate: {spec: {}}}}", "exactly one of emptyDir or ephemeral"},
		{"ephemeral without template", "cacheVolume: {ephemeral: {}}", "with a volumeClaimTemplate"},
		{"secret", "cacheVolume: {secret: {secretName: x}}", "exactly one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(base+tc.yaml), "test")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig: %v, want an error saying %q", err, tc.want)
			}
		})
	}

	cfg, err := ParseConfig([]byte(base+`cacheVolume:
  ephemeral:
    volumeClaimTemplate:
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: local-ssd
        resources: {requests: {storage: 20Gi}}
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := Mutate(context.Background(), fixtureLookup(), Input{Pod: pod(nil), Namespace: "apps", Native: true, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	got := applyOps(t, pod(nil), ops)
	var cache *corev1.Volume
	for i := range got.Spec.Volumes {
		if got.Spec.Volumes[i].Name == cacheVolumeName {
			cache = &got.Spec.Volumes[i]
		}
	}
	if cache == nil || cache.Ephemeral == nil || cache.EmptyDir != nil ||
		*cache.Ephemeral.VolumeClaimTemplate.Spec.StorageClassName != "local-ssd" {
		t.Fatalf("cache volume %+v, want the configured ephemeral volume", cache)
	}
}
