package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var boltBucket = []byte("podfs")

// maxGroup bounds how many transactions share one commit.
const maxGroup = 512

// BoltOptions tune the embedded engine.
type BoltOptions struct {
	// NoSync skips fsync at commit (tests and benchmarks of CPU cost only:
	// a crash loses recent transactions).
	NoSync bool
	// LockTimeout bounds the wait for the file lock another process holds.
	LockTimeout time.Duration
	// CheckpointBytes is the size of committed writes held in memory (and
	// in the write-ahead log) that starts a checkpoint into the bolt file;
	// default 32 MiB.
	CheckpointBytes int64
	// CheckpointAge is how long a committed write waits at most for its
	// checkpoint; default 5 s. It bounds the log replayed after a crash.
	CheckpointAge time.Duration
	// BufferedLog writes the log through the page cache and fdatasync
	// instead of O_DIRECT|O_DSYNC (what file systems without O_DIRECT get
	// anyway); for tests of that path.
	BufferedLog bool
	// SyncDelay, when positive, answers a commit once its log record is
	// in the page cache (a crash of this process loses nothing; see
	// stage.go) and makes it durable at most this long after, with one
	// write for everything committed meanwhile, or at once when Sync asks:
	// a power loss may lose the last SyncDelay of commits, the way a local
	// file system loses what was not fsync'd. Zero makes every commit
	// durable before it is answered.
	SyncDelay time.Duration
	// Barrier, with SyncDelay, makes durable the data that records answered
	// so far refer to (objects of a store that defers its own syncs); it
	// runs before those records are written to the log. Nil: nothing to do.
	Barrier func() error
	// Logger receives checkpoint failures; default slog.Default().
	Logger *slog.Logger

	bootID string // tests: this boot's id instead of the kernel's
}

// Bolt is the embedded single-node engine: a bbolt file (a consistent
// checkpoint, written by synced bolt transactions only) plus a write-ahead
// log of the transactions committed since, whose writes are also kept in
// memory (the memtable) where reads merge them over the file.
//
// Read-write transactions go through one committer goroutine (or, when it
// is idle, the caller commits itself). It runs every queued transaction
// against its own write overlay (a failing one is dropped alone) over the
// memtable and the file, applying each one's writes to the memtable, appends
// the group's writes to the log as one checksummed record, makes it durable
// with one synchronous write (or, with SyncDelay, writes it and leaves it
// to a flusher to make durable), publishes the new memtable to readers and
// only then answers the callers. When the memtable is
// large or old, the committer freezes it and starts a new log segment; a
// background checkpointer writes the frozen layer into the bolt file in one
// synced transaction and drops it, and with it the old segment.
type Bolt struct {
	path  string
	db    *bolt.DB
	opt   BoltOptions
	log   *slog.Logger
	queue chan *boltReq
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	// state is what readers see; published under stateMu (by the committer
	// and the checkpointer), read without locking.
	state   atomic.Pointer[memState]
	stateMu sync.Mutex
	// ckptStarted counts checkpoints that began writing the bolt file.
	ckptStarted atomic.Int64
	commits     atomic.Int64 // log records written, for benchmarks
	lastGroup   atomic.Int64 // transactions in the last commit group

	// commitMu is held by whoever commits: the committer goroutine, or a
	// caller that found it idle (Update); it guards the fields below.
	commitMu sync.Mutex
	mem      *memtable // the active layer, mutable (state.active is a clone)
	memBytes int64
	memSince time.Time // when the first write of mem committed
	seg      *walSegment
	rec      []byte
	failed   error               // a log write failed: later updates are refused
	ckpt     *checkpointJob      // the checkpoint in progress, if any
	ckptJobs chan *checkpointJob // one job at a time: buffered, so sending never waits
	ckptExit chan struct{}       // closed when the checkpointer returns

	spareMu sync.Mutex
	spare   string // a checkpointed segment kept for reuse

	boot string   // the kernel's boot id (staging files of this boot replay)
	lazy lazySync // SyncDelay > 0: see durable.go
}

type boltReq struct {
	fn   func(Tx) error
	done chan error
}

