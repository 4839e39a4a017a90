//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Scenario 1: a pod with a podfs PVC in a labelled namespace gets the
// sidecar; the app writes a file; kubectl exec reads it back; no podfs mount
// is left on the host after the pod is deleted.
func (e *env) testWriteRead(t *testing.T) {
	ns := e.newNamespace(t, "s1", "enabled")
	v := e.formatVolume(t, "s1-"+strings.TrimPrefix(ns, "e2e-s1-"))
	_, claim := e.createVolume(t, ns, v, nil)
	p := e.createPod(t, ns, withClaim(e.appPod("writer", "echo hello-podfs > /data/hello.txt && sleep 3600"), claim, "/data"))
	if !hasSidecar(p) {
		t.Fatalf("pod was not injected with %s: init containers %v", sidecarName, names(p.Spec.InitContainers))
	}
	if p.Annotations[injectedAnno] == "" {
		t.Errorf("pod lacks the %s annotation", injectedAnno)
	}
	p = e.waitRunning(t, ns, "writer")
	uid := string(p.UID)
	poll(t, 30*time.Second, "the app's file", func() (bool, error) {
		out, err := e.exec(ns, "writer", "app", "cat", "/data/hello.txt")
		return err == nil && out == "hello-podfs", nil
	})
	// On the node the CSI node's FUSE mount is at kubelet's target path,
	// and nowhere else.
	fuse := 0
	for _, m := range hostMounts(t, uid) {
		if strings.Contains(m, "fuse.podfs") && strings.Contains(m, "kubernetes.io~csi") {
			fuse++
		}
	}
	if fuse != 1 {
		t.Errorf("want one FUSE mount, at the target path; host has %v", hostMounts(t, uid))
	}
	e.deletePod(t, ns, "writer")
	e.noMountsLeft(t, uid)
}

// Scenario 2: two pods share one volume (metadata in the host etcd, data
// in RADOS): what one writes, the other reads, both ways.
func (e *env) testTwoPodsShare(t *testing.T) {
	ns := e.newNamespace(t, "s2", "enabled")
	v := e.formatVolume(t, "s2-"+strings.TrimPrefix(ns, "e2e-s2-"))
	_, claim := e.createVolume(t, ns, v, nil)
	e.createPod(t, ns, withClaim(e.appPod("a", "sleep 3600"), claim, "/data"))
	e.createPod(t, ns, withClaim(e.appPod("b", "sleep 3600"), claim, "/data"))
	e.waitRunning(t, ns, "a")
	e.waitRunning(t, ns, "b")

	e.mustExec(t, ns, "a", "app", "sh", "-c", "mkdir -p /data/dir && echo from-a > /data/dir/a.txt && dd if=/dev/urandom of=/data/dir/big bs=1M count=9 2>/dev/null && md5sum /data/dir/big > /data/dir/big.md5")
	// Close-to-open: b opens after a closed.
	if got := e.mustExec(t, ns, "b", "app", "cat", "/data/dir/a.txt"); got != "from-a" {
		t.Errorf("b reads %q, want from-a", got)
	}
	if out, err := e.exec(ns, "b", "app", "sh", "-c", "cd /data/dir && md5sum -c big.md5"); err != nil {
		t.Errorf("b's checksum of a's 9 MiB file: %v\n%s", err, out)
	}
	e.mustExec(t, ns, "b", "app", "sh", "-c", "echo from-b > /data/b.txt")
	if got := e.mustExec(t, ns, "a", "app", "cat", "/data/b.txt"); got != "from-b" {
		t.Errorf("a reads %q, want from-b", got)
	}
}

