package fs

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

func TestRedactURLQuery(t *testing.T) {
	for in, want := range map[string]string{
		"etcd://user:pw@127.0.0.1:2379/vol":               "etcd://***@127.0.0.1:2379/vol",
		"tikv://pd1:2379,pd2:2379/vol":                    "tikv://pd1:2379,pd2:2379/vol",
		"rados://pool?conf=/etc/ceph/ceph.conf&key=AQB==": "rados://pool?conf=/etc/ceph/ceph.conf&key=***",
		"rados://pool?mon_host=127.0.0.1:6789&keyring=/k": "rados://pool?mon_host=127.0.0.1:6789&keyring=/k",
		"s3://b?access_key=A&secret_key=B&token=C":        "s3://b?access_key=***&secret_key=***&token=***",
		"rados://u:p@pool?key=s3cret#frag":                "rados://***@pool?key=***",
		"bolt:///var/lib/podfs/meta.db":                   "bolt:///var/lib/podfs/meta.db",
		"not a url":                                       "not a url",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

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
