//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The scenarios of ordinary nodes where the CSI node mounts FUSE itself and
// hands the connection to an unprivileged sidecar.

// waitEvent waits for an Event on pod ns/name whose message contains every
// one of want, and returns its message.
func (e *env) waitEvent(t *testing.T, ns, name string, want ...string) string {
	t.Helper()
	var msg string
	poll(t, 90*time.Second, "an event on "+ns+"/"+name+" saying "+strings.Join(want, ", "), func() (bool, error) {
		l, err := e.kc.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, err
		}
		for _, ev := range l.Items {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(ev.Message, w)
			}
			if ok {
				msg = ev.Message
				return true, nil
			}
		}
		return false, nil
	})
	return msg
}

// targetPath is kubelet's target path of PV pvName in pod uid.
func (e *env) targetPath(uid, pvName string) string {
	return filepath.Join(e.kubeletDir, "pods", uid, "volumes", "kubernetes.io~csi", pvName, "mount")
}

// assertRefused checks that a pod the CSI node refused stays in
// ContainerCreating with the event naming what to fix, and that nothing
// was mounted or written for it on the node.
func (e *env) assertRefused(t *testing.T, ns, name, pvName string, want ...string) {
	t.Helper()
	msg := e.waitEvent(t, ns, name, want...)
	t.Logf("event on %s/%s: %s", ns, name, msg)
	p, err := e.kc.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("refused pod %s/%s is %s, want Pending", ns, name, p.Status.Phase)
	}
	uid := string(p.UID)
	for _, m := range hostMounts(t, uid) {
		if strings.Contains(m, "kubernetes.io~csi") || strings.Contains(m, "fuse") {
			t.Errorf("mount made for refused pod %s/%s: %s", ns, name, m)
		}
	}
	target := e.targetPath(uid, pvName)
	if ents, err := os.ReadDir(target); err == nil && len(ents) > 0 {
		t.Errorf("files under the refused pod's target path %s: %v", target, ents)
	}
}

// hardened makes p's app run as a non-root UID with nothing extra, as most
// charts ship it (and as Pod Security "restricted" demands).
func hardened(p *corev1.Pod) *corev1.Pod {
	uid, f := int64(1000), false
	p.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot:   ptrTo(true),
		RunAsUser:      &uid,
		RunAsGroup:     &uid,
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: &f,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	return p
}

func ptrTo[T any](v T) *T { return &v }

// Scenario 9: a hardened pod (pod-level runAsNonRoot, UID 1000, every
// capability dropped) in an ordinary labelled namespace runs, writes and
// reads (a volume's root is mode 0777 when formatted); its sidecar runs
// unprivileged and gets no service-account token.
func (e *env) testHardened(t *testing.T) {
	ns := e.newNamespace(t, "s9", "enabled")
	v := e.formatVolume(t, "s9-"+strings.TrimPrefix(ns, "e2e-s9-"))
	_, claim := e.createVolume(t, ns, v, nil)
	p := e.createPod(t, ns, hardened(withClaim(e.appPod("app", "echo hardened > /data/h.txt && sleep 3600"), claim, "/data")))
	e.checkUnprivilegedSidecar(t, p)
	e.waitRunning(t, ns, "app")
	poll(t, 30*time.Second, "the hardened app's file", func() (bool, error) {
		out, err := e.exec(ns, "app", "app", "cat", "/data/h.txt")
		return err == nil && out == "hardened", nil
	})
	if out := e.mustExec(t, ns, "app", "app", "stat", "-c", "%u", "/data/h.txt"); out != "1000" {
		t.Errorf("the file's owner is %s, want 1000", out)
	}
	if out, err := e.exec(ns, "app", sidecarName, "ls", "/var/run/secrets/kubernetes.io/serviceaccount"); err == nil {
		t.Errorf("the sidecar has a service-account token: %s", out)
	}
}

// checkUnprivilegedSidecar checks the injected sidecar's securityContext.
func (e *env) checkUnprivilegedSidecar(t *testing.T, p *corev1.Pod) {
	t.Helper()
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name != sidecarName {
			continue
		}
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("the sidecar has no securityContext")
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("the sidecar is privileged")
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
			t.Errorf("the sidecar may run as root")
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("the sidecar allows privilege escalation")
		}
		for _, m := range c.VolumeMounts {
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
				t.Errorf("the sidecar mounts %s Bidirectional", m.MountPath)
			}
		}
		for _, v := range p.Spec.Volumes {
			if v.HostPath != nil {
				t.Errorf("the pod has a hostPath volume %s (%s)", v.Name, v.HostPath.Path)
			}
		}
		return
	}
	t.Errorf("pod %s has no %s", p.Name, sidecarName)
}

