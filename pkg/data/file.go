package data

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta"
)

// File is the data of one inode, shared by all its open handles in this process.
//
// Writes go into write slices (wslice), one open slice per chunk at a time:
// a write that continues or overwrites the still-buffered part of the chunk's
// last slice goes into it, any other write freezes the chunk's slices and
// starts a new one. Full blocks upload at once; a frozen slice uploads its
// last partial block, and once all its blocks are stored a per-file committer
// appends it to the chunk's slice list in metadata, in creation order (later
// slices must stay later).
type File struct {
	s   *Store
	ino meta.Ino

	// commitMu serializes metadata commits of this file with Truncate, so a
	// slice cut by a truncate is never committed at its old length.
	commitMu sync.Mutex

	mu         sync.Mutex
	refs       int
	size       uint64
	slices     map[uint32][]meta.Slice // committed slice lists read from metadata
	gen        uint64                  // bumped whenever slices may be stale
	pending    map[uint32][]*wslice    // per chunk, oldest first
	committing bool                    // a committer goroutine runs
	changed    chan struct{}           // closed and replaced on every state change
	err        error                   // first write failure not yet reported by Flush
	// commits counts slices committed per chunk whose list was not loaded,
	// so their waste is checked now and then (in the background).
	commits map[uint32]int

	lastEnd int64 // where the previous read ended (readahead)
	seq     int   // sequential reads in a row
	raUntil int64 // readahead has been started up to here
}

type wslice struct {
	index   uint32 // chunk
	pos     uint32 // chunk offset of the slice's first byte
	length  uint32 // bytes written, contiguous from pos
	visible uint32 // bytes to commit (< length after a truncate)
	id      uint64 // 0 until the first upload asks for one
	blocks  []*wblock
	frozen  bool
	flight  int      // uploads running
	failed  error    // an upload failed: the slice is dropped, Flush reports EIO
	done    bool     // committed or dropped
	jid     uint64   // the slice's id in the write journal; 0 = none
	jsegs   []uint64 // journal segments holding its data records

	idMu sync.Mutex
}

type wblock struct {
	buf      []byte // nil once uploaded
	blen     int    // length uploaded
	uploaded bool
	busy     bool // uploading: no more writes into it
}

func newFile(s *Store, ino meta.Ino) *File {
	return &File{s: s, ino: ino, slices: map[uint32][]meta.Slice{}, pending: map[uint32][]*wslice{}, changed: make(chan struct{}),
		commits: map[uint32]int{}}
}

func (f *File) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *File) invalidateLocked() {
	f.slices = map[uint32][]meta.Slice{}
	f.gen++
}

func (f *File) dirtyLocked() bool { return len(f.pending) > 0 }

// Size is the file's length including buffered writes.
func (f *File) Size() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}

// WriteAt buffers p at off; full blocks upload in the background. It waits
// while the store's write buffers are full.
func (f *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("write inode %d at %d: negative offset: %w", f.ino, off, syscall.EINVAL)
	}
	defer f.s.budget.begin()()
	done := 0
	for done < len(p) {
		o := off + int64(done)
		idx := uint32(o / meta.ChunkSize)
		pos := uint32(o % meta.ChunkSize)
		n := len(p) - done
		if rest := meta.ChunkSize - int(pos); n > rest {
			n = rest
		}
		if j := f.s.journal; j != nil {
			if err := j.reserve(ctx, f.s, int64(n)); err != nil {
				return done, err
			}
		}
		if err := f.s.reserve(ctx, int64(n)); err != nil {
			return done, err
		}
		f.mu.Lock()
		ws, grown := f.writeLocked(idx, pos, p[done:done+n])
		if j := f.s.journal; j != nil {
			// Before the write is acknowledged, and under f.mu so that the
			// journal has this file's writes in the order they were applied.
			j.write(ws, uint64(f.ino), uint64(o), p[done:done+n])
		}
		if end := uint64(o) + uint64(n); end > f.size {
			f.size = end
		}
		f.mu.Unlock()
		f.s.release(int64(n - grown))
		done += n
	}
	return done, nil
}

