package data

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// TestReleaseWhenIdle writes 1 GiB through a store with a default-sized
// budget, reads part of it back into the block cache, and lets the budget
// go idle: ReleaseWhenIdle must empty the cache and the buffer pools. The
// process's resident memory at each step is logged (the figures the
// sidecar's memory request is set from); it is not asserted, since the Go
// runtime's and the kernel's bookkeeping are not this test's to pin down.
func TestReleaseWhenIdle(t *testing.T) {
	total := int64(1 << 30)
	if testing.Short() {
		total = 128 << 20
	}
	ctx := context.Background()
	m, ino := newBoltMetaBS(t, 4<<20)
	// A remote-like file store: its blocks go through the memory cache, and
	// 1 GiB of objects lives on disk, not in this process's memory.
	obj, err := storage.NewFile(t.TempDir(), storage.FileOptions{Remote: true, NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	budget := NewBudget(0, 0)
	cfg := quietConfig()
	cfg.Budget, cfg.BlockSize = budget, 4<<20
	s, err := New(m, obj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	idleCtx, stopIdle := context.WithCancel(ctx)
	defer stopIdle()
	rss0 := rssBytes(t)

	f := s.Open(ino, 0)
	buf := pattern(1<<20, 7)
	for off := int64(0); off < total; off += int64(len(buf)) {
		if _, err := f.WriteAt(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rssWrite := rssBytes(t)
	peakBuf := budget.Stats().PeakBuffer
	// Read back sequentially until the cache is full: the working set a
	// reader leaves behind.
	p := make([]byte, 1<<20)
	for off := int64(0); off < min(total, 512<<20); off += int64(len(p)) {
		if _, err := f.ReadAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, buf) {
			t.Fatalf("read at %d differs from what was written", off)
		}
	}
	if err := f.Release(ctx); err != nil {
		t.Fatal(err)
	}
	st := budget.Stats()
	if st.CacheBytes == 0 {
		t.Fatal("reading back left nothing in the block cache; the test cannot show it emptied")
	}
	rssRead, cached := rssBytes(t), st.CacheBytes

	// A file left open with a partial block buffered: the idle release
	// commits it rather than keep its buffer.
	open2, _, err := m.Mknod(ctx, meta.RootIno, "open", syscall.S_IFREG|0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	held := s.Open(open2, 0)
	defer held.Release(ctx)
	if _, err := held.WriteAt(ctx, buf[:100<<10], 0); err != nil {
		t.Fatal(err)
	}
	if budget.Stats().Buffer == 0 {
		t.Fatal("the open file's write holds no buffer; the test cannot show it committed")
	}

	go budget.ReleaseWhenIdle(idleCtx, 200*time.Millisecond, nil)
	waitUntil(t, "the idle release", func() bool { return budget.Stats().Releases > 0 })
	st = budget.Stats()
	if st.CacheBytes != 0 || st.Buffer != 0 {
		t.Fatalf("after the idle release the budget holds %d cached and %d buffered bytes, want none", st.CacheBytes, st.Buffer)
	}
	if a, err := m.GetAttr(ctx, open2); err != nil || a.Size != 100<<10 {
		t.Errorf("the open file's buffered write after the idle release: length %d, %v; want it committed (%d)", a.Size, err, 100<<10)
	}
	budget.poolMu.Lock()
	for size, p := range budget.pools {
		if p.Get() != nil {
			t.Errorf("a block buffer of %d bytes is still pooled after the idle release", size)
		}
	}
	budget.poolMu.Unlock()
	rssIdle := rssBytes(t)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("RSS: start %d MiB, after writing %d MiB %d MiB (write buffers peaked at %d MiB), after reading back %d MiB (cache %d MiB), after idle release %d MiB (Go heap in use %d MiB)",
		rss0>>20, total>>20, rssWrite>>20, peakBuf>>20, rssRead>>20, cached>>20, rssIdle>>20, ms.HeapInuse>>20)

	// Activity re-arms it: a second busy spell is released too.
	f = s.Open(ino, uint64(total))
	if _, err := f.ReadAt(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	f.Release(ctx)
	waitUntil(t, "the second idle release", func() bool { return budget.Stats().Releases > 1 })
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rssBytes is this process's resident set size.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
