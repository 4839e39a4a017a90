package csinode

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
)

// testEnv is a running plugin over real mounts in a temporary directory laid
// out like a node (<root>/kubelet, <root>/reg), reading pods from a real
// kube-apiserver.
type testEnv struct {
	root, kubeletDir, regDir, endpoint string

	kube  *Kube
	drv   *Driver
	srv   *Server
	node  csi.NodeClient
	ident csi.IdentityClient
}

const testNodeID = "node-under-test"

// newTestEnv starts the plugin. Its cleanup unmounts whatever is left under
// the temporary directory, and fails the test for any mount left: the
// plugin must leave nothing behind.
func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	return newTestEnvAt(t, t.TempDir())
}

// newTestEnvAt is newTestEnv in a given directory.
func newTestEnvAt(t testing.TB, root string) *testEnv {
	t.Helper()
	watchMounts(t, root)
	e := &testEnv{
		root:       root,
		kube:       testKube(t),
		kubeletDir: filepath.Join(root, "kubelet"),
		regDir:     filepath.Join(root, "reg"),
		endpoint:   filepath.Join(root, "csi.sock"),
	}
	if err := os.MkdirAll(e.kubeletDir, 0o750); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{
		Endpoint:        e.endpoint,
		NodeID:          testNodeID,
		KubeletDir:      e.kubeletDir,
		Pods:            e.kube,
		Events:          e.kube,
		RegistrationDir: e.regDir,
		Version:         "test",
		Log:             slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := d.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	conn := dial(t, e.endpoint)
	e.drv, e.srv = d, srv
	e.node, e.ident = csi.NewNodeClient(conn), csi.NewIdentityClient(conn)
	return e
}

// newTestRoot returns a temporary directory whose mounts are all gone when the
// test ends.
func newTestRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	watchMounts(t, root)
	return root
}

// watchMounts makes sure that nothing stays mounted under root when the test
// ends.
func watchMounts(t testing.TB, root string) {
	t.Helper()
	requireMountPrivileges(t)
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() { cleanupMounts(t, root) })
}

func requireMountPrivileges(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("csinode tests mount and unmount for real: run them as root")
	}
	for _, bin := range []string{"mount", "umount"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s(8) is missing: install util-linux (hack/deps.sh)", bin)
		}
	}
}

func dial(t testing.TB, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// target returns kubelet's target path for a CSI volume of a pod and creates
// its parent, as kubelet does before calling NodePublishVolume.
func (e *testEnv) target(t testing.TB, podUID, name string) string {
	t.Helper()
	dir := filepath.Join(e.kubeletDir, "pods", podUID, "volumes", "kubernetes.io~csi", name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "mount")
}

func publishRequest(pod *corev1.Pod, target string, readOnly bool) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "vol-" + filepath.Base(filepath.Dir(target)),
		TargetPath: target,
		Readonly:   readOnly,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		VolumeContext: map[string]string{
			ContextPodUID:       string(pod.UID),
			ContextPodName:      pod.Name,
			ContextPodNamespace: pod.Namespace,
			ContextEphemeral:    "false",
			AttrMetaURL:         "bolt:///var/lib/podfs-test/never-opened.db",
		},
	}
}

func (e *testEnv) publish(t testing.TB, req *csi.NodePublishVolumeRequest) {
	t.Helper()
	if _, err := e.node.NodePublishVolume(context.Background(), req); err != nil {
		t.Fatalf("NodePublishVolume(%s): %v", req.TargetPath, err)
	}
}

func (e *testEnv) unpublish(t testing.TB, target string) {
	t.Helper()
	req := &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-" + filepath.Base(filepath.Dir(target)), TargetPath: target}
	if _, err := e.node.NodeUnpublishVolume(context.Background(), req); err != nil {
		t.Fatalf("NodeUnpublishVolume(%s): %v", target, err)
	}
}

// mountsUnder lists the mount points under dir, dir's own mounts included.
func mountsUnder(t testing.TB, dir string) []*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

// assertNothingMounted checks that the plugin left nothing mounted under
// root.
func (e *testEnv) assertNothingMounted(t testing.TB) {
	t.Helper()
	for _, m := range mountsUnder(t, e.root) {
		t.Errorf("still mounted: %s (%s)", m.Mountpoint, m.FSType)
	}
}

func assertGone(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s should be gone, lstat: %v", p, err)
		}
	}
}

// cleanupMounts unmounts everything under root, deepest first and lazily (a
// dead FUSE mount may refuse a plain unmount), and reports what was left.
func cleanupMounts(t testing.TB, root string) {
	for range 32 {
		infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
		if err != nil {
			t.Errorf("read mount table: %v", err)
			return
		}
		if len(infos) == 0 {
			return
		}
		for _, m := range infos {
			t.Errorf("left mounted by the test: %s (%s)", m.Mountpoint, m.FSType)
		}
		slices.SortFunc(infos, func(a, b *mountinfo.Info) int {
			if d := strings.Count(b.Mountpoint, "/") - strings.Count(a.Mountpoint, "/"); d != 0 {
				return d
			}
			return b.ID - a.ID
		})
		for _, m := range infos {
			if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
				t.Errorf("unmount %s: %v", m.Mountpoint, err)
			}
		}
	}
	t.Errorf("mounts under %s survive 32 rounds of unmounting", root)
}

// tree lists every path under root, to prove a rejected request created nothing.
func tree(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
