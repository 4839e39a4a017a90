package csinode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/moby/sys/mountinfo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/sidecar/volumeset"
)

// handoffDir is where the plugin offers pod's connections: the handoff
// directory of its sidecar's run emptyDir (named podfs-run by createPod).
func (e *testEnv) handoffDir(pod *corev1.Pod) string {
	return filepath.Join(e.kubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "podfs-run",
		strings.TrimPrefix(volumeset.HandoffDir, volumeset.RunDir+"/"))
}

// fuseAt returns the podfs FUSE mount at path, or nil.
func fuseAt(t testing.TB, path string) *mountinfo.Info {
	t.Helper()
	mt, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	m := mt.top(path)
	if m == nil || m.FSType != FSType {
		return nil
	}
	return m
}

// TestPublishServeUnpublish publishes a volume of a pod with a sidecar: the
// plugin mounts FUSE at the target, a sidecar process takes the connection
// and serves it, the files and the statistics come from it, and unpublish
// leaves nothing behind.
func TestPublishServeUnpublish(t *testing.T) {
	e := newTestEnv(t)
	pod := createPod(t, true, nil)
	target := e.target(t, string(pod.UID), "pv-shared")
	e.publish(t, publishRequest(pod, target, false))
	m := fuseAt(t, target)
	if m == nil {
		t.Fatalf("no %s mount at %s after publish", FSType, target)
	}
	for _, o := range []string{"nosuid", "nodev"} {
		if !strings.Contains(m.Options, o) {
			t.Errorf("mount options %q lack %s", m.Options, o)
		}
	}
	for _, o := range []string{"allow_other", "default_permissions"} {
		if !strings.Contains(m.VFSOptions, o) {
			t.Errorf("super options %q lack %s", m.VFSOptions, o)
		}
	}
	dir := e.handoffDir(pod)
	if _, err := os.Stat(filepath.Join(dir, fuseconn.SocketName("pv-shared"))); err != nil {
		t.Fatalf("no handoff socket: %v", err)
	}
	// Statistics never wait on the mount: without a sidecar the call
	// answers at once that nobody serves.
	st := e.stats(t, target)
	if !st.GetVolumeCondition().GetAbnormal() {
		t.Errorf("stats before any sidecar: condition %v, want abnormal", st.GetVolumeCondition())
	}

	startSidecar(t, dir, "pv-shared")
	b, err := os.ReadFile(filepath.Join(target, testFileName))
	if err != nil || string(b) != testFileContent {
		t.Fatalf("read through the target: %q, %v", b, err)
	}
	st = e.stats(t, target)
	if st.GetVolumeCondition().GetAbnormal() {
		t.Errorf("stats with a sidecar: abnormal: %s", st.GetVolumeCondition().GetMessage())
	}
	var bytes, inodes *csi.VolumeUsage
	for _, u := range st.GetUsage() {
		switch u.GetUnit() {
		case csi.VolumeUsage_BYTES:
			bytes = u
		case csi.VolumeUsage_INODES:
			inodes = u
		}
	}
	if bytes.GetTotal() != 4096000 || bytes.GetUsed() != 1638400 || bytes.GetAvailable() != 2457600 {
		t.Errorf("byte usage %v, want the sidecar's 4096000/1638400/2457600", bytes)
	}
	if inodes.GetTotal() != 100 || inodes.GetUsed() != 60 || inodes.GetAvailable() != 40 {
		t.Errorf("inode usage %v, want the sidecar's 100/60/40", inodes)
	}

	e.unpublish(t, target)
	if fuseAt(t, target) != nil {
		t.Errorf("still mounted after unpublish")
	}
	assertGone(t, target, filepath.Join(dir, fuseconn.SocketName("pv-shared")))
	e.unpublish(t, target) // idempotent
	e.assertNothingMounted(t)
}

