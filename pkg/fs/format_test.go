package fs

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

func TestDefaultStorage(t *testing.T) {
	if got := DefaultStorage("bolt:///var/lib/podfs/meta.db"); got != "file:///var/lib/podfs/data" {
		t.Errorf("got %q", got)
	}
	if got := DefaultStorage("etcd://127.0.0.1:2379/v"); got != "" {
		t.Errorf("etcd has no default storage, got %q", got)
	}
}

// TestFormatIdempotent formats a real bolt volume twice with the same
// settings (nothing changes) and once with another name (refused).
func TestFormatIdempotent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	o := FormatOptions{Name: "vol"}
	if err := o.Validate(metaURL); err != nil {
		t.Fatal(err)
	}
	if o.Storage != "file://"+filepath.Join(dir, "data") || o.BlockSize != DefaultBlockSize {
		t.Fatalf("defaults not filled: %+v", o)
	}
	m, err := meta.Open(ctx, metaURL, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	store, err := storage.Open(ctx, o.Storage)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f1, created, err := Format(ctx, m, store, o)
	if err != nil || !created {
		t.Fatalf("first format: created %v, %v", created, err)
	}
	f2, created, err := Format(ctx, m, store, o)
	if err != nil || created || f2.UUID != f1.UUID {
		t.Fatalf("second format: created %v, uuid %q (first %q), %v", created, f2.UUID, f1.UUID, err)
	}
	other := o
	other.Name = "other"
	if _, _, err := Format(ctx, m, store, other); !errors.Is(err, ErrOtherVolume) {
		t.Fatalf("format as another volume: %v, want ErrOtherVolume", err)
	}
	bad := FormatOptions{Name: "x", BlockSize: 3000}
	if err := bad.Validate(metaURL); err == nil {
		t.Error("block size 3000 accepted")
	}
	if err := (&FormatOptions{Name: "bad/name"}).Validate(metaURL); err == nil {
		t.Error("name with a slash accepted")
	}
}
