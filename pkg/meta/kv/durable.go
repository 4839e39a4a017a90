package kv

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Syncer is implemented by engines that may answer a commit before it is
// durable (bolt with SyncDelay). Sync returns once every transaction
// committed before the call is durable. Callers need it before effects
// outside the store that a lost commit would make wrong, like deleting the
// objects of a file whose unlink is only in memory, and for fsync.
type Syncer interface {
	Sync(ctx context.Context) error
}

// SyncStats describes an engine's lazy durability (bolt with SyncDelay).
type SyncStats struct {
	Pending uint64 // log records written but not yet durable
	Flushes int64  // fdatasyncs that made records durable
}

// SyncReporter is implemented by engines with lazy durability.
type SyncReporter interface {
	SyncStats() SyncStats
}

// SyncStats implements SyncReporter.
func (b *Bolt) SyncStats() SyncStats {
	l := &b.lazy
	synced := l.synced.Load()
	return SyncStats{Pending: l.written.Load() - min(synced, l.written.Load()), Flushes: l.flushes.Load()}
}

// lazySync makes the bolt log durable behind the commits (SyncDelay > 0).
// Commits count the records they append (written); a flusher goroutine
// fdatasyncs the segment SyncDelay after the first record it has not yet
// covered, or at once when Sync asks, and publishes how many records are
// durable (synced).
type lazySync struct {
	on    bool
	b     *Bolt
	delay time.Duration

	written atomic.Uint64 // records appended, by the committer (commitMu)
	synced  atomic.Uint64 // records known durable
	armed   atomic.Bool   // a delayed flush is scheduled
	flushes atomic.Int64  // fdatasyncs done
	kick    chan struct{} // wakes the flusher; capacity 1
	exit    chan struct{} // closed when the flusher returns

	// fsyncMu is held across a segment's fdatasync; freeze takes it before
	// closing a segment. Order: commitMu before fsyncMu.
	fsyncMu sync.Mutex

	mu      sync.Mutex
	flushed chan struct{} // closed (and replaced) after each flush
	err     error         // a failed fdatasync: the log may have lost records
}

func (l *lazySync) start(b *Bolt) {
	if b.opt.SyncDelay <= 0 || b.opt.NoSync {
		return
	}
	*l = lazySync{on: true, b: b, delay: b.opt.SyncDelay, kick: make(chan struct{}, 1),
		exit: make(chan struct{}), flushed: make(chan struct{})}
	go l.flusher()
}

// appended notes a record the committer wrote (commitMu held) and
// schedules its flush.
func (l *lazySync) appended() {
	if !l.on {
		return
	}
	l.written.Add(1)
	if l.armed.CompareAndSwap(false, true) {
		time.AfterFunc(l.delay, l.wake)
	}
}

func (l *lazySync) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *lazySync) flusher() {
	defer close(l.exit)
	for {
		select {
		case <-l.kick:
		case <-l.b.stop:
			return
		}
		l.flush()
	}
}

// flush makes every record appended so far durable.
func (l *lazySync) flush() {
	b := l.b
	l.armed.Store(false) // records appended from here on schedule another flush
	b.commitMu.Lock()
	target, seg := l.written.Load(), b.seg
	l.fsyncMu.Lock()
	b.commitMu.Unlock()
	var err error
	if l.synced.Load() < target {
		err = seg.sync()
		l.flushes.Add(1)
	}
	l.fsyncMu.Unlock()
	if err != nil {
		b.commitMu.Lock()
		if b.failed == nil {
			b.failed = err
			b.log.Error("write-ahead log sync failed: refusing writes", "err", err)
		}
		b.commitMu.Unlock()
	}
	l.mu.Lock()
	if err != nil && l.err == nil {
		l.err = err
	}
	if err == nil && l.synced.Load() < target {
		l.synced.Store(target)
	}
	close(l.flushed)
	l.flushed = make(chan struct{})
	l.mu.Unlock()
}

// syncRetired makes a segment the committer is leaving durable (commitMu
// held): everything appended so far is in it.
func (l *lazySync) syncRetired(seg *walSegment) error {
	if !l.on {
		return nil
	}
	l.fsyncMu.Lock()
	defer l.fsyncMu.Unlock()
	if err := seg.sync(); err != nil {
		return err
	}
	l.flushes.Add(1)
	l.mu.Lock()
	l.synced.Store(l.written.Load())
	l.mu.Unlock()
	return nil
}

// wait returns once the flusher has stopped (Close, after stop closed).
func (l *lazySync) wait() {
	if l.on {
		<-l.exit
	}
}

// Sync implements Syncer.
func (b *Bolt) Sync(ctx context.Context) error {
	select {
	case <-b.stop:
		return ErrClosed
	default:
	}
	l := &b.lazy
	if !l.on {
		return nil // every commit is durable when answered
	}
	target := l.written.Load()
	for {
		l.mu.Lock()
		err, flushed := l.err, l.flushed
		l.mu.Unlock()
		if err != nil {
			return err
		}
		if l.synced.Load() >= target {
			return nil
		}
		l.wake()
		select {
		case <-flushed:
		case <-l.exit:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
