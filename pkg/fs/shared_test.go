package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
)

// TestTwoMountsCloseToOpen mounts one volume twice (etcd metadata, shared
// file storage): what one mount writes and closes, the other opens and reads.
func TestTwoMountsCloseToOpen(t *testing.T) {
	testenv.RequireRoot(t)
	endpoint := testenv.StartEtcd(t)
	dir := t.TempDir()
	v := &volume{
		dir:     dir,
		metaURL: "etcd://" + endpoint + "/shared",
		storage: "file://" + filepath.Join(dir, "data"),
		name:    "shared",
	}
	formatVolume(t, v.metaURL, v.storage, v.name, meta.FormatVersion)
	_, a := mountVolume(t, v)
	_, b := mountVolume(t, v)

	// A new file: created and closed on a, opened and read on b.
	first := randBytes(2*testBlockSize + 3)
	mustWrite(t, filepath.Join(a, "new"), first)
	if got := mustRead(t, filepath.Join(b, "new")); !bytes.Equal(got, first) {
		t.Fatalf("b read %d bytes of a's new file, want %d (or content differs)", len(got), len(first))
	}
	// An existing file b has read (and cached) is rewritten on a, shorter and
	// different: b's next open must see the new content and length.
	for i, size := range []int{1000, 3*testBlockSize + 17, 10, 10} { // the last keeps the size: only mtime tells
		next := randBytes(size)
		mustWrite(t, filepath.Join(a, "new"), next)
		got := mustRead(t, filepath.Join(b, "new"))
		if !bytes.Equal(got, next) {
			t.Fatalf("round %d: b read %d bytes after a rewrote the file with %d", i, len(got), size)
		}
	}
	// And the other way round, with directories and renames.
	if err := os.MkdirAll(filepath.Join(b, "d1", "d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustWrite(t, filepath.Join(b, "d1", "d2", fmt.Sprintf("f%d", i)), []byte(fmt.Sprint(i)))
	}
	if err := os.Rename(filepath.Join(b, "d1", "d2", "f0"), filepath.Join(b, "d1", "moved")); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, filepath.Join(a, "d1", "moved"))); got != "0" {
		t.Fatalf("a read %q from the file b renamed", got)
	}
	ents, err := os.ReadDir(filepath.Join(a, "d1", "d2"))
	if err != nil || len(ents) != 19 {
		t.Fatalf("a lists %d entries in b's directory, want 19: %v", len(ents), err)
	}
	// Appends from both sides, each closing in turn.
	p := filepath.Join(a, "log")
	mustWrite(t, p, nil)
	var want []byte
	for i := range 6 {
		side := []string{a, b}[i%2]
		line := []byte(fmt.Sprintf("line %d from %s\n", i, filepath.Base(filepath.Dir(side))))
		f, err := os.OpenFile(filepath.Join(side, "log"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want = append(want, line...)
	}
	for _, side := range []string{a, b} {
		if got := mustRead(t, filepath.Join(side, "log")); !bytes.Equal(got, want) {
			t.Fatalf("%s sees the shared log as %q, want %q", side, got, want)
		}
	}
}
