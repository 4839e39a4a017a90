package fs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// lockHelperEnv makes the test binary act as a second process that tries a
// lock and reports the outcome (locks of one process never conflict with
// each other, so a second process is needed).
const lockHelperEnv = "PODFS_LOCK_HELPER"

func init() {
	spec := os.Getenv(lockHelperEnv)
	if spec == "" {
		return
	}
	kind, path, _ := strings.Cut(spec, ":")
	os.Exit(tryLock(kind, path))
}

// tryLock exits 0 when the lock was taken, 3 when it is held elsewhere, 1 on error.
func tryLock(kind, path string) int {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	switch kind {
	case "flock":
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	case "fcntl":
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 100}
		err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	case "getlk":
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 100}
		if err = unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err == nil && lk.Type != unix.F_UNLCK {
			fmt.Printf("held by pid %d", lk.Pid)
			return 3
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return 3
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func otherProcessLock(t *testing.T, kind, path string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+kind+":"+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() == 1 {
			t.Fatalf("lock helper (%s): %s", kind, out)
		}
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func TestLocksBetweenProcesses(t *testing.T) {
	v := newBoltVolume(t)
	_, mp := mountVolume(t, v)
	p := filepath.Join(mp, "locked")
	mustWrite(t, p, []byte("lock me"))

	t.Run("flock", func(t *testing.T) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		if code := otherProcessLock(t, "flock", p); code != 3 {
			t.Fatalf("another process took a flock we hold (exit %d)", code)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
			t.Fatal(err)
		}
		if code := otherProcessLock(t, "flock", p); code != 0 {
			t.Fatalf("another process could not flock after we unlocked (exit %d)", code)
		}
		// closing the file drops the lock too
		unix.Flock(int(f.Fd()), unix.LOCK_EX)
		f.Close()
		if code := otherProcessLock(t, "flock", p); code != 0 {
			t.Fatalf("flock survived close (exit %d)", code)
		}
	})

	t.Run("fcntl", func(t *testing.T) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 50, Len: 10}
		if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if code := otherProcessLock(t, "fcntl", p); code != 3 {
			t.Fatalf("another process locked a range we hold (exit %d)", code)
		}
		if code := otherProcessLock(t, "getlk", p); code != 3 {
			t.Fatalf("F_GETLK in another process did not see our lock (exit %d)", code)
		}
		f.Close() // close(2) drops the process's POSIX locks on the file
		if code := otherProcessLock(t, "fcntl", p); code != 0 {
			t.Fatalf("POSIX lock survived close (exit %d)", code)
		}
	})
}
