package data

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// seg is a visible range [start, end) of a chunk and where its bytes come
// from: zeros (id 0 and ws nil), a committed slice's objects, or a write
// slice of this process.
type seg struct {
	start, end uint32
	id         uint64
	size       uint32  // the slice's stored length
	soff       uint32  // slice offset of start
	ws         *wslice // pending write slice, when not nil
}

// overlay places a slice covering [pos, pos+n) with slice offset off at pos
// on top of segs (sorted, contiguous).
func overlay(segs []seg, pos, n uint32, off uint32, id uint64, size uint32, ws *wslice) []seg {
	if n == 0 {
		return segs
	}
	end := pos + n
	out := make([]seg, 0, len(segs)+2)
	for _, g := range segs {
		if g.end <= pos || g.start >= end {
			out = append(out, g)
			continue
		}
		if g.start < pos {
			left := g
			left.end = pos
			out = append(out, left)
		}
		a, b := max(g.start, pos), min(g.end, end)
		out = append(out, seg{start: a, end: b, id: id, size: size, soff: off + (a - pos), ws: ws})
		if g.end > end {
			right := g
			right.start = end
			right.soff += end - g.start
			out = append(out, right)
		}
	}
	return out
}

// resolve returns the visible ranges of [a, b) given a chunk's slice list.
func resolve(slices []meta.Slice, a, b uint32) []seg {
	segs := []seg{{start: a, end: b}}
	for _, s := range slices {
		segs = overlay(segs, s.Pos, s.Len, s.Off, s.ID, s.Size, nil)
	}
	return segs
}

// blockTask copies bytes [boff, boff+len(dst)) of a block into dst.
type blockTask struct {
	key  string
	blen int
	boff int
	dst  []byte
	n    int // bytes wanted (len(dst), also when planning without dst)
}

// plan turns the segments of a read at chunk offset base into dst into
// copies now (zeros, buffered writes) and block fetches for later. f.mu held
// when segments come from pending write slices. With dst nil it only lists
// the blocks (readahead).
func (s *Store) plan(segs []seg, base uint32, dst []byte, tasks []blockTask) ([]blockTask, error) {
	bs := s.bs
	for _, g := range segs {
		var out []byte
		if dst != nil {
			out = dst[g.start-base : g.end-base]
		}
		if g.ws == nil && g.id == 0 {
			clear(out)
			continue
		}
		r, total := int(g.soff), int(g.end-g.start)
		for k := 0; k < total; {
			bi, boff := (r+k)/bs, (r+k)%bs
			var n int
			var t blockTask
			if g.ws != nil {
				b := g.ws.blocks[bi]
				switch {
				case b.buf != nil:
					n = min(total-k, len(b.buf)-boff)
					if out != nil {
						copy(out[k:k+n], b.buf[boff:])
					}
					k += n
					continue
				case b.uploaded:
					n = min(total-k, b.blen-boff)
					t = blockTask{key: BlockKey(g.ws.id, bi, b.blen), blen: b.blen, boff: boff}
				default:
					return nil, fmt.Errorf("buffered write lost: %w", g.ws.failed)
				}
			} else {
				blen := blockLen(g.size, bi, bs)
				if boff >= blen {
					return nil, fmt.Errorf("slice %d (%d bytes) has no byte %d: corrupt slice list", g.id, g.size, r+k)
				}
				n = min(total-k, blen-boff)
				t = blockTask{key: BlockKey(g.id, bi, blen), blen: blen, boff: boff}
			}
			if out != nil {
				t.dst = out[k : k+n]
			}
			t.n = n
			tasks = append(tasks, t)
			k += n
		}
	}
	return tasks, nil
}

// run fetches the blocks of tasks in parallel and copies them out. Direct
// reads take just the bytes needed from the object store, without filling
// the cache (random reads, local stores); others fetch whole blocks through
// the cache.
func (s *Store) run(ctx context.Context, tasks []blockTask, direct bool) error {
	if len(tasks) == 1 {
		return s.readTask(ctx, tasks[0], direct)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(tasks))
	for i, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.readTask(ctx, t, direct)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Store) readTask(ctx context.Context, t blockTask, direct bool) error {
	if s.cached(t.key, t.boff, t.dst) {
		return nil
	}
	if direct {
		s.flightMu.Lock()
		_, inFlight := s.flight[t.key]
		s.flightMu.Unlock()
		if !inFlight {
			return s.getRange(ctx, t)
		}
	}
	return s.fetch(ctx, t.key, t.blen, t.boff, t.dst)
}

// getRange reads a task's bytes straight into its destination.
func (s *Store) getRange(ctx context.Context, t blockTask) error {
	if s.disk != nil && s.disk.ReadAt(t.key, t.boff, t.dst) {
		return nil
	}
	s.stats.fetches.Add(1)
	return retry(ctx, s.cfg.MaxRetries, s.cfg.RetryBackoff, "get "+t.key, func() error {
		n, err := s.obj.Get(ctx, t.key, int64(t.boff), t.dst)
		if err != nil {
			return err
		}
		if n != len(t.dst) {
			return fmt.Errorf("object %s is short: %d bytes at %d, want %d (block of %d)", t.key, n, t.boff, len(t.dst), t.blen)
		}
		return nil
	})
}

