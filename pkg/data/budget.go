package data

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Default sizes of a Budget.
const (
	DefaultCacheSize  = 256 << 20
	DefaultBufferSize = 300 << 20
)

// Budget is the memory the data layers of one process's mounts share: one
// block cache and one bound on the write buffers of all their files. A
// process serving several volumes (the sidecar) passes one Budget in every
// volume's Config, so its memory follows one limit instead of growing by a
// full cache and buffer per volume. Cached blocks are keyed by volume UUID
// and object key, so volumes whose slice ids collide never see each
// other's blocks.
type Budget struct {
	cache    *memCache
	bufLimit int64

	mu      sync.Mutex
	used    int64         // write-buffer bytes held by all stores
	changed chan struct{} // closed and replaced whenever used drops
	stores  map[*Store]struct{}

	peak      atomic.Int64
	uploading atomic.Int64 // blocks being uploaded now, by any store
	// activity counts reads and writes through any store, so an idle
	// process can be told from a busy one without a clock read per request.
	activity atomic.Int64
	inflight atomic.Int64 // reads and writes running now
	releases atomic.Int64 // times Release gave memory back

	// pools holds block buffers by capacity (one pool per block size in
	// use), shared so that a block evicted from the cache by one volume's
	// reads is reused by another's.
	poolMu sync.Mutex
	pools  map[int]*sync.Pool
}

// NewBudget returns a budget of cacheSize bytes of cached blocks and
// bufferSize bytes of write buffers; zero or negative sizes take the
// defaults (DefaultCacheSize, DefaultBufferSize).
func NewBudget(cacheSize, bufferSize int64) *Budget {
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	if bufferSize <= 0 {
		bufferSize = DefaultBufferSize
	}
	b := &Budget{
		bufLimit: bufferSize,
		changed:  make(chan struct{}),
		stores:   map[*Store]struct{}{},
		pools:    map[int]*sync.Pool{},
	}
	b.cache = newMemCache(cacheSize, b.recycle)
	return b
}

// BudgetStats is what a Budget holds now.
type BudgetStats struct {
	CacheBytes  int64 // memory the cached blocks take
	CacheLimit  int64
	Buffer      int64 // write-buffer bytes held
	BufferLimit int64
	PeakBuffer  int64 // most write-buffer bytes held at once
	Stores      int   // data layers using the budget
	Releases    int64 // times idle memory was given back (Release)
}

// Stats reports the budget's use.
func (b *Budget) Stats() BudgetStats {
	b.mu.Lock()
	used, n := b.used, len(b.stores)
	b.mu.Unlock()
	return BudgetStats{
		CacheBytes: b.cache.Used(), CacheLimit: b.cache.Limit(),
		Buffer: used, BufferLimit: b.bufLimit, PeakBuffer: b.peak.Load(), Stores: n,
		Releases: b.releases.Load(),
	}
}

// DropCache empties the block cache, giving its memory back to the Go
// runtime (a sidecar may do so after a while idle).
func (b *Budget) DropCache() { b.cache.Clear() }

// begin records the start of a read or write through a store of the
// budget; the returned func records its end.
func (b *Budget) begin() func() {
	b.activity.Add(1)
	b.inflight.Add(1)
	return b.end
}

func (b *Budget) end() {
	b.inflight.Add(-1)
	b.activity.Add(1)
}

// Release gives the memory the budget holds but does not need back to the
// operating system: the clean block cache, the pooled block buffers, and
// whatever else the Go runtime keeps free. Write buffers holding data are
// kept. The next reads refill the cache from the disk cache or the object
// store.
func (b *Budget) Release() {
	b.cache.Clear()
	b.poolMu.Lock()
	for size := range b.pools {
		// Fresh pools: the old ones and every buffer in them become garbage.
		b.pools[size] = &sync.Pool{}
	}
	b.poolMu.Unlock()
	// A pooled buffer outlives one collection in the pool's victim cache:
	// the first GC moves it there, the one inside FreeOSMemory frees it and
	// returns the memory.
	runtime.GC()
	debug.FreeOSMemory()
	b.releases.Add(1)
}

