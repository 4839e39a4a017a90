package data

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

const page = 4096

// model is the expected content of a file: sparse pages and a length.
type model struct {
	pages map[int64][]byte
	size  int64
}

func newModel() *model { return &model{pages: map[int64][]byte{}} }

func (m *model) write(p []byte, off int64) {
	for k := 0; k < len(p); {
		o := off + int64(k)
		pg := m.pages[o/page]
		if pg == nil {
			pg = make([]byte, page)
			m.pages[o/page] = pg
		}
		k += copy(pg[o%page:], p[k:])
	}
	if end := off + int64(len(p)); end > m.size {
		m.size = end
	}
}

func (m *model) read(n int, off int64) []byte {
	if off >= m.size {
		return nil
	}
	n = int(min(int64(n), m.size-off))
	out := make([]byte, n)
	for k := 0; k < n; {
		o := off + int64(k)
		c := min(n-k, page-int(o%page))
		if pg := m.pages[o/page]; pg != nil {
			copy(out[k:k+c], pg[o%page:])
		}
		k += c
	}
	return out
}

func (m *model) truncate(size int64) {
	if size < m.size {
		for idx, pg := range m.pages {
			switch {
			case idx*page >= size:
				delete(m.pages, idx)
			case idx*page+page > size:
				clear(pg[size-idx*page:])
			}
		}
	}
	m.size = size
}

// harness drives one file of a data layer and its model with a stream of
// operations decoded from bytes (so the fuzzer and the random test share it).
type harness struct {
	t   testing.TB
	ctx context.Context
	m   meta.Meta
	obj storage.Store
	cfg Config
	s   *Store
	f   *File
	ino meta.Ino
	mod *model
	seq uint32
	ops []string // for failure messages
}

func testConfig() Config {
	return Config{
		BlockSize: page, BufferSize: 16 * page, MaxUploads: 4, CacheSize: 4 * page,
		Readahead: 4 * page, MaxRetries: 2, RetryBackoff: time.Millisecond,
		CompactSlices: 6, DeleteInterval: 5 * time.Millisecond, MaxFetches: 4,
	}
}

