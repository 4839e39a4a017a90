package storage

import (
	"bytes"
	"context"
	"testing"
)

// With DeferSync, Puts skip the journal and their fsyncs; the objects read
// back at once, and Sync (syncfs) succeeds, also after Close.
func TestFileDeferSync(t *testing.T) {
	ctx := context.Background()
	f, err := NewFile(t.TempDir(), FileOptions{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	f.DeferSync()
	data := bytes.Repeat([]byte("x"), 128<<10)
	for _, key := range []string{"chunks/1/a", "chunks/2/b"} {
		if err := f.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		if f.j != nil && f.journaled(key) != nil {
			t.Fatalf("%s went to the journal of a store that defers its syncs", key)
		}
		got := make([]byte, len(data))
		if n, err := f.Get(ctx, key, 0, got); err != nil || n != len(data) || !bytes.Equal(got, data) {
			t.Fatalf("get %s: %d bytes, %v", key, n, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync after Close: %v", err)
	}
}

func TestDefaultFileOption(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"file:///data", "file:///data?journal=false"},
		{"file:///data?journal=true", "file:///data?journal=true"},
		{"file:///data?fsync=true", "file:///data?fsync=true&journal=false"},
		{"rados://pool", "rados://pool"},
	} {
		if got := DefaultFileOption(tc.in, "journal", "false"); got != tc.want {
			t.Errorf("DefaultFileOption(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
