//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Pod-network backends. Pods in a namespace with Pod Security "restricted"
// may not use the host network, so they cannot reach the host's etcd and Ceph
// on 127.0.0.1. hack/backends.sh runs a second etcd and one-node Ceph inside
// a network namespace joined to the pod bridge, at a fixed pod-subnet address
// that the cluster's IPAM never hands out, and hack/e2e.sh exports where:
//
//	PODFS_PODNET_NETNS      the network namespace (/run/netns/NAME)
//	PODFS_PODNET_ETCD       etcd's client address, HOST:PORT
//	PODFS_PODNET_CEPH_MON   the Ceph monitor, HOST:PORT (msgr v1)
//	PODFS_PODNET_CEPH_POOL  a pool of size 1
//
// The host has no route to that address, so host-side commands (podfs
// format, a mount that prepares a volume) run inside the namespace. They
// enter only its network namespace (nsenter --net): `ip netns exec` would also
// give them a mount namespace of their own, hiding their mounts from the host.

// podNet is where the pod-network backends are.
type podNet struct {
	netns    string
	etcdAddr string
	cephMon  string
	pool     string
}

// loadPodNet reads the backends' settings and fails the test when they are
// missing or the namespace is gone: a missing backend is never a skip.
func loadPodNet(t *testing.T) podNet {
	t.Helper()
	const hint = "where hack/backends.sh runs the pod-network backends; hack/backends.sh env prints it"
	p := podNet{
		netns:    mustEnv(t, "PODFS_PODNET_NETNS", hint),
		etcdAddr: mustEnv(t, "PODFS_PODNET_ETCD", hint),
		cephMon:  mustEnv(t, "PODFS_PODNET_CEPH_MON", hint),
		pool:     mustEnv(t, "PODFS_PODNET_CEPH_POOL", hint),
	}
	if _, err := os.Stat(p.netnsPath()); err != nil {
		t.Fatalf("pod-network backends: %v (hack/backends.sh up)", err)
	}
	return p
}

func (p podNet) netnsPath() string { return filepath.Join("/run/netns", p.netns) }

// command runs name in the backends' network namespace and the host's mount
// namespace.
func (p podNet) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p.netnsPath(), "--", name}, args...)...)
}

