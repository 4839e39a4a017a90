package data

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// newEngineMeta opens a fresh volume with block size page on engine
// ("bolt" or "etcd") and creates one regular file in it.
func newEngineMeta(t *testing.T, engine string) (meta.Meta, meta.Ino) {
	t.Helper()
	if engine == "bolt" {
		return newBoltMeta(t)
	}
	ctx := context.Background()
	url := "etcd://" + testenv.StartEtcd(t) + "/compact"
	m, err := meta.Open(ctx, url, meta.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { m.Close(ctx) })
	if err := m.Init(ctx, meta.Format{Name: "datatest", BlockSize: page, Storage: "mem://"}); err != nil {
		t.Fatalf("init volume: %v", err)
	}
	ino, _, err := m.Mknod(ctx, meta.RootIno, "f", syscall.S_IFREG|0o644, 0, 0, 0)
	if err != nil {
		t.Fatalf("create a file: %v", err)
	}
	return m, ino
}

// objectBytes is the total size of the store's block objects.
func objectBytes(t *testing.T, obj storage.Store) int64 {
	t.Helper()
	var n int64
	marker := ""
	for {
		objs, err := obj.List(context.Background(), "chunks/", marker, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			n += o.Size
		}
		if len(objs) < 1000 {
			return n
		}
		marker = objs[len(objs)-1].Key
	}
}

// The model under random writes and truncates with background compaction
// on, while another client keeps reading the file, on bolt and on etcd:
// the data always equals the model (checked by the harness after every
// step and by the other client at flushes), no read ever fails, and after
// a final compaction the objects cost what the file shows, plus holes too
// short to keep.
func TestCompactModel(t *testing.T) {
	for _, engine := range []string{"bolt", "etcd"} {
		t.Run(engine, func(t *testing.T) {
			testCompactModel(t, engine)
		})
	}
}

func testCompactModel(t *testing.T, engine string) {
	ctx := context.Background()
	obj := storage.NewMem("compact")
	h := &harness{t: t, ctx: ctx, obj: obj, cfg: testConfig(), mod: newModel()}
	h.cfg.CompactSlices = 1 << 20 // by waste only, not slice count
	h.m, h.ino = newEngineMeta(t, engine)
	s, err := New(h.m, obj, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	h.f = s.Open(h.ino, 0)

	// The concurrent reader: another client reading committed data.
	rcfg := h.cfg
	rcfg.CompactSlices, rcfg.DeleteInterval = -1, -1
	reader, err := New(h.m, obj, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	var readErr atomic.Pointer[error]
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 3*page)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a, err := h.m.GetAttr(ctx, h.ino)
			if err == nil {
				f := reader.Open(h.ino, a.Size)
				off := bases[i%len(bases)]
				_, err = f.ReadAt(ctx, buf, off)
				f.Release(ctx)
			}
			if err != nil {
				readErr.CompareAndSwap(nil, &err)
				return
			}
			reads.Add(1)
		}
	}()
	h.randomSteps(21, 500)
	close(stop)
	wg.Wait()
	reader.Close(ctx)
	if p := readErr.Load(); p != nil {
		t.Fatalf("the concurrent reader failed: %v", *p)
	}
	if reads.Load() == 0 {
		t.Fatal("the concurrent reader never read")
	}
	if err := h.f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := h.s.Stats(); st.Compactions == 0 {
		t.Fatalf("no background compaction ran: %+v", st)
	}

	// A final compaction of the whole file, then the replaced objects go.
	if _, err := h.s.CompactFile(ctx, h.ino, uint64(h.mod.size)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.DeletePending(ctx); err != nil {
		t.Fatal(err)
	}
	h.verifyAll(h.f, "after compaction")
	var visible, runs, stored int64
	for idx := uint32(0); uint64(idx)*meta.ChunkSize < uint64(h.mod.size); idx++ {
		list, err := h.m.ReadChunk(ctx, h.ino, idx)
		if err != nil {
			t.Fatal(err)
		}
		u := usageOf(list)
		visible += u.visible
		stored += u.stored
		runs += int64(len(u.runs))
		if len(list) != len(u.runs) {
			t.Fatalf("chunk %d: %d slices after compaction, want one per written range (%d)", idx, len(list), len(u.runs))
		}
	}
	objects := objectBytes(t, obj)
	if objects != stored {
		t.Fatalf("the store holds %d bytes of objects, the slices reference %d: garbage left", objects, stored)
	}
	if bound := visible + visible*3/10 + runs*compactGap; objects > bound {
		t.Fatalf("objects %d bytes for %d visible in %d ranges: above 1.3x plus the short holes", objects, visible, runs)
	}
	t.Logf("%s: %d reads by the other client, %+v; objects %d bytes, visible %d, %d ranges",
		engine, reads.Load(), h.s.Stats(), objects, visible, runs)
	h.finish()
}

// crashingStore fails every Put after the first `after` and every Delete:
// a compaction stopped there is a writer that died mid-way.
type crashingStore struct {
	storage.Store
	after atomic.Int64
	puts  []string
	mu    sync.Mutex
}

var errCrash = errors.New("crashed")

func (c *crashingStore) Put(ctx context.Context, key string, data []byte) error {
	if c.after.Add(-1) < 0 {
		return errCrash
	}
	c.mu.Lock()
	c.puts = append(c.puts, key)
	c.mu.Unlock()
	return c.Store.Put(ctx, key, data)
}

func (c *crashingStore) Delete(ctx context.Context, key string) error { return errCrash }

// A compaction that dies after storing some of its blocks loses nothing
// (the chunk still reads as before) and leaves exactly those blocks as
// orphans for GC.
func TestCompactCrash(t *testing.T) {
	ctx := context.Background()
	m, ino := newBoltMetaBS(t, page)
	obj := storage.NewMem("crash")
	s, err := New(m, obj, quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	f := s.Open(ino, 0)
	want := newModel()
	for i := 0; i < 12; i++ { // overlapping writes: a fragmented chunk
		p := pattern(3*page+i*100, byte(i))
		off := int64(i * page)
		if _, err := f.WriteAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
		want.write(p, off)
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f.Release(ctx)
	s.Close(ctx)
	before, err := m.ReadChunk(ctx, ino, 0)
	if err != nil {
		t.Fatal(err)
	}

	crash := &crashingStore{Store: obj}
	crash.after.Store(3)
	cfg := quietConfig()
	cfg.MaxRetries = 1
	s2, err := New(m, crash, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.CompactChunk(ctx, ino, 0); !errors.Is(err, errCrash) {
		t.Fatalf("compaction over a crashing store: %v, want the crash", err)
	}
	s2.Close(ctx)
	after, err := m.ReadChunk(ctx, ino, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the chunk changed: %v, was %v", after, before)
	}
	s3, err := New(m, obj, quietConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close(ctx)
	if got := readAll(t, s3, m, ino); string(got) != string(want.read(int(want.size), 0)) {
		t.Fatal("the file reads differently after the crashed compaction")
	}
	gc, err := GCWith(ctx, m, obj, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.Orphans != len(crash.puts) || len(crash.puts) != 3 {
		t.Fatalf("gc: %s; the crashed compaction stored %v", gc, crash.puts)
	}
	for i, k := range gc.OrphanKeys {
		if filepath.Base(k) != filepath.Base(crash.puts[i]) {
			t.Fatalf("orphans %v, the crashed compaction stored %v", gc.OrphanKeys, crash.puts)
		}
	}
}
