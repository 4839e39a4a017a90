package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

func TestMain(m *testing.M) { os.Exit(testenv.CephMain(m)) }

// faulty wraps a store and fails requests on demand.
type faulty struct {
	storage.Store
	failPuts atomic.Int64 // fail this many more puts; <0 = all
	failGets atomic.Int64
	puts     atomic.Int64 // puts attempted
}

var errInjected = errors.New("injected failure")

func take(n *atomic.Int64) bool {
	for {
		v := n.Load()
		if v == 0 {
			return false
		}
		if v < 0 || n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (f *faulty) Put(ctx context.Context, key string, data []byte) error {
	f.puts.Add(1)
	if take(&f.failPuts) {
		return errInjected
	}
	return f.Store.Put(ctx, key, data)
}

func (f *faulty) Get(ctx context.Context, key string, off int64, p []byte) (int, error) {
	if take(&f.failGets) {
		return 0, errInjected
	}
	return f.Store.Get(ctx, key, off, p)
}

func quietConfig() Config {
	c := testConfig()
	c.CompactSlices, c.DeleteInterval = -1, -1
	return c
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i%251)
	}
	return p
}

func readAll(t *testing.T, s *Store, m meta.Meta, ino meta.Ino) []byte {
	t.Helper()
	f := s.Open(ino, fileLength(t, m, ino))
	defer f.Release(context.Background())
	p := make([]byte, f.Size())
	n, err := f.ReadAt(context.Background(), p, 0)
	if err != nil || n != len(p) {
		t.Fatalf("read back: %d of %d bytes, %v", n, len(p), err)
	}
	return p
}

