// Package data maps file byte ranges onto objects: chunks of 64 MiB, slices
// written per write session, and blocks of up to BlockSize stored one object
// each. It buffers writes, uploads blocks in the background, commits slices to
// metadata only after their blocks are durable, and serves reads through a
// block cache with readahead.
//
// Layout: file offset x lies in chunk x/meta.ChunkSize. A chunk's slice list
// (oldest first, later slices cover earlier ones) says which bytes of which
// slice are visible where. A slice of Size bytes is stored as blocks
// 0..ceil(Size/BlockSize)-1, block i holding slice bytes [i*BlockSize,
// min((i+1)*BlockSize, Size)) under BlockKey(id, i, len). Objects are written
// once and never modified, which is what makes caching them safe.
//
// Caches: slice ids are counted per volume, so every cache is keyed by the
// volume's UUID as well (decided here, in New, from the volume's Format): the
// memory cache (shared by the mounts of a process through a Budget) keys
// blocks by (UUID, object key), and the disk cache of a volume lives in
// CacheDir/<UUID>/, holding blocks/<object key> files. A cached block never
// goes stale, across restarts too: a slice id is handed out once per volume
// (the counter only grows; ids a crashed client reserved are skipped, never
// reused), a rewrite or compaction writes new slices with new ids, and the
// key also carries the block's length, so a wrong-sized file is detected.
package data

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// Config tunes the data layer. Zero values take defaults.
type Config struct {
	BlockSize  int   // bytes per block object; default 4 MiB (from the volume's Format)
	BufferSize int64 // memory for all write buffers together; default 300 MiB
	MaxUploads int   // concurrent block uploads; default 20
	CacheSize  int64 // in-memory block cache; default 256 MiB
	// Budget, if set, is memory shared with other stores of the process (it
	// replaces BufferSize and CacheSize); nil = a budget for this store alone.
	Budget *Budget
	// CacheDir is an optional local disk cache, shared by volumes: each
	// volume keeps its blocks in CacheDir/<volume UUID>. "" = none.
	CacheDir     string
	CacheDirSize int64 // bound of one volume's disk cache; default 10 GiB
	// JournalDir, when set, keeps a write journal there (see journal.go):
	// every acknowledged write until its slice is committed, so that a
	// process killed with writes uncommitted loses none. New replays and
	// commits what an earlier process left. The directory is this store's
	// alone (one per served connection) and must outlive the process.
	JournalDir string
	Readahead  int64 // sequential readahead window in bytes; default 16 MiB
	MaxRetries int   // retries of a failing object request before EIO; default 10
	Logger     *slog.Logger

	RetryBackoff   time.Duration // first retry's delay, doubling up to 5 s; default 100 ms
	MaxFetches     int           // concurrent block downloads (reads and readahead); default 16
	CompactSlices  int           // compact a chunk once it has this many slices; default 64; <0 = never
	DeleteInterval time.Duration // how often to look for objects to delete; default 10 s; <0 = never
}

