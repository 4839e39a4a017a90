package storage

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// jreq is a Put or Delete waiting to be written.
type jreq struct {
	kind byte
	key  string
	data []byte
	err  error
	done bool // written (or failed): err says; guarded by journal.mu
}

// maxBatch bounds one group-commit write: what the smallest segment holds
// besides its header and seal.
const maxBatch = minJournalSegment - 2*jBlock

// append journals a put (data) or delete and returns once it is durable and
// indexed. Concurrent calls share one write (group commit, leader and
// followers): each queues its record; one caller at a time is the leader
// and writes everything queued, the others wait for the write that carries
// theirs, and one of those left over leads next. The caller writes itself
// rather than handing off to a writer goroutine: on a busy machine each
// wake-up of another goroutine costs as much as the write.
func (j *journal) append(ctx context.Context, kind byte, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &jreq{kind: kind, key: key, data: data}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closing {
		return errClosed
	}
	j.queue = append(j.queue, r)
	for !r.done {
		if j.leading {
			j.wrote.Wait()
			continue
		}
		j.leading = true
		j.mu.Unlock()
		j.wmu.Lock()
		j.write(j.take())
		j.wmu.Unlock()
		j.mu.Lock()
		j.leading = false
		j.wrote.Broadcast()
	}
	return r.err
}

// sealer is the goroutine that seals the active segment once it got no
// record for a while, so that a quiet store's objects get spilled, and at
// close writes what is queued and seals what is left.
func (j *journal) sealer() {
	defer j.bgWG.Done()
	defer close(j.writerDone)
	idle := time.NewTicker(journalIdle)
	defer idle.Stop()
	var seen int64 = -1
	for {
		select {
		case <-j.stop:
			j.wmu.Lock()
			defer j.wmu.Unlock()
			// Closing: nothing joins the queue any more. Write what is in it.
			for {
				batch := j.take()
				if len(batch) == 0 {
					break
				}
				j.write(batch)
			}
			j.sealIfUsed()
			if s := j.active; s != nil {
				// Nothing in it: retire it, a spare again. Were the header left
				// active, the next Open would only find it empty.
				if err := j.retire(s); err != nil {
					j.log.Warn("journal: retire empty segment", "store", j.f.String(), "err", err)
				}
				s.close()
				j.mu.Lock()
				j.spares = append(j.spares, s.path)
				j.mu.Unlock()
				j.active = nil
			}
			return
		case <-idle.C:
		}
		j.wmu.Lock()
		if s := j.active; s != nil && s.off == seen {
			j.sealIfUsed()
		}
		seen = -1
		if j.active != nil {
			seen = j.active.off
		}
		j.wmu.Unlock()
	}
}

// sealIfUsed seals the active segment if it holds records (wmu held).
func (j *journal) sealIfUsed() {
	if j.active != nil && j.active.off > jBlock {
		if err := j.sealActive(); err != nil {
			j.log.Error("journal: seal segment", "store", j.f.String(), "err", err)
		}
	}
}

// take removes from the queue the requests the next write carries.
func (j *journal) take() []*jreq {
	j.mu.Lock()
	defer j.mu.Unlock()
	n, size := 0, 0
	for n < len(j.queue) {
		l := recordLen(j.queue[n].key, len(j.queue[n].data))
		if n > 0 && size+l > maxBatch {
			break
		}
		size += l
		n++
	}
	batch := slices.Clone(j.queue[:n])
	j.queue = slices.Delete(j.queue, 0, n)
	return batch
}

// finish answers a batch's callers.
func (j *journal) finish(batch []*jreq, err error) {
	j.mu.Lock()
	for _, r := range batch {
		r.done, r.err = true, err
	}
	j.mu.Unlock()
}

// write journals one batch with one write, indexes it and answers its
// callers (wmu held).
func (j *journal) write(batch []*jreq) {
	if len(batch) == 0 {
		return
	}
	need := 0
	for _, r := range batch {
		need += recordLen(r.key, len(r.data))
	}
	if err := j.room(int64(need)); err != nil {
		j.finish(batch, err)
		return
	}
	s := j.active
	if len(j.wbuf) < need {
		j.wbuf = blockBuf(roundBlock(need + need/2))
	}
	buf := j.wbuf[:need]
	ents := make([]*jentry, len(batch))
	at := 0
	now := time.Now()
	for i, r := range batch {
		l := recordLen(r.key, len(r.data))
		encodeRecord(buf[at:at+l], r.kind, s.seq, s.off, r.key, r.data)
		ents[i] = &jentry{key: r.key, del: r.kind == jDelete, mod: now, seg: s,
			off: s.off + int64(at+jRecHeader+len(r.key)), size: len(r.data)}
		at += l
	}
	// Only Puts promise durability: a batch of only tombstones need not
	// wait for the disk's cache (the next durable write flushes it too).
	sync := slices.ContainsFunc(batch, func(r *jreq) bool { return r.kind == jPut })
	if err := s.write(buf, s.off, sync); err != nil {
		j.finish(batch, err)
		return
	}
	s.off += int64(need)
	j.lastWrite.Store(time.Now().UnixNano())
	j.mu.Lock()
	for i, e := range ents {
		j.index[e.key] = e
		batch[i].done = true
	}
	s.ents = append(s.ents, ents...)
	j.mu.Unlock()
	for _, r := range batch {
		j.f.fds.drop(r.key) // a descriptor of an older version
	}
}