// OpenBolt opens (creating if needed) the database file at path, replaying
// the write-ahead log a crash left. The log lives beside the file, as
// <path>.wal.<16 hex digits> segments (the state after a crash: keep them
// with the file) and <path>.wal.spare, a preallocated segment kept for the
// next open (no state). After Close the file alone holds everything.
func OpenBolt(path string, opt BoltOptions) (*Bolt, error) {
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = 2 * time.Second
	}
	if opt.CheckpointBytes <= 0 {
		opt.CheckpointBytes = 32 << 20
	}
	if opt.CheckpointAge <= 0 {
		opt.CheckpointAge = 5 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("bolt: create directory of %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.LockTimeout, NoSync: opt.NoSync, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		// Map a large range up front: a remap blocks every reader.
		InitialMmapSize: 1 << 30})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("bolt: %s is in use by another process (it holds the file lock; the embedded engine serves one process — stop the other podfs mount, or use etcd:// or tikv:// for several clients)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt: init %s: %w", path, err)
	}
	b := &Bolt{path: path, db: db, opt: opt, log: opt.Logger.With("kv", "bolt://"+path),
		queue: make(chan *boltReq, maxGroup), stop: make(chan struct{}), done: make(chan struct{}),
		mem: newMemtable(), ckptJobs: make(chan *checkpointJob, 1), ckptExit: make(chan struct{}),
		boot: opt.bootID}
	if b.boot == "" {
		b.boot = currentBootID()
	}
	next, err := b.recover()
	if err != nil {
		db.Close()
		return nil, err
	}
	b.seg, err = createSegment(path, next, b.takeSpare(), opt)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt: %w", err)
	}
	b.state.Store(&memState{active: b.mem.Clone()})
	if err := b.lazy.start(b); err != nil {
		b.seg.f.Close()
		db.Close()
		return nil, fmt.Errorf("bolt: %w", err)
	}
	go b.checkpointer()
	go b.committer()
	return b, nil
}

// Serial implements Serial: the committer orders all transactions.
func (b *Bolt) Serial() {}

// Serializable implements Serializable: transactions run one at a time.
func (b *Bolt) Serializable() {}

// Exclusive implements Exclusive: the database file is locked by its opener.
func (b *Bolt) Exclusive() {}

// Name implements Engine.
func (b *Bolt) Name() string { return "bolt://" + b.path }