// writeLocked copies data to chunk offset pos of chunk idx and returns the
// slice it went into and how many bytes the buffers grew by.
func (f *File) writeLocked(idx, pos uint32, data []byte) (*wslice, int) {
	bs := f.s.bs
	list := f.pending[idx]
	var ws *wslice
	if len(list) > 0 && list[len(list)-1].canWrite(pos, len(data), bs) {
		ws = list[len(list)-1]
	} else {
		for _, old := range list {
			f.freezeLocked(old)
		}
		ws = &wslice{index: idx, pos: pos}
		f.pending[idx] = append(list, ws)
	}
	grown := 0
	r := int(pos - ws.pos) // offset in the slice
	for k := 0; k < len(data); {
		bi, boff := (r+k)/bs, (r+k)%bs
		for len(ws.blocks) <= bi {
			ws.blocks = append(ws.blocks, &wblock{})
		}
		b := ws.blocks[bi]
		n := min(bs-boff, len(data)-k)
		if need := boff + n; need > len(b.buf) {
			grown += need - len(b.buf)
			b.buf = f.s.growBuf(b.buf, need)
		}
		copy(b.buf[boff:], data[k:k+n])
		k += n
	}
	if end := uint32(r + len(data)); end > ws.length {
		ws.length = end
	}
	ws.visible = ws.length
	for i, b := range ws.blocks {
		if !b.busy && !b.uploaded && len(b.buf) == bs {
			f.uploadLocked(ws, i)
		}
	}
	if int(ws.pos+ws.length) == meta.ChunkSize {
		f.freezeLocked(ws) // nothing can follow it in this chunk
	}
	return ws, grown
}

// canWrite reports whether a write of n bytes at chunk offset pos may go into
// ws: it must touch the slice's range or its end, and only blocks still in memory.
func (ws *wslice) canWrite(pos uint32, n, bs int) bool {
	if ws.frozen || ws.failed != nil || pos < ws.pos || pos > ws.pos+ws.length {
		return false
	}
	r := int(pos - ws.pos)
	for bi := r / bs; bi <= (r+n-1)/bs && bi < len(ws.blocks); bi++ {
		if ws.blocks[bi].busy || ws.blocks[bi].uploaded {
			return false
		}
	}
	return true
}

// growBuf extends b to length need. A block starts small (many files are
// small) and jumps to a full-size buffer from the store's pool once it holds
// more than 64 KiB, so sequential writers copy little and allocate (and zero)
// nothing in the steady state. Every byte of b[:need] is written by the
// caller (a slice's bytes are contiguous), so unzeroed pool buffers are safe.
func (s *Store) growBuf(b []byte, need int) []byte {
	if need <= cap(b) {
		return b[:need]
	}
	var nb []byte
	if cap(b) == 0 && need <= 64<<10 {
		nb = make([]byte, need, 64<<10)
	} else {
		nb = s.blockBuf()[:need]
	}
	copy(nb, b)
	return nb
}

// blockBuf returns a buffer of capacity BlockSize, reused when possible.
func (s *Store) blockBuf() []byte { return s.budget.blockBuf(s.bs) }

// recycle returns a block buffer nobody references any more to the pool.
func (s *Store) recycle(b []byte) { s.budget.recycle(b) }

func (f *File) freezeLocked(ws *wslice) {
	if ws.frozen {
		return
	}
	ws.frozen = true
	for i, b := range ws.blocks {
		if !b.busy && !b.uploaded && len(b.buf) > 0 {
			f.uploadLocked(ws, i)
		}
	}
	f.startCommitterLocked()
}

func (f *File) freezeAllLocked() {
	for _, list := range f.pending {
		for _, ws := range list {
			f.freezeLocked(ws)
		}
	}
}

// uploadLocked starts storing block i of ws in the background.
func (f *File) uploadLocked(ws *wslice, i int) {
	b := f.beginUploadLocked(ws, i)
	f.s.goWork(func() { f.upload(ws, i, b, false) })
}

// beginUploadLocked marks block i of ws as uploading and returns it (its
// buffer is what upload stores).
func (f *File) beginUploadLocked(ws *wslice, i int) *wblock {
	b := ws.blocks[i]
	b.busy = true
	ws.flight++
	f.s.budget.uploading.Add(1)
	return b
}