// newHarness runs on the real bolt engine unless fake is set (the in-memory
// fake of the chunk methods, for quick pure-logic runs).
func newHarness(t testing.TB, obj storage.Store, fake bool) *harness {
	h := &harness{t: t, ctx: context.Background(), obj: obj, cfg: testConfig(), mod: newModel()}
	if fake {
		h.m, h.ino = newFakeMeta(page), 7
	} else {
		h.m, h.ino = newBoltMeta(t)
	}
	s, err := New(h.m, obj, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	h.f = s.Open(h.ino, 0)
	return h
}

func (h *harness) fail(format string, args ...any) {
	h.t.Helper()
	n := len(h.ops)
	h.t.Fatalf("after ops (last %d of %d):\n  %v\n%s", min(n, 30), n, h.ops[max(0, n-30):], fmt.Sprintf(format, args...))
}

var bases = []int64{0, page, 5 * page, meta.ChunkSize - 2*page, meta.ChunkSize, meta.ChunkSize + 3*page, 2*meta.ChunkSize - 7, 11}

func (h *harness) fill(n int) []byte {
	p := make([]byte, n)
	h.seq++
	for i := range p {
		p[i] = byte(h.seq*31 + uint32(i)*7 + uint32(i>>8))
		if p[i] == 0 {
			p[i] = 1 // distinguish written bytes from holes
		}
	}
	return p
}

// step runs the operation encoded in b (5 bytes).
func (h *harness) step(b []byte) {
	h.t.Helper()
	op := b[0] % 10
	off := bases[int(b[1])%len(bases)] + int64(int16(binary.LittleEndian.Uint16(b[2:4])))
	if off < 0 {
		off = -off
	}
	n := int(b[4])*97%(3*page) + 1
	switch op {
	case 0, 1, 2, 3:
		h.ops = append(h.ops, fmt.Sprintf("write(%d,%d)", off, n))
		p := h.fill(n)
		if _, err := h.f.WriteAt(h.ctx, p, off); err != nil {
			h.fail("write: %v", err)
		}
		h.mod.write(p, off)
	case 4, 5:
		h.ops = append(h.ops, fmt.Sprintf("read(%d,%d)", off, n))
		h.check(off, n)
	case 6:
		h.ops = append(h.ops, "flush")
		if err := h.f.Flush(h.ctx); err != nil {
			h.fail("flush: %v", err)
		}
		if got := fileLength(h.t, h.m, h.ino); got != uint64(h.mod.size) {
			h.fail("after flush metadata length %d, model %d", got, h.mod.size)
		}
	case 7:
		size := off + int64(n) - page
		if size < 0 {
			size = 0
		}
		if b[4]%2 == 0 {
			size = h.mod.size / 2
		}
		h.ops = append(h.ops, fmt.Sprintf("truncate(%d)", size))
		err := h.f.Resize(h.ctx, uint64(size), func(ctx context.Context) error {
			return setLength(ctx, h.m, h.ino, uint64(size))
		})
		if err != nil {
			h.fail("resize: %v", err)
		}
		h.mod.truncate(size)
	case 8:
		h.ops = append(h.ops, "reopen")
		h.f2()
		if err := h.f.Release(h.ctx); err != nil {
			h.fail("release: %v", err)
		}
		h.f = h.s.Open(h.ino, fileLength(h.t, h.m, h.ino))
	case 9:
		h.ops = append(h.ops, "verify")
		h.verifyAll(h.f, "own handle")
	}
	if got := h.f.Size(); got != uint64(h.mod.size) {
		h.fail("size %d, model %d", got, h.mod.size)
	}
}

func (h *harness) check(off int64, n int) {
	h.t.Helper()
	h.checkFile(h.f, off, n, "")
}

func (h *harness) checkFile(f *File, off int64, n int, who string) {
	h.t.Helper()
	p := make([]byte, n)
	got, err := f.ReadAt(h.ctx, p, off)
	if err != nil {
		h.fail("%s read(%d,%d): %v", who, off, n, err)
	}
	want := h.mod.read(n, off)
	if !bytes.Equal(p[:got], want) {
		i := 0
		for i < min(got, len(want)) && p[i] == want[i] {
			i++
		}
		h.fail("%s read(%d,%d): got %d bytes, want %d; first difference at +%d (file offset %d)", who, off, n, got, len(want), i, off+int64(i))
	}
}

// verifyAll compares every page the model knows of, plus the end.
func (h *harness) verifyAll(f *File, who string) {
	h.t.Helper()
	idx := make([]int64, 0, len(h.mod.pages))
	for i := range h.mod.pages {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for _, i := range idx {
		h.checkFile(f, i*page, page, who)
	}
	h.checkFile(f, max(0, h.mod.size-10), 20, who)
}

// f2 flushes, then checks what another client (a second data layer over the
// same metadata and objects) sees: only committed data.
func (h *harness) f2() {
	h.t.Helper()
	if err := h.f.Flush(h.ctx); err != nil {
		h.fail("flush: %v", err)
	}
	cfg := h.cfg
	cfg.CompactSlices, cfg.DeleteInterval = -1, -1
	s2, err := New(h.m, h.obj, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	defer s2.Close(h.ctx)
	f2 := s2.Open(h.ino, fileLength(h.t, h.m, h.ino))
	h.verifyAll(f2, "other client")
}

// finish flushes and closes, then checks that no object is orphaned and none missing.
func (h *harness) finish() {
	h.t.Helper()
	h.f2()
	if err := h.f.Release(h.ctx); err != nil {
		h.fail("release: %v", err)
	}
	if err := h.s.Close(h.ctx); err != nil {
		h.fail("close: %v", err)
	}
	if used := h.s.budget.bufferUsed(); used != 0 {
		h.fail("write buffers hold %d bytes after close", used)
	}
	s, err := New(h.m, h.obj, Config{BlockSize: page, CompactSlices: -1, DeleteInterval: -1})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := s.DeletePending(h.ctx); err != nil {
		h.fail("delete pending: %v", err)
	}
	s.Close(h.ctx)
	gc, err := GCWith(h.ctx, h.m, h.obj, GCOptions{})
	if err != nil {
		h.fail("gc: %v", err)
	}
	if gc.Orphans != 0 || gc.Foreign != 0 {
		h.fail("gc after a clean run: %s; orphans %v", gc, gc.OrphanKeys)
	}
	chk, err := CheckObjects(h.ctx, h.m, h.obj, 0)
	if err != nil {
		h.fail("check objects: %v", err)
	}
	if len(chk.Missing) != 0 {
		h.fail("slices point at missing objects: %+v", chk.Missing)
	}
}

// The same model with the in-memory fake of metadata: pure data-layer logic,
// fast enough for more seeds.
func TestModelFakeMeta(t *testing.T) {
	for seed := uint64(100); seed < 112; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			h := newHarness(t, storage.NewMem("model"), true)
			h.randomSteps(seed, 400)
			h.finish()
		})
	}
}