// TestRefusedWithoutSidecar: a pod without a podfs sidecar (unlabelled
// namespace, opted out, gone, recreated) is refused with FailedPrecondition
// saying what to fix, gets an Event when it exists, and nothing is mounted
// or created.
func TestRefusedWithoutSidecar(t *testing.T) {
	e := newTestEnv(t)
	plain := createPod(t, false, nil)
	opted := createPod(t, false, map[string]string{volumeset.InjectLabel: "false"})
	gone := createPod(t, true, nil)
	gone.Name = "never-created"
	recreated := createPod(t, true, nil)
	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		uid   string
		want  string
		event bool
	}{
		{"unlabelled namespace", plain, string(plain.UID), "label its namespace podfs.io/injection=enabled", true},
		{"opted out", opted, string(opted.UID), `podfs.io/inject: "false"`, true},
		{"pod gone", gone, string(gone.UID), "does not exist", false},
		{"pod recreated", recreated, "0000-other-uid", "was recreated", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := e.target(t, tc.uid, "pv-refused")
			before := tree(t, e.root)
			req := publishRequest(tc.pod, target, false)
			req.VolumeContext[ContextPodUID] = tc.uid
			_, err := e.node.NodePublishVolume(context.Background(), req)
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("NodePublishVolume: %v, want FailedPrecondition saying %q", err, tc.want)
			}
			if after := tree(t, e.root); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("a refused publish changed the disk:\nbefore %q\nafter  %q", before, after)
			}
			e.assertNothingMounted(t)
			if !tc.event {
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				evs := podEvents(t, tc.pod)
				if strings.Contains(strings.Join(evs, "\n"), ReasonNoSidecar+": ") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %s event on the pod; events: %q", ReasonNoSidecar, evs)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// TestReadOnlyPublish: a read-only request or a read-only access mode makes
// the kernel refuse writes with EROFS, while reads work.
func TestReadOnlyPublish(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name string
		mod  func(*csi.NodePublishVolumeRequest)
	}{
		{"readonly flag", func(r *csi.NodePublishVolumeRequest) { r.Readonly = true }},
		{"reader-only access mode", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		}},
		{"ro mount option", func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[AttrMountOptions] = "attr_timeout=1s,ro" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := createPod(t, true, nil)
			target := e.target(t, string(pod.UID), "pv-ro")
			req := publishRequest(pod, target, false)
			tc.mod(req)
			e.publish(t, req)
			defer e.unpublish(t, target)
			startSidecar(t, e.handoffDir(pod), "pv-ro")
			if b, err := os.ReadFile(filepath.Join(target, testFileName)); err != nil || string(b) != testFileContent {
				t.Errorf("read: %q, %v", b, err)
			}
			err := os.WriteFile(filepath.Join(target, "new.txt"), []byte("x"), 0o644)
			if !errors.Is(err, syscall.EROFS) {
				t.Errorf("write on a read-only publish: %v, want EROFS", err)
			}
		})
	}
	e.assertNothingMounted(t)
}

// TestIdempotent: the same publish twice succeeds; a conflicting one is
// AlreadyExists; unpublish twice succeeds.
func TestIdempotent(t *testing.T) {
	e := newTestEnv(t)
	pod := createPod(t, true, nil)
	target := e.target(t, string(pod.UID), "pv-idem")
	req := publishRequest(pod, target, false)
	e.publish(t, req)
	e.publish(t, req)
	ro := publishRequest(pod, target, true)
	if _, err := e.node.NodePublishVolume(context.Background(), ro); status.Code(err) != codes.AlreadyExists {
		t.Errorf("publish read-only over a read-write publish: %v, want AlreadyExists", err)
	}
	e.unpublish(t, target)
	e.unpublish(t, target)
	e.assertNothingMounted(t)
}

// TestUnpublishNeverServed: a volume no sidecar ever served (the pod was
// deleted before its sidecar started) unpublishes without waiting.
func TestUnpublishNeverServed(t *testing.T) {
	e := newTestEnv(t)
	pod := createPod(t, true, nil)
	target := e.target(t, string(pod.UID), "pv-unserved")
	e.publish(t, publishRequest(pod, target, false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	assertGone(t, target)
	e.assertNothingMounted(t)
}

func (e *testEnv) stats(t *testing.T, path string) *csi.NodeGetVolumeStatsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: path})
	if err != nil {
		t.Fatalf("NodeGetVolumeStats(%s): %v", path, err)
	}
	return r
}

