package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var boltBucket = []byte("podfs")

// maxGroup bounds how many transactions share one bolt commit.
const maxGroup = 512

// BoltOptions tune the embedded engine.
type BoltOptions struct {
	// NoSync skips fsync at commit (tests and benchmarks of CPU cost only:
	// a crash loses recent transactions).
	NoSync bool
	// LockTimeout bounds the wait for the file lock another process holds.
	LockTimeout time.Duration
}

// Bolt is the embedded single-node engine. Read-write transactions go through
// one committer goroutine that runs every queued transaction inside a single
// bolt transaction (each against its own write overlay, so a failing one is
// dropped alone) and commits them with one pair of fsyncs.
type Bolt struct {
	path    string
	db      *bolt.DB
	queue   chan *boltReq
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	commits atomic.Int64
}

type boltReq struct {
	fn   func(Tx) error
	done chan error
}

// OpenBolt opens (creating if needed) the database file at path.
func OpenBolt(path string, opt BoltOptions) (*Bolt, error) {
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = 2 * time.Second
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
	b := &Bolt{path: path, db: db, queue: make(chan *boltReq, maxGroup), stop: make(chan struct{}), done: make(chan struct{})}
	go b.committer()
	return b, nil
}

// Serial implements Serial: the committer orders all transactions.
func (b *Bolt) Serial() {}

// Name implements Engine.
func (b *Bolt) Name() string { return "bolt://" + b.path }

// Update implements Engine. It never reports a conflict: transactions are
// serialized by the committer.
func (b *Bolt) Update(ctx context.Context, fn func(Tx) error) error {
	r := &boltReq{fn: fn, done: make(chan error, 1)}
	select {
	case b.queue <- r:
	case <-b.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued the transaction may commit: wait for the outcome.
	return <-r.done
}

// View implements Engine.
func (b *Bolt) View(ctx context.Context, fn func(Tx) error) error {
	select {
	case <-b.stop:
		return ErrClosed
	default:
	}
	return b.db.View(func(tx *bolt.Tx) error {
		o := newOverlay(boltReader{tx.Bucket(boltBucket)}, true)
		if err := fn(o); err != nil {
			return err
		}
		return o.err
	})
}

func (b *Bolt) committer() {
	defer close(b.done)
	last, lastCommit := 0, time.Duration(0) // size and duration of the previous group
	for {
		var first *boltReq
		select {
		case first = <-b.queue:
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
		batch := []*boltReq{first}
	drain:
		for len(batch) < maxGroup {
			select {
			case r := <-b.queue:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if last > 1 {
			batch = b.gather(batch, lastCommit)
		}
		start := time.Now()
		b.commit(batch)
		lastCommit = time.Since(start)
		last = len(batch)
		b.commits.Add(1)
	}
}

// gather waits a little for more transactions when the last group had
// several: the callers it just answered are usually about to send their
// next one, and a commit costs two fsyncs whatever its size. It stops after
// a short quiet spell, or a quarter of a commit's time at most. It yields
// instead of sleeping: Go timers shorter than a millisecond oversleep.
func (b *Bolt) gather(batch []*boltReq, commitTime time.Duration) []*boltReq {
	const quiet = 50 * time.Microsecond
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

func (b *Bolt) commit(batch []*boltReq) {
	results := make([]error, len(batch))
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		for i, r := range batch {
			o := newOverlay(boltReader{bk}, false)
			if err := runFn(r.fn, o); err != nil {
				results[i] = err
				continue
			}
			for k, v := range o.writes {
				var err error
				if v == nil {
					err = bk.Delete([]byte(k))
				} else {
					err = bk.Put([]byte(k), v)
				}
				if err != nil {
					return fmt.Errorf("bolt: write: %w", err)
				}
			}
		}
		return nil
	})
	for i, r := range batch {
		if err != nil {
			r.done <- err
		} else {
			r.done <- results[i]
		}
	}
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

// Close implements Engine.
func (b *Bolt) Close() error {
	var err error
	b.once.Do(func() {
		close(b.stop)
		<-b.done
		err = b.db.Close()
	})
	return err
}

type boltReader struct{ b *bolt.Bucket }

func (r boltReader) get(key []byte) []byte { return clone(r.b.Get(key)) }

func (r boltReader) iter(start, end []byte) iterator {
	return &boltIter{c: r.b.Cursor(), start: start, end: end}
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
