package sidecar

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/sidecar/volumeset"
)

// fuseSet formats two podfs volumes (bolt metadata, file storage: bolt
// serves one process, so each volume has its own) and returns a volume set
// serving them under dir.
func fuseSet(t *testing.T) (*volumeset.VolumeSet, string) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("/dev/fuse missing: this test needs FUSE (%v)", err)
	}
	set, dir := testSet(t, true)
	for _, n := range []string{"data", "models"} {
		metaURL := "bolt://" + filepath.Join(dir, n+".db")
		ctx := context.Background()
		m, err := meta.Open(ctx, metaURL, meta.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = m.Init(ctx, meta.Format{Name: n, UUID: "00000000-0000-4000-8000-00000000000" + string(rune('1'+len(set.Volumes))),
			BlockSize: 1 << 20, Storage: "file://" + filepath.Join(dir, n+"-objects"), CreatedAt: time.Now(), Version: meta.FormatVersion})
		m.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		set.Volumes = append(set.Volumes, volumeset.Volume{Name: n, MountPoint: dir + "/pods/" + volumeset.PodUIDRef + "/" + n, MetaURL: metaURL})
		mp := dir + "/pods/uid-1/" + n
		// Detach every mount stacked at mp, dead ones included (a crash
		// step leaves them), without asking mountinfo first: on a dead FUSE
		// mount that question itself can fail. EINVAL means nothing is left.
		t.Cleanup(func() {
			for range 8 {
				if unix.Unmount(mp, unix.MNT_DETACH) != nil {
					break
				}
			}
		})
	}
	return set, dir
}

// TestFUSESidecarLifecycle runs the sidecar runtime with the real pkg/fs
// mounter in a child process: serve, SIGTERM with a busy mount, restart
// (data still there), crash (dead mounts) and recovery by the next run.
func TestFUSESidecarLifecycle(t *testing.T) {
	set, dir := fuseSet(t)
	socket := dir + "/probe.sock"
	data, models := dir+"/pods/uid-1/data", dir+"/pods/uid-1/models"
	payload := bytes.Repeat([]byte("podfs "), 50000)

	// 1. Serve, write, and stop with SIGTERM while a file is held open.
	cmd, _, done := startChild(t, "fs", set, "SOCKET="+socket)
	waitReady(t, socket, done)
	if err := os.WriteFile(data+"/f", payload, 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := os.Create(models + "/busy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := busy.WriteString("held open"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	busy.Close()
	for _, mp := range []string{data, models} {
		if mounted(t, mp) {
			t.Fatalf("%s still mounted after SIGTERM", mp)
		}
	}

	// 2. A new run serves the same data.
	cmd, _, done = startChild(t, "fs", set, "SOCKET="+socket)
	waitReady(t, socket, done)
	got, err := os.ReadFile(data + "/f")
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("after restart: read %d bytes, %v; want %d bytes", len(got), err, len(payload))
	}
	if b, err := os.ReadFile(models + "/busy"); err != nil || string(b) != "held open" {
		t.Fatalf("the busy file's data: %q, %v", b, err)
	}

	// 3. Crash: the mounts stay behind, dead.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	if _, err := os.ReadDir(data); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("no dead mount after the crash: %v", err)
	}

	// 4. The next run clears the dead mounts and serves again.
	cmd, _, done = startChild(t, "fs", set, "SOCKET="+socket)
	waitReady(t, socket, done)
	if got, err := os.ReadFile(data + "/f"); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("after the crash: read %d bytes, %v", len(got), err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("exit: %v", err)
	}
	for _, mp := range []string{data, models} {
		if mounted(t, mp) {
			t.Fatalf("%s still mounted", mp)
		}
	}
}