// upload stores block i of ws, b from beginUploadLocked. When it
// leaves ws ready to commit, a background committer commits it, unless
// inline is set and none runs: then upload reports that the caller is to
// run commitLoop itself (a Flush that waits anyway saves two goroutine
// hand-offs per small file).
func (f *File) upload(ws *wslice, i int, b *wblock, inline bool) (commitHere bool) {
	s := f.s
	defer s.budget.uploading.Add(-1)
	// b.buf changes only under f.mu and not while b is busy.
	f.mu.Lock()
	data := b.buf
	f.mu.Unlock()
	// Uploads outlive any caller's context: the data was accepted.
	ctx := context.Background()
	s.uploads <- struct{}{}
	id, err := f.sliceID(ctx, ws)
	if err == nil {
		err = s.put(ctx, BlockKey(id, i, len(data)), data)
	}
	<-s.uploads
	f.mu.Lock()
	ws.flight--
	b.busy = false
	b.buf = nil
	if err != nil {
		if ws.failed == nil {
			ws.failed = eio(fmt.Errorf("inode %d chunk %d: %w", f.ino, ws.index, err))
			s.log.Error("block upload failed; the write is lost and Flush reports EIO", "ino", f.ino, "chunk", ws.index, "err", err)
		}
	} else {
		b.uploaded = true
		b.blen = len(data)
	}
	if ws.frozen && ws.flight == 0 {
		if inline && !f.committing {
			f.committing = true
			commitHere = true
		} else {
			f.startCommitterLocked()
		}
	}
	// Freed before anyone waiting on this file wakes (the budget's lock is a leaf lock).
	s.release(int64(len(data)))
	f.notifyLocked()
	f.mu.Unlock()
	// Readers copy buffered bytes under f.mu, and b.buf is gone: the
	// buffer is ours alone again.
	s.recycle(data)
	return commitHere
}

