package data

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// Two volumes whose slice ids collide (both counters start at 1), served by
// one process with one budget and one cache directory, each read their own
// data: from cold caches, from the warm memory cache, and from the disk
// cache after a restart when their object stores cannot answer.
func TestCachePerVolume(t *testing.T) {
	ctx := context.Background()
	type volume struct {
		m    meta.Meta
		ino  meta.Ino
		obj  *faulty
		data []byte
	}
	vols := make([]*volume, 2)
	for i := range vols {
		m, ino := newBoltMeta(t)
		v := &volume{m: m, ino: ino, obj: &faulty{Store: storage.NewMem("vol")}, data: pattern(5*page+100, byte(1+i*100))}
		s, err := New(m, v.obj, quietConfig())
		if err != nil {
			t.Fatal(err)
		}
		f := s.Open(ino, 0)
		if _, err := f.WriteAt(ctx, v.data, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		f.Release(ctx)
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		vols[i] = v
	}
	var ids [2][]uint64
	for i, v := range vols {
		sl, err := v.m.ReadChunk(ctx, v.ino, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range sl {
			ids[i] = append(ids[i], x.ID)
		}
	}
	if len(ids[0]) == 0 || !equalIDs(ids[0], ids[1]) {
		t.Fatalf("slice ids %v and %v: the test needs them to collide", ids[0], ids[1])
	}

	dir := t.TempDir()
	// A cache left by an older podfs, keyed without volume identity, holds
	// the other volume's bytes under the colliding key: it must not be used.
	stale := filepath.Join(dir, "blocks", filepath.FromSlash(BlockKey(ids[0][0], 0, page)))
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, vols[1].data[:page], 0o600); err != nil {
		t.Fatal(err)
	}

	budget := NewBudget(64*page, 16*page)
	open := func() []*Store {
		stores := make([]*Store, len(vols))
		for i, v := range vols {
			cfg := quietConfig()
			cfg.Budget, cfg.CacheDir, cfg.CacheDirSize = budget, dir, 1<<20
			s, err := New(v.m, v.obj, cfg)
			if err != nil {
				t.Fatal(err)
			}
			stores[i] = s
		}
		return stores
	}
	closeAll := func(stores []*Store) {
		for _, s := range stores {
			if err := s.Close(ctx); err != nil {
				t.Error(err)
			}
		}
	}
	check := func(what string, stores []*Store) {
		t.Helper()
		for i, v := range vols {
			if got := readAll(t, stores[i], v.m, v.ino); !bytes.Equal(got, v.data) {
				t.Fatalf("%s: volume %d reads other bytes than it wrote", what, i)
			}
		}
	}

	stores := open()
	if _, err := os.Stat(filepath.Join(dir, "blocks")); !os.IsNotExist(err) {
		t.Fatalf("the legacy cache without volume identity is still there (%v)", err)
	}
	check("cold caches", stores)
	hits := stores[0].Stats().CacheHits + stores[1].Stats().CacheHits
	check("warm memory cache", stores)
	if got := stores[0].Stats().CacheHits + stores[1].Stats().CacheHits; got <= hits {
		t.Fatalf("the second read was not served by the memory cache (hits %d then %d)", hits, got)
	}
	if st := budget.Stats(); st.Stores != 2 || st.CacheBytes == 0 {
		t.Fatalf("budget %+v: want 2 stores and cached blocks", st)
	}
	closeAll(stores)
	if st := budget.Stats(); st.Stores != 0 || st.CacheBytes != 0 {
		t.Fatalf("budget %+v after both stores closed: want no stores and no cached blocks", st)
	}
	for _, v := range vols {
		v.obj.failGets.Store(-1)
	}
	stores = open()
	defer closeAll(stores)
	check("warm disk cache, object stores down", stores)
	for i, s := range stores {
		if st := s.Stats(); st.Fetches != 0 {
			t.Fatalf("volume %d fetched %d blocks from its store, want all from the disk cache", i, st.Fetches)
		}
	}
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// One budget bounds the write buffers of every store sharing it, and a
// store waiting for memory that another store's partial blocks hold gets
// it: the waiter makes every store upload its partial blocks.
func TestSharedBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang guard, not a timing check
	defer cancel()
	budget := NewBudget(8*page, 4*page)
	var stores [2]*Store
	var metas [2]*fakeMeta
	for i := range stores {
		metas[i] = newFakeMeta(page)
		cfg := quietConfig()
		cfg.Budget = budget
		s, err := New(metas[i], storage.NewMem("budget"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(context.Background())
		stores[i] = s
	}
	// Store 0 fills the budget with partial blocks that never fill alone.
	var held []*File
	for ino := meta.Ino(1); ino <= 4; ino++ {
		f := stores[0].Open(ino, 0)
		held = append(held, f)
		if _, err := f.WriteAt(ctx, pattern(page-10, byte(ino)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if used := budget.Stats().Buffer; used < 3*page {
		t.Fatalf("store 0 holds %d buffer bytes, want about 4 pages", used)
	}
	// Store 1 needs memory the other store holds.
	f := stores[1].Open(1, 0)
	want := pattern(6*page, 7)
	for off := 0; off < len(want); off += page { // a write may exceed the bound only when it is alone
		if _, err := f.WriteAt(ctx, want[off:off+page], int64(off)); err != nil {
			t.Fatalf("write into a budget another store filled: %v", err)
		}
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.Release(ctx)
	for i, h := range held {
		if err := h.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		h.Release(ctx)
		if got := readAll(t, stores[0], metas[0], meta.Ino(i+1)); !bytes.Equal(got, pattern(page-10, byte(i+1))) {
			t.Fatalf("store 0 file %d differs after relief", i+1)
		}
	}
	if got := readAll(t, stores[1], metas[1], 1); !bytes.Equal(got, want) {
		t.Fatal("store 1's file differs")
	}
	st := budget.Stats()
	if st.PeakBuffer > st.BufferLimit {
		t.Fatalf("peak buffer %d above the shared bound %d", st.PeakBuffer, st.BufferLimit)
	}
	if stores[1].Stats().Relieves == 0 {
		t.Fatal("store 1 never made the stores upload their partial blocks")
	}
}
