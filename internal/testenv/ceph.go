package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Ceph is a one-node cluster (one monitor, one memstore OSD) on 127.0.0.1
// started by hack/ceph.sh.
type Ceph struct {
	Dir     string // everything the cluster writes
	Conf    string // its ceph.conf
	MonAddr string // 127.0.0.1:PORT (msgr v1)
	Pool    string // a pool of size 1, ready for I/O
	// With cephx (StartCephx): client.admin's keyring, and client.podfs's,
	// whose caps cover Pool only.
	AdminKeyring, PodfsKeyring string
}

// URL returns a rados:// storage URL for the cluster's pool, reached through
// its monitor address (no config file, as in a pod); extra is appended as
// query options (e.g. "namespace=t1").
func (c *Ceph) URL(extra string) string {
	// v1: the test cluster speaks msgr v1 only, on a port that is not 6789.
	u := "rados://" + c.Pool + "?mon_host=v1:" + c.MonAddr + "&user=admin"
	if c.AdminKeyring != "" {
		u += "&keyring=" + c.AdminKeyring
	}
	if extra != "" {
		u += "&" + extra
	}
	return u
}

// PodfsURL is URL for client.podfs with its keyring (a cephx cluster only).
func (c *Ceph) PodfsURL(extra string) string {
	u := "rados://" + c.Pool + "?mon_host=v1:" + c.MonAddr + "&user=podfs&keyring=" + c.PodfsKeyring
	if extra != "" {
		u += "&" + extra
	}
	return u
}

// RepoRoot finds the module root (the directory holding go.mod) above the
// working directory, to run the project's scripts from tests.
func RepoRoot(t testing.TB) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		p := filepath.Dir(d)
		if p == d {
			t.Fatalf("no go.mod above the working directory")
		}
		d = p
	}
}

// StartCeph starts a cluster of its own for this test and stops it when the
// test ends (also when it fails). Ceph that cannot start fails the test.
func StartCeph(t testing.TB) (conf string, monAddr string) {
	t.Helper()
	c := StartCephCluster(t)
	return c.Conf, c.MonAddr
}

// StartCephCluster is StartCeph returning the cluster, for tests that stop
// parts of it (StopOSD).
func StartCephCluster(t testing.TB) *Ceph {
	t.Helper()
	c, err := startCeph(t, RepoRoot(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stop(t) })
	return c
}

// StartCephx is StartCephCluster with cephx on (hack/ceph.sh with
// CEPH_AUTH=cephx): clients need a key, and client.podfs has one for the
// pool only.
func StartCephx(t testing.TB) *Ceph {
	t.Helper()
	c, err := startCeph(t, RepoRoot(t), t.TempDir(), "CEPH_AUTH=cephx", "CEPH_MEMSTORE_BYTES=1073741824")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stop(t) })
	c.AdminKeyring = filepath.Join(c.Dir, "ceph.client.admin.keyring")
	c.PodfsKeyring = filepath.Join(c.Dir, "ceph.client.podfs.keyring")
	return c
}

func startCeph(t testing.TB, root, dir string, env ...string) (*Ceph, error) {
	RequireRoot(t)
	port := FreePort(t)
	script := filepath.Join(root, "hack", "ceph.sh")
	cmd := exec.Command(script, "up", dir, strconv.Itoa(port), "podfs")
	// The daemons detach; should this process die without cleanup, the
	// script's watcher stops them.
	cmd.Env = append(append(os.Environ(), "PODFS_CEPH_OWNER="+strconv.Itoa(os.Getpid())), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		_ = exec.Command(script, "down", dir).Run()
		logs, _ := exec.Command("sh", "-c", "tail -n 30 "+dir+"/log/*.log").CombinedOutput()
		return nil, fmt.Errorf("start Ceph (hack/ceph.sh up %s %d): %v\n%s\nlogs:\n%s", dir, port, err, out, logs)
	}
	t.Logf("Ceph up on 127.0.0.1:%d in %s (%s)", port, time.Since(start).Round(time.Millisecond), dir)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return &Ceph{Dir: dir, Conf: lines[len(lines)-1], MonAddr: Addr(port), Pool: "podfs"}, nil
}

func (c *Ceph) stop(t testing.TB) {
	out, err := exec.Command(filepath.Join(RepoRoot(t), "hack", "ceph.sh"), "down", c.Dir).CombinedOutput()
	if err != nil {
		t.Errorf("stop Ceph in %s: %v\n%s", c.Dir, err, out)
	}
}

// StopOSD stops the cluster's OSD by its pid file (to test a backend that
// stops answering); the monitor keeps running.
func (c *Ceph) StopOSD(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, "run", "osd.0.pid"))
	if err != nil {
		t.Fatalf("stop OSD: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("stop OSD: pid file: %v", err)
	}
	p, err := os.FindProcess(pid)
	if err == nil {
		err = p.Kill()
	}
	if err != nil {
		t.Fatalf("stop OSD %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("OSD %d still running 10 s after SIGKILL", pid)
}

// sharedCeph is the cluster of one test binary (see SharedCeph).
var sharedCeph struct {
	once sync.Once
	c    *Ceph
	dir  string
	err  error
}

// SharedCeph returns the test binary's one cluster, starting it on first use,
// so a package's RADOS tests pay the start-up once. The package's TestMain
// must call StopSharedCeph after m.Run (CephMain does both). Tests sharing it
// isolate themselves with a RADOS namespace per test (Ceph.URL("namespace=...")).
func SharedCeph(t testing.TB) *Ceph {
	t.Helper()
	sharedCeph.once.Do(func() {
		dir, err := os.MkdirTemp("", "podfs-ceph-")
		if err != nil {
			sharedCeph.err = err
			return
		}
		sharedCeph.dir = dir
		sharedCeph.c, sharedCeph.err = startCeph(t, RepoRoot(t), dir)
	})
	if sharedCeph.err != nil {
		t.Fatalf("shared Ceph: %v", sharedCeph.err)
	}
	return sharedCeph.c
}

// StopSharedCeph stops the shared cluster, if one was started, and removes its directory.
func StopSharedCeph() {
	if sharedCeph.dir == "" {
		return
	}
	if root, err := os.Getwd(); err == nil {
		for d := root; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				_ = exec.Command(filepath.Join(d, "hack", "ceph.sh"), "down", sharedCeph.dir).Run()
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	_ = os.RemoveAll(sharedCeph.dir)
}

// CephMain runs a package's tests and then stops the shared cluster:
// func TestMain(m *testing.M) { os.Exit(testenv.CephMain(m)) }.
func CephMain(m *testing.M) int {
	defer StopSharedCeph()
	return m.Run()
}

// CephKey returns the key in a keyring file's "key = ..." line.
func CephKey(t testing.TB, keyring string) string {
	t.Helper()
	b, err := os.ReadFile(keyring)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && strings.TrimSpace(k) == "key" {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no key in %s:\n%s", keyring, b)
	return ""
}
