package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/fuseconn"
)

// mountConn mounts a FUSE connection as the CSI node does (fuseconn.Mount)
// at a new directory, detached and closed when the test ends.
func mountConn(t *testing.T, ro bool) (string, *os.File) {
	t.Helper()
	testenv.RequireRoot(t)
	mp := newMountPoint(t)
	conn, err := fuseconn.Mount(mp, fuseconn.MountOptions{FsName: "podfs:test", Subtype: "podfs",
		ReadOnly: ro, DefaultPermissions: true, AllowOther: true, MaxRead: ioSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return mp, conn
}

// serveConn serves a handed-off connection, mounted at mp, in this process.
//
// The first server of a connection also makes the kernel stop sending POLL
// requests (disablePoll), as a holder mounting for another process never
// needs to: this process serves the files it opens, and the Go runtime
// registers every file it opens with epoll. That registration asks the
// server (FUSE_POLL) from inside the runtime, where the thread cannot stop
// for a garbage collection; one that starts meanwhile waits for it, the
// server's goroutines wait for the collection, and the process hangs.
func serveConn(t *testing.T, v *volume, mp string, c *Conn) *Mount {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := New(ctx, Config{MetaURL: v.metaURL, Conn: c, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("serve the handed-off connection: %v", err)
	}
	if c.Init == nil {
		if err := disablePoll(mp); err != nil {
			_ = m.Unmount(ctx)
			t.Fatal(err)
		}
	}
	return m
}

// TestServeHandedOffConn serves a connection mounted elsewhere, detaches
// (Unmount leaves the mount in place), and continues it with a new server
// in the same process: data written before the detach, still buffered
// through a file kept open across it, is there, and that file handle
// works with the new server.
func TestServeHandedOffConn(t *testing.T) {
	v := newBoltVolume(t)
	mp, conn := mountConn(t, false)
	var saved []byte
	m1 := serveConn(t, v, mp, &Conn{File: conn, SaveInit: func(b []byte) error { saved = b; return nil }})
	if saved == nil {
		t.Fatal("the first server did not save the INIT exchange")
	}
	if m1.attached.Continued {
		t.Error("the first server says it continued a connection")
	}
	st, err := m1.StatFS(context.Background())
	if err != nil || st.TotalInodes == 0 || st.AvailBytes <= 0 {
		t.Errorf("StatFS: %+v, %v", st, err)
	}
	data := randBytes(3*testBlockSize + 12345)
	f, err := os.Create(filepath.Join(mp, "kept-open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustWrite(t, filepath.Join(mp, "entry"+string(rune('a'+i))), nil)
	}
	d, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	first, err := d.Readdirnames(2)
	if err != nil {
		t.Fatal(err)
	}

	if err := m1.Unmount(context.Background()); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if !IsMounted(mp) {
		t.Fatal("detaching a handed-off connection unmounted it")
	}

	m2 := serveConn(t, v, mp, &Conn{File: conn, Init: saved})
	t.Cleanup(func() {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH) // the holder's job; ends m2's serving
		_ = m2.Wait()
	})
	if !m2.attached.Continued {
		t.Error("the second server did not continue the connection")
	}
	if got := mustRead(t, filepath.Join(mp, "kept-open")); !bytes.Equal(got, data) {
		t.Fatalf("after the detach: %s", describeDiff(got, data, testBlockSize))
	}
	// The handle opened by the first server writes and syncs through the second.
	if _, err := f.Write([]byte("tail")); err != nil {
		t.Fatalf("write through a handle of the previous server: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync through a handle of the previous server (it detached cleanly): %v", err)
	}
	if got := mustRead(t, filepath.Join(mp, "kept-open")); !bytes.Equal(got, append(data, "tail"...)) {
		t.Fatalf("after writing through the inherited handle: %s", describeDiff(got, append(data, "tail"...), testBlockSize))
	}
	// The directory stream opened by the first server lists on.
	rest, err := d.Readdirnames(-1)
	if err != nil {
		t.Fatalf("readdir through a directory handle of the previous server: %v", err)
	}
	if all := append(first, rest...); len(all) != 6 {
		t.Errorf("listed %v across the detach, want 6 names", all)
	}
}