// Scenario 3: a Job with a podfs volume runs to Succeeded: the sidecar does
// not keep it alive.
func (e *env) testJob(t *testing.T) {
	ns := e.newNamespace(t, "s3", "enabled")
	v := e.formatVolume(t, "s3-"+strings.TrimPrefix(ns, "e2e-s3-"))
	_, claim := e.createVolume(t, ns, v, nil)
	pod := withClaim(e.appPod("job", "echo done > /data/job.txt && cat /data/job.txt"), claim, "/data")
	backoff := int32(0)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "job"},
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoff,
			Template:     corev1.PodTemplateSpec{Spec: pod.Spec},
		},
	}
	ctx := ctxT(t, 3*time.Minute)
	if _, err := e.kc.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create job: %v", err)
	}
	poll(t, 150*time.Second, "job to complete", func() (bool, error) {
		j, err := e.kc.BatchV1().Jobs(ns).Get(ctx, "job", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
				e.dumpNamespace(t, ns)
				t.Fatalf("job failed: %s", c.Message)
			}
		}
		return j.Status.Succeeded == 1, nil
	})
	pods, err := e.kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=job"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("job pods: %v (%d)", err, len(pods.Items))
	}
	p := pods.Items[0]
	if !hasSidecar(&p) {
		t.Errorf("job pod was not injected")
	}
	poll(t, 60*time.Second, "job pod phase Succeeded", func() (bool, error) {
		q, err := e.kc.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		return err == nil && q.Status.Phase == corev1.PodSucceeded, err
	})
	// The job's write reached the volume.
	e.createPod(t, ns, withClaim(e.appPod("check", "sleep 3600"), claim, "/data"))
	e.waitRunning(t, ns, "check")
	if got := e.mustExec(t, ns, "check", "app", "cat", "/data/job.txt"); got != "done" {
		t.Errorf("job.txt = %q, want done", got)
	}
}

// Scenario 4: serverless namespace: the PVC becomes an emptyDir the sidecar
// mounts into, the pod works with no CSI node involved.
func (e *env) testServerless(t *testing.T) {
	ns := e.newNamespace(t, "s4", "serverless")
	v := e.formatVolume(t, "s4-"+strings.TrimPrefix(ns, "e2e-s4-"))
	_, claim := e.createVolume(t, ns, v, nil)
	p := e.createPod(t, ns, withClaim(e.appPod("app", "echo serverless > /data/s.txt && sleep 3600"), claim, "/data"))
	if !hasSidecar(p) {
		t.Fatalf("pod was not injected")
	}
	for _, vol := range p.Spec.Volumes {
		if vol.Name == "data" {
			if vol.EmptyDir == nil || vol.PersistentVolumeClaim != nil {
				t.Fatalf("volume data is %+v, want an emptyDir in place of the PVC", vol.VolumeSource)
			}
		}
	}
	p = e.waitRunning(t, ns, "app")
	if got := e.mustExec(t, ns, "app", "app", "cat", "/data/s.txt"); got != "serverless" {
		t.Errorf("s.txt = %q", got)
	}
	// The file is on podfs, not in the emptyDir: the app's /data is a FUSE mount.
	if out := e.mustExec(t, ns, "app", "app", "sh", "-c", "grep ' /data ' /proc/mounts"); !strings.Contains(out, "fuse") {
		t.Errorf("/data in the app is not a FUSE mount: %s", out)
	}
	// No CSI publish happened for this pod.
	if m := hostMounts(t, filepath.Join(string(p.UID), "volumes", "kubernetes.io~csi")); len(m) != 0 {
		t.Errorf("CSI mounts for a serverless pod: %v", m)
	}
	uid := string(p.UID)
	e.deletePod(t, ns, "app")
	e.noMountsLeft(t, uid)
}

// Scenario 5: an unlabelled namespace and an opted-out pod are untouched by
// the webhook, and the CSI node refuses to publish their podfs volumes: they
// stay ContainerCreating with an event naming the label to fix, nothing is
// mounted or written on the node, and deleting them leaves nothing.
func (e *env) testUntouched(t *testing.T) {
	// Never formatted nor mounted: nothing serves these pods' volumes.
	v := volume{name: "untouched", metaURL: "etcd://" + e.etcdAddr + "/untouched", storageURL: "rados://podfs?mon_host=v1:127.0.0.1:1"}

	plain := e.newNamespace(t, "s5plain", "")
	plainPV, claim := e.createVolume(t, plain, v, nil)
	p := e.createPod(t, plain, withClaim(e.appPod("app", "sleep 3600"), claim, "/data"))
	if hasSidecar(p) || p.Annotations[injectedAnno] != "" || len(p.Spec.InitContainers) != 0 {
		t.Errorf("pod in an unlabelled namespace was changed: init %v, annotations %v", names(p.Spec.InitContainers), p.Annotations)
	}
	opted := e.newNamespace(t, "s5opt", "enabled")
	v2 := v
	v2.name = "untouched2"
	optedPV, claim2 := e.createVolume(t, opted, v2, nil)
	q := withClaim(e.appPod("app", "sleep 3600"), claim2, "/data")
	q.Labels = map[string]string{injectLabel: "false"}
	q = e.createPod(t, opted, q)
	if hasSidecar(q) || q.Annotations[injectedAnno] != "" || len(q.Spec.InitContainers) != 0 {
		t.Errorf("opted-out pod was changed: init %v, annotations %v", names(q.Spec.InitContainers), q.Annotations)
	}
	e.assertRefused(t, plain, "app", plainPV, "podfs.io/injection=enabled")
	e.assertRefused(t, opted, "app", optedPV, "podfs.io/inject")
	e.deletePod(t, plain, "app")
	e.deletePod(t, opted, "app")
	e.noMountsLeft(t, string(p.UID))
	e.noMountsLeft(t, string(q.UID))
	for _, dir := range []string{string(p.UID), string(q.UID)} {
		if _, err := os.Stat(filepath.Join(e.kubeletDir, "pods", dir)); err == nil {
			poll(t, 60*time.Second, "kubelet to remove the pod directory of "+dir, func() (bool, error) {
				_, err := os.Stat(filepath.Join(e.kubeletDir, "pods", dir))
				return os.IsNotExist(err), nil
			})
		}
	}
}