func TestVolumeStatsNotFound(t *testing.T) {
	e := newTestEnv(t)
	plain := e.target(t, "some-pod", "pv")
	if err := os.Mkdir(plain, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"some/path", plain, e.kubeletDir, filepath.Join(e.root, "nowhere")} {
		_, err := e.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: p})
		if status.Code(err) != codes.NotFound {
			t.Errorf("stats of %s (not published): %v, want NotFound", p, err)
		}
	}
}

// TestBadRequests sends malformed requests: each gets InvalidArgument with a
// reason, and nothing appears on disk.
func TestBadRequests(t *testing.T) {
	e := newTestEnv(t)
	const uid = "bad-pod"
	pod := &corev1.Pod{}
	pod.Name, pod.Namespace, pod.UID = "bad", "default", uid
	target := e.target(t, uid, "pv-bad")
	before := tree(t, e.root)

	mod := func(f func(r *csi.NodePublishVolumeRequest)) *csi.NodePublishVolumeRequest {
		r := publishRequest(pod, target, false)
		f(r)
		return r
	}
	mode := func(m csi.VolumeCapability_AccessMode_Mode) *csi.NodePublishVolumeRequest {
		return mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessMode.Mode = m })
	}
	for _, tc := range []struct {
		name string
		req  *csi.NodePublishVolumeRequest
		want string
	}{
		{"no volume id", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "" }), "volume_id is missing"},
		{"no target", mod(func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "" }), "target_path is missing"},
		{"relative target", mod(func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "pods/x/mount" }), "relative"},
		{"dot-dot target", mod(func(r *csi.NodePublishVolumeRequest) {
			r.TargetPath = filepath.Join(e.kubeletDir, "pods", uid) + "/../../../escape/mount"
		}), ".. element"},
		{"target outside kubelet dir", mod(func(r *csi.NodePublishVolumeRequest) {
			r.TargetPath = filepath.Join(e.root, "elsewhere", "mount")
		}), "not below the kubelet directory"},
		{"target of another pod", mod(func(r *csi.NodePublishVolumeRequest) {
			r.VolumeContext[ContextPodUID] = "other-pod"
		}), "belongs to pod bad-pod"},
		{"no capability", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability = nil }), "volume_capability is missing"},
		{"block", mod(func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}), "block access type is not supported"},
		{"no access type", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessType = nil }), "no access type"},
		{"no access mode", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessMode = nil }), "no access mode"},
		{"unknown access mode", mode(csi.VolumeCapability_AccessMode_UNKNOWN), "no access mode"},
		{"future access mode", mode(csi.VolumeCapability_AccessMode_Mode(42)), "access mode 42"},
		{"no volume context", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeContext = nil }), "podInfoOnMount"},
		{"no pod uid", mod(func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, ContextPodUID) }), "podInfoOnMount"},
		{"no pod name", mod(func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, ContextPodName) }), "podInfoOnMount"},
		{"no_default_permissions", mod(func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.GetMount().MountFlags = []string{"no_default_permissions"}
		}), "needs default_permissions"},
		{"unsafe pod uid", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[ContextPodUID] = "../../etc" }), "not a valid directory name"},
		{"no metadata URL", mod(func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, AttrMetaURL) }), "neither metaURL nor metaURLSecretKey"},
		{"both metadata URLs", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[volumeset.AttrMetaURLSecretKey] = "meta" }), "both metaURL and metaURLSecretKey"},
		{"secret key without secret", mod(func(r *csi.NodePublishVolumeRequest) {
			delete(r.VolumeContext, AttrMetaURL)
			r.VolumeContext[volumeset.AttrMetaURLSecretKey] = "meta"
		}), "kubelet passed no Secret"},
		{"secret lacks the key", mod(func(r *csi.NodePublishVolumeRequest) {
			delete(r.VolumeContext, AttrMetaURL)
			r.VolumeContext[volumeset.AttrStorageURLSecret] = "storage"
			r.VolumeContext[volumeset.AttrMetaURLSecretKey] = "meta"
			r.Secrets = map[string]string{"storage": "file:///x"}
		}), `Secret has no key "meta"`},
		{"subDir escapes", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[volumeset.AttrSubDir] = "a/../../b" }), "clean path inside the volume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.node.NodePublishVolume(context.Background(), tc.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Errorf("NodePublishVolume: %v, want InvalidArgument saying %q", err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		req  *csi.NodeUnpublishVolumeRequest
		want string
	}{
		{"no volume id", &csi.NodeUnpublishVolumeRequest{TargetPath: target}, "volume_id is missing"},
		{"no target", &csi.NodeUnpublishVolumeRequest{VolumeId: "v"}, "target_path is missing"},
		{"relative target", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: "a/mount"}, "relative"},
		{"dot-dot target", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: e.kubeletDir + "/../x"}, ".. element"},
		{"target outside kubelet dir", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: "/etc"}, "not below the kubelet directory"},
	} {
		t.Run("unpublish "+tc.name, func(t *testing.T) {
			_, err := e.node.NodeUnpublishVolume(context.Background(), tc.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Errorf("NodeUnpublishVolume: %v, want InvalidArgument saying %q", err, tc.want)
			}
		})
	}

	if after := tree(t, e.root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("rejected requests changed the disk:\nbefore %q\nafter  %q", before, after)
	}
	e.assertNothingMounted(t)
}

