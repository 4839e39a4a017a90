package storage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// jreq is a Put or Delete waiting for the writer.
type jreq struct {
	kind  byte
	key   string
	data  []byte
	taken bool // the writer has it: the caller must wait for done
	done  chan error
}

// maxBatch bounds one group-commit write.
const maxBatch = 8 << 20

// append journals a put (data) or delete and returns once it is durable and
// indexed. Concurrent calls share one write.
func (j *journal) append(ctx context.Context, kind byte, key string, data []byte) error {
	r := &jreq{kind: kind, key: key, data: data, done: make(chan error, 1)}
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		return errClosed
	}
	j.queue = append(j.queue, r)
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
	}
	j.mu.Lock()
	if !r.taken {
		// Not written: withdraw it (the caller may reuse data once we return).
		if i := slices.Index(j.queue, r); i >= 0 {
			j.queue = slices.Delete(j.queue, i, i+1)
		}
		j.mu.Unlock()
		return ctx.Err()
	}
	j.mu.Unlock()
	return <-r.done
}

// writer is the goroutine that writes the queued records, as many as are
// queued in one write (group commit), and seals segments that are full or
// idle.
func (j *journal) writer() {
	defer j.bgWG.Done()
	defer close(j.writerDone)
	idle := time.NewTicker(journalIdle)
	defer idle.Stop()
	wrote := false
	for {
		stopping := false
		select {
		case <-j.kick:
		case <-j.stop:
			stopping = true
		case <-idle.C:
			// Sealing an active segment that got nothing new for a while
			// lets the spiller free its objects' memory.
			if !wrote && j.active != nil && len(j.active.ents) > 0 {
				j.mu.Lock()
				j.flush = true
				j.mu.Unlock()
			}
			wrote = false
		}
		for {
			batch := j.take()
			if len(batch) == 0 {
				break
			}
			j.write(batch)
			wrote = true
		}
		j.mu.Lock()
		flush := j.flush || stopping
		j.flush = false
		j.mu.Unlock()
		if flush && j.active != nil && len(j.active.ents) > 0 {
			if err := j.sealActive(); err != nil {
				j.log.Error("journal: seal segment", "store", j.f.String(), "err", err)
			}
		}
		if stopping {
			if s := j.active; s != nil {
				// Nothing in it: retire it, a spare again. Were the header left
				// active, the next Open would only find it empty.
				if err := s.writeAt(segHeader(s.seq, jRetired), 0); err != nil {
					j.log.Warn("journal: retire empty segment", "store", j.f.String(), "err", err)
				}
				s.fd.Close()
				j.mu.Lock()
				j.spares = append(j.spares, j.active.path)
				j.mu.Unlock()
				j.active = nil
			}
			return
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
	for _, r := range batch {
		r.taken = true
	}
	return batch
}

// write journals one batch with one write, indexes it and answers its callers.
func (j *journal) write(batch []*jreq) {
	need := 0
	for _, r := range batch {
		need += recordLen(r.key, len(r.data))
	}
	err := j.room(int64(need))
	if err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	s := j.active
	buf := blockBuf(need)
	ents := make([]*jentry, len(batch))
	at := 0
	now := time.Now()
	for i, r := range batch {
		l := recordLen(r.key, len(r.data))
		encodeRecord(buf[at:at+l], r.kind, s.seq, s.off, r.key, r.data)
		start := at + jRecHeader + len(r.key)
		ents[i] = &jentry{key: r.key, del: r.kind == jDelete, mod: now, seg: s,
			data: buf[start : start+len(r.data) : start+len(r.data)]}
		at += l
	}
	if err := s.writeAt(buf, s.off); err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	s.off += int64(need)
	j.mu.Lock()
	for _, e := range ents {
		j.index[e.key] = e
	}
	s.ents = append(s.ents, ents...)
	j.mu.Unlock()
	for _, r := range batch {
		j.f.fds.drop(r.key) // a descriptor of an older version
		r.done <- nil
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
	low := len(j.spares) == 0
	j.mu.Unlock()
	if low {
		select {
		case j.spareKick <- struct{}{}:
		default:
		}
	}
	s, err := openSeg(path, seq, j.segSize)
	if err == nil {
		err = s.writeAt(segHeader(seq, jActive), 0)
		if err != nil {
			s.fd.Close()
		}
	}
	if err != nil {
		j.mu.Lock()
		j.spares = append(j.spares, path)
		j.mu.Unlock()
		return err
	}
	if st, err := s.fd.Stat(); err == nil && st.Size() > s.size {
		s.size = st.Size()
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

// lookup returns key's journaled entry, or nil when the file holds the truth.
func (j *journal) lookup(key string) *jentry {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.index[key]
}

// awaitAbsent waits until key has no journal entry, so that a Put that
// bypasses the journal is not undone by the spiller or a replay of an
// older version.
func (j *journal) awaitAbsent(ctx context.Context, key string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.index[key] != nil {
		if j.closing {
			return errClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		j.flush = true
		select {
		case j.kick <- struct{}{}:
		default:
		}
		j.changed.Wait()
	}
	return nil
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
	return Object{Key: e.key, Size: int64(len(e.data)), ModTime: e.mod}
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
		s.fd.Close()
	}
	closeFD(j.rootFD)
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.toSpill) > 0 {
		return fmt.Errorf("close journal of %s: %d segments not spilled (replayed at the next open): %w", j.f, len(j.toSpill), j.bgErr)
	}
	return nil
}
