//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// loopScript writes files through the whole volume (/data/w), fsyncs them,
// checksums and verifies them through a subPath mount of the same
// directory (/sub), and logs every operation ("i start end ok|ERR", times
// from /proc/uptime) until /tmp/stop exists. Failures go to /tmp/errors.
const loopScript = `mkdir -p /data/w; : > /tmp/errors; i=0
while [ ! -e /tmp/stop ]; do
  i=$((i+1)); t0=$(cut -d' ' -f1 /proc/uptime); s=ok
  if ! dd if=/dev/urandom of=/data/w/f$i bs=64k count=2 conv=fsync 2>/tmp/dd.err; then s=ERR; echo "$i write: $(cat /tmp/dd.err)" >> /tmp/errors; fi
  if [ $s = ok ] && ! (cd /sub && md5sum f$i > f$i.md5 && md5sum -c f$i.md5 > /dev/null 2>/tmp/md5.err); then s=ERR; echo "$i verify: $(cat /tmp/md5.err)" >> /tmp/errors; fi
  echo "$i $t0 $(cut -d' ' -f1 /proc/uptime) $s" >> /tmp/ops.log
done; echo stopped > /tmp/stopped; sleep 3600`

// op is one line of the loop's log.
type op struct {
	i          int
	start, end float64
	ok         bool
}

func (e *env) loopOps(t *testing.T, ns, pod string) []op {
	t.Helper()
	out, err := e.exec(ns, pod, "app", "cat", "/tmp/ops.log")
	if err != nil {
		return nil
	}
	var ops []op
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			continue
		}
		i, _ := strconv.Atoi(f[0])
		s, _ := strconv.ParseFloat(f[1], 64)
		en, _ := strconv.ParseFloat(f[2], 64)
		ops = append(ops, op{i: i, start: s, end: en, ok: f[3] == "ok"})
	}
	return ops
}

// waitOps waits until the loop has completed n more operations than it had.
func (e *env) waitOps(t *testing.T, ns, pod string, n int) int {
	t.Helper()
	base := len(e.loopOps(t, ns, pod))
	var now int
	poll(t, 120*time.Second, fmt.Sprintf("%d more loop operations", n), func() (bool, error) {
		now = len(e.loopOps(t, ns, pod))
		return now >= base+n, nil
	})
	return now
}

// longestOp is the longest operation among ops[from:to]: the app's stall.
func longestOp(ops []op, from, to int) float64 {
	var m float64
	for _, o := range ops[min(from, len(ops)):min(to, len(ops))] {
		m = max(m, o.end-o.start)
	}
	return m
}

// sidecarStatus returns the sidecar's container status.
func (e *env) sidecarStatus(t *testing.T, ns, pod string) corev1.ContainerStatus {
	t.Helper()
	p, err := e.kc.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == sidecarName {
			return s
		}
	}
	t.Fatalf("pod %s/%s has no %s status", ns, pod, sidecarName)
	return corev1.ContainerStatus{}
}

// waitSidecarRestarted waits until the sidecar restarted more than before
// and runs again.
func (e *env) waitSidecarRestarted(t *testing.T, ns, pod string, before int32) {
	t.Helper()
	poll(t, 180*time.Second, "the sidecar to run again", func() (bool, error) {
		s := e.sidecarStatus(t, ns, pod)
		return s.RestartCount > before && s.State.Running != nil && s.Started != nil && *s.Started, nil
	})
}