func countObjects(t *testing.T, obj storage.Store) int {
	t.Helper()
	objs, err := obj.List(context.Background(), KeyPrefix, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(objs)
}

// A writer that dies before committing leaves no visible data; GC finds its
// uploaded blocks, spares them while young, and deletes them when asked.
func TestCrashAbandonedWriter(t *testing.T) {
	ctx := context.Background()
	m, ino := newBoltMeta(t)
	obj := storage.NewMem("crash")
	old := pattern(3*page+100, 1)
	{
		s, _ := New(m, obj, quietConfig())
		f := s.Open(ino, 0)
		if _, err := f.WriteAt(ctx, old, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Release(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close(ctx)
	}
	committed := countObjects(t, obj)

	// The crashing writer: overwrites and extends, its full blocks reach the
	// store, and it never flushes.
	s1, _ := New(m, obj, quietConfig())
	f1 := s1.Open(ino, fileLength(t, m, ino))
	if _, err := f1.WriteAt(ctx, pattern(5*page+10, 9), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for countObjects(t, obj) < committed+5 {
		if time.Now().After(deadline) {
			t.Fatalf("the writer's full blocks never reached the store (%d objects)", countObjects(t, obj))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// s1 is abandoned here, as if its process died.

	s2, _ := New(m, obj, quietConfig())
	defer s2.Close(ctx)
	if got := readAll(t, s2, m, ino); !bytes.Equal(got, old) {
		t.Fatalf("another client sees partial data of an uncommitted writer (%d bytes, want the %d committed)", len(got), len(old))
	}
	chk, err := CheckObjects(ctx, m, obj, 0)
	if err != nil || len(chk.Missing) != 0 {
		t.Fatalf("check objects: %+v %v", chk, err)
	}
	r, err := GC(ctx, m, obj, true) // an hour's grace: nothing deleted yet
	if err != nil {
		t.Fatal(err)
	}
	if r.Young != 5 || r.Orphans != 0 || r.Deleted != 0 || r.Referenced != committed {
		t.Fatalf("GC with grace: %s, want 5 young, %d referenced", r, committed)
	}
	r, err = GCWith(ctx, m, obj, GCOptions{Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Orphans != 5 || r.Deleted != 5 {
		t.Fatalf("GC: %s, want 5 orphans deleted", r)
	}
	if n := countObjects(t, obj); n != committed {
		t.Fatalf("%d objects after GC, want %d", n, committed)
	}
	if got := readAll(t, s2, m, ino); !bytes.Equal(got, old) {
		t.Fatal("GC damaged committed data")
	}
}

// A store that keeps failing: the writes retry, Flush reports EIO (once),
// nothing committed points at a missing object, and earlier data survives.
func TestFailingBackend(t *testing.T) {
	ctx := context.Background()
	m, ino := newBoltMeta(t)
	obj := &faulty{Store: storage.NewMem("faulty")}
	cfg := quietConfig()
	cfg.MaxRetries = 3
	s, _ := New(m, obj, cfg)
	defer s.Close(ctx)
	f := s.Open(ino, 0)
	old := pattern(2*page, 3)
	if _, err := f.WriteAt(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Transient failures are retried away.
	obj.failPuts.Store(2)
	if _, err := f.WriteAt(ctx, pattern(page, 5), 2*page); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatalf("flush with two transient failures: %v", err)
	}
	want := append(append([]byte{}, old...), pattern(page, 5)...)

	// Permanent failure.
	obj.failPuts.Store(-1)
	before := obj.puts.Load()
	if _, err := f.WriteAt(ctx, pattern(3*page, 7), page); err != nil {
		t.Fatal(err)
	}
	err := f.Flush(ctx)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush on a failing store: %v, want EIO", err)
	}
	if tries := obj.puts.Load() - before; tries < int64(cfg.MaxRetries+1) {
		t.Fatalf("%d put attempts, want at least %d (retries)", tries, cfg.MaxRetries+1)
	}
	t.Log(err)
	if err := f.Flush(ctx); err != nil {
		t.Fatalf("second flush reports the same failure again: %v", err)
	}
	chk, err := CheckObjects(ctx, m, obj, 0)
	if err != nil || len(chk.Missing) != 0 {
		t.Fatalf("committed slices point at missing objects: %+v %v", chk, err)
	}
	obj.failPuts.Store(0)
	s2, _ := New(m, obj, quietConfig())
	defer s2.Close(ctx)
	if got := readAll(t, s2, m, ino); !bytes.Equal(got, want) {
		t.Fatal("data committed before the failure changed")
	}

	// Reads of a failing store retry, then EIO.
	obj.failGets.Store(-1)
	s3, _ := New(m, obj, cfg)
	defer s3.Close(ctx)
	f3 := s3.Open(ino, fileLength(t, m, ino))
	if _, err := f3.ReadAt(ctx, make([]byte, 10), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read on a failing store: %v, want EIO", err)
	}
	obj.failGets.Store(0)
}

// Many files with partial blocks fill the write buffers: writers must not
// deadlock (partial blocks are pushed out) and memory stays bounded.
func TestBufferBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, obj := newFakeMeta(page), storage.NewMem("bound")
	cfg := quietConfig()
	cfg.BufferSize = 4 * page
	s, _ := New(m, obj, cfg)
	defer s.Close(ctx)
	var files []*File
	for i := 0; i < 20; i++ {
		f := s.Open(meta.Ino(100+i), 0)
		files = append(files, f)
		if _, err := f.WriteAt(ctx, pattern(page/2, byte(i)), 0); err != nil {
			t.Fatalf("write %d: %v (buffers never relieved?)", i, err)
		}
	}
	for i, f := range files {
		if err := f.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, m, meta.Ino(100+i)); !bytes.Equal(got, pattern(page/2, byte(i))) {
			t.Fatalf("file %d reads back wrong", i)
		}
	}
	st := s.Stats()
	if st.Relieves == 0 || st.PeakBuffer > cfg.BufferSize {
		t.Fatalf("stats %+v: want relieves > 0 and peak buffer <= %d", st, cfg.BufferSize)
	}
}

// The disk cache serves blocks after a restart, when the object store cannot.
func TestDiskCache(t *testing.T) {
	ctx := context.Background()
	m := newFakeMeta(page)
	obj := &faulty{Store: storage.NewMem("disk")}
	data := pattern(10*page, 11)
	s, _ := New(m, obj, quietConfig())
	f := s.Open(1, 0)
	if _, err := f.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	f.Release(ctx)
	s.Close(ctx)

	dir := t.TempDir()
	cfg := quietConfig()
	cfg.CacheDir, cfg.CacheDirSize = dir, 1<<20
	s1, err := New(m, obj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s1, m, 1); !bytes.Equal(got, data) {
		t.Fatal("read through disk cache differs")
	}
	s1.Close(ctx)

	obj.failGets.Store(-1)
	defer obj.failGets.Store(0)
	s2, err := New(m, obj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	if got := readAll(t, s2, m, 1); !bytes.Equal(got, data) {
		t.Fatal("restarted disk cache does not serve the blocks")
	}
	if st := s2.Stats(); st.Fetches != 0 {
		t.Fatalf("%d fetches from the store, want all from the disk cache", st.Fetches)
	}

	// Bounded: a small cache keeps at most its size.
	obj.failGets.Store(0)
	cfg.CacheDir, cfg.CacheDirSize = t.TempDir(), 3*page
	s3, _ := New(m, obj, cfg)
	defer s3.Close(ctx)
	readAll(t, s3, m, 1)
	if used := s3.disk.Used(); used > 3*page || used == 0 {
		t.Fatalf("disk cache holds %d bytes, bound %d", used, 3*page)
	}
}

func TestBlockKey(t *testing.T) {
	for _, c := range []struct {
		id        uint64
		idx, blen int
		want      string
	}{{1, 0, 4 << 20, "chunks/01/0/1_0_4194304"}, {123456, 15, 100, "chunks/40/123/123456_15_100"}} {
		k := BlockKey(c.id, c.idx, c.blen)
		if k != c.want {
			t.Errorf("BlockKey(%d,%d,%d) = %s, want %s", c.id, c.idx, c.blen, k, c.want)
		}
		id, idx, blen, ok := ParseBlockKey(k)
		if !ok || id != c.id || idx != c.idx || blen != c.blen {
			t.Errorf("ParseBlockKey(%s) = %d %d %d %v", k, id, idx, blen, ok)
		}
	}
	for _, k := range []string{"chunks/01/0/1_0", "x/01/0/1_0_5", "chunks/02/0/1_0_5", "chunks/01/0/1_0_0"} {
		if _, _, _, ok := ParseBlockKey(k); ok {
			t.Errorf("ParseBlockKey(%s) accepted a key podfs does not write", k)
		}
	}
}

// The model test on real Ceph, and a stopped OSD.
func TestRados(t *testing.T) {
	c := testenv.SharedCeph(t)
	obj, err := storage.Open(context.Background(), c.URL("namespace=datamodel"))
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	h := newHarness(t, obj, false)
	h.randomSteps(99, 300)
	h.finish()
}

func TestRadosStoppedOSD(t *testing.T) {
	ctx := context.Background()
	c := testenv.StartCephCluster(t)
	obj, err := storage.Open(ctx, c.URL("op_timeout=3s"))
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	m, ino := newBoltMeta(t)
	cfg := quietConfig()
	cfg.MaxRetries, cfg.RetryBackoff = 1, 10*time.Millisecond
	s, _ := New(m, obj, cfg)
	defer s.Close(ctx)
	f := s.Open(ino, 0)
	if _, err := f.WriteAt(ctx, pattern(3*page, 1), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var before []meta.Slice
	m.ListSlices(ctx, func(_ meta.Ino, s meta.Slice) error { before = append(before, s); return nil })

	c.StopOSD(t)
	if _, err := f.WriteAt(ctx, pattern(2*page, 2), page); err != nil {
		t.Fatal(err)
	}
	err = f.Flush(ctx)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush with the OSD stopped: %v, want EIO", err)
	}
	t.Log(err)
	var after []meta.Slice
	m.ListSlices(ctx, func(_ meta.Ino, s meta.Slice) error { after = append(after, s); return nil })
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("slices committed while the OSD was down: before %v, after %v", before, after)
	}
}
