package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

func openFDCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestFileDescriptorCache: a file store's reads keep at most its bound of
// descriptors open, see replaced and deleted objects as such in this
// process, and Close closes what is left; concurrent readers of objects
// being evicted read whole objects.
func TestFileDescriptorCache(t *testing.T) {
	ctx := context.Background()
	s, err := NewFile(t.TempDir(), FileOptions{Fsync: false})
	if err != nil {
		t.Fatal(err)
	}
	const limit = 4
	s.fds = newFDCache(limit)
	base := openFDCount(t)
	val := func(i, v int) []byte { return bytes.Repeat([]byte{byte(i), byte(v)}, 2048) }
	for i := 0; i < 20; i++ {
		if err := s.Put(ctx, fmt.Sprintf("k/%d", i), val(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	p := make([]byte, 4096)
	for round := 0; round < 2; round++ {
		for i := 0; i < 20; i++ {
			n, err := s.Get(ctx, fmt.Sprintf("k/%d", i), 0, p)
			if err != nil || n != len(p) || !bytes.Equal(p, val(i, 0)) {
				t.Fatalf("get k/%d: %d bytes, %v", i, n, err)
			}
		}
	}
	if n := openFDCount(t) - base; n > limit {
		t.Errorf("%d descriptors open after reading 20 objects, bound %d", n, limit)
	}

	// Replaced and deleted objects, after being read through a descriptor.
	if _, err := s.Get(ctx, "k/19", 0, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "k/19", val(19, 1)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Get(ctx, "k/19", 0, p); err != nil || n != len(p) || !bytes.Equal(p, val(19, 1)) {
		t.Errorf("get after replace: %d bytes, %v, old version: %v", n, err, bytes.Equal(p, val(19, 0)))
	}
	if err := s.Delete(ctx, "k/19"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k/19", 0, p); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after delete: %v, want ErrNotFound", err)
	}
	// A read past the end returns what is there.
	if n, err := s.Get(ctx, "k/3", 4000, p); err != nil || n != 96 {
		t.Errorf("get at 4000 of 4096 bytes: %d bytes, %v", n, err)
	}

	// Readers of more objects than the bound, concurrently: evictions of
	// descriptors in use must not close them under a reader.
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := make([]byte, 4096)
			for r := 0; r < 50; r++ {
				i := (g*7 + r) % 19
				n, err := s.Get(ctx, fmt.Sprintf("k/%d", i), 0, q)
				if err != nil || n != len(q) || !bytes.Equal(q, val(i, 0)) {
					t.Errorf("concurrent get k/%d: %d bytes, %v", i, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFDCount(t) - base; n > 0 {
		t.Errorf("%d descriptors still open after Close", n)
	}
}

// TestFileDirectWrites: objects written with O_DIRECT (big, aligned) and
// those that cannot be (misaligned buffer, partial sector) or may not be
// (direct=false) read back the same, and leave no temporary files.
func TestFileDirectWrites(t *testing.T) {
	ctx := context.Background()
	big := make([]byte, 4<<20) // a large allocation: page aligned
	for i := range big {
		big[i] = byte(i * 7)
	}
	cases := map[string][]byte{
		"aligned":    big[:directMin],
		"whole":      big,
		"misaligned": big[4096+1 : 4096+1+directMin],
		"tail":       big[:directMin+100],
		"small":      big[:8192],
	}
	for _, url := range []string{"file://" + t.TempDir(), "file://" + t.TempDir() + "?direct=false"} {
		s, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		fs := s.(*File)
		if got := fs.direct(cases["aligned"]); got == fs.opts.Buffered {
			t.Errorf("%s: direct(aligned 1 MiB) = %v", url, got)
		}
		if fs.direct(cases["misaligned"]) || fs.direct(cases["tail"]) || fs.direct(cases["small"]) {
			t.Errorf("%s: O_DIRECT chosen for an object that cannot or should not use it", url)
		}
		for name, data := range cases {
			if err := s.Put(ctx, "d/"+name, data); err != nil {
				t.Fatalf("%s: put %s: %v", url, name, err)
			}
			p := make([]byte, len(data)+10)
			n, err := s.Get(ctx, "d/"+name, 0, p)
			if err != nil || n != len(data) || !bytes.Equal(p[:n], data) {
				t.Errorf("%s: get %s: %d of %d bytes, %v", url, name, n, len(data), err)
			}
		}
		if fs.noDirect.Load() {
			t.Logf("%s: this file system refused O_DIRECT; buffered writes were used", url)
		}
		ents, _ := os.ReadDir(fs.root + "/" + tmpPrefix)
		if len(ents) != 0 {
			t.Errorf("%s: %d temporary files left", url, len(ents))
		}
		s.Close()
	}
	if _, err := Open(ctx, "file://"+t.TempDir()+"?direct=maybe"); err == nil {
		t.Error("direct=maybe accepted")
	}
}
