package fs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

// TestStackOnDeadMountWithoutCachedAttrs is a restarted sidecar's mount: its
// previous run was killed, and by the time it mounts again the kernel no
// longer has the dead root's attributes cached (attr_timeout=0 here makes
// that certain), so even a stat of the mount point fails with ENOTCONN.
// Mounting on top must work anyway, and a process that opened the dead mount
// point's parent path sees the new mount.
func TestStackOnDeadMountWithoutCachedAttrs(t *testing.T) {
	testenv.RequireRoot(t)
	v := newBoltVolume(t)
	mp := newMountPoint(t)
	t.Cleanup(func() {
		// Detach every layer, the dead one included; EINVAL means none left.
		for range 4 {
			if syscall.Unmount(mp, syscall.MNT_DETACH) != nil {
				break
			}
		}
	})
	p := startMount(t, v.metaURL, mp, "-o", "attr_timeout=0,entry_timeout=0")
	p.waitMounted(t, mp)
	payload := []byte("written before the crash")
	mustWrite(t, filepath.Join(mp, "f"), payload)
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !p.awaitExit(t, "SIGKILL") {
		t.FailNow()
	}
	if _, err := os.Stat(mp); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the dead mount point: %v, want ENOTCONN (nothing cached)", err)
	}

	m, _ := mountVolume(t, v, func(c *Config) {
		c.MountPoint = mp
		c.StackOnDeadMount = true
	})
	if m.MountPoint() != mp {
		t.Fatalf("mounted at %s, want %s", m.MountPoint(), mp)
	}
	if got := mustRead(t, filepath.Join(mp, "f")); !bytes.Equal(got, payload) {
		t.Fatalf("read %q through the stacked mount, want %q", got, payload)
	}
	mustWrite(t, filepath.Join(mp, "g"), []byte("after"))
	if got := mustRead(t, filepath.Join(mp, "g")); string(got) != "after" {
		t.Fatalf("read %q, want %q", got, "after")
	}
}

func TestKernelMountData(t *testing.T) {
	mo, err := resolveOptions(&Config{Options: []string{"allow_other,noexec,dev"}})
	if err != nil {
		t.Fatal(err)
	}
	data, flags := kernelMountData(7, &mo.fuse)
	for _, want := range []string{"fd=7", "rootmode=40000", "allow_other", "max_read=1048576", "default_permissions"} {
		if !bytes.Contains([]byte(data), []byte(want)) {
			t.Errorf("mount data %q lacks %q", data, want)
		}
	}
	for _, bad := range []string{"noexec", "dev,", "nosuid"} {
		if bytes.Contains([]byte(data+","), []byte(bad)) {
			t.Errorf("mount data %q carries %q, which mount(2) takes as a flag", data, bad)
		}
	}
	if flags&syscall.MS_NOEXEC == 0 || flags&syscall.MS_NODEV != 0 || flags&syscall.MS_NOSUID == 0 {
		t.Errorf("flags %#x: want noexec and nosuid, not nodev", flags)
	}
}