// podNetVolume formats a volume whose metadata is in the pod-network etcd and
// whose data is in a RADOS namespace of its own in the pod-network Ceph. Its
// URLs name the backends by address (no ceph.conf), as a pod's sidecar needs.
// The root directory is mode 0777, so a pod of any UID can write into it;
// podNetChown gives a directory to one UID.
func (e *env) podNetVolume(t *testing.T, name string) volume {
	t.Helper()
	p := loadPodNet(t)
	v := volume{
		name:    name,
		metaURL: fmt.Sprintf("etcd://%s/%s", p.etcdAddr, name),
		// v1: the backends' Ceph speaks msgr v1 only.
		storageURL: fmt.Sprintf("rados://%s?mon_host=v1:%s&user=admin&namespace=%s", p.pool, p.cephMon, name),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := p.command(ctx, e.podfsBin, "format", v.metaURL, name, "--storage", v.storageURL).CombinedOutput()
	if err != nil {
		t.Fatalf("podfs format %s %s --storage %s (in network namespace %s): %v\n%s",
			v.metaURL, name, v.storageURL, p.netns, err, out)
	}
	return v
}

// podNetMount mounts v on a new directory with podfs mount -d, serving it from
// the backends' network namespace, and returns the mount point. opts are
// mount options (e.g. "allow_other"). The mount is removed when the test ends
// unless podNetUnmount removed it before.
func (e *env) podNetMount(t *testing.T, v volume, opts ...string) string {
	t.Helper()
	p := loadPodNet(t)
	// Not t.TempDir: its directories are 0700, which users other than root
	// (those the volume is prepared for) cannot pass through.
	dir, err := os.MkdirTemp("", "podfs-podnet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "mount.log")
	args := []string{"mount", v.metaURL, mp, "-d", "--log", logFile}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := p.command(ctx, e.podfsBin, args...).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("podfs %s (in network namespace %s): %v\n%s\nlog:\n%s", strings.Join(args, " "), p.netns, err, out, log)
	}
	// Registered after the directory's removal, so it runs before it.
	t.Cleanup(func() { e.podNetUnmount(t, mp) })
	return mp
}

// podNetUnmount stops the podfs serving mp (it flushes, unmounts and exits)
// and checks that the mount is gone. Unmounting twice is harmless.
func (e *env) podNetUnmount(t *testing.T, mp string) {
	t.Helper()
	if len(hostMounts(t, mp)) == 0 {
		return
	}
	out, err := exec.Command(e.podfsBin, "umount", mp).CombinedOutput()
	if err != nil {
		t.Errorf("podfs umount %s: %v\n%s", mp, err, out)
	}
	if m := hostMounts(t, mp); len(m) > 0 {
		t.Errorf("still mounted after podfs umount: %v", m)
	}
}

// podNetChown makes dir (relative to v's root, created with its parents when
// missing; "" is the root) owned by uid:gid with mode 0755, so a pod running
// as that non-root user owns it and others can only read it. It mounts v from
// the backends' network namespace, changes the directory and unmounts again.
func (e *env) podNetChown(t *testing.T, v volume, dir string, uid, gid int) {
	t.Helper()
	mp := e.podNetMount(t, v)
	path := filepath.Join(mp, filepath.Clean("/"+dir))
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatalf("volume %s: %v", v.name, err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatalf("volume %s: %v", v.name, err)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatalf("volume %s: %v", v.name, err)
	}
	e.podNetUnmount(t, mp)
}

// TestPodNetBackends checks the pod-network backends and the helpers above
// from the host, without the cluster: format a volume there, give a directory
// to a non-root UID, and write and read a file as that UID through a second
// mount. It needs PODFS_BIN and the PODFS_PODNET_* settings, e.g.
//
//	eval "$(hack/backends.sh env)"
//	PODFS_BIN=$PWD/bin/podfs go test -tags e2e -run TestPodNetBackends ./e2e/
//
// hack/podnet-check.sh --go runs it against backends of its own.
func TestPodNetBackends(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, FUSE mounts)")
	}
	e := &env{podfsBin: mustEnv(t, "PODFS_BIN", "path of the podfs binary")}
	const uid, gid = 1000, 1000
	name := fmt.Sprintf("podnet-%d", time.Now().UnixNano()%1e9)

	start := time.Now()
	v := e.podNetVolume(t, name)
	t.Logf("formatted %s in %s", v.name, time.Since(start).Round(time.Millisecond))
	e.podNetChown(t, v, "app", uid, gid)

	mp := e.podNetMount(t, v, "allow_other")
	st, err := os.Stat(filepath.Join(mp, "app"))
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Sys().(*syscall.Stat_t); s.Uid != uid || s.Gid != gid || st.Mode().Perm() != 0o755 {
		t.Fatalf("app: owner %d:%d mode %v, want %d:%d drwxr-xr-x", s.Uid, s.Gid, st.Mode(), uid, gid)
	}
	// As the pod's user: a write into its directory works, one into a
	// directory it does not own is refused.
	asUser := func(script string) ([]byte, error) {
		return exec.Command("setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", gid),
			"--clear-groups", "sh", "-c", script, "sh", mp).CombinedOutput()
	}
	if out, err := asUser(`echo podnet >"$1/app/f" && cat "$1/app/f"`); err != nil || string(out) != "podnet\n" {
		t.Fatalf("write and read as uid %d: %v, output %q", uid, err, out)
	}
	if err := os.Mkdir(filepath.Join(mp, "rootonly"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := asUser(`echo x >"$1/rootonly/f"`); err == nil {
		t.Fatalf("uid %d wrote into a root-owned 0755 directory: %s", uid, out)
	}
}
