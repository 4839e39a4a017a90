//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"podfs.io/podfs/internal/testenv"
)

// provisioned is a StorageClass of podfs and what its PVCs live in.
type provisioned struct {
	class   string
	ns      string
	metaURL string
}

// newProvisioned makes a Secret with an unformatted volume's URLs (formatted
// on first use: no `podfs format` by hand) and a StorageClass naming it.
func (e *env) newProvisioned(t *testing.T, ns string) provisioned {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	name := "dyn-" + strings.TrimPrefix(ns, "e2e-")
	p := provisioned{class: "podfs-" + strings.TrimPrefix(ns, "e2e-"), ns: ns,
		metaURL: fmt.Sprintf("etcd://%s/%s", e.etcdAddr, name)}
	// The Secret lives in the release's namespace, not the app's: the
	// kubelet reads it for the CSI node, and it outlives the app namespace
	// (the controller needs it to delete the claims' directories).
	secret := "podfs-volume-" + strings.TrimPrefix(ns, "e2e-")
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: e.releaseNS},
		StringData: map[string]string{
			"metaURL":    p.metaURL,
			"storageURL": testenv.SharedCeph(t).URL("namespace=" + name),
			"format":     "true",
			"name":       name,
		},
	}
	if _, err := e.kc.CoreV1().Secrets(e.releaseNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Secret: %v", err)
	}
	del := corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: p.class},
		Provisioner: driverName,
		Parameters: map[string]string{
			"csi.storage.k8s.io/provisioner-secret-name":       secret,
			"csi.storage.k8s.io/provisioner-secret-namespace":  e.releaseNS,
			"csi.storage.k8s.io/node-publish-secret-name":      secret,
			"csi.storage.k8s.io/node-publish-secret-namespace": e.releaseNS,
			"onDelete": "delete",
		},
		ReclaimPolicy:        &del,
		AllowVolumeExpansion: ptrTo(true),
	}
	if _, err := e.kc.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create StorageClass: %v", err)
	}
	t.Cleanup(func() {
		// Claims first, and their PVs gone (the controller deletes their
		// directories with the Secret), then the class and the Secret.
		bg := context.Background()
		// Pods first: a claim in use is not deleted (pvc-protection).
		zero := int64(0)
		_ = e.kc.CoreV1().Pods(ns).DeleteCollection(bg, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		claims, err := e.kc.CoreV1().PersistentVolumeClaims(ns).List(bg, metav1.ListOptions{})
		if err == nil {
			for _, c := range claims.Items {
				if c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != p.class {
					continue
				}
				_ = e.kc.CoreV1().PersistentVolumeClaims(ns).Delete(bg, c.Name, metav1.DeleteOptions{})
				if c.Spec.VolumeName != "" {
					poll(t, 90*time.Second, "PV "+c.Spec.VolumeName+" deleted", func() (bool, error) {
						_, err := e.kc.CoreV1().PersistentVolumes().Get(bg, c.Spec.VolumeName, metav1.GetOptions{})
						return apierrors.IsNotFound(err), nil
					})
				}
			}
		}
		_ = e.kc.StorageV1().StorageClasses().Delete(bg, p.class, metav1.DeleteOptions{})
		_ = e.kc.CoreV1().Secrets(e.releaseNS).Delete(bg, secret, metav1.DeleteOptions{})
	})
	return p
}

// claim creates a PVC of the class asking for size.
func (e *env) claim(t *testing.T, p provisioned, name, size string) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			StorageClassName: &p.class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	out, err := e.kc.CoreV1().PersistentVolumeClaims(p.ns).Create(ctxT(t, 30*time.Second), pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create PVC %s: %v", name, err)
	}
	return out
}

func (e *env) waitBound(t *testing.T, ns, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	var pvc *corev1.PersistentVolumeClaim
	poll(t, 90*time.Second, "PVC "+ns+"/"+name+" Bound", func() (bool, error) {
		var err error
		pvc, err = e.kc.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && pvc.Status.Phase == corev1.ClaimBound, err
	})
	return pvc
}

// dfBlocks returns the 1K-blocks total and used of path in the pod (df -Pk:
// one line per file system, however long its name).
func (e *env) dfBlocks(t *testing.T, ns, pod, path string) (total, used int64) {
	t.Helper()
	out := e.mustExec(t, ns, pod, "app", "df", "-Pk", path)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 4 {
		t.Fatalf("df -Pk %s: %q", path, out)
	}
	total, err1 := strconv.ParseInt(f[1], 10, 64)
	used, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("df -Pk %s: %q", path, out)
	}
	return total, used
}