// Scenario 13: the mount outlives its sidecar. An app writes, fsyncs, reads
// back and verifies files through the whole volume and a subPath of it
// while the sidecar is killed with SIGKILL three times, its image is changed
// in place, and the CSI node's pod is deleted (then the sidecar killed
// again): the app sees no error and every file verifies.
func (e *env) testSidecarReplaced(t *testing.T) {
	upgrade := mustEnv(t, "PODFS_IMAGE_UPGRADE", "a second tag of the podfs image, for the in-place upgrade")
	ns := e.newNamespace(t, "s13", "enabled")
	v := e.formatVolume(t, "s13-"+strings.TrimPrefix(ns, "e2e-s13-"))
	_, claim := e.createVolume(t, ns, v, nil)
	p := withClaim(e.appPod("app", loopScript), claim, "/data")
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts,
		corev1.VolumeMount{Name: "data", MountPath: "/sub", SubPath: "w"})
	e.createPod(t, ns, p)
	q := e.waitRunning(t, ns, "app")
	uid := string(q.UID)
	e.waitOps(t, ns, "app", 10)

	type phase struct {
		name     string
		from, to int
	}
	var phases []phase
	run := func(name string, act func()) {
		from := len(e.loopOps(t, ns, "app"))
		act()
		to := e.waitOps(t, ns, "app", 10)
		phases = append(phases, phase{name, from, to})
	}
	// The serving process killed three times: the sidecar's supervisor
	// starts a new one at once, which continues the connection.
	kill := func() {
		pid := sidecarPID(t, uid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
		poll(t, 60*time.Second, "a new serving process", func() (bool, error) {
			return sidecarPID(t, uid) != pid, nil
		})
	}
	for k := 1; k <= 3; k++ {
		run(fmt.Sprintf("kill -9 #%d", k), kill)
	}
	run("in-place upgrade", func() {
		before := e.sidecarStatus(t, ns, "app").RestartCount
		patch := fmt.Sprintf(`{"spec":{"initContainers":[{"name":%q,"image":%q}]}}`, sidecarName, upgrade)
		if _, err := e.kc.CoreV1().Pods(ns).Patch(context.Background(), "app", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch the sidecar's image: %v", err)
		}
		e.waitSidecarRestarted(t, ns, "app", before)
		// Both tags name the same content, so the runtime may report
		// either in the status; the spec says which one runs.
		q, err := e.kc.CoreV1().Pods(ns).Get(context.Background(), "app", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range q.Spec.InitContainers {
			if c.Name == sidecarName && c.Image != upgrade {
				t.Errorf("the sidecar's image is %q after the patch, want %q", c.Image, upgrade)
			}
		}
		t.Logf("sidecar restarted %d times; status image %s", e.sidecarStatus(t, ns, "app").RestartCount, e.sidecarStatus(t, ns, "app").Image)
	})
	run("podfs rollout-sidecars back to the first image", func() {
		before := e.sidecarStatus(t, ns, "app").RestartCount
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, e.podfsBin, "rollout-sidecars", "--image", e.image, "--namespace", ns, "--kubeconfig", e.kubeconfig).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "updated") {
			t.Fatalf("podfs rollout-sidecars: %v\n%s", err, out)
		}
		if s := e.sidecarStatus(t, ns, "app"); s.RestartCount <= before || s.Started == nil || !*s.Started {
			t.Errorf("after rollout-sidecars the sidecar restarted %d times (before %d), started %v", s.RestartCount, before, s.Started)
		}
		t.Logf("podfs rollout-sidecars:\n%s", out)
	})
	run("CSI node pod deleted", func() { e.restartCSINode(t) })
	run("kill -9 after the CSI node restart", kill)
	e.mustExec(t, ns, "app", "app", "touch", "/tmp/stop")
	poll(t, 60*time.Second, "the loop to stop", func() (bool, error) {
		_, err := e.exec(ns, "app", "app", "cat", "/tmp/stopped")
		return err == nil, nil
	})
	ops := e.loopOps(t, ns, "app")
	var report []string
	for _, ph := range phases {
		report = append(report, fmt.Sprintf("%s: longest stall %.2fs over ops %d-%d", ph.name, longestOp(ops, ph.from, ph.to), ph.from, ph.to))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	t.Logf("loop completed %d operations on kernel %s\n  %s", len(ops), strings.TrimSpace(string(kernel)), strings.Join(report, "\n  "))
	fmt.Printf("E2E-HANDOFF ops=%d kernel=%s %s\n", len(ops), strings.TrimSpace(string(kernel)), strings.Join(report, "; "))
	if errs := e.mustExec(t, ns, "app", "app", "cat", "/tmp/errors"); errs != "" {
		t.Errorf("the app saw errors:\n%s", errs)
	}
	for _, o := range ops {
		if !o.ok {
			t.Errorf("operation %d failed", o.i)
		}
	}
	if out, err := e.exec(ns, "app", "app", "sh", "-c", "cd /data/w && for f in f*.md5; do md5sum -c $f >/dev/null || echo BAD $f; done"); err != nil || out != "" {
		t.Errorf("files that do not verify after the loop: %v\n%s", err, out)
	}
	e.deletePod(t, ns, "app")
	e.noMountsLeft(t, uid)
}

// restartCSINode deletes the CSI node's pod and waits until its DaemonSet's
// replacement is ready.
func (e *env) restartCSINode(t *testing.T) {
	t.Helper()
	ctx := ctxT(t, 3*time.Minute)
	sel := "app.kubernetes.io/component=csi-node,app.kubernetes.io/instance=" + e.release
	l, err := e.kc.CoreV1().Pods(e.releaseNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("the CSI node pod: %v (%d found)", err, len(l.Items))
	}
	old := l.Items[0].UID
	if err := e.kc.CoreV1().Pods(e.releaseNS).Delete(ctx, l.Items[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the CSI node pod: %v", err)
	}
	poll(t, 150*time.Second, "a new CSI node pod ready", func() (bool, error) {
		l, err := e.kc.CoreV1().Pods(e.releaseNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			if p.UID != old && p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].Ready {
				return true, nil
			}
		}
		return false, nil
	})
}
