package csinode

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/sidecar/volumeset"
)

// TestSourceAndClaim publishes a volume of a pod admitted before its claim
// was bound: the sidecar's volume set names the claim, not the PV. The
// plugin finds which pod volume the PV is, tells the sidecar through the
// claims directory, and hands over where the volume lives (the URL from the
// Secret kubelet passed) with the connection; nothing of it reaches the disk
// of the state directory.
func TestSourceAndClaim(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "scratch-claim", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			VolumeName:  "pvc-late",
		},
	}
	if _, err := testKube(t).client.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	set := volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: true, Volumes: []volumeset.Volume{
		{Name: "known", Handoff: "pv-known"},
		{Name: "other", Claim: "not-created"},
		{Name: "scratch", Claim: "scratch-claim"},
	}}
	js, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	pod := createPodWith(t, true, nil, func(p *corev1.Pod) {
		p.Spec.InitContainers[0].Env = []corev1.EnvVar{{Name: volumeset.EnvVar, Value: string(js)}}
	})

	const secretURL = "bolt:///var/lib/podfs-test/from-secret.db?password=hunter2"
	target := e.target(t, string(pod.UID), "pvc-late")
	req := publishRequest(pod, target, false)
	delete(req.VolumeContext, AttrMetaURL)
	req.VolumeContext[volumeset.AttrMetaURLSecretKey] = "metaURL"
	req.VolumeContext[volumeset.AttrSubDir] = "/default/scratch-claim/"
	req.VolumeCapability.GetMount().MountFlags = []string{"attr_timeout=2s"}
	req.Secrets = map[string]string{"metaURL": secretURL + "\n"}
	e.publish(t, req)
	defer e.unpublish(t, target)

	dir := e.handoffDir(pod)
	pv, err := os.ReadFile(filepath.Join(dir, "claims", "scratch"))
	if err != nil || string(pv) != "pvc-late" {
		t.Fatalf("claims file of pod volume scratch: %q, %v; want the PV name pvc-late", pv, err)
	}
	h, err := fuseconn.Dial(ctx, dir, "pvc-late", nil)
	if err != nil {
		t.Fatal(err)
	}
	src := h.Volume.Source
	h.Close()
	if src == nil {
		t.Fatal("the connection came without the volume's source")
	}
	want := fuseconn.Source{PodVolume: "scratch", MetaURL: secretURL, SubDir: "default/scratch-claim", Options: []string{"attr_timeout=2s"}}
	if src.PodVolume != want.PodVolume || src.MetaURL != want.MetaURL || src.SubDir != want.SubDir || !slices.Equal(src.Options, want.Options) {
		t.Errorf("source %+v, want %+v", *src, want)
	}
	// The state directory must not keep the credentials.
	ents, err := os.ReadDir(e.drv.cfg.StateDir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("state directory: %v, %d records", err, len(ents))
	}
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(e.drv.cfg.StateDir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "from-secret") {
			t.Errorf("publication record %s keeps the volume's URL: %s", ent.Name(), b)
		}
	}

	// A PV the sidecar was not injected for is refused, not guessed.
	stray := e.target(t, string(pod.UID), "pv-stray")
	if _, err := e.node.NodePublishVolume(ctx, publishRequest(pod, stray, false)); err == nil {
		e.unpublish(t, stray)
		t.Fatal("a volume the sidecar does not know was published")
	}
}
