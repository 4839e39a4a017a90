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

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/mount-utils"
)

func TestPodVolumeDir(t *testing.T) {
	const pods = "/var/lib/podfs/pods"
	for _, tc := range []struct {
		uid, target, want, err string
	}{
		{uid: "0b5d", target: "/var/lib/kubelet/pods/0b5d/volumes/kubernetes.io~csi/pv-data/mount", want: pods + "/0b5d/pv-data"},
		{uid: "0b5d", target: "/var/lib/kubelet/pods/0b5d/volumes/kubernetes.io~csi/scratch/mount/", want: pods + "/0b5d/scratch"},
		{uid: "", target: "/k/pods/x/volumes/kubernetes.io~csi/v/mount", err: "pod UID"},
		{uid: "../etc", target: "/k/pods/x/volumes/kubernetes.io~csi/v/mount", err: "pod UID"},
		{uid: "a/b", target: "/k/pods/x/volumes/kubernetes.io~csi/v/mount", err: "pod UID"},
		{uid: "u", target: "relative/v/mount", err: "absolute"},
		{uid: "u", target: "/k/../v/mount", err: "absolute"},
		{uid: "u", target: "/mount", err: "no parent"},
	} {
		got, err := PodVolumeDir(pods, tc.uid, tc.target)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("PodVolumeDir(%q, %q) = %q, %v; want an error about %q", tc.uid, tc.target, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("PodVolumeDir(%q, %q) = %q, %v; want %q", tc.uid, tc.target, got, err, tc.want)
		}
	}
}

// TestPublishPropagation mounts a file system on the per-pod directory after
// publishing, as the sidecar does, and reads it through the target path:
// a tmpfs and a FUSE mount from this mount namespace, and a FUSE mount from
// another one.
func TestPublishPropagation(t *testing.T) {
	for _, kind := range []string{"tmpfs", "fuse", "fuse-in-own-namespace"} {
		t.Run(kind, func(t *testing.T) {
			e := newTestEnv(t)
			const uid = "4f7c2a1e-0000-4000-8000-00000000000a"
			target, podDir := e.volume(t, uid, "pv-shared")
			e.publish(t, publishRequest(uid, target, false))

			mt, err := readMounts()
			if err != nil {
				t.Fatal(err)
			}
			db, tb := mt.base(podDir), mt.base(target)
			if db == nil || !isShared(db) {
				t.Fatalf("per-pod directory %s is not a shared mount point: %+v", podDir, db)
			}
			if tb == nil || !sameSource(tb, db) || !isShared(tb) {
				t.Fatalf("target %s is not a shared bind of %s: %+v", target, podDir, tb)
			}
			if peer := func(m string) string { return strings.Fields(m)[0] }; peer(db.Optional) != peer(tb.Optional) {
				t.Errorf("target (%s) and per-pod directory (%s) are not peers", tb.Optional, db.Optional)
			}
			stats := e.stats(t, target)
			if vc := stats.GetVolumeCondition(); !vc.GetAbnormal() || !strings.Contains(vc.GetMessage(), "not mounted") {
				t.Errorf("before the sidecar mounts, the condition should say so: %+v", vc)
			}

			switch kind {
			case "tmpfs":
				if err := unix.Mount("tmpfs", podDir, "tmpfs", 0, "size=1m"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(podDir, testFileName), []byte(testFileContent), 0o644); err != nil {
					t.Fatal(err)
				}
			case "fuse":
				srv, err := mountTestFS(podDir)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					srv.Unmount() // already gone after a good unpublish
					srv.Wait()
				})
			case "fuse-in-own-namespace":
				// As the sidecar does from its container.
				startFUSEProcess(t, podDir)
			}
			got, err := os.ReadFile(filepath.Join(target, testFileName))
			if err != nil || string(got) != testFileContent {
				t.Fatalf("the %s mount on %s does not show at the target: %q, %v", kind, podDir, got, err)
			}

			stats = e.stats(t, target)
			if vc := stats.GetVolumeCondition(); vc.GetAbnormal() {
				t.Errorf("served volume reported abnormal: %s", vc.GetMessage())
			}
			if kind != "tmpfs" {
				want := []*csi.VolumeUsage{
					{Unit: csi.VolumeUsage_BYTES, Total: 1000 * 4096, Available: 600 * 4096, Used: 400 * 4096},
					{Unit: csi.VolumeUsage_INODES, Total: 100, Available: 40, Used: 60},
				}
				for i, u := range stats.GetUsage() {
					if u.String() != want[i].String() {
						t.Errorf("usage[%d] = %v, want %v (statfs of the FUSE mount)", i, u, want[i])
					}
				}
			}

			e.unpublish(t, target)
			e.assertOnlyPodsDirMounted(t)
			assertGone(t, target, podDir, filepath.Dir(podDir))
		})
	}
}

// TestReadOnlyPublish checks that the bind is read-only and that a request
// for the other mode is refused while the volume is published.
func TestReadOnlyPublish(t *testing.T) {
	e := newTestEnv(t)
	const uid = "ro-pod"
	target := e.target(t, uid, "pv-ro")
	e.publish(t, publishRequest(uid, target, true))
	err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing into a read-only publication: %v, want EROFS", err)
	}
	e.publish(t, publishRequest(uid, target, true)) // a retry
	_, err = e.node.NodePublishVolume(context.Background(), publishRequest(uid, target, false))
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("read-write request over a read-only publication: %v, want AlreadyExists", err)
	}
	e.unpublish(t, target)
	e.assertOnlyPodsDirMounted(t)
}

