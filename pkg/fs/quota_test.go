package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"podfs.io/podfs/pkg/meta"
)

// setQuota makes path in v (a bolt volume: nothing may have it open) and
// gives it a quota.
func setQuota(t *testing.T, v *volume, path string, maxBytes, maxInodes uint64) {
	t.Helper()
	ctx := context.Background()
	m, err := meta.Open(ctx, v.metaURL, meta.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	dir, err := meta.MkdirAll(ctx, m, path, 0o777, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetQuota(ctx, dir, maxBytes, maxInodes); err != nil {
		t.Fatal(err)
	}
}

// A mount of a quota'd sub-directory (what the sidecar serves for a
// provisioned claim) reports the quota in statfs and refuses growth past
// it at write(2) and at creation with EDQUOT.
func TestQuotaSubDirMount(t *testing.T) {
	v := newBoltVolume(t)
	setQuota(t, v, "/pvc/claim", 1<<20, 8)
	_, mp := mountVolume(t, v, func(c *Config) { c.SubDir = "/pvc/claim" })

	var st syscall.Statfs_t
	if err := syscall.Statfs(mp, &st); err != nil {
		t.Fatal(err)
	}
	if got := st.Blocks * uint64(st.Bsize); got != 1<<20 || st.Files != 8 || st.Ffree != 8 {
		t.Fatalf("statfs of the quota'd mount: %d bytes, %d files, %d free; want 1 MiB, 8, 8", got, st.Files, st.Ffree)
	}

	f, err := os.Create(filepath.Join(mp, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{'q'}, 256<<10)
	for range 3 {
		if _, err := f.Write(chunk); err != nil {
			t.Fatalf("write within the quota: %v", err)
		}
	}
	// 768 KiB written; 512 KiB more does not fit: write(2) says so.
	_, err = f.Write(append(chunk, chunk...))
	if !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("write past the quota: %v, want EDQUOT", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after a refused write: %v", err)
	}
	fi, err := os.Stat(filepath.Join(mp, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 1<<20 || fi.Size() < 768<<10 {
		t.Fatalf("file size %d after the refused write", fi.Size())
	}
	if err := syscall.Statfs(mp, &st); err != nil {
		t.Fatal(err)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used != uint64((fi.Size()+4095)&^4095) {
		t.Fatalf("statfs says %d bytes used, the file has %d", used, fi.Size())
	}

	// Inodes: "big" is 1 of 8.
	for i := range 7 {
		if err := os.Mkdir(filepath.Join(mp, "d"+string(rune('0'+i))), 0o755); err != nil {
			t.Fatalf("mkdir %d: %v", i, err)
		}
	}
	if err := os.Mkdir(filepath.Join(mp, "one-too-many"), 0o755); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("mkdir past the inode quota: %v, want EDQUOT", err)
	}
	if _, err := os.Create(filepath.Join(mp, "one-too-many")); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("create past the inode quota: %v, want EDQUOT", err)
	}
}

// Through a mount of the whole volume: a directory renamed across a quota
// boundary gets EXDEV (so mv copies), a file's usage moves with it.
func TestQuotaRenameMount(t *testing.T) {
	v := newBoltVolume(t)
	setQuota(t, v, "/a", 64<<10, 0)
	_, mp := mountVolume(t, v)
	if err := os.MkdirAll(filepath.Join(mp, "b", "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := os.Rename(filepath.Join(mp, "b", "d"), filepath.Join(mp, "a", "d"))
	if !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("directory rename into a quota: %v, want EXDEV", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "b", "f"), make([]byte, 40<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mp, "b", "f"), filepath.Join(mp, "a", "f")); err != nil {
		t.Fatalf("file rename into a quota: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "b", "g"), make([]byte, 40<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	err = os.Rename(filepath.Join(mp, "b", "g"), filepath.Join(mp, "a", "g"))
	if !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("file rename into a full quota: %v, want EDQUOT", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(mp, "a"), &st); err != nil {
		t.Fatal(err)
	}
	// The whole-volume mount reports the volume, not /a's quota.
	if st.Blocks*uint64(st.Bsize) == 64<<10 {
		t.Fatalf("statfs of the volume root reported the sub-directory's quota")
	}
}

// The commit checks the quota again: bytes accepted by write(2) that no
// longer fit when committed (the quota shrank meanwhile) fail close(2)
// with EDQUOT, not EIO (and the data layer does not retry the refusal).
func TestQuotaCommitRecheck(t *testing.T) {
	v := newBoltVolume(t)
	setQuota(t, v, "/q", 1<<20, 0)
	m, mp := mountVolume(t, v)
	f, err := os.Create(filepath.Join(mp, "q", "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 512<<10)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir, err := meta.LookupPath(ctx, m.m, "/q")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.m.SetQuota(ctx, dir, 256<<10, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("close after the quota shrank: %v, want EDQUOT", err)
	}
}