// ReleaseWhenIdle calls Release once the stores of the budget have had no
// read or write running or started for idle, and again after each later
// busy spell, until ctx ends. Writes still buffered then (files left open)
// are uploaded and committed first, so their buffers go back as well.
// A process serving volumes (the sidecar) runs it so that a burst of I/O
// does not keep its memory high for the rest of its life. after, if set,
// is called after each release with what the budget holds then.
func (b *Budget) ReleaseWhenIdle(ctx context.Context, idle time.Duration, after func(before, now BudgetStats)) {
	if idle <= 0 {
		return
	}
	tick := min(max(idle/4, time.Millisecond), 5*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	last := b.activity.Load()
	quietSince := time.Now()
	released := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := b.activity.Load()
		if now != last || b.inflight.Load() > 0 {
			last, quietSince, released = now, time.Now(), false
			continue
		}
		if !released && time.Since(quietSince) >= idle {
			if b.bufferUsed() > 0 || b.uploading.Load() > 0 {
				// Files left open with buffered writes: commit them, so
				// their buffers go back too and nothing stays uncommitted
				// through a long quiet spell; release once they are done.
				b.relieveAll()
				continue
			}
			before := b.Stats()
			b.Release()
			released = true
			if after != nil {
				after(before, b.Stats())
			}
		}
	}
}

// relieveAll makes every store of the budget upload and commit what its
// files buffer.
func (b *Budget) relieveAll() {
	b.mu.Lock()
	stores := make([]*Store, 0, len(b.stores))
	for st := range b.stores {
		stores = append(stores, st)
	}
	b.mu.Unlock()
	for _, st := range stores {
		st.relieve()
	}
}

func (b *Budget) register(s *Store) {
	b.mu.Lock()
	b.stores[s] = struct{}{}
	b.mu.Unlock()
}

func (b *Budget) unregister(s *Store) {
	b.mu.Lock()
	delete(b.stores, s)
	b.mu.Unlock()
	b.cache.RemoveVolume(s.vol)
}

func (b *Budget) pool(size int) *sync.Pool {
	b.poolMu.Lock()
	defer b.poolMu.Unlock()
	p := b.pools[size]
	if p == nil {
		p = &sync.Pool{}
		b.pools[size] = p
	}
	return p
}

// blockBuf returns an empty buffer of capacity size, reused when possible.
func (b *Budget) blockBuf(size int) []byte {
	if p, ok := b.pool(size).Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

// recycle returns a buffer nobody references any more to the pool of its
// capacity, if some store uses blocks of that size.
func (b *Budget) recycle(buf []byte) {
	b.poolMu.Lock()
	p := b.pools[cap(buf)]
	b.poolMu.Unlock()
	if p != nil {
		buf = buf[:0]
		p.Put(&buf)
	}
}

// reserve takes n bytes of write-buffer memory, waiting while the buffers are
// full. It must be called holding no file lock: uploads free memory by taking
// file locks.
func (b *Budget) reserve(ctx context.Context, s *Store, n int64) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.bufLimit {
			b.used += n
			if b.used > b.peak.Load() {
				b.peak.Store(b.used)
			}
			b.mu.Unlock()
			return nil
		}
		ch := b.changed
		stores := make([]*Store, 0, len(b.stores))
		for st := range b.stores {
			stores = append(stores, st)
		}
		b.mu.Unlock()
		// Full. If nothing is uploading, the memory is held by partial blocks
		// that will never fill on their own: upload them, in every store
		// sharing the budget (another volume may hold it all).
		if b.uploading.Load() == 0 {
			s.stats.relieves.Add(1)
			for _, st := range stores {
				st.relieve()
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
			// Re-check: an upload may have started and finished between the
			// check above and the wait.
		}
	}
}

// release returns n bytes of write-buffer memory.
func (b *Budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		panic(fmt.Sprintf("data: write buffer accounting went negative (%d)", b.used))
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *Budget) bufferUsed() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
