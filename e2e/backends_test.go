//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
)

// startEtcd runs an etcd for podfs metadata on the host (Debian's
// etcd-server), separate from the cluster's own, on a free loopback port.
// The test pods use the host network, so they reach it on 127.0.0.1.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin := testenv.LookPath(t, "etcd", "hack/deps.sh")
	dir := t.TempDir()
	client, peer := testenv.FreePort(t), testenv.FreePort(t)
	clientURL, peerURL := "http://"+testenv.Addr(client), "http://"+testenv.Addr(peer)
	p := testenv.Start(t, "podfs-etcd", bin,
		"--name", "podfs-e2e-meta", "--data-dir", dir,
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "podfs-e2e-meta="+peerURL, "--initial-cluster-state", "new",
		// podfs transactions that release many chunks need more than 128 ops.
		"--max-txn-ops", "4096", "--logger", "zap", "--log-level", "error")
	if err := testenv.WaitTCP(p, testenv.Addr(client), 30*time.Second); err != nil {
		t.Fatalf("etcd for podfs metadata did not start: %v", err)
	}
	return testenv.Addr(client)
}

// cephCluster is a one-node Ceph on loopback from hack/ceph.sh.
type cephCluster struct {
	dir     string
	monAddr string
	pool    string
}

// url is the storage URL a pod uses: monitors by address, no ceph.conf.
func (c *cephCluster) url(namespace string) string {
	return fmt.Sprintf("rados://%s?mon_host=v1:%s&user=admin&namespace=%s", c.pool, c.monAddr, namespace)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for ; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above the working directory")
		}
	}
}

// cephFor returns the run's Ceph, starting it on first use: scenarios that
// need no data (5, 6) run without it. It stops when TestE2E ends.
func (e *env) cephFor(t *testing.T) *cephCluster {
	t.Helper()
	if e.ceph == nil {
		e.ceph = startCeph(e.root, t)
	}
	return e.ceph
}

// startCeph starts a cluster whose stop is registered on owner (the
// parent test) and whose failure to start fails t.
func startCeph(owner, t *testing.T) *cephCluster {
	t.Helper()
	testenv.RequireRoot(t)
	script := filepath.Join(repoRoot(t), "hack", "ceph.sh")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("hack/ceph.sh is missing: %v", err)
	}
	dir, err := os.MkdirTemp("", "podfs-e2e-ceph-")
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	c := &cephCluster{dir: dir, monAddr: testenv.Addr(port), pool: "podfs"}
	owner.Cleanup(func() {
		defer os.RemoveAll(dir)
		if out, err := exec.Command(script, "down", dir).CombinedOutput(); err != nil {
			owner.Errorf("stop Ceph: %v\n%s", err, out)
		}
	})
	start := time.Now()
	cmd := exec.Command(script, "up", dir, strconv.Itoa(port), c.pool)
	cmd.Env = append(os.Environ(), "PODFS_CEPH_OWNER="+strconv.Itoa(os.Getpid()))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start Ceph (hack/ceph.sh up %s %d): %v\n%s", dir, port, err, out)
	}
	t.Logf("Ceph up on %s in %s", c.monAddr, time.Since(start).Round(time.Millisecond))
	return c
}

// volume is a formatted podfs volume: metadata in the host etcd, data in a
// RADOS namespace of its own.
type volume struct {
	name       string
	metaURL    string
	storageURL string
}

func (e *env) formatVolume(t *testing.T, name string) volume {
	t.Helper()
	v := volume{
		name:       name,
		metaURL:    fmt.Sprintf("etcd://%s/%s", e.etcdAddr, name),
		storageURL: e.cephFor(t).url(name),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.podfsBin, "format", v.metaURL, name, "--storage", v.storageURL).CombinedOutput()
	if err != nil {
		t.Fatalf("podfs format %s %s --storage %s: %v\n%s", v.metaURL, name, v.storageURL, err, out)
	}
	return v
}

// hostMounts returns the mount points on the host that contain s.
func hostMounts(t *testing.T, s string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.Contains(f[4], s) {
			out = append(out, f[4]+" ("+fstype(f)+")")
		}
	}
	return out
}

func fstype(fields []string) string {
	for i, f := range fields {
		if f == "-" && i+1 < len(fields) {
			return fields[i+1]
		}
	}
	return "?"
}
