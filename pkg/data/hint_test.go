package data

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"podfs.io/podfs/pkg/storage"
)

// hintRecorder is a real file store that notes the readahead hints it gets.
type hintRecorder struct {
	*storage.File
	mu    sync.Mutex
	hints map[string][][2]int64
}

func (h *hintRecorder) Prefetch(key string, off, n int64) {
	h.mu.Lock()
	h.hints[key] = append(h.hints[key], [2]int64{off, n})
	h.mu.Unlock()
	h.File.Prefetch(key, off, n)
}

func (h *hintRecorder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.hints {
		n += len(l)
	}
	return n
}

// TestLocalReadaheadHints: a sequential reader of a file:// volume hints the
// blocks ahead of it to the store (so the kernel reads them in before they
// are asked for), only blocks of the file, and a random reader hints nothing.
func TestLocalReadaheadHints(t *testing.T) {
	ctx := context.Background()
	const bs = 64 << 10
	const blocks = 16
	m, ino := newBoltMetaBS(t, bs)
	fs, err := storage.NewFile(t.TempDir(), storage.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &hintRecorder{File: fs, hints: map[string][][2]int64{}}
	cfg := quietConfig()
	cfg.BlockSize, cfg.BufferSize, cfg.Readahead = bs, 4*bs, 4*bs

	s, err := New(m, rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(blocks*bs, 7)
	f := s.Open(ino, 0)
	if _, err := f.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rec.count(); n != 0 {
		t.Fatalf("writing gave %d readahead hints", n)
	}

	// Sequential reads, one block at a time.
	f = s.Open(ino, fileLength(t, m, ino))
	got := make([]byte, len(want))
	for off := 0; off < len(got); off += bs {
		if n, err := f.ReadAt(ctx, got[off:off+bs], int64(off)); err != nil || n != bs {
			t.Fatalf("read at %d: %d bytes, %v", off, n, err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("sequential read returned other bytes than written")
	}
	if err := f.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil { // waits for the hint goroutines
		t.Fatal(err)
	}
	keys := map[int]bool{}
	for key, l := range rec.hints {
		_, idx, blen, ok := ParseBlockKey(key)
		if !ok || blen != bs {
			t.Fatalf("hint for %q, not a block of the file", key)
		}
		for _, h := range l {
			if h[0] < 0 || h[1] <= 0 || h[0]+h[1] > int64(blen) {
				t.Errorf("hint %v outside block %s", h, key)
			}
		}
		keys[idx] = true
	}
	// The first block is read before anything is known to be sequential;
	// every later one is hinted.
	for i := 1; i < blocks; i++ {
		if !keys[i] {
			t.Errorf("block %d was never hinted (hinted: %v)", i, keys)
		}
	}

	// A random read hints nothing.
	s, err = New(m, rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := rec.count()
	f = s.Open(ino, fileLength(t, m, ino))
	p := make([]byte, 100)
	if _, err := f.ReadAt(ctx, p, 5*bs+17); err != nil || !bytes.Equal(p, want[5*bs+17:5*bs+117]) {
		t.Fatalf("random read: %v", err)
	}
	_ = f.Release(ctx)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rec.count() - before; n != 0 {
		t.Errorf("a random read gave %d hints", n)
	}
}
