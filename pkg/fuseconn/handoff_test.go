package fuseconn

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
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE")
	}
}

// testMount mounts a FUSE connection at a new directory and detaches it
// when the test ends, whatever happened.
func testMount(t *testing.T, o MountOptions) (string, *os.File) {
	t.Helper()
	requireRoot(t)
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	conn, err := Mount(mp, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Unmounting aborts the connection: any server still reading
		// gets ENODEV and exits.
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mp, err)
		}
		conn.Close()
	})
	return mp, conn
}

type statusLog struct {
	mu sync.Mutex
	s  []Status
}

func (l *statusLog) add(s Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.s = append(l.s, s)
}

func (l *statusLog) last() (Status, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.s) == 0 {
		return Status{}, 0
	}
	return l.s[len(l.s)-1], len(l.s)
}

func hold(t *testing.T, cfg HolderConfig) *Holder {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := Hold(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestHandoffToChild passes the connection to another process, which
// serves it; the test reads and writes through the mount. The server is
// then replaced twice, once after a clean detach (SIGTERM) and once after
// kill -9, and each successor continues the same connection.
func TestHandoffToChild(t *testing.T) {
	mp, conn := testMount(t, MountOptions{FsName: "test", Subtype: "podfs-test", DefaultPermissions: true, MaxRead: 1 << 20})
	root, sock := t.TempDir(), t.TempDir()
	var st statusLog
	h := hold(t, HolderConfig{Dir: sock, Volume: Volume{Name: "vol"}, Conn: conn, OnStatus: st.add})
	if info, err := os.Stat(filepath.Join(sock, SocketName("vol"))); err != nil || info.Mode().Perm() != 0o666 {
		t.Fatalf("socket file: %v, mode %v; want mode 0666", err, info.Mode())
	}

	c := startChild(t, sock, "vol", root)
	c.waitServing(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 100_000)
	if err := os.WriteFile(filepath.Join(mp, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the child's directory holds %d bytes (%v), want the %d written through the mount", len(got), err, len(data))
	}
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes back through the mount (%v), want %d", len(got), err, len(data))
	}
	if s, _ := st.last(); !s.Served {
		t.Errorf("last status %+v, want served", s)
	}
	if h.Init() == nil {
		t.Error("the holder has no INIT exchange after the first server started")
	}
	stats, err := h.Stats(context.Background())
	if err != nil || stats.TotalBytes != 42 || stats.FreeInodes != 7 {
		t.Errorf("stats %+v, %v; want the child's figures", stats, err)
	}

	// A clean detach, then a successor.
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t, "SIGTERM"); err != nil {
		t.Fatalf("child after SIGTERM: %v\n%s", err, c.out.String())
	}
	if s, _ := st.last(); !s.Detached {
		t.Errorf("last status %+v after SIGTERM, want detached", s)
	}
	c2 := startChild(t, sock, "vol", root)
	c2.waitServing(t)
	if !strings.Contains(c2.out.String(), childSignal+" true") {
		t.Errorf("second server did not continue the connection:\n%s", c2.out.String())
	}
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the clean replacement: read %d bytes (%v), want %d", len(got), err, len(data))
	}

	// kill -9, then a successor.
	c2.kill(t)
	c3 := startChild(t, sock, "vol", root)
	c3.waitServing(t)
	if err := os.WriteFile(filepath.Join(mp, "g"), []byte("after kill"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "g")); err != nil || string(got) != "after kill" {
		t.Fatalf("after kill -9 and a new server: %q, %v", got, err)
	}
}

// TestReadOnlyMount: the kernel itself refuses writes on a read-only mount.
func TestReadOnlyMount(t *testing.T) {
	mp, conn := testMount(t, MountOptions{Subtype: "podfs-test", ReadOnly: true})
	root, sock := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "existing"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	hold(t, HolderConfig{Dir: sock, Volume: Volume{Name: "ro", ReadOnly: true}, Conn: conn})
	c := startChild(t, sock, "ro", root)
	c.waitServing(t)
	if got, err := os.ReadFile(filepath.Join(mp, "existing")); err != nil || string(got) != "x" {
		t.Fatalf("read through the read-only mount: %q, %v", got, err)
	}
	err := os.WriteFile(filepath.Join(mp, "new"), []byte("y"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("create on a read-only mount: %v, want EROFS", err)
	}
	f, err := os.OpenFile(filepath.Join(mp, "existing"), os.O_WRONLY, 0)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for writing on a read-only mount: %v, want EROFS", err)
	}
	if f != nil {
		f.Close()
	}
}

// TestHolderRestartAdoption: the holder's process restarts (its holder is
// closed, and a new one starts without the connection); the serving
// process reconnects and gives the connection back. Then only the new
// holder and the server hold it: after the server is killed, a new server
// gets it from the new holder and continues.
func TestHolderRestartAdoption(t *testing.T) {
	mp, conn := testMount(t, MountOptions{Subtype: "podfs-test", DefaultPermissions: true})
	root, sock := t.TempDir(), t.TempDir()
	h1, err := Hold(context.Background(), HolderConfig{Dir: sock, Volume: Volume{Name: "vol"}, Conn: conn})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close() // from now on, only the holders and servers hold the connection
	c := startChild(t, sock, "vol", root)
	c.waitServing(t)
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h1.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := hold(t, HolderConfig{Dir: sock, Volume: Volume{Name: "vol"}})
	deadline := time.Now().Add(30 * time.Second)
	for !h2.HasConn() || !h2.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not give the connection to the restarted holder within 30 s\n%s", c.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h2.Init() == nil {
		t.Error("the restarted holder did not get the INIT exchange back")
	}
	if st, err := h2.Stats(context.Background()); err != nil || st.TotalBytes != 42 {
		t.Errorf("stats through the restarted holder: %+v, %v", st, err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(got) != "before" {
		t.Fatalf("read after the holder restart: %q, %v", got, err)
	}

	c.kill(t)
	c2 := startChild(t, sock, "vol", root)
	c2.waitServing(t)
	if !strings.Contains(c2.out.String(), childSignal+" true") {
		t.Errorf("the server after the adoption did not continue the connection:\n%s", c2.out.String())
	}
	if err := os.WriteFile(filepath.Join(mp, "g"), []byte("after"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "g")); err != nil || string(got) != "after" {
		t.Fatalf("after the adoption and a server restart: %q, %v", got, err)
	}
}