// Scenario 6: with the webhook down, pods in unlabelled namespaces start;
// in labelled ones creation fails with a clear message. Then it comes back.
func (e *env) testWebhookDown(t *testing.T) {
	ctx := ctxT(t, 5*time.Minute)
	deploys := e.kc.AppsV1().Deployments(e.releaseNS)
	name := e.release + "-podfs-webhook"
	if strings.Contains(e.release, "podfs") {
		name = e.release + "-webhook"
	}
	d, err := deploys.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("webhook deployment %s/%s: %v", e.releaseNS, name, err)
	}
	replicas := *d.Spec.Replicas
	scale := func(n int32) {
		s, err := deploys.GetScale(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get scale: %v", err)
		}
		s.Spec.Replicas = n
		if _, err := deploys.UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("scale %s to %d: %v", name, n, err)
		}
	}
	sel := "app.kubernetes.io/component=webhook,app.kubernetes.io/instance=" + e.release
	scale(0)
	t.Cleanup(func() {
		scale(replicas)
		e.waitWebhookServing(t)
	})
	poll(t, 60*time.Second, "webhook pods gone", func() (bool, error) {
		l, err := e.kc.CoreV1().Pods(e.releaseNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
		return err == nil && len(l.Items) == 0, err
	})

	plain := e.newNamespace(t, "s6plain", "")
	e.createPod(t, plain, e.appPod("app", "sleep 3600"))
	e.waitRunning(t, plain, "app")

	labelled := e.newNamespace(t, "s6on", "enabled")
	_, err = e.kc.CoreV1().Pods(labelled).Create(ctx, e.appPod("app", "sleep 3600"), metav1.CreateOptions{})
	if err == nil {
		t.Fatalf("a pod was created in a labelled namespace while the webhook is down")
	}
	msg := err.Error()
	t.Logf("refusal: %s", msg)
	if !strings.Contains(msg, "pods.podfs.io") || !strings.Contains(msg, "webhook") {
		t.Errorf("the refusal does not say the podfs webhook failed: %s", msg)
	}
	// Opted-out pods still start there.
	q := e.appPod("optout", "sleep 3600")
	q.Labels = map[string]string{injectLabel: "false"}
	e.createPod(t, labelled, q)
	e.waitRunning(t, labelled, "optout")
}

