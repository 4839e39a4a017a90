package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spiller is the goroutine that moves sealed segments' objects to their
// files and retires the segments, oldest first.
func (j *journal) spiller() {
	defer j.bgWG.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		last := false
		select {
		case <-j.spillKick:
		case <-retry.C:
		case <-j.writerDone:
			last = true // the writer sealed what it had: spill it all and stop
		}
		err := j.spillAll()
		if err != nil {
			j.log.Error("journal: spill", "store", j.f.String(), "err", err)
		}
		if last {
			return
		}
		if err != nil {
			retry.Reset(time.Second)
		}
	}
}

// spillAll spills and retires the queued segments until none is left or
// one fails (it stays queued and is tried again).
func (j *journal) spillAll() error {
	for {
		j.mu.Lock()
		if len(j.toSpill) == 0 {
			j.mu.Unlock()
			return nil
		}
		s := j.toSpill[0]
		ents := s.ents // complete: the writer no longer appends to a sealed segment
		j.mu.Unlock()
		err := j.spill(s, ents)
		j.mu.Lock()
		if err != nil {
			j.bgErr = err
			j.changed.Broadcast()
			j.mu.Unlock()
			return err
		}
		for _, e := range ents {
			if j.index[e.key] == e {
				delete(j.index, e.key)
			}
		}
		j.toSpill = j.toSpill[1:]
		j.pending--
		j.spares = append(j.spares, s.path)
		j.bgErr = nil
		j.changed.Broadcast()
		j.mu.Unlock()
		s.fd.Close()
	}
}

// spill writes the segment's objects that are still current to their files
// (replaced, deleted later: not), makes them durable at once and retires
// the segment. Its entries stay in the index until the caller drops them,
// after this returns: a Put that bypasses the journal waits for that, so
// neither a replay of this segment nor its spilling can undo it.
func (j *journal) spill(s *jseg, ents []*jentry) error {
	for _, e := range ents {
		if j.lookup(e.key) != e {
			continue
		}
		err := j.f.place(e.key, e.data, e.del)
		if err != nil && pathError(err) {
			// The key cannot be a file here (a directory has its name, or a
			// file one of its parents'): no retry will do better.
			j.log.Error("journal: object cannot be stored, dropped", "store", j.f.String(), "key", e.key, "err", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("spill %s of %s: %w", e.key, s.path, err)
		}
	}
	if err := unix.Syncfs(j.rootFD); err != nil {
		return fmt.Errorf("spill %s: syncfs: %w", s.path, err)
	}
	return s.writeAt(segHeader(s.seq, jRetired), 0)
}

func pathError(err error) bool {
	return errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) || errors.Is(err, fs.ErrExist)
}

// preparer is the goroutine that makes a new segment file when the spares
// run out, off the writer's path.
func (j *journal) preparer() {
	defer j.bgWG.Done()
	for {
		select {
		case <-j.spareKick:
		case <-j.writerDone:
			return
		}
		j.mu.Lock()
		need := len(j.spares) == 0
		j.mu.Unlock()
		if !need {
			continue
		}
		if err := j.newSpare(); err != nil {
			j.log.Error("journal: prepare segment", "store", j.f.String(), "err", err)
			j.mu.Lock()
			j.bgErr = err
			j.changed.Broadcast()
			j.mu.Unlock()
		}
	}
}