// BenchmarkPublishUnpublish measures one kubelet volume cycle: publish a
// fresh target, unpublish it.
func BenchmarkPublishUnpublish(b *testing.B) {
	e := newTestEnv(b)
	pod := createPod(b, true, nil)
	i := 0
	for b.Loop() {
		i++
		target := e.target(b, string(pod.UID), fmt.Sprintf("pv-%d", i))
		e.publish(b, publishRequest(pod, target, false))
		e.unpublish(b, target)
	}
	e.assertNothingMounted(b)
}

// TestPluginRestart: the plugin's process is replaced while a sidecar
// serves a volume (the DaemonSet recreated its pod). The mount keeps
// working, the new plugin recovers the publication from its records, the
// sidecar gives the connection back, and a sidecar started after that
// (the old one crashed) gets it and serves.
func TestPluginRestart(t *testing.T) {
	e := newTestEnv(t)
	pod := createPod(t, true, nil)
	target := e.target(t, string(pod.UID), "pv-restart")
	e.publish(t, publishRequest(pod, target, false))
	first := startSidecar(t, e.handoffDir(pod), "pv-restart")

	e.srv.Stop()
	if b, err := os.ReadFile(filepath.Join(target, testFileName)); err != nil || string(b) != testFileContent {
		t.Fatalf("read while the plugin is down: %q, %v", b, err)
	}
	e2 := newTestEnvAt(t, e.root)
	v := e2.drv.lookup(target)
	if v == nil {
		t.Fatalf("the restarted plugin did not recover the publication of %s", target)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !v.holder.HasConn() {
		if time.Now().After(deadline) {
			t.Fatal("the sidecar never gave the connection back to the restarted plugin")
		}
		time.Sleep(20 * time.Millisecond)
	}
	first.Process.Kill()
	first.Wait()
	startSidecar(t, e.handoffDir(pod), "pv-restart")
	if b, err := os.ReadFile(filepath.Join(target, testFileName)); err != nil || string(b) != testFileContent {
		t.Fatalf("read after the plugin and then the sidecar restarted: %q, %v", b, err)
	}
	e2.unpublish(t, target)
	e2.assertNothingMounted(t)
}

// TestReleaseWhenPodEnds: once the pod is deleted and its sidecar has
// stopped, the plugin releases its copy of the connection, so a stat of
// the mount (the kubelet's teardown makes some) fails at once instead of
// waiting for a server that never comes.
func TestReleaseWhenPodEnds(t *testing.T) {
	e := newTestEnv(t)
	pod := createPod(t, true, nil)
	target := e.target(t, string(pod.UID), "pv-ends")
	e.publish(t, publishRequest(pod, target, false))
	side := startSidecar(t, e.handoffDir(pod), "pv-ends")
	if err := sharedKube.client.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	side.Process.Kill()
	side.Wait()
	done := make(chan error, 1)
	go func() {
		_, err := os.Stat(filepath.Join(target, testFileName))
		done <- err
	}()
	select {
	case err := <-done:
		// ECONNABORTED when the stat was already waiting at the abort.
		if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
			t.Errorf("stat on the released mount: %v, want ENOTCONN", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stat on the mount of a deleted pod still waits after 30s")
	}
	e.unpublish(t, target)
	e.assertNothingMounted(t)
}
