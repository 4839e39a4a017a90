package sidecar

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"podfs.io/podfs/internal/testenv"
)

// fuseChild serves an empty FUSE file system at dir until killed (the
// "previous run" whose death leaves a dead mount).
func fuseChild(dir string) int {
	srv, err := gofs.Mount(dir, &gofs.Inode{}, &gofs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true, FsName: "podfs-test", Name: "podfs"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mount:", err)
		return 1
	}
	fmt.Println("mounted")
	srv.Wait()
	return 0
}

func TestClearDeadMount(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("/dev/fuse missing: this test needs FUSE (%v)", err)
	}
	dir := t.TempDir()
	mp := dir + "/vol"
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	// The per-pod directory is the CSI node's bind mount on ordinary
	// nodes: clearing must keep it.
	if err := unix.Mount(mp, mp, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 4 && mounted(t, mp); i++ {
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	})

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=fuse", "FUSE_DIR="+mp)
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "mounted") {
		select {
		case err := <-done:
			t.Fatalf("FUSE child exited: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("FUSE child did not mount:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Crash: the kernel keeps the mount, every access fails.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	if _, err := os.Stat(mp); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("no dead mount after the crash: stat %v", err)
	}
	if err := ClearDeadMount(mp); err != nil {
		t.Fatalf("ClearDeadMount: %v", err)
	}
	if _, err := os.Stat(mp); err != nil {
		t.Fatalf("mount point still broken: %v", err)
	}
	if !mounted(t, mp) {
		t.Fatal("the bind mount under the dead FUSE mount was removed too")
	}
	// Nothing to clear: a no-op.
	if err := ClearDeadMount(mp); err != nil || !mounted(t, mp) {
		t.Fatalf("second ClearDeadMount: %v, mounted %v", err, mounted(t, mp))
	}
}