// waitWebhookServing waits until the webhook admits pods again (a dry-run
// create in a labelled namespace succeeds).
func (e *env) waitWebhookServing(t *testing.T) {
	ns := e.newNamespace(t, "probe", "enabled")
	poll(t, 120*time.Second, "the webhook to serve again", func() (bool, error) {
		_, err := e.kc.CoreV1().Pods(ns).Create(context.Background(), e.appPod("probe", "true"),
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil, err
	})
}

// Scenario 7: kill -9 of the sidecar: first of the process that serves,
// which the sidecar's supervisor replaces at once (no container restart),
// then of the container's first process, which the kubelet restarts. Each
// new server continues the FUSE connection the CSI node holds: the app
// opens files on the volume again without a pod restart, and the pod then
// deletes cleanly.
func (e *env) testSidecarKill(t *testing.T) {
	ns := e.newNamespace(t, "s7", "enabled")
	v := e.formatVolume(t, "s7-"+strings.TrimPrefix(ns, "e2e-s7-"))
	_, claim := e.createVolume(t, ns, v, nil)
	e.createPod(t, ns, withClaim(e.appPod("app", "echo before > /data/before.txt && sleep 3600"), claim, "/data"))
	p := e.waitRunning(t, ns, "app")
	uid := string(p.UID)
	poll(t, 30*time.Second, "before.txt", func() (bool, error) {
		out, err := e.exec(ns, "app", "app", "cat", "/data/before.txt")
		return err == nil && out == "before", nil
	})
	restarts := sidecarRestarts(p)

	pid := sidecarPID(t, uid)
	t.Logf("killing the serving process %d of pod %s", pid, uid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	poll(t, 30*time.Second, "a new serving process", func() (bool, error) {
		return sidecarPID(t, uid) != pid, nil
	})
	poll(t, 60*time.Second, "the app to read the volume after the serving process was replaced", func() (bool, error) {
		out, err := e.exec(ns, "app", "app", "cat", "/data/before.txt")
		return err == nil && out == "before", nil
	})
	q, err := e.kc.CoreV1().Pods(ns).Get(context.Background(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sidecarRestarts(q); got != restarts {
		t.Errorf("the sidecar container restarted (%d -> %d) although its supervisor replaced the serving process", restarts, got)
	}

	pid = supervisorPID(t, uid)
	t.Logf("killing the sidecar container's first process %d", pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	poll(t, 120*time.Second, "the sidecar to restart and be started again", func() (bool, error) {
		q, err := e.kc.CoreV1().Pods(ns).Get(context.Background(), "app", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range q.Status.InitContainerStatuses {
			if s.Name == sidecarName {
				return s.RestartCount > restarts && s.Started != nil && *s.Started && s.State.Running != nil, nil
			}
		}
		return false, nil
	})
	// The app, never restarted, opens files on the volume again.
	poll(t, 60*time.Second, "the app to read the volume after the sidecar restart", func() (bool, error) {
		out, err := e.exec(ns, "app", "app", "cat", "/data/before.txt")
		return err == nil && out == "before", nil
	})
	e.mustExec(t, ns, "app", "app", "sh", "-c", "echo after > /data/after.txt")
	if got := e.mustExec(t, ns, "app", "app", "cat", "/data/after.txt"); got != "after" {
		t.Errorf("after.txt = %q", got)
	}
	q, err = e.kc.CoreV1().Pods(ns).Get(context.Background(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range q.Status.ContainerStatuses {
		if s.Name == "app" && s.RestartCount != 0 {
			t.Errorf("the app restarted %d times", s.RestartCount)
		}
	}
	e.deletePod(t, ns, "app")
	e.noMountsLeft(t, uid)
}

func sidecarRestarts(p *corev1.Pod) int32 {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == sidecarName {
			return s.RestartCount
		}
	}
	return 0
}

// sidecarPID finds the pod's sidecar process on the host that serves the
// volumes: on ordinary nodes the child of the supervisor (its environment
// says PODFS_SIDECAR_SUPERVISED=1), on serverless nodes the only one.
func sidecarPID(t *testing.T, uid string) int {
	t.Helper()
	return findSidecarPID(t, uid, true)
}

// supervisorPID finds the sidecar container's first process on an
// ordinary node: the supervisor of the serving process.
func supervisorPID(t *testing.T, uid string) int {
	t.Helper()
	return findSidecarPID(t, uid, false)
}

func findSidecarPID(t *testing.T, uid string, serving bool) int {
	t.Helper()
	var found, supervised []int
	poll(t, 30*time.Second, "the sidecar process of pod "+uid, func() (bool, error) {
		found, supervised = nil, nil
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return false, err
		}
		for _, d := range ents {
			pid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
			cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || !strings.HasPrefix(string(cmd), "podfs\x00sidecar") && !strings.Contains(string(cmd), "/podfs\x00sidecar") {
				continue
			}
			if strings.Contains(string(cmd), "--probe") {
				continue
			}
			cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			if err != nil || !strings.Contains(string(cg), "pod"+uid) {
				continue
			}
			env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if strings.Contains(string(env), "\x00PODFS_SIDECAR_SUPERVISED=1\x00") || strings.HasPrefix(string(env), "PODFS_SIDECAR_SUPERVISED=1\x00") {
				supervised = append(supervised, pid)
			} else {
				found = append(found, pid)
			}
		}
		switch {
		case serving && len(supervised) > 0:
			return len(supervised) == 1, nil
		case serving:
			return len(found) == 1, nil // serverless: no supervisor
		default:
			return len(found) == 1, nil
		}
	})
	if serving && len(supervised) > 0 {
		return supervised[0]
	}
	return found[0]
}

// Scenario 8: subPath and readOnly mounts of a podfs volume behave as
// Kubernetes documents: a subPath mount shows that directory of the volume;
// a readOnly mount refuses writes with EROFS while a writable mount of the
// same volume in the same pod writes.
func (e *env) testSubPathReadOnly(t *testing.T) {
	ns := e.newNamespace(t, "s8", "enabled")
	v := e.formatVolume(t, "s8-"+strings.TrimPrefix(ns, "e2e-s8-"))
	_, claim := e.createVolume(t, ns, v, nil)
	// Fill the volume first.
	e.createPod(t, ns, withClaim(e.appPod("fill", "mkdir -p /data/sub/deeper && echo in-sub > /data/sub/file.txt && echo top > /data/top.txt && sleep 3600"), claim, "/data"))
	e.waitRunning(t, ns, "fill")
	poll(t, 30*time.Second, "the fill pod's files", func() (bool, error) {
		out, err := e.exec(ns, "fill", "app", "cat", "/data/sub/file.txt")
		return err == nil && out == "in-sub", nil
	})

	p := withClaim(e.appPod("mounts", "sleep 3600"), claim, "/rw")
	c := &p.Spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts,
		corev1.VolumeMount{Name: "data", MountPath: "/sub", SubPath: "sub"},
		corev1.VolumeMount{Name: "data", MountPath: "/ro", ReadOnly: true},
		corev1.VolumeMount{Name: "data", MountPath: "/subro", SubPath: "sub", ReadOnly: true},
		// kubelet creates a missing subPath directory.
		corev1.VolumeMount{Name: "data", MountPath: "/new", SubPath: "created-by-kubelet"},
	)
	e.createPod(t, ns, p)
	e.waitRunning(t, ns, "mounts")

	checks := []struct{ cmd, want string }{
		{"cat /sub/file.txt", "in-sub"},
		{"test -d /sub/deeper && echo dir", "dir"},
		{"test -e /sub/top.txt || echo absent", "absent"},
		{"cat /ro/top.txt", "top"},
		{"cat /subro/file.txt", "in-sub"},
		{"echo w > /sub/written.txt && cat /rw/sub/written.txt", "w"},
		{"echo n > /new/n.txt && cat /rw/created-by-kubelet/n.txt", "n"},
	}
	for _, c := range checks {
		if got, err := e.exec(ns, "mounts", "app", "sh", "-c", c.cmd); err != nil || got != c.want {
			t.Errorf("%q: got %q (%v), want %q", c.cmd, got, err, c.want)
		}
	}
	for _, path := range []string{"/ro/x.txt", "/subro/x.txt"} {
		out, err := e.exec(ns, "mounts", "app", "sh", "-c", "echo x > "+path)
		if err == nil {
			t.Errorf("writing %s on a readOnly mount succeeded", path)
		} else if !strings.Contains(strings.ToLower(out), "read-only") {
			t.Errorf("writing %s: %q, want a read-only file system error", path, out)
		}
	}
	// A PVC volume source with readOnly: true makes every mount read-only.
	r := e.appPod("pvcro", "sleep 3600")
	r.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: true}}}}
	r.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	e.createPod(t, ns, r)
	e.waitRunning(t, ns, "pvcro")
	if got := e.mustExec(t, ns, "pvcro", "app", "cat", "/data/top.txt"); got != "top" {
		t.Errorf("read on a readOnly claim: %q", got)
	}
	if out, err := e.exec(ns, "pvcro", "app", "sh", "-c", "echo x > /data/x.txt"); err == nil {
		t.Errorf("write on a readOnly claim succeeded")
	} else if !strings.Contains(strings.ToLower(out), "read-only") {
		t.Errorf("write on a readOnly claim: %q, want a read-only file system error", out)
	}
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}
