package data

import (
	"context"
	"fmt"
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
}

// Stats reports the budget's use.
func (b *Budget) Stats() BudgetStats {
	b.mu.Lock()
	used, n := b.used, len(b.stores)
	b.mu.Unlock()
	return BudgetStats{
		CacheBytes: b.cache.Used(), CacheLimit: b.cache.Limit(),
		Buffer: used, BufferLimit: b.bufLimit, PeakBuffer: b.peak.Load(), Stores: n,
	}
}

// DropCache empties the block cache, giving its memory back to the Go
// runtime (a sidecar may do so after a while idle).
func (b *Budget) DropCache() { b.cache.Clear() }

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
