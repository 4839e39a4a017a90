package fs

import (
	"context"
	"sync"
	"time"

	"podfs.io/podfs/pkg/meta"
)

// releaseLinger is how long the metadata open marker of a closed file is
// kept. Closing a file then costs no metadata transaction on the close path,
// and a file reopened within the window (write then read back, stat-open-
// close loops) needs no new marker either. An unlinked file's data lives
// that much longer; nothing else can tell.
const releaseLinger = time.Second

// releaser defers meta.Release calls and cancels them against new opens.
// Over an engine whose open markers stay in memory (meta.LocalOpens) a
// release costs nothing, so it releases at once: an unlink soon after a
// close then removes the file in its own transaction, instead of keeping it
// for the deferred release to remove in two more.
type releaser struct {
	m   meta.Meta
	log interface {
		Warn(msg string, args ...any)
	}
	now bool // release at once

	mu      sync.Mutex
	pending map[meta.Ino][]time.Time // due times, oldest first
	stop    chan struct{}
	done    chan struct{}
}

func newReleaser(m meta.Meta, log interface{ Warn(string, ...any) }) *releaser {
	r := &releaser{m: m, log: log, now: m.LocalOpens(), pending: map[meta.Ino][]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if r.now {
		close(r.done) // nothing is ever queued: no loop needed
	} else {
		go r.loop()
	}
	return r
}

// defer queues one release of ino.
func (r *releaser) deferRelease(ino meta.Ino) {
	if r.now {
		if err := r.m.Release(context.Background(), ino); err != nil {
			r.log.Warn("release", "ino", ino, "err", err)
		}
		return
	}
	r.mu.Lock()
	r.pending[ino] = append(r.pending[ino], time.Now().Add(releaseLinger))
	r.mu.Unlock()
}

// reuse takes back one queued release of ino, if any: the caller then holds
// the metadata open marker that release would have dropped.
func (r *releaser) reuse(ino meta.Ino) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.pending[ino]
	if len(q) == 0 {
		return false
	}
	// Drop the newest: the oldest stays due first.
	if len(q) == 1 {
		delete(r.pending, ino)
	} else {
		r.pending[ino] = q[:len(q)-1]
	}
	return true
}

// take removes and returns the releases due by now (all with all set).
func (r *releaser) take(now time.Time, all bool) []meta.Ino {
	r.mu.Lock()
	defer r.mu.Unlock()
	var due []meta.Ino
	for ino, q := range r.pending {
		n := 0
		for n < len(q) && (all || !q[n].After(now)) {
			n++
		}
		for range n {
			due = append(due, ino)
		}
		if n == len(q) {
			delete(r.pending, ino)
		} else {
			r.pending[ino] = q[n:]
		}
	}
	return due
}

func (r *releaser) loop() {
	defer close(r.done)
	t := time.NewTicker(releaseLinger / 4)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			r.run(r.take(time.Now(), true))
			return
		case <-t.C:
			r.run(r.take(time.Now(), false))
		}
	}
}

// run releases what is due; the meta layer drops many open markers per
// transaction, so closing many files costs few transactions.
func (r *releaser) run(inos []meta.Ino) {
	if len(inos) == 0 {
		return
	}
	if err := r.m.ReleaseMany(context.Background(), inos); err != nil {
		r.log.Warn("release", "files", len(inos), "err", err)
	}
}

// close runs every queued release now and stops.
func (r *releaser) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}