// Update implements Engine. It never reports a conflict: transactions are
// serialized by the committer.
func (b *Bolt) Update(ctx context.Context, fn func(Tx) error) error {
	r := &boltReq{fn: fn, done: make(chan error, 1)}
	// Nobody committing, nothing queued and the last group alone too:
	// commit right here, sparing a lone caller (one FUSE create) two
	// goroutine hand-offs, which on a busy machine can cost more than the
	// commit itself. Concurrent callers keep queueing, to share commits.
	if b.lastGroup.Load() <= 1 && len(b.queue) == 0 && b.commitMu.TryLock() {
		select {
		case <-b.stop:
			b.commitMu.Unlock()
			return ErrClosed
		default:
		}
		b.commit(b.drain([]*boltReq{r}))
		b.maybeCheckpoint()
		b.commitMu.Unlock()
		return <-r.done
	}
	select {
	case b.queue <- r:
	case <-b.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued the transaction may commit: wait for the outcome. A
	// request queued as the committer stopped is answered by no one.
	select {
	case err := <-r.done:
		return err
	case <-b.done:
		select {
		case err := <-r.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// drain adds what is queued to batch, without waiting.
func (b *Bolt) drain(batch []*boltReq) []*boltReq {
	for len(batch) < maxGroup {
		select {
		case r := <-b.queue:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// View implements Engine. It reads a snapshot: the published memtable
// layers over a bolt read transaction begun after taking them.
func (b *Bolt) View(ctx context.Context, fn func(Tx) error) error {
	select {
	case <-b.stop:
		return ErrClosed
	default:
	}
	for {
		s := b.state.Load()
		tx, err := b.db.Begin(false)
		if err != nil {
			return fmt.Errorf("bolt: begin read: %w", err)
		}
		// A checkpoint not yet part of s may have reached the file: its
		// writes would show through s's layers. Rare (one per checkpoint
		// interval, in a window of microseconds): take the new state. The
		// newest state always covers every started checkpoint (a freeze
		// publishes before its checkpoint starts), so this ends.
		if b.ckptStarted.Load() > s.ckpts {
			tx.Rollback()
			runtime.Gosched()
			continue
		}
		o := newOverlay(&layeredReader{layers: s.layers(), b: tx.Bucket(boltBucket)}, true)
		err = fn(o)
		if err == nil {
			err = o.err
		}
		tx.Rollback()
		return err
	}
}

func (b *Bolt) committer() {
	defer close(b.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastCommit := 0, time.Duration(0) // size and duration of the previous group
	for {
		var first *boltReq
		select {
		case first = <-b.queue:
		case <-tick.C:
			b.commitMu.Lock()
			b.maybeCheckpoint()
			b.commitMu.Unlock()
			continue
		case <-b.stop:
			// Fail whatever is still queued.
			for {
				select {
				case r := <-b.queue:
					r.done <- ErrClosed
				default:
					return
				}
			}
		}
		b.commitMu.Lock()
		batch := b.drain([]*boltReq{first})
		if last > 1 && !b.lazy.on {
			batch = b.gather(batch, lastCommit)
		}
		start := time.Now()
		b.commit(batch)
		lastCommit = time.Since(start)
		last = len(batch)
		b.maybeCheckpoint()
		b.commitMu.Unlock()
	}
}

// gather waits a little for more transactions when the last group had
// several: the callers it just answered are usually about to send their
// next one, and a commit costs an fdatasync whatever its size. It stops
// after a short quiet spell, or a quarter of a commit's time at most. It
// yields instead of sleeping: Go timers shorter than a millisecond oversleep.
func (b *Bolt) gather(batch []*boltReq, commitTime time.Duration) []*boltReq {
	const quiet = 20 * time.Microsecond
	start := time.Now()
	limit := min(max(commitTime/4, quiet), 500*time.Microsecond)
	lastArrival := start
	for len(batch) < maxGroup {
		select {
		case r := <-b.queue:
			batch = append(batch, r)
			lastArrival = time.Now()
			continue
		default:
		}
		now := time.Now()
		if now.Sub(lastArrival) >= quiet || now.Sub(start) >= limit {
			break
		}
		runtime.Gosched()
	}
	return batch
}

// commit runs a group of transactions, logs their writes as one record and
// answers the callers once it is durable.
func (b *Bolt) commit(batch []*boltReq) {
	b.lastGroup.Store(int64(len(batch)))
	results := make([]error, len(batch))
	err := b.failed
	if err == nil {
		err = b.runGroup(batch, results)
	}
	for i, r := range batch {
		if err != nil && results[i] == nil {
			r.done <- err
		} else {
			r.done <- results[i]
		}
	}
}

func (b *Bolt) runGroup(batch []*boltReq, results []error) error {
	// The state before the bolt transaction: see View. The committer reads
	// its own active layer (the newest writes), the published frozen one.
	s := b.state.Load()
	tx, err := b.db.Begin(false)
	if err != nil {
		return fmt.Errorf("bolt: begin read: %w", err)
	}
	defer tx.Rollback()
	layers := []*memtable{b.mem}
	if s.frozen != nil {
		layers = append(layers, s.frozen)
	}
	r := &layeredReader{layers: layers, b: tx.Bucket(boltBucket)}
	rec := append(b.rec[:0], make([]byte, walHeader)...)
	var added int64
	for i, req := range batch {
		o := newOverlay(r, false)
		if err := runFn(req.fn, o); err != nil {
			results[i] = err
			continue
		}
		// Later transactions of the group read these writes in the memtable;
		// readers see them only once the record is durable (publish below).
		for k, v := range o.writes {
			rec = appendOp(rec, k, v)
			// The memtable keeps values long after the transaction: its own
			// copy, whatever a caller does with its slice afterwards.
			b.mem.ReplaceOrInsert(&memEntry{key: k, val: clone(v)})
			added += int64(len(k)+len(v)) + 48
		}
	}
	b.rec = rec
	if len(rec) == walHeader {
		return nil // nothing written
	}
	sealRecord(rec, b.seg.seq)
	if b.lazy.on {
		err = b.lazy.append(rec)
	} else {
		err = b.seg.append(rec)
	}
	if err != nil {
		// The memtable holds writes that may not be in the log: refuse
		// further writes; a restart replays what the log holds.
		b.failed = fmt.Errorf("bolt: %w (restart to recover)", err)
		b.log.Error("write-ahead log failed: refusing writes", "err", err)
		return b.failed
	}
	b.commits.Add(1)
	if b.memBytes == 0 {
		b.memSince = time.Now()
	}
	b.memBytes += added
	b.stateMu.Lock()
	cur := b.state.Load()
	b.state.Store(&memState{active: b.mem.Clone(), frozen: cur.frozen, ckpts: cur.ckpts})
	b.stateMu.Unlock()
	return nil
}

// runFn runs one transaction function, turning a panic into an error so one
// bad caller cannot take the committer (and every other caller) down.
func runFn(fn func(Tx) error, tx Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("bolt: transaction panicked: %v", p)
		}
	}()
	return fn(tx)
}

// Close implements Engine: it checkpoints everything into the bolt file and
// removes the write-ahead log.
func (b *Bolt) Close() error {
	var err error
	b.once.Do(func() {
		close(b.stop)
		<-b.done
		b.lazy.wait()     // before commitMu: a flush in progress takes it
		b.commitMu.Lock() // a caller's commit in progress ends; none starts
		close(b.ckptJobs)
		<-b.ckptExit
		if b.ckpt != nil {
			err = b.ckpt.err
		}
		if err == nil && b.failed == nil {
			err = b.finalCheckpoint()
		}
		if cerr := b.db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("bolt: close %s: %w", b.path, cerr)
		}
	})
	return err
}

type boltIter struct {
	c          *bolt.Cursor
	start, end []byte
	started    bool
}

func (it *boltIter) next() ([]byte, []byte, bool) {
	var k, v []byte
	if !it.started {
		it.started = true
		k, v = it.c.Seek(it.start)
	} else {
		k, v = it.c.Next()
	}
	if k == nil || (it.end != nil && bytes.Compare(k, it.end) >= 0) {
		return nil, nil, false
	}
	return clone(k), clone(v), true
}
