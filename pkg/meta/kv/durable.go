package kv

import (
	"context"
	"fmt"
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
	Pending uint64 // log records answered but not yet durable
	Flushes int64  // writes that made records durable
}

// SyncReporter is implemented by engines with lazy durability.
type SyncReporter interface {
	SyncStats() SyncStats
}

// SyncStats implements SyncReporter.
func (b *Bolt) SyncStats() SyncStats {
	l := &b.lazy
	w, s := l.written.Load(), l.synced.Load()
	return SyncStats{Pending: w - min(s, w), Flushes: l.flushes.Load()}
}

// lazySync answers commits before they are durable (SyncDelay > 0). A
// commit appends its record to the staging file (see stage.go) and to
// pending; a flusher goroutine, SyncDelay after the first record it has not
// covered yet or at once when Sync asks, runs the barrier (making the data
// the records refer to durable) and then writes pending to the log segment
// with one synchronous write. The segment thus never holds a record whose
// data a power loss could take away.
type lazySync struct {
	on      bool
	b       *Bolt
	delay   time.Duration
	barrier func() error

	// Guarded by the Bolt's commitMu.
	stage   *stageFile
	pending []byte // sealed records not yet in the segment

	written atomic.Uint64 // records answered
	synced  atomic.Uint64 // records durable in the segment
	armed   atomic.Bool   // a delayed flush is scheduled
	flushes atomic.Int64
	kick    chan struct{} // wakes the flusher; capacity 1
	exit    chan struct{} // closed when the flusher returns

	// segMu is held while writing pending records to the segment, so
	// they reach it in commit order. Order: commitMu before segMu.
	segMu sync.Mutex

	mu      sync.Mutex
	flushed chan struct{} // closed (and replaced) after each flush
	err     error         // a failed flush: records may be missing from the segment
}

// start turns lazy durability on (commitMu not needed: nothing runs yet).
func (l *lazySync) start(b *Bolt) error {
	if b.opt.SyncDelay <= 0 || b.opt.NoSync {
		return nil
	}
	stage, err := openStage(b.path, b.boot, b.seg.seq)
	if err != nil {
		return err
	}
	barrier := b.opt.Barrier
	if barrier == nil {
		barrier = func() error { return nil }
	}
	*l = lazySync{on: true, b: b, delay: b.opt.SyncDelay, barrier: barrier, stage: stage,
		kick: make(chan struct{}, 1), exit: make(chan struct{}), flushed: make(chan struct{})}
	go l.flusher()
	return nil
}

// append stages one sealed record (commitMu held) and schedules its flush.
func (l *lazySync) append(rec []byte) error {
	if err := l.stage.append(rec); err != nil {
		return err
	}
	l.pending = append(l.pending, rec...)
	l.written.Add(1)
	if l.armed.CompareAndSwap(false, true) {
		time.AfterFunc(l.delay, l.wake)
	}
	return nil
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

// flush makes every record answered so far durable.
func (l *lazySync) flush() {
	b := l.b
	l.armed.Store(false) // records staged from here on schedule another flush
	b.commitMu.Lock()
	buf, target, seg := l.pending, l.written.Load(), b.seg
	l.pending = nil
	l.segMu.Lock()
	b.commitMu.Unlock()
	err := l.writeOut(seg, buf)
	l.segMu.Unlock()
	if err != nil {
		b.commitMu.Lock()
		if b.failed == nil {
			b.failed = fmt.Errorf("bolt: %w (restart to recover)", err)
			b.log.Error("write-ahead log flush failed: refusing writes", "err", err)
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

// writeOut runs the barrier, then writes buf to seg durably (segMu held).
func (l *lazySync) writeOut(seg *walSegment, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	if err := l.barrier(); err != nil {
		return fmt.Errorf("make data durable before the metadata referring to it: %w", err)
	}
	if err := seg.append(buf); err != nil {
		return err
	}
	l.flushes.Add(1)
	return nil
}

// drain writes every pending record to seg (commitMu held): before the
// segment is sealed, and before the final checkpoint.
func (l *lazySync) drain(seg *walSegment) error {
	if !l.on {
		return nil
	}
	l.segMu.Lock()
	defer l.segMu.Unlock()
	buf := l.pending
	l.pending = nil
	if err := l.writeOut(seg, buf); err != nil {
		return err
	}
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