func TestModel(t *testing.T) {
	var total Stats
	defer func() {
		t.Logf("all seeds: %+v", total)
		if !t.Failed() && (total.Compactions == 0 || total.Deleted == 0 || total.Fetches == 0) {
			t.Errorf("the model test did not exercise compaction, full buffers, deletion and fetches: %+v", total)
		}
	}()
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			h := newHarness(t, storage.NewMem("model"), false)
			h.randomSteps(seed, 600)
			h.finish()
			st := h.s.Stats()
			total.Compactions += st.Compactions
			total.Relieves += st.Relieves
			total.Deleted += st.Deleted
			total.Fetches += st.Fetches
			total.Uploads += st.Uploads
		})
	}
}

// Sequential writes and reads in unaligned pieces: the common case, with
// readahead and whole blocks.
func TestSequential(t *testing.T) {
	h := newHarness(t, storage.NewMem("seq"), false)
	const total = 3*meta.ChunkSize/64 + 12345
	for off := int64(0); off < total; {
		n := min(int(total-off), 7000)
		p := h.fill(n)
		if _, err := h.f.WriteAt(h.ctx, p, off); err != nil {
			t.Fatal(err)
		}
		h.mod.write(p, off)
		off += int64(n)
	}
	h.check(0, 100)
	if err := h.f.Flush(h.ctx); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < total; off += 5000 {
		h.check(off, 5000)
	}
	h.finish()
	if peak := h.s.PeakBuffer(); peak > h.cfg.BufferSize {
		t.Fatalf("write buffers peaked at %d bytes, bound %d", peak, h.cfg.BufferSize)
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 42)) }

// randomSteps runs n model steps drawn from seed.
func (h *harness) randomSteps(seed uint64, n int) {
	h.t.Helper()
	r := newRand(seed)
	b := make([]byte, 5)
	for range n {
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		h.step(b)
	}
}

func FuzzDataLayer(f *testing.F) {
	f.Add([]byte{0, 4, 0, 0, 50, 4, 4, 0, 0, 50})
	f.Add([]byte{0, 3, 200, 0, 90, 0, 4, 10, 0, 90, 6, 0, 0, 0, 0, 4, 3, 190, 0, 120})
	f.Add([]byte{1, 1, 0, 0, 255, 7, 1, 0, 16, 0, 4, 1, 0, 0, 255, 8, 0, 0, 0, 0, 9, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 5*200 {
			ops = ops[:5*200]
		}
		h := newHarness(t, storage.NewMem("fuzz"), false)
		for len(ops) >= 5 {
			h.step(ops[:5])
			ops = ops[5:]
		}
		h.finish()
	})
}

// The model on a local file store, where reads go straight to the files.
func TestModelFile(t *testing.T) {
	obj, err := storage.Open(context.Background(), "file://"+t.TempDir()+"?fsync=false")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, obj, false)
	h.randomSteps(5, 400)
	h.finish()
}
