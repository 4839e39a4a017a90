package sidecar

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/sidecar/volumeset"
)

// csiNode plays the CSI node for one volume: it mounts FUSE at a target
// and offers the connection in the handoff directory.
type csiNode struct {
	target string
	holder *fuseconn.Holder

	mu     sync.Mutex
	status []fuseconn.Status
}

func publishFor(t *testing.T, dir, handoff, name string, src *fuseconn.Source) *csiNode {
	t.Helper()
	c := &csiNode{target: filepath.Join(dir, "targets", name)}
	for _, d := range []string{c.target, handoff} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := fuseconn.Mount(c.target, fuseconn.MountOptions{FsName: "podfs:" + name, Subtype: "podfs", AllowOther: true, DefaultPermissions: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 4 {
			if unix.Unmount(c.target, unix.MNT_DETACH) != nil {
				break
			}
		}
	})
	c.holder, err = fuseconn.Hold(context.Background(), fuseconn.HolderConfig{
		Dir: handoff, Volume: fuseconn.Volume{Name: name, VolumeID: "vol-" + name, Source: src}, Conn: conn,
		OnStatus: func(s fuseconn.Status) {
			c.mu.Lock()
			c.status = append(c.status, s)
			c.mu.Unlock()
		},
	})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.holder.Close() })
	return c
}

func (c *csiNode) waitStatus(t *testing.T, ok func(fuseconn.Status) bool) fuseconn.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		for _, s := range c.status {
			if ok(s) {
				c.mu.Unlock()
				return s
			}
		}
		got := append([]fuseconn.Status(nil), c.status...)
		c.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("volume at %s: no such status reported; got %+v", c.target, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// formatBolt formats a podfs volume on the embedded engine under dir.
func formatBolt(t *testing.T, dir, name string) string {
	t.Helper()
	return formatBoltWith(t, dir, name, "00000000-0000-4000-8000-0000000000a1", "file://"+filepath.Join(dir, name+"-objects"))
}

// formatBoltWith formats volume name, with its metadata in dir and its
// data at storage, and returns its metadata URL.
func formatBoltWith(t *testing.T, dir, name, uuid, storage string) string {
	t.Helper()
	metaURL := "bolt://" + filepath.Join(dir, name+".db")
	ctx := context.Background()
	m, err := meta.Open(ctx, metaURL, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	if err := m.Init(ctx, meta.Format{Name: name, UUID: uuid, BlockSize: 1 << 20,
		Storage: storage, CreatedAt: time.Now(), Version: meta.FormatVersion}); err != nil {
		t.Fatal(err)
	}
	return metaURL
}

// TestNodeHandoff runs the sidecar of an ordinary node in a child process:
// the CSI node (this test) mounts two volumes and offers their
// connections; the sidecar serves the good one, answers EIO on the one
// whose volume does not exist and reports why; SIGTERM detaches and leaves
// the mounts; a new sidecar, after a clean stop and after kill -9,
// continues the same connections with the data intact.
func TestNodeHandoff(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	handoff := filepath.Join(dir, "run", "handoff")
	good := publishFor(t, dir, handoff, "pv-data", &fuseconn.Source{MetaURL: formatBolt(t, dir, "data")})
	bad := publishFor(t, dir, handoff, "pv-bad", &fuseconn.Source{MetaURL: "bolt://" + filepath.Join(dir, "never-formatted.db")})
	// Admitted before its claim was bound: the CSI node names the PV in
	// the claims directory. Another claim turned out not to be podfs's.
	later := publishFor(t, dir, handoff, "pvc-later", &fuseconn.Source{MetaURL: formatBolt(t, dir, "later"), PodVolume: "later"})
	if err := os.MkdirAll(filepath.Join(handoff, "claims"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(handoff, "claims", "later"), []byte("pvc-later"), 0o644); err != nil {
		t.Fatal(err)
	}
	set := &volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: true, Volumes: []volumeset.Volume{
		{Name: "data", Handoff: "pv-data"},
		{Name: "bad", Handoff: "pv-bad"},
		{Name: "later", Claim: "scratch"},
		{Name: "elsewhere", Claim: "local-disk"},
	}}
	socket := filepath.Join(dir, "probe.sock")
	env := []string{"SOCKET=" + socket, "HANDOFF=" + handoff}

	cmd, out, done := startChild(t, "fs", set, env...)
	waitReady(t, socket, done)
	good.waitStatus(t, func(s fuseconn.Status) bool { return s.Served })
	later.waitStatus(t, func(s fuseconn.Status) bool { return s.Served })
	if err := os.WriteFile(filepath.Join(later.target, "g"), []byte("bound after admission"), 0o644); err != nil {
		t.Errorf("write to the volume found through its claim: %v", err)
	}
	s := bad.waitStatus(t, func(s fuseconn.Status) bool { return !s.Served })
	if !strings.Contains(s.Error, "format") {
		t.Errorf("the failed volume's reported reason %q does not say it needs formatting", s.Error)
	}
	if _, err := os.ReadDir(bad.target); !errors.Is(err, syscall.EIO) {
		t.Errorf("readdir of the failed volume: %v, want EIO", err)
	}
	if _, err := os.Stat(bad.target); err != nil {
		t.Errorf("stat of the failed volume's root: %v; the kubelet needs it to start the app", err)
	}
	if _, err := os.Stat(filepath.Join(bad.target, "f")); !errors.Is(err, syscall.EIO) {
		t.Errorf("lookup in the failed volume: %v, want EIO", err)
	}
	if !strings.Contains(out.String(), "pv-bad") {
		t.Errorf("the sidecar's log does not name the failed volume:\n%s", out.String())
	}
	payload := bytes.Repeat([]byte("handoff "), 40000)
	if err := os.WriteFile(filepath.Join(good.target, "f"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := good.holder.Stats(ctx)
	cancel()
	if err != nil || st.TotalInodes == 0 || st.UsedBytes < int64(len(payload)) {
		t.Errorf("stats through the holder: %+v, %v; want the volume's usage (at least %d bytes)", st, err, len(payload))
	}

	// A clean stop detaches: the mounts stay, the app would keep its files.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(done, 60*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	for _, c := range []*csiNode{good, bad, later} {
		if !inMountTable(t, c.target) {
			t.Errorf("%s unmounted by the sidecar's stop; the CSI node owns it", c.target)
		}
	}

	for _, how := range []string{"after a clean stop", "after kill -9"} {
		cmd, _, done = startChild(t, "fs", set, env...)
		waitReady(t, socket, done)
		got, err := os.ReadFile(filepath.Join(good.target, "f"))
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("%s: read %d bytes, %v; want %d", how, len(got), err, len(payload))
		}
		if how == "after a clean stop" {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-done
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(done, 60*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

func waitExit(done <-chan error, d time.Duration) error {
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return errors.New("no exit")
	}
}

// inMountTable reports whether mp is a mount point, from the mount table
// alone: a stat of a mount nobody serves waits until someone does.
func inMountTable(t testing.TB, mp string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}