// Scenario 14: dynamic provisioning. A StorageClass and a Secret are all a
// user writes: a pod created before its PVC exists starts once the claim
// is bound; each claim is a directory of one shared volume (formatted on
// first use) that its pod alone sees; df shows the claim's size; writing
// past it fails with EDQUOT; expanding the claim shows in df in the running
// pod; deleting the claim deletes its directory.
func (e *env) testDynamicProvisioning(t *testing.T) {
	ns := e.newNamespace(t, "s14", "enabled")
	p := e.newProvisioned(t, ns)

	// The pod first: the webhook cannot know the PV yet.
	a := e.createPod(t, ns, withClaim(e.appPod("a", "echo from-a > /data/a.txt && sleep 3600"), "claim-a", "/data"))
	if !hasSidecar(a) {
		t.Fatalf("pod created before its claim got no sidecar: init containers %v", names(a.Spec.InitContainers))
	}
	e.claim(t, p, "claim-a", "64Mi")
	e.claim(t, p, "claim-b", "32Mi")
	e.waitBound(t, ns, "claim-a")
	e.waitRunning(t, ns, "a")
	b := e.createPod(t, ns, withClaim(e.appPod("b", "echo from-b > /data/b.txt && sleep 3600"), "claim-b", "/data"))
	e.waitRunning(t, ns, b.Name)

	// Each pod sees its own directory only.
	for pod, want := range map[string]string{"a": "a.txt", "b": "b.txt"} {
		poll(t, 30*time.Second, "the app's file in "+pod, func() (bool, error) {
			out, err := e.exec(ns, pod, "app", "ls", "/data")
			f := strings.Fields(out)
			return err == nil && len(f) == 1 && f[0] == want, nil
		})
	}
	// df shows the claim's size.
	if total, _ := e.dfBlocks(t, ns, "a", "/data"); total != 64<<10 {
		t.Errorf("df in pod a: %d KiB total, want the claim's 65536", total)
	}
	if total, _ := e.dfBlocks(t, ns, "b", "/data"); total != 32<<10 {
		t.Errorf("df in pod b: %d KiB total, want the claim's 32768", total)
	}
	// Past the size: EDQUOT, and the pod keeps working.
	out, err := e.exec(ns, "b", "app", "sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=48 conv=fsync 2>&1")
	if err == nil || !strings.Contains(out, "Disk quota exceeded") {
		t.Errorf("writing 48 MiB into a 32 MiB claim: %v, %q; want Disk quota exceeded", err, out)
	}
	e.mustExec(t, ns, "b", "app", "rm", "-f", "/data/big")

	// Expansion shows in the running pod.
	pvc, err := e.kc.CoreV1().PersistentVolumeClaims(ns).Get(ctxT(t, 10*time.Second), "claim-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`)
	if _, err := e.kc.CoreV1().PersistentVolumeClaims(ns).Patch(ctxT(t, 10*time.Second), pvc.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("expand claim-a: %v", err)
	}
	poll(t, 60*time.Second, "claim-a's status shows 128Mi", func() (bool, error) {
		c, err := e.kc.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "claim-a", metav1.GetOptions{})
		return err == nil && c.Status.Capacity.Storage().Cmp(resource.MustParse("128Mi")) == 0, err
	})
	poll(t, 60*time.Second, "df in pod a shows 128Mi", func() (bool, error) {
		total, _ := e.dfBlocks(t, ns, "a", "/data")
		return total == 128<<10, nil
	})

	// Deleting a claim deletes its PV and its directory.
	e.deletePod(t, ns, "b")
	bound := e.waitBound(t, ns, "claim-b")
	if err := e.kc.CoreV1().PersistentVolumeClaims(ns).Delete(ctxT(t, 10*time.Second), "claim-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 90*time.Second, "PV "+bound.Spec.VolumeName+" deleted", func() (bool, error) {
		_, err := e.kc.CoreV1().PersistentVolumes().Get(context.Background(), bound.Spec.VolumeName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	// The whole volume, seen through a static PV: claim-a's directory is
	// there, claim-b's is gone.
	v := volume{name: "whole", metaURL: p.metaURL, storageURL: testenv.SharedCeph(t).URL("namespace=dyn-" + strings.TrimPrefix(ns, "e2e-"))}
	_, whole := e.createVolume(t, ns, v, nil)
	e.createPod(t, ns, withClaim(e.appPod("root", "sleep 3600"), whole, "/data"))
	e.waitRunning(t, ns, "root")
	if out := e.mustExec(t, ns, "root", "app", "ls", "/data/"+ns); strings.TrimSpace(out) != "claim-a" {
		t.Errorf("directories of the namespace after claim-b's deletion: %q, want only claim-a", out)
	}
	if out := e.mustExec(t, ns, "root", "app", "cat", "/data/"+ns+"/claim-a/a.txt"); out != "from-a" {
		t.Errorf("claim-a's file seen from the whole volume: %q", out)
	}
	e.deletePod(t, ns, "root")
	e.deletePod(t, ns, "a")
}

// perf-provision: PVC create-to-Bound latency, median of 10.
func (e *env) testProvisionLatency(t *testing.T) {
	ns := e.newNamespace(t, "pp", "enabled")
	p := e.newProvisioned(t, ns)
	var d []time.Duration
	for i := range 10 {
		name := fmt.Sprintf("lat-%d", i)
		start := time.Now()
		e.claim(t, p, name, "1Gi")
		e.waitBound(t, ns, name)
		d = append(d, time.Since(start))
	}
	t.Logf("PVC create-to-Bound over 10 claims: median %s, all %v", median(d), round(d))
}