func (c *Config) defaults() {
	if c.BlockSize <= 0 {
		c.BlockSize = 4 << 20
	}
	if c.BufferSize <= 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.MaxUploads <= 0 {
		c.MaxUploads = 20
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.CacheDirSize <= 0 {
		c.CacheDirSize = 10 << 30
	}
	if c.Readahead == 0 {
		c.Readahead = 16 << 20
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.MaxFetches <= 0 {
		c.MaxFetches = 16
	}
	if c.CompactSlices == 0 {
		c.CompactSlices = 64
	}
	if c.DeleteInterval == 0 {
		c.DeleteInterval = 10 * time.Second
	}
}

// Store is the data layer of one mounted volume.
type Store struct {
	m   meta.Meta
	obj storage.Store
	cfg Config
	log *slog.Logger
	bs  int
	// local: the object store is this machine's disk (file://), whose page
	// cache makes our block cache and readahead pure overhead.
	local bool
	// pre takes readahead hints for a local store (nil: none).
	pre storage.Prefetcher

	vol    string // the volume's UUID: part of every cache key
	budget *Budget
	mem    *memCache // budget.cache
	disk   *diskCache

	journal *journal // nil: no write journal
	// journalIntact: an earlier process journaled here, and New committed
	// everything it had acknowledged.
	journalIntact bool

	uploads chan struct{} // semaphore of MaxUploads
	fetches chan struct{} // semaphore of MaxFetches

	flightMu sync.Mutex
	flight   map[string]*fetchCall

	mu    sync.Mutex
	files map[meta.Ino]*File

	// compactRun lets one compaction of this client run at a time: two
	// (the background one and podfs compact) racing on one chunk would see
	// the winner's replaced objects deleted under the loser's reads.
	compactRun     sync.Mutex
	compactMu      sync.Mutex
	compactPending map[chunkRef]bool
	compactWake    chan struct{}
	deleteWake     chan struct{}

	ctx    context.Context // ends at Close, stopping background work
	cancel context.CancelFunc
	bg     sync.WaitGroup
	work   sync.WaitGroup // uploads and commits, waited for by Close

	stats counters
}

type counters struct {
	uploads, fetches, compactions, relieves, deleted, hits atomic.Int64
}

// Stats counts what the store did since New.
type Stats struct {
	Uploads     int64 // block objects stored
	Fetches     int64 // block objects read from the object store (cache misses)
	Compactions int64 // chunks compacted
	Relieves    int64 // times full write buffers forced partial blocks out
	Deleted     int64 // slices whose objects were deleted
	CacheHits   int64 // block reads the memory cache answered
	// The budget's figures (of every store sharing it).
	PeakBuffer int64 // most write-buffer bytes held at once
	Buffer     int64 // write-buffer bytes held now
	CacheBytes int64 // memory the cached blocks take now
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Uploads: s.stats.uploads.Load(), Fetches: s.stats.fetches.Load(),
		Compactions: s.stats.compactions.Load(), Relieves: s.stats.relieves.Load(),
		Deleted: s.stats.deleted.Load(), CacheHits: s.stats.hits.Load(),
		PeakBuffer: s.budget.peak.Load(), Buffer: s.budget.bufferUsed(), CacheBytes: s.mem.Used(),
	}
}

type chunkRef struct {
	ino   meta.Ino
	index uint32
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// New starts the data layer over m and obj.
func New(m meta.Meta, obj storage.Store, cfg Config) (*Store, error) {
	if m == nil || obj == nil {
		return nil, errors.New("data: New needs a metadata engine and an object store")
	}
	cfg.defaults()
	if cfg.BlockSize > meta.ChunkSize || meta.ChunkSize%cfg.BlockSize != 0 {
		return nil, fmt.Errorf("data: block size %d must divide the chunk size %d", cfg.BlockSize, meta.ChunkSize)
	}
	budget := cfg.Budget
	if budget == nil {
		budget = NewBudget(cfg.CacheSize, cfg.BufferSize)
	}
	if budget.bufLimit < int64(cfg.BlockSize) {
		return nil, fmt.Errorf("data: buffer size %d is smaller than one block (%d); raise it", budget.bufLimit, cfg.BlockSize)
	}
	f, err := m.Load(context.Background())
	if err != nil {
		return nil, fmt.Errorf("data: load the volume's settings: %w", err)
	}
	vol := f.UUID
	if vol == "" || vol != filepath.Base(vol) || vol == "." || vol == ".." {
		return nil, fmt.Errorf("data: the volume has no usable UUID (%q) to key its caches by", vol)
	}
	s := &Store{
		m: m, obj: obj, cfg: cfg, log: cfg.Logger, bs: cfg.BlockSize, local: storage.IsLocal(obj),
		vol: vol, budget: budget, mem: budget.cache,
		uploads:        make(chan struct{}, cfg.MaxUploads),
		fetches:        make(chan struct{}, cfg.MaxFetches),
		flight:         map[string]*fetchCall{},
		files:          map[meta.Ino]*File{},
		compactPending: map[chunkRef]bool{},
		compactWake:    make(chan struct{}, 1),
		deleteWake:     make(chan struct{}, 1),
	}
	if s.local {
		s.pre = storage.AsPrefetcher(obj)
	}
	if cfg.CacheDir != "" {
		d, err := openDiskCache(cfg.CacheDir, vol, cfg.CacheDirSize, s.log)
		if err != nil {
			return nil, fmt.Errorf("data: disk cache %s: %w", cfg.CacheDir, err)
		}
		s.disk = d
	}
	budget.register(s)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.JournalDir != "" {
		if err := s.startJournal(context.Background()); err != nil {
			s.cancel()
			budget.unregister(s)
			return nil, err
		}
	}
	if cfg.CompactSlices > 0 {
		s.bg.Add(1)
		go s.compactLoop()
	}
	if cfg.DeleteInterval > 0 {
		s.bg.Add(1)
		go s.deleteLoop()
	}
	return s, nil
}

// Open returns the shared handle of ino (one per inode, reference counted),
// with size the file's current length from metadata. Every Open forgets the
// cached slice lists, so a file opened after another client closed it sees
// that client's writes (close-to-open consistency).
func (s *Store) Open(ino meta.Ino, size uint64) *File {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[ino]
	if f == nil {
		f = newFile(s, ino)
		s.files[ino] = f
	}
	f.mu.Lock()
	f.refs++
	if size > f.size || !f.dirtyLocked() {
		f.size = size
	}
	f.invalidateLocked()
	f.mu.Unlock()
	return f
}

// Close flushes every file and stops background work.
func (s *Store) Close(ctx context.Context) error {
	s.mu.Lock()
	files := make([]*File, 0, len(s.files))
	for _, f := range s.files {
		files = append(files, f)
	}
	s.mu.Unlock()
	var first error
	for _, f := range files {
		if err := f.Flush(ctx); err != nil && first == nil {
			first = err
		}
	}
	// Orphan deletes of failed slices may outlive the Flushes above.
	s.work.Wait()
	s.cancel()
	s.bg.Wait()
	s.budget.unregister(s)
	if s.journal != nil {
		s.journal.close()
	}
	return first
}

// goWork runs fn in a goroutine Close waits for (so the object store can
// be closed after Close).
func (s *Store) goWork(fn func()) {
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		fn()
	}()
}

// PeakBuffer is the most write-buffer memory the store's budget held at once.
func (s *Store) PeakBuffer() int64 { return s.budget.peak.Load() }

// Budget is the memory budget the store uses.
func (s *Store) Budget() *Budget { return s.budget }

func (s *Store) reserve(ctx context.Context, n int64) error { return s.budget.reserve(ctx, s, n) }

func (s *Store) release(n int64) { s.budget.release(n) }

// ck is the cache key of one of this volume's blocks.
func (s *Store) ck(key string) ckey { return ckey{s.vol, key} }

// cached copies bytes from off of a block in the memory cache into dst.
func (s *Store) cached(key string, off int, dst []byte) bool {
	if s.mem.CopyOut(s.ck(key), off, dst) {
		s.stats.hits.Add(1)
		return true
	}
	return false
}

// relieve starts uploading every file's partial blocks.
func (s *Store) relieve() {
	s.mu.Lock()
	files := make([]*File, 0, len(s.files))
	for _, f := range s.files {
		files = append(files, f)
	}
	s.mu.Unlock()
	for _, f := range files {
		f.mu.Lock()
		f.freezeAllLocked()
		f.mu.Unlock()
	}
}

// fetch brings block key of blen bytes into the memory cache (from the disk
// cache or the object store), loading each block once however many readers
// want it. With dst, it also copies the block's bytes from off into dst
// (done under the cache's lock, or before the block enters the cache); a
// block that could not stay cached is read directly.
func (s *Store) fetch(ctx context.Context, key string, blen, off int, dst []byte) error {
	if s.cached(key, off, dst) {
		return nil
	}
	s.flightMu.Lock()
	if c, ok := s.flight[key]; ok {
		s.flightMu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.err != nil {
			return c.err
		}
		if dst == nil || s.cached(key, off, dst) {
			return nil
		}
		// Evicted already (a tiny cache): read just our bytes.
		return s.getRange(ctx, blockTask{key: key, blen: blen, boff: off, dst: dst})
	}
	c := &fetchCall{done: make(chan struct{})}
	s.flight[key] = c
	s.flightMu.Unlock()

	var data []byte
	data, c.err = s.load(ctx, key, blen)
	if c.err == nil {
		copy(dst, data[off:])
		s.mem.Add(s.ck(key), data)
	}
	s.flightMu.Lock()
	delete(s.flight, key)
	s.flightMu.Unlock()
	close(c.done)
	return c.err
}

// newBlock returns a buffer for a block of blen bytes: a reused full-size
// buffer for big blocks, an exact one for small (a slice's short tail).
func (s *Store) newBlock(blen int) []byte {
	if blen >= s.bs/2 {
		return s.blockBuf()[:blen]
	}
	return make([]byte, blen)
}

func (s *Store) load(ctx context.Context, key string, blen int) ([]byte, error) {
	buf := s.newBlock(blen)
	if s.disk != nil && s.disk.Read(key, buf) {
		return buf, nil
	}
	select {
	case s.fetches <- struct{}{}:
	case <-ctx.Done():
		s.recycle(buf)
		return nil, ctx.Err()
	}
	defer func() { <-s.fetches }()
	s.stats.fetches.Add(1)
	err := retry(ctx, s.cfg.MaxRetries, s.cfg.RetryBackoff, "get "+key, func() error {
		n, err := s.obj.Get(ctx, key, 0, buf)
		if err != nil {
			return err
		}
		if n != blen {
			return fmt.Errorf("object %s holds %d bytes, want %d", key, n, blen)
		}
		return nil
	})
	if err != nil {
		s.recycle(buf)
		return nil, err
	}
	if s.disk != nil {
		s.disk.Add(key, buf)
	}
	return buf, nil
}

// put uploads one block with retries. Written blocks are not kept in the
// memory cache: their buffers are reused for the next writes, and a reader
// of a file's own recent writes is served from the buffers until upload.
func (s *Store) put(ctx context.Context, key string, data []byte) error {
	err := retry(ctx, s.cfg.MaxRetries, s.cfg.RetryBackoff, "put "+key, func() error {
		return s.obj.Put(ctx, key, data)
	})
	if err == nil {
		s.stats.uploads.Add(1)
	}
	return err
}

func (s *Store) forget(ino meta.Ino, index uint32) {
	s.mu.Lock()
	f := s.files[ino]
	s.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		delete(f.slices, index)
		f.gen++
		f.mu.Unlock()
	}
}
