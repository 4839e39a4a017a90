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
// files and retires the segments, oldest first. It waits until the store
// is quiet or the journal half full (or a Put waits for a key): every
// journal write flushes the disk's cache, so writing back spilled files
// during a burst of Puts makes each of them slower, and an object deleted
// before its segment is spilled is never written at all.
func (j *journal) spiller() {
	defer j.bgWG.Done()
	tick := time.NewTicker(journalIdle / 2)
	defer tick.Stop()
	retryAt := time.Time{}
	for {
		last := false
		select {
		case <-j.spillKick:
		case <-tick.C:
		case <-j.writerDone:
			last = true // the sealer sealed what was left: spill it all and stop
		}
		if !last && time.Now().Before(retryAt) {
			continue
		}
		if err := j.spillAll(last); err != nil {
			j.log.Error("journal: spill", "store", j.f.String(), "err", err)
			retryAt = time.Now().Add(time.Second)
		}
		if last {
			return
		}
	}
}

// spillDue reports whether the oldest sealed segment should be spilled now
// (mu held).
func (j *journal) spillDue(all bool) bool {
	if len(j.toSpill) == 0 {
		return false
	}
	quiet := time.Since(time.Unix(0, j.lastWrite.Load())) >= journalIdle
	return all || quiet || j.awaiting > 0 || j.pending > journalPending/2
}

// spillAll spills and retires sealed segments while that is due, or all
// of them, until one fails (it stays queued and is tried again).
func (j *journal) spillAll(all bool) error {
	for {
		j.mu.Lock()
		if !j.spillDue(all) {
			j.mu.Unlock()
			return nil
		}
		s := j.toSpill[0]
		ents := s.ents // complete: nothing appends to a sealed segment
		j.mu.Unlock()
		err := j.spill(s, ents)
		j.mu.Lock()
		if err != nil {
			j.bgErr = err
			j.changed.Broadcast()
			j.mu.Unlock()
			return err
		}
		// The objects are in their files: Gets read those from now on. The
		// entries stay in the index until the segment is retired, so that
		// a Delete still journals a tombstone and a Put that bypasses the
		// journal still waits: until then a crash replays this segment,
		// which would bring back the object an unlink removed, or overwrite
		// a newer file.
		for _, e := range ents {
			if j.index[e.key] == e {
				e.spilled = true
			}
		}
		// Gets that pinned an entry before keep reading the segment; the
		// retirement overwrites its first record.
		for s.readers > 0 {
			j.changed.Wait()
		}
		j.mu.Unlock()
		rerr := j.retire(s)
		if rerr != nil {
			// Its objects are in their files; a replay would only write
			// them again. Not reused.
			j.log.Error("journal: retire segment", "store", j.f.String(), "segment", s.path, "err", rerr)
		}
		j.mu.Lock()
		for _, e := range ents {
			if j.index[e.key] == e {
				delete(j.index, e.key)
			}
		}
		j.toSpill = j.toSpill[1:]
		j.pending--
		j.bgErr = nil
		if rerr == nil {
			j.spares = append(j.spares, s.path)
		}
		j.changed.Broadcast()
		j.mu.Unlock()
		s.close()
	}
}

// spill writes the segment's objects that are still current to their files
// (replaced, deleted later: not) and makes them durable at once. Its
// entries stay in the index until the caller drops them, after this
// returns: a Put that bypasses the journal waits for that, so neither a
// replay of this segment nor its spilling can undo it. The caller retires
// the segment once no Get reads it (retiring zeroes its first record).
func (j *journal) spill(s *jseg, ents []*jentry) error {
	var buf []byte
	placed := false
	for _, e := range ents {
		if j.lookup(e.key) != e {
			continue
		}
		if buf == nil && !e.del {
			var err error
			if buf, err = s.readAll(); err != nil {
				return err
			}
		}
		var data []byte
		if !e.del {
			data = buf[e.off : e.off+int64(e.size)]
		}
		same, err := j.f.place(e.key, data, e.del)
		placed = placed || !same
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
	// One syncfs for the lot: on this project's disk 15-17 ms for a
	// segment's 130 files of 128 KiB, where fsyncing each file and
	// directory took 36-50 ms. It also writes back whatever else is dirty
	// in the file system, which a store on its own volume does not mind.
	// Nothing to sync when every object was replaced or deleted before it
	// got a file (the segment's tombstones found none).
	if placed {
		if err := unix.Syncfs(j.rootFD); err != nil {
			return fmt.Errorf("spill %s: syncfs: %w", s.path, err)
		}
	}
	return nil
}

func pathError(err error) bool {
	return errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) || errors.Is(err, fs.ErrExist)
}

// spareFiles is how many spares the preparer keeps ready.
const spareFiles = 2

// preparer is the goroutine that makes new segment files while there are
// fewer than spareFiles spares, off the writers' path.
func (j *journal) preparer() {
	defer j.bgWG.Done()
	for {
		select {
		case <-j.spareKick:
		case <-j.writerDone:
			return
		}
		j.mu.Lock()
		need := len(j.spares) < spareFiles
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

// retire durably makes s a spare, once its objects are in their files and
// no Get reads it. First a seal becomes its first record: from then on the
// segment holds nothing, so a crash before the second write leaves an
// empty sealed segment (replayed as nothing, retired again), not one whose
// first record is gone while later ones remain (damage, which Open
// refuses). Then its header says retired; a torn header write still shows
// the seal behind it (see peekSegHeader).
func (j *journal) retire(s *jseg) error {
	if j.retireMark != nil {
		j.retireMark(0)
	}
	b := blockBuf(jBlock)
	encodeRecord(b, jSeal, s.seq, jBlock, "", nil)
	if err := s.writeAt(b, jBlock); err != nil {
		return err
	}
	if j.retireMark != nil {
		j.retireMark(1)
	}
	return s.writeAt(segHeader(s.seq, jRetired), 0)
}
