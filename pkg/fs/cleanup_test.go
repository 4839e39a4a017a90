package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/meta/kv"
)

// A failing test can leave its FUSE server hung: a request it never
// answers, a lock it never releases. Any thread of the test process then
// blocked on the mount (a goroutine's read, or the kernel flushing an open
// file as the process exits) waits for that server, which lives in the same
// process or in a child stuck the same way: the test binary never exits and
// never reports. The cleanups below bound every wait on a server and, past
// the bound, abort the FUSE connection (every waiting request fails, the
// serve loop ends) and detach the mount.

// fusectlDir is where the kernel's fusectl file system lists FUSE
// connections by number (the mount's device minor).
const fusectlDir = "/sys/fs/fuse/connections"

// fuseConn returns the FUSE connection number of the topmost FUSE mount at
// mp (see mountsAt: a stat of a hung mount would block).
func fuseConn(mp string) (int, bool) {
	conn, found := 0, false
	for _, m := range mountsAt(mp) {
		if strings.HasPrefix(m.fstype, "fuse") && m.minor >= 0 {
			conn, found = m.minor, true
		}
	}
	return conn, found
}

// abortFUSE aborts FUSE connection conn, mounting fusectl first if it is
// not. The caller must know the connection is still its own (its server
// still holds it): a number is reused once its connection is gone.
func abortFUSE(conn int) error {
	abort := filepath.Join(fusectlDir, strconv.Itoa(conn), "abort")
	if _, err := os.Stat(filepath.Join(fusectlDir, strconv.Itoa(conn))); err != nil {
		if err := syscall.Mount("fusectl", fusectlDir, "fusectl", 0, ""); err != nil && err != syscall.EBUSY {
			return fmt.Errorf("mount fusectl at %s: %w", fusectlDir, err)
		}
	}
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
	}
	return nil
}

// abortAndDetach aborts connection conn and lazily unmounts mp (every layer
// of it that is a FUSE mount of that connection), reporting on t.
func abortAndDetach(t testing.TB, conn int, mp string) {
	if err := abortFUSE(conn); err != nil {
		t.Errorf("%v", err)
	} else {
		t.Logf("aborted FUSE connection %d of %s", conn, mp)
	}
	for range 4 {
		c, ok := fuseConn(mp)
		if !ok || c != conn {
			break
		}
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Errorf("detach %s: %v", mp, err)
			break
		}
	}
}

// hungChildEnv makes TestCleanupOfHungServer the child that hangs its
// server and fails.
const hungChildEnv = "PODFS_TEST_HUNG_SERVER_CHILD"

// TestCleanupOfHungServer runs, in a child test process, a test that hangs
// its in-process server (a metadata transaction that never ends, a create
// waiting on it) and then fails: the child must report the failure and
// exit, its mount gone, rather than hang on its own mount.
func TestCleanupOfHungServer(t *testing.T) {
	testenv.RequireRoot(t)
	if os.Getenv(hungChildEnv) == "1" {
		hangAndFail(t)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestCleanupOfHungServer$", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), hungChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	t.Logf("child test output:\n%s", out)
	if ctx.Err() != nil {
		t.Fatalf("the child test with a hung server did not exit within 5 minutes")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("child test: %v, want exit status 1 (a reported failure)", err)
	}
	for _, want := range []string{"deliberate failure", "aborted FUSE connection", "--- FAIL: TestCleanupOfHungServer"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("child test output lacks %q", want)
		}
	}
	m := regexp.MustCompile(`mounted at (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatal("child test did not say where it mounted")
	}
	if IsMounted(string(m[1])) {
		t.Errorf("the child's mount %s is left behind", m[1])
		_ = syscall.Unmount(string(m[1]), syscall.MNT_DETACH)
	}
}

// hangAndFail is the child: it blocks the metadata engine for good, starts
// a create that waits on it, and fails.
func hangAndFail(t *testing.T) {
	v := newBoltVolume(t)
	m, mp := mountVolume(t, v)
	t.Logf("mounted at %s", mp)
	entered := make(chan struct{})
	go func() {
		_ = m.m.(*meta.Client).Engine().Update(context.Background(), func(kv.Tx) error {
			close(entered)
			select {} // never ends: every later transaction waits
		})
	}()
	<-entered
	created := make(chan error, 1)
	go func() { created <- os.WriteFile(filepath.Join(mp, "never"), []byte("x"), 0o644) }()
	select {
	case err := <-created:
		t.Fatalf("create on a mount whose metadata is blocked returned: %v", err)
	case <-time.After(time.Second):
		// The create is waiting on the server (nothing asserts on time here:
		// failing is the point).
	}
	t.Fatal("deliberate failure with a hung server")
}