// view plans a read of [pos, pos+len(dst)) of chunk idx: the committed
// slice list (cached, or read from metadata) with this process's pending
// slices on top, taken under one lock so that no slice moving from pending
// to committed meanwhile is missed.
func (f *File) view(ctx context.Context, idx, pos, end uint32, dst []byte) ([]blockTask, error) {
	for {
		f.mu.Lock()
		l, ok := f.slices[idx]
		if !ok {
			gen := f.gen
			f.mu.Unlock()
			var err error
			l, err = f.s.m.ReadChunk(ctx, f.ino, idx)
			if err != nil {
				return nil, fmt.Errorf("read chunk %d of inode %d: %w", idx, f.ino, err)
			}
			f.mu.Lock()
			if f.gen != gen {
				f.mu.Unlock()
				continue // a commit or invalidation raced with the read
			}
			f.slices[idx] = l
		}
		segs := resolve(l, pos, end)
		for _, ws := range f.pending[idx] {
			segs = overlay(segs, ws.pos, ws.visible, 0, ws.id, ws.length, ws)
		}
		tasks, err := f.s.plan(segs, pos, dst, nil)
		f.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("chunk %d of inode %d: %w", idx, f.ino, err)
		}
		return tasks, nil
	}
}

// ReadAt reads at off, seeing this process's own buffered writes. At the end
// of the file it returns fewer bytes (0 at or past the end) and no error.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read inode %d at %d: negative offset: %w", f.ino, off, syscall.EINVAL)
	}
	defer f.s.budget.begin()()
	f.mu.Lock()
	size := int64(f.size)
	f.mu.Unlock()
	if off >= size {
		return 0, nil
	}
	if int64(len(p)) > size-off {
		p = p[:size-off]
	}
	// Sequential readers fetch whole blocks through the cache, with
	// readahead; random reads fetch only what they need.
	seq := f.readahead(off, int64(len(p)), size)
	direct := f.s.local || !seq
	for done := 0; done < len(p); {
		o := off + int64(done)
		idx := uint32(o / meta.ChunkSize)
		pos := uint32(o % meta.ChunkSize)
		n := min(len(p)-done, meta.ChunkSize-int(pos))
		if err := f.readChunk(ctx, idx, pos, p[done:done+n], direct); err != nil {
			return done, eio(err)
		}
		done += n
	}
	return len(p), nil
}

// staleRetries bounds how often a read reloads a chunk's slice list whose
// objects vanished; a list missing objects that many times in a row is
// damage, not a race.
const staleRetries = 8

func (f *File) readChunk(ctx context.Context, idx, pos uint32, dst []byte, direct bool) error {
	for attempt := 0; ; attempt++ {
		tasks, err := f.view(ctx, idx, pos, pos+uint32(len(dst)), dst)
		if err != nil {
			return err
		}
		err = f.s.run(ctx, tasks, direct)
		if err != nil && errors.Is(err, storage.ErrNotFound) && attempt < staleRetries {
			// The list may be stale (compacted or rewritten by another
			// client, its objects deleted): read it again. Compactions of
			// a chunk under heavy overwrites can follow each other while
			// a read runs, hence more than once.
			f.mu.Lock()
			delete(f.slices, idx)
			f.gen++
			f.mu.Unlock()
			continue
		}
		return err
	}
}

// readahead notes where a read of n bytes at off went and, for sequential
// readers, starts fetching the blocks after it into the cache in the
// background. It reports whether the read continues a sequential run.
func (f *File) readahead(off, n, size int64) bool {
	ra := f.s.cfg.Readahead
	f.mu.Lock()
	seq := off == f.lastEnd || off == 0
	if off == f.lastEnd {
		f.seq++
	} else {
		f.seq = 0
		f.raUntil = 0
	}
	f.lastEnd = off + n
	if ra <= 0 || !seq || (f.s.local && f.s.pre == nil) {
		f.mu.Unlock()
		return seq
	}
	from := max(off+n, f.raUntil)
	to := min(off+n+ra, size)
	if to-from < int64(f.s.bs) && to < size {
		f.mu.Unlock()
		return seq // wait until a block's worth is due
	}
	f.raUntil = to
	f.mu.Unlock()
	for o := from; o < to; {
		idx := uint32(o / meta.ChunkSize)
		pos := uint32(o % meta.ChunkSize)
		n := min(to-o, meta.ChunkSize-int64(pos))
		if f.s.local {
			f.hint(idx, pos, uint32(n))
		} else {
			f.prefetch(idx, pos, uint32(n))
		}
		o += n
	}
	return seq
}

// prefetch starts fetching the blocks behind [pos, pos+n) of chunk idx.
func (f *File) prefetch(idx, pos, n uint32) {
	f.inBackground(idx, pos, n, func(tasks []blockTask) {
		seen := map[string]bool{}
		for _, t := range tasks {
			if seen[t.key] {
				continue
			}
			seen[t.key] = true
			if f.s.mem.Has(f.s.ck(t.key)) {
				continue
			}
			f.s.bg.Add(1)
			go func() {
				defer f.s.bg.Done()
				_ = f.s.fetch(f.s.ctx, t.key, t.blen, 0, nil)
			}()
		}
	})
}

// hint tells a local store which object bytes behind [pos, pos+n) of chunk
// idx come next, so the kernel reads them into its page cache while the
// reader still works on earlier blocks; the reads themselves then go
// straight from the page cache into the caller's buffer.
func (f *File) hint(idx, pos, n uint32) {
	f.inBackground(idx, pos, n, func(tasks []blockTask) {
		for _, t := range tasks {
			f.s.pre.Prefetch(t.key, int64(t.boff), int64(t.n))
		}
	})
}

// inBackground resolves [pos, pos+n) of chunk idx to block reads in a
// goroutine the store waits for at Close, and hands them to use.
func (f *File) inBackground(idx, pos, n uint32, use func([]blockTask)) {
	if f.s.ctx.Err() != nil {
		return
	}
	f.s.bg.Add(1)
	go func() {
		defer f.s.bg.Done()
		if tasks, err := f.view(f.s.ctx, idx, pos, pos+n, nil); err == nil {
			use(tasks)
		}
	}()
}