// TestIdempotent repeats every call, also after the sidecar has mounted (a
// kubelet restart republishes everything), and unpublishes what is gone.
func TestIdempotent(t *testing.T) {
	e := newTestEnv(t)
	const uid = "idem-pod"
	target, podDir := e.volume(t, uid, "pv-idem")
	req := publishRequest(uid, target, false)
	e.publish(t, req)
	e.publish(t, req)
	countMounts := func() int { return len(mountsUnder(t, e.root)) }
	if n := countMounts(); n != 3 { // pods dir, per-pod dir, target
		t.Fatalf("%d mounts after publishing twice, want 3", n)
	}
	if err := unix.Mount("tmpfs", podDir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	before := countMounts()
	e.publish(t, req)
	if n := countMounts(); n != before {
		t.Errorf("republishing a served volume changed the mount count from %d to %d", before, n)
	}
	e.unpublish(t, target)
	e.unpublish(t, target)
	e.unpublish(t, e.target(t, uid, "never-published"))
	e.assertOnlyPodsDirMounted(t)
	assertGone(t, target, podDir)
}

// TestUnpublishInterruptedPublish covers a plugin that died after preparing
// the per-pod directory but before binding the target: kubelet's unpublish
// still finds and removes the directory through its path layout.
func TestUnpublishInterruptedPublish(t *testing.T) {
	e := newTestEnv(t)
	const uid = "crash-pod"
	target, podDir := e.volume(t, uid, "pv-crash")
	mt, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.drv.preparePodDir(mt, podDir); err != nil {
		t.Fatal(err)
	}
	e.unpublish(t, target)
	e.assertOnlyPodsDirMounted(t)
	assertGone(t, podDir)
}

// TestPublishOverServedPodDir loses the target's mounts while the sidecar
// serves the per-pod directory: a new bind would capture the sidecar's mount
// instead of following it, so publish refuses, and unpublish still cleans up.
func TestPublishOverServedPodDir(t *testing.T) {
	e := newTestEnv(t)
	const uid = "lost-pod"
	target, podDir := e.volume(t, uid, "pv-lost")
	e.publish(t, publishRequest(uid, target, false))
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", podDir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	_, err := e.node.NodePublishVolume(context.Background(), publishRequest(uid, target, false))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "already served by a tmpfs mount") {
		t.Errorf("publish over a served per-pod directory: %v, want FailedPrecondition", err)
	}
	e.unpublish(t, target)
	e.assertOnlyPodsDirMounted(t)
	assertGone(t, target, podDir)
}

// TestDeadFUSEMount kills the process serving the FUSE mount (a crashed
// sidecar): stats report it, and unpublish still removes every mount.
func TestDeadFUSEMount(t *testing.T) {
	e := newTestEnv(t)
	const uid = "dead-pod"
	target, podDir := e.volume(t, uid, "pv-dead")
	e.publish(t, publishRequest(uid, target, false))

	helper := startFUSEProcess(t, podDir)
	if got, err := os.ReadFile(filepath.Join(target, testFileName)); err != nil || string(got) != testFileContent {
		t.Fatalf("FUSE mount of the helper does not show at the target: %q, %v", got, err)
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
	if _, err := os.Stat(target); !mount.IsCorruptedMnt(err) {
		t.Fatalf("stat of the target after the FUSE server died: %v, want a corrupted-mount error", err)
	}

	vc := e.stats(t, target).GetVolumeCondition()
	if !vc.GetAbnormal() || !strings.Contains(vc.GetMessage(), "dead") {
		t.Errorf("condition of a dead mount: %+v", vc)
	}
	e.unpublish(t, target)
	e.assertOnlyPodsDirMounted(t)
	assertGone(t, target, podDir)
}

func (e *testEnv) stats(t *testing.T, path string) *csi.NodeGetVolumeStatsResponse {
	t.Helper()
	resp, err := e.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: path})
	if err != nil {
		t.Fatalf("NodeGetVolumeStats(%s): %v", path, err)
	}
	return resp
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
	target := e.target(t, uid, "pv-bad")
	before := tree(t, e.root)

	mod := func(f func(r *csi.NodePublishVolumeRequest)) *csi.NodePublishVolumeRequest {
		r := publishRequest(uid, target, false)
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
		{"unsafe pod uid", mod(func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[ContextPodUID] = "../../etc" }), "not a valid directory name"},
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
	e.assertOnlyPodsDirMounted(t)
}

// BenchmarkPublishUnpublish measures one kubelet volume cycle: publish a
// fresh target, unpublish it.
func BenchmarkPublishUnpublish(b *testing.B) {
	e := newTestEnv(b)
	i := 0
	for b.Loop() {
		i++
		uid := fmt.Sprintf("bench-pod-%d", i)
		target := e.target(b, uid, "pv")
		e.publish(b, publishRequest(uid, target, false))
		e.unpublish(b, target)
	}
	e.assertOnlyPodsDirMounted(b)
}
