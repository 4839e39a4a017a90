package data

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"

	"podfs.io/podfs/pkg/meta"
)

// newBoltMeta opens a fresh volume on the real embedded (bolt) engine with
// block size page and creates one regular file in it.
func newBoltMeta(t testing.TB) (meta.Meta, meta.Ino) {
	t.Helper()
	return newBoltMetaBS(t, page)
}

func newBoltMetaBS(t testing.TB, bs int) (meta.Meta, meta.Ino) {
	t.Helper()
	ctx := context.Background()
	m, err := meta.Open(ctx, "bolt://"+filepath.Join(t.TempDir(), "meta.db"), meta.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open bolt metadata: %v", err)
	}
	t.Cleanup(func() { m.Close(ctx) })
	if err := m.Init(ctx, meta.Format{Name: "datatest", BlockSize: bs, Storage: "mem://"}); err != nil {
		t.Fatalf("init volume: %v", err)
	}
	ino, _, err := m.Mknod(ctx, meta.RootIno, "f", syscall.S_IFREG|0o644, 0, 0, 0)
	if err != nil {
		t.Fatalf("create a file: %v", err)
	}
	return m, ino
}

// fileLength is the file's length in metadata.
func fileLength(t testing.TB, m meta.Meta, ino meta.Ino) uint64 {
	t.Helper()
	if f, ok := m.(*fakeMeta); ok {
		return f.length(ino)
	}
	a, err := m.GetAttr(context.Background(), ino)
	if err != nil {
		t.Fatalf("getattr %d: %v", ino, err)
	}
	return a.Size
}

// setLength changes the file's length in metadata, as truncate(2) does.
func setLength(ctx context.Context, m meta.Meta, ino meta.Ino, size uint64) error {
	if f, ok := m.(*fakeMeta); ok {
		f.truncate(ino, size)
		return nil
	}
	_, err := m.SetAttr(ctx, ino, meta.SetSize, meta.Attr{Size: size})
	return err
}
