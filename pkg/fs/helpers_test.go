package fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
)

// testBlockSize keeps block objects small so files spanning several blocks
// and chunks stay quick to write; chunks keep their real 64 MiB.
const testBlockSize = 1 << 20

// volume is a formatted test volume.
type volume struct {
	dir     string
	metaURL string
	storage string
	name    string
}

// newBoltVolume formats a volume on the embedded default: bolt metadata and
// file storage in one temporary directory.
func newBoltVolume(t *testing.T) *volume {
	t.Helper()
	return newBoltVolumeQuery(t, "")
}

// newBoltVolumeQuery is newBoltVolume with file storage URL options
// (e.g. "journal=true").
func newBoltVolumeQuery(t *testing.T, query string) *volume {
	t.Helper()
	dir := t.TempDir()
	storage := "file://" + filepath.Join(dir, "data")
	if query != "" {
		storage += "?" + query
	}
	v := &volume{
		dir:     dir,
		metaURL: "bolt://" + filepath.Join(dir, "meta.db"),
		storage: storage,
		name:    "test",
	}
	formatVolume(t, v.metaURL, v.storage, v.name, meta.FormatVersion)
	return v
}

func formatVolume(t *testing.T, metaURL, storage, name string, version int) {
	t.Helper()
	ctx := context.Background()
	m, err := meta.Open(ctx, metaURL, meta.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open metadata %s: %v", metaURL, err)
	}
	defer m.Close(ctx)
	err = m.Init(ctx, meta.Format{
		Name: name, UUID: "00000000-0000-4000-8000-000000000000", BlockSize: testBlockSize,
		Storage: storage, CreatedAt: time.Now(), Version: version,
	})
	if err != nil {
		t.Fatalf("format %s: %v", metaURL, err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(&tWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// tWriter sends log lines to t.Log (shown on failure).
type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// mountVolume mounts v in this process and unmounts it when the test ends,
// also on failure (lazily if it must).
func mountVolume(t *testing.T, v *volume, mutate ...func(*Config)) (*Mount, string) {
	t.Helper()
	testenv.RequireRoot(t)
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{MetaURL: v.metaURL, MountPoint: mp, Logger: testLogger(t)}
	for _, f := range mutate {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("mount %s on %s: %v", v.metaURL, mp, err)
	}
	t.Cleanup(func() { unmountForCleanup(t, m, mp) })
	return m, mp
}

// unmountForCleanup unmounts m, bounding the wait: past unmountWait, or
// when the FUSE connection outlives the unmount (a lazy unmount whose users
// wait on a hung server), it aborts the connection and detaches the mount,
// so that a failing test reports and the test binary exits.
func unmountForCleanup(t *testing.T, m *Mount, mp string) {
	t.Helper()
	conn, hasConn := fuseConn(mp)
	defer func() {
		if IsMounted(mp) {
			t.Errorf("%s still mounted after Unmount; detaching it", mp)
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- m.Unmount(ctx)
	}()
	hung := false
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("unmount %s: %v", mp, err)
		}
	case <-time.After(unmountWait):
		t.Errorf("unmount of %s still running after %s: the server is hung", mp, unmountWait)
		hung = true
	}
	if !hung {
		// Unmount returned; it waited for the serve loop already.
		select {
		case <-m.served:
			return
		case <-time.After(5 * time.Second):
		}
	}
	// Still served: the connection is this mount's, safe to abort.
	if !hasConn {
		t.Errorf("%s still served after unmounting, and its FUSE connection is unknown", mp)
		return
	}
	t.Logf("%s still served after unmounting: aborting its FUSE connection", mp)
	abortAndDetach(t, conn, mp)
	select {
	case <-m.served:
	case <-time.After(10 * time.Second):
		// go-fuse's serve loop waits for its handlers; a hung one never
		// returns. The aborted connection no longer holds anyone.
		t.Logf("%s: a request handler is still running after aborting FUSE connection %d", mp, conn)
	}
}

// unmountWait bounds each wait of a cleanup on a FUSE server. A healthy
// unmount takes well under a second; Unmount itself may wait 10 s for a
// busy mount's users.
const unmountWait = 45 * time.Second

// ensureUnmounted registers a cleanup that detaches whatever is left at mp
// (for mounts made by child processes).
func ensureUnmounted(t *testing.T, mp string) {
	t.Cleanup(func() {
		if IsMounted(mp) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	})
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// podfsBinary builds cmd/podfs once per test run.
func podfsBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "podfs-fs-test-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "podfs")
		cmd := exec.Command("go", "build", "-o", binPath, "podfs.io/podfs/cmd/podfs")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/podfs: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	if arg := os.Getenv(handoffLoadEnv); arg != "" {
		if err := handoffLoadMain(arg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if arg := os.Getenv(handoffChildEnv); arg != "" {
		if err := handoffChild(arg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if path := os.Getenv(mmapChildEnv); path != "" {
		if err := mmapChild(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// runPodfs runs the binary to completion and returns its exit code and output.
func runPodfs(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, podfsBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("run podfs %v: %v", args, err)
	}
	return 0, out.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameFile compares two files' contents without holding both in memory.
func sameFile(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%s and %s differ in the MiB at offset %d (%d vs %d bytes)", a, b, off, na, nb)
		}
		if ea != nil || eb != nil {
			return
		}
		off += int64(na)
	}
}