// Scenario 10: a namespace under Pod Security "restricted": a compliant pod
// with a podfs PVC is admitted, runs, writes and reads, reaching the
// backends over the pod network.
func (e *env) testRestricted(t *testing.T) {
	ns := e.newNamespace(t, "s10", "enabled")
	e.labelNamespace(t, ns, map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"pod-security.kubernetes.io/warn":    "restricted",
	})
	v := e.podNetVolume(t, "s10-"+strings.TrimPrefix(ns, "e2e-s10-"))
	_, claim := e.createVolume(t, ns, v, nil)
	p := hardened(withClaim(e.appPod("app", "echo restricted > /data/r.txt && sleep 3600"), claim, "/data"))
	p.Spec.HostNetwork = false
	p = e.createPod(t, ns, p)
	e.checkUnprivilegedSidecar(t, p)
	e.waitRunning(t, ns, "app")
	poll(t, 30*time.Second, "the restricted app's file", func() (bool, error) {
		out, err := e.exec(ns, "app", "app", "cat", "/data/r.txt")
		return err == nil && out == "restricted", nil
	})
	e.mustExec(t, ns, "app", "app", "sh", "-c", "dd if=/dev/urandom of=/data/big bs=1M count=8 2>/dev/null && md5sum /data/big > /data/big.md5 && md5sum -c /data/big.md5")
}

// labelNamespace adds labels to ns.
func (e *env) labelNamespace(t *testing.T, ns string, labels map[string]string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	n, err := e.kc.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for k, v := range labels {
		n.Labels[k] = v
	}
	if _, err := e.kc.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

// Scenario 11: read-only access is enforced by the kernel mount: a
// ReadOnlyMany PV mounted without readOnly in the pod, and a readOnly: true
// mount of a writable one, both refuse writes with EROFS and read.
func (e *env) testReadOnlyModes(t *testing.T) {
	ns := e.newNamespace(t, "s11", "enabled")
	v := e.formatVolume(t, "s11-"+strings.TrimPrefix(ns, "e2e-s11-"))
	_, rw := e.createVolume(t, ns, v, nil)
	e.createPod(t, ns, withClaim(e.appPod("fill", "echo seed > /data/seed.txt && sleep 3600"), rw, "/data"))
	e.waitRunning(t, ns, "fill")
	poll(t, 30*time.Second, "the seed file", func() (bool, error) {
		out, err := e.exec(ns, "fill", "app", "cat", "/data/seed.txt")
		return err == nil && out == "seed", nil
	})
	ro := v
	ro.name = v.name + "-rox"
	_, roClaim := e.createVolumeModes(t, ns, ro, corev1.ReadOnlyMany)
	e.createPod(t, ns, withClaim(e.appPod("rox", "sleep 3600"), roClaim, "/data"))
	p := withClaim(e.appPod("romount", "sleep 3600"), rw, "/data")
	p.Spec.Containers[0].VolumeMounts[0].ReadOnly = true
	e.createPod(t, ns, p)
	for _, name := range []string{"rox", "romount"} {
		e.waitRunning(t, ns, name)
		if got := e.mustExec(t, ns, name, "app", "cat", "/data/seed.txt"); got != "seed" {
			t.Errorf("%s reads %q, want seed", name, got)
		}
		out, err := e.exec(ns, name, "app", "sh", "-c", "echo x > /data/x.txt")
		if err == nil {
			t.Errorf("%s: a write succeeded on a read-only volume", name)
		} else if !strings.Contains(strings.ToLower(out), "read-only") {
			t.Errorf("%s: write failed with %q, want EROFS (read-only file system)", name, out)
		}
	}
}

// Scenario 12: one pod, two podfs volumes, the second's metadata
// unreachable: the first serves, the second answers EIO, and the pod's
// events and the sidecar's log name the second.
func (e *env) testOneVolumeFails(t *testing.T) {
	ns := e.newNamespace(t, "s12", "enabled")
	good := e.formatVolume(t, "s12-"+strings.TrimPrefix(ns, "e2e-s12-"))
	bad := volume{name: good.name + "-bad", metaURL: "etcd://127.0.0.1:1/nowhere", storageURL: good.storageURL}
	_, goodClaim := e.createVolume(t, ns, good, nil)
	badPV, badClaim := e.createVolume(t, ns, bad, nil)
	p := withClaim(e.appPod("app", "sleep 3600"), goodClaim, "/good")
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "bad", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: badClaim}}})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "bad", MountPath: "/bad"})
	e.createPod(t, ns, p)
	msg := e.waitEvent(t, ns, "app", badPV, "cannot be served")
	t.Logf("event: %s", msg)
	e.waitRunning(t, ns, "app")
	e.mustExec(t, ns, "app", "app", "sh", "-c", "echo ok > /good/ok.txt")
	if got := e.mustExec(t, ns, "app", "app", "cat", "/good/ok.txt"); got != "ok" {
		t.Errorf("the good volume reads %q", got)
	}
	out, err := e.exec(ns, "app", "app", "cat", "/bad/any")
	if err == nil || !strings.Contains(strings.ToLower(out), "input/output error") {
		t.Errorf("reading from the failed volume: %q (%v), want an I/O error", out, err)
	}
	logs, err := exec.Command(e.kubectl, "--kubeconfig", e.kubeconfig, "-n", ns, "logs", "app", "-c", sidecarName).CombinedOutput()
	if err != nil || !strings.Contains(string(logs), badPV) {
		t.Errorf("the sidecar's log does not name volume %s (%v):\n%s", badPV, err, logs)
	}
}