// sliceID gives ws its id on first use.
func (f *File) sliceID(ctx context.Context, ws *wslice) (uint64, error) {
	ws.idMu.Lock()
	defer ws.idMu.Unlock()
	f.mu.Lock()
	id := ws.id
	f.mu.Unlock()
	if id != 0 {
		return id, nil
	}
	err := retry(ctx, f.s.cfg.MaxRetries, f.s.cfg.RetryBackoff, "new slice id", func() error {
		var err error
		id, err = f.s.m.NewSliceID(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	ws.id = id
	f.mu.Unlock()
	return id, nil
}

func (ws *wslice) ready() bool { return ws.frozen && ws.flight == 0 }

func (f *File) startCommitterLocked() {
	if !f.committing {
		f.committing = true
		f.s.goWork(f.commitLoop)
	}
}

// commitLoop commits ready slices, oldest first per chunk, until none is ready.
func (f *File) commitLoop() {
	ctx := context.Background()
	for {
		f.commitMu.Lock()
		f.mu.Lock()
		var ws *wslice
		for _, list := range f.pending {
			if list[0].ready() {
				ws = list[0]
				break
			}
		}
		if ws == nil {
			f.committing = false
			f.mu.Unlock()
			f.commitMu.Unlock()
			return
		}
		var err error
		if ws.failed == nil && ws.visible > 0 {
			sl := meta.Slice{ID: ws.id, Size: ws.length, Off: 0, Len: ws.visible, Pos: ws.pos}
			f.mu.Unlock()
			err = retry(ctx, f.s.cfg.MaxRetries, f.s.cfg.RetryBackoff, "commit slice", func() error {
				return f.s.m.WriteChunk(ctx, f.ino, ws.index, sl, time.Now())
			})
			f.mu.Lock()
			if err == nil {
				if l, ok := f.slices[ws.index]; ok {
					f.slices[ws.index] = append(l[:len(l):len(l)], sl)
				}
				f.gen++
				if f.s.cfg.CompactSlices > 0 {
					if l, ok := f.slices[ws.index]; ok {
						if f.s.wasteful(l) {
							f.s.scheduleCompact(f.ino, ws.index)
						}
					} else if n := f.commits[ws.index] + 1; n%8 == 2 {
						// The second commit into a chunk may overwrite the
						// first: look (a file written once never is).
						f.commits[ws.index] = n
						f.s.scheduleCompact(f.ino, ws.index)
					} else {
						f.commits[ws.index] = n
					}
				}
			} else {
				ws.failed = fmt.Errorf("inode %d chunk %d: %w", f.ino, ws.index, err)
				if !errors.Is(err, syscall.EDQUOT) { // reported as is
					ws.failed = eio(ws.failed)
				}
				f.s.log.Error("slice commit failed; the write is lost and Flush reports EIO", "ino", f.ino, "chunk", ws.index, "err", err)
			}
		}
		// Drop the slice from pending: committed, failed, or truncated away.
		list := f.pending[ws.index]
		f.pending[ws.index] = list[1:]
		if len(list) == 1 {
			delete(f.pending, ws.index)
		}
		ws.done = true
		if j := f.s.journal; j != nil {
			j.done(ws)
		}
		var freed int64
		for _, b := range ws.blocks {
			freed += int64(len(b.buf))
			b.buf = nil
		}
		var orphans []string
		if ws.failed != nil || ws.visible == 0 {
			if ws.failed != nil && f.err == nil {
				f.err = ws.failed
			}
			for i, b := range ws.blocks {
				if b.uploaded {
					orphans = append(orphans, BlockKey(ws.id, i, b.blen))
				}
			}
		}
		f.s.release(freed)
		f.notifyLocked()
		f.mu.Unlock()
		f.commitMu.Unlock()
		for _, k := range orphans {
			// Best effort; GC finds whatever this misses.
			_ = f.s.obj.Delete(ctx, k)
		}
	}
}

// Flush uploads what is buffered and commits its slices to metadata. It
// reports (once) any write that failed since the last Flush, as EIO.
func (f *File) Flush(ctx context.Context) error {
	f.mu.Lock()
	var wait []*wslice
	// One block still to upload is stored by this goroutine, and its slice
	// committed here too when nothing else commits (a small file's close:
	// one block, one slice); the rest go to the background as usual.
	var here *wslice
	hereBlock := -1
	var hereB *wblock
	for _, list := range f.pending {
		for _, ws := range list {
			wait = append(wait, ws)
			if ws.frozen {
				continue
			}
			ws.frozen = true
			for i, b := range ws.blocks {
				if b.busy || b.uploaded || len(b.buf) == 0 {
					continue
				}
				if here != nil {
					ws, i, b := here, hereBlock, hereB
					f.s.goWork(func() { f.upload(ws, i, b, false) })
				}
				here, hereBlock, hereB = ws, i, f.beginUploadLocked(ws, i)
			}
		}
	}
	// Slices with nothing left to upload are ready now.
	for _, list := range f.pending {
		if list[0].ready() {
			f.startCommitterLocked()
			break
		}
	}
	f.mu.Unlock()
	if here != nil && f.upload(here, hereBlock, hereB, true) {
		f.commitLoop()
	}
	f.mu.Lock()
	for _, ws := range wait {
		for !ws.done {
			ch := f.changed
			f.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return fmt.Errorf("flush inode %d: %w", f.ino, ctx.Err())
			}
			f.mu.Lock()
		}
	}
	err := f.err
	f.err = nil
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("flush inode %d: %w", f.ino, err)
	}
	return nil
}

// Truncate drops buffered data and cached slice lists beyond size; the caller
// has already changed the length in metadata. (Callers should Flush first
// when they can: a slice being committed while the length changes in
// metadata may land on either side of the change.)
func (f *File) Truncate(ctx context.Context, size uint64) error {
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.truncateLocked(size)
	return nil
}

func (f *File) truncateLocked(size uint64) {
	if j := f.s.journal; j != nil {
		j.truncate(uint64(f.ino), size)
	}
	f.size = size
	for idx, list := range f.pending {
		cs := uint64(idx) * meta.ChunkSize
		for _, ws := range list {
			start := cs + uint64(ws.pos)
			switch {
			case start >= size:
				ws.visible = 0
				f.freezeLocked(ws)
			case start+uint64(ws.visible) > size:
				ws.visible = uint32(size - start)
				f.freezeLocked(ws)
			}
		}
	}
	f.invalidateLocked()
	f.notifyLocked()
}

// Resize changes the file's length: it runs setLength (the metadata change,
// e.g. meta.SetAttr with SetSize) while no slice of this file can be
// committed, then cuts buffered writes at size. Prefer it to Truncate: no
// buffered write beyond size can reach metadata after the length changed.
func (f *File) Resize(ctx context.Context, size uint64, setLength func(ctx context.Context) error) error {
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	if err := setLength(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.truncateLocked(size)
	return nil
}

// Release drops one reference; the last one flushes and frees the handle.
func (f *File) Release(ctx context.Context) error {
	f.mu.Lock()
	f.refs--
	last := f.refs <= 0
	f.mu.Unlock()
	if !last {
		return nil
	}
	err := f.Flush(ctx)
	f.s.mu.Lock()
	f.mu.Lock()
	if f.refs <= 0 && len(f.pending) == 0 && f.s.files[f.ino] == f {
		delete(f.s.files, f.ino)
	}
	f.mu.Unlock()
	f.s.mu.Unlock()
	return err
}