// room makes sure the active segment can take need more bytes (and its
// seal after), sealing it and starting the next one if not.
func (j *journal) room(need int64) error {
	if s := j.active; s != nil && s.off+need+jBlock > s.size {
		if err := j.sealActive(); err != nil {
			return err
		}
	}
	if j.active != nil {
		return nil
	}
	j.mu.Lock()
	for (j.pending >= journalPending || len(j.spares) == 0) && j.bgErr == nil {
		if len(j.spares) == 0 {
			select {
			case j.spareKick <- struct{}{}:
			default:
			}
		}
		j.changed.Wait()
	}
	if j.pending >= journalPending || len(j.spares) == 0 {
		err := j.bgErr
		j.mu.Unlock()
		return fmt.Errorf("journal of %s full: spilling fails: %w", j.f, err)
	}
	path := j.spares[0]
	j.spares = j.spares[1:]
	j.seq++
	seq := j.seq
	low := len(j.spares) < spareFiles
	j.mu.Unlock()
	if low {
		select {
		case j.spareKick <- struct{}{}:
		default:
		}
	}
	s, err := openSeg(path, seq, 0)
	if err == nil {
		var st os.FileInfo
		if st, err = s.fd.Stat(); err == nil {
			s.size = st.Size() // the segment size, or smaller (see newSpare)
			err = s.setHeader(seq, jActive)
		}
		if err != nil {
			s.close()
		}
	}
	if err != nil {
		j.mu.Lock()
		j.spares = append(j.spares, path)
		j.mu.Unlock()
		return err
	}
	j.active = s
	return nil
}

// sealActive seals the active segment and hands it to the spiller.
func (j *journal) sealActive() error {
	s := j.active
	if err := s.seal(); err != nil {
		return err
	}
	j.active = nil
	j.mu.Lock()
	j.toSpill = append(j.toSpill, s)
	j.pending++
	j.mu.Unlock()
	select {
	case j.spillKick <- struct{}{}:
	default:
	}
	return nil
}

// pin returns key's journaled entry with its segment held from reuse until
// unpin, or nil when the file holds the truth (spilled already, too).
func (j *journal) pin(key string) *jentry {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := j.index[key]
	if e == nil || e.spilled {
		return nil
	}
	e.seg.readers++
	return e
}

func (j *journal) unpin(e *jentry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e.seg.readers--; e.seg.readers == 0 {
		j.changed.Broadcast()
	}
}

// lookup returns key's journaled entry, or nil when the file holds the
// truth. A spilled entry (its segment not yet retired) is returned: its
// object's file holds the same bytes, but a Delete must still journal a
// tombstone over it.
func (j *journal) lookup(key string) *jentry {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.index[key]
}

// awaitAbsent waits until key has no journal entry, so that a Put that
// bypasses the journal is not undone by the spiller or a replay of an
// older version.
func (j *journal) awaitAbsent(ctx context.Context, key string) error {
	for {
		j.mu.Lock()
		present, closing := j.index[key] != nil, j.closing
		j.mu.Unlock()
		switch {
		case !present:
			return nil
		case closing:
			return errClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// The key may be in the active segment: seal it for the spiller,
		// which spills at once for a waiting Put.
		j.wmu.Lock()
		j.sealIfUsed()
		j.wmu.Unlock()
		j.mu.Lock()
		j.awaiting++
		select {
		case j.spillKick <- struct{}{}:
		default:
		}
		if j.index[key] != nil && !j.closing {
			j.changed.Wait() // until a segment retires
		}
		j.awaiting--
		j.mu.Unlock()
	}
}

// entries returns the journal's entries of keys with prefix after marker.
func (j *journal) entries(prefix, marker string) []*jentry {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*jentry
	for k, e := range j.index {
		if strings.HasPrefix(k, prefix) && k > marker {
			out = append(out, e)
		}
	}
	return out
}

// merge applies journal entries to a listing of the files, later entries
// of a key over earlier ones.
func merge(objs []Object, ents []*jentry) []Object {
	if len(ents) == 0 {
		return objs
	}
	last := make(map[string]*jentry, len(ents))
	for _, e := range ents {
		last[e.key] = e
	}
	out := objs[:0]
	for _, o := range objs {
		if _, ok := last[o.Key]; !ok {
			out = append(out, o)
		}
	}
	for _, e := range last {
		if !e.del {
			out = append(out, e.object())
		}
	}
	return out
}

func (e *jentry) object() Object {
	return Object{Key: e.key, Size: int64(e.size), ModTime: e.mod}
}

// close writes what is queued, spills everything and retires the segments.
func (j *journal) close() error {
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		return nil
	}
	j.closing = true
	j.changed.Broadcast()
	j.mu.Unlock()
	close(j.stop)
	j.bgWG.Wait()
	for _, s := range j.toSpill {
		s.close()
	}
	closeFD(j.rootFD)
	closeFD(j.lockFD)
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.toSpill) > 0 {
		return fmt.Errorf("close journal of %s: %d segments not spilled (replayed at the next open): %w", j.f, len(j.toSpill), j.bgErr)
	}
	return nil
}
