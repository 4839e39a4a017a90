package fs

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

// TestCommands drives the podfs binary through a volume's life on the
// embedded default: format (twice: idempotent), mount, status, bench,
// umount, fsck, gc.
func TestCommands(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	for range 2 {
		if code, out := runPodfs(t, "format", metaURL, "cmdvol", "--block-size", "1M"); code != 0 {
			t.Fatalf("format: exit %d\n%s", code, out)
		}
	}
	if code, out := runPodfs(t, "format", metaURL, "othername"); code == 0 || !strings.Contains(out, "holds another volume") {
		t.Fatalf("formatting an existing volume under another name: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Fatalf("the default storage file://DIR/data was not created: %v", err)
	}
	if code, out := runPodfs(t, "format", "bolt://"+filepath.Join(dir, "x.db"), "v", "--block-size", "3M"); code != 2 || !strings.Contains(out, "power of two") {
		t.Fatalf("bad --block-size: exit %d\n%s", code, out)
	}

	mp := newMountPoint(t)
	port := testenv.FreePort(t)
	p := startMount(t, metaURL, mp, "--metrics", testenv.Addr(port))
	p.waitMounted(t, mp)
	mustWrite(t, filepath.Join(mp, "f"), []byte("some data"))

	// bolt serves one process: status asks the mount process holding it
	code, out := runPodfs(t, "status", metaURL)
	if code != 0 || !strings.Contains(out, "cmdvol") || !strings.Contains(out, "Sessions: 1") || !strings.Contains(out, mp) {
		t.Errorf("status of a mounted bolt volume: exit %d\n%s", code, out)
	}

	resp, err := http.Get("http://" + testenv.Addr(port) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`podfs_fuse_ops_total{op="create"}`, `podfs_fuse_op_duration_seconds_bucket{op="write"`, `podfs_object_requests_total{method="put",result="ok"}`, "podfs_open_handles", "podfs_data_block_uploads_total",
		"podfs_meta_transactions_total", "podfs_meta_conflicts_total", "podfs_meta_unsynced_records", "podfs_cache_hits_total",
		"podfs_cache_bytes", "podfs_write_buffer_bytes"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	code, out = runPodfs(t, "bench", mp, "--big-size", "8M", "--small-count", "20", "--files", "50")
	if code != 0 || !strings.Contains(out, "create empty files") || !strings.Contains(out, "read big file") {
		t.Fatalf("bench: exit %d\n%s", code, out)
	}

	if code, out := runPodfs(t, "umount", mp); code != 0 {
		t.Fatalf("umount: exit %d\n%s", code, out)
	}
	if !p.awaitExit(t, "podfs umount") {
		t.FailNow()
	}
	if p.err != nil {
		t.Fatalf("podfs mount exited with %v after podfs umount", p.err)
	}
	var sfs syscall.Statfs_t
	if IsMounted(mp) {
		t.Fatalf("still mounted after umount (statfs: %v)", syscall.Statfs(mp, &sfs))
	}

	code, out = runPodfs(t, "status", metaURL)
	if code != 0 || !strings.Contains(out, "cmdvol") || !strings.Contains(out, "Sessions: 0") {
		t.Errorf("status after unmount: exit %d\n%s", code, out)
	}
	if code, out := runPodfs(t, "fsck", metaURL); code != 0 {
		t.Errorf("fsck: exit %d\n%s", code, out)
	}
	if code, out := runPodfs(t, "gc", metaURL); code != 0 || !strings.Contains(out, "orphans") {
		t.Errorf("gc: exit %d\n%s", code, out)
	}
	if code, out := runPodfs(t, "mount", metaURL); code != 2 || !strings.Contains(out, "MOUNTPOINT") {
		t.Errorf("mount without a mount point: exit %d\n%s", code, out)
	}
	if code, out := runPodfs(t, "mount", "--help"); code != 0 || !strings.Contains(out, "Usage: podfs mount") {
		t.Errorf("mount --help: exit %d\n%s", code, out)
	}
}

// TestSubdirAndReadOnly serves a sub-directory as the root, and a read-only mount.
func TestSubdirAndReadOnly(t *testing.T) {
	v := newBoltVolume(t)
	m, mp := mountVolume(t, v)
	if err := os.MkdirAll(filepath.Join(mp, "tenants", "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(mp, "tenants", "a", "inside"), []byte("in a"))
	mustWrite(t, filepath.Join(mp, "outside"), []byte("root"))
	unmountForCleanup(t, m, mp)

	if _, err := New(t.Context(), Config{MetaURL: v.metaURL, MountPoint: t.TempDir(), SubDir: "nope"}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing subdir: %v", err)
	}
	_, sub := mountVolume(t, v, func(c *Config) { c.SubDir = "tenants/a"; c.Options = []string{"ro"} })
	if got := string(mustRead(t, filepath.Join(sub, "inside"))); got != "in a" {
		t.Fatalf("subdir mount reads %q", got)
	}
	ents, err := os.ReadDir(sub)
	if err != nil || len(ents) != 1 || ents[0].Name() != "inside" {
		t.Fatalf("subdir mount lists %v, %v", ents, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(sub, &st); err != nil || st.Ino != 1 {
		t.Fatalf("the subdir root has inode %d (%v), want 1", st.Ino, err)
	}
	if _, err := os.Stat(filepath.Join(sub, "..", "outside")); err == nil {
		t.Fatal("the volume root is reachable through .. of the subdir mount")
	}
	if err := os.WriteFile(filepath.Join(sub, "new"), []byte("x"), 0o644); !errorsIsROFS(err) {
		t.Fatalf("write on a read-only mount: %v, want EROFS", err)
	}
}

func errorsIsROFS(err error) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == syscall.EROFS
}

// TestUnmountWithEndedContext: a caller stopping on a signal may pass a
// context that has already ended; buffered data is written anyway.
func TestUnmountWithEndedContext(t *testing.T) {
	v := newBoltVolume(t)
	m, mp := mountVolume(t, v)
	data := randBytes(testBlockSize + 5)
	f, err := os.Create(filepath.Join(mp, "buffered"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	// Still open: only Unmount's own flush can write the data (the mount is
	// busy, so it is detached lazily).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Unmount(ctx); err != nil {
		t.Fatalf("unmount with an ended context: %v", err)
	}
	f.Close()
	_, mp2 := mountVolume(t, v)
	if got := mustRead(t, filepath.Join(mp2, "buffered")); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(data))
	}
}
