package data

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// scheduleCompact queues a chunk for background compaction.
func (s *Store) scheduleCompact(ino meta.Ino, index uint32) {
	s.compactMu.Lock()
	s.compactPending[chunkRef{ino, index}] = true
	s.compactMu.Unlock()
	select {
	case s.compactWake <- struct{}{}:
	default:
	}
}

func (s *Store) compactLoop() {
	defer s.bg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.compactWake:
		}
		for {
			s.compactMu.Lock()
			var ref chunkRef
			found := false
			for r := range s.compactPending {
				ref, found = r, true
				delete(s.compactPending, r)
				break
			}
			s.compactMu.Unlock()
			if !found || s.ctx.Err() != nil {
				break
			}
			if err := s.compactIfWasteful(s.ctx, ref.ino, ref.index); err != nil {
				s.log.Info("compaction skipped", "ino", ref.ino, "chunk", ref.index, "err", err)
			}
		}
	}
}

// compactGap is the shortest hole that compaction keeps as a hole between
// written ranges; shorter ones are stored as zeros, so a chunk of many
// small writes with small gaps becomes a few slices, not one per write.
const compactGap = 64 << 10

// chunkUsage is what a chunk's slice list costs and holds.
type chunkUsage struct {
	stored  int64 // bytes of the distinct slices' objects
	visible int64 // bytes the slices show (holes excluded)
	runs    []seg // written ranges to keep, holes of compactGap or more between them
}

func usageOf(list []meta.Slice) chunkUsage {
	var u chunkUsage
	seen := map[uint64]bool{}
	for _, sl := range list {
		if sl.ID != 0 && !seen[sl.ID] {
			seen[sl.ID] = true
			u.stored += int64(sl.Size)
		}
	}
	for _, g := range resolve(list, 0, meta.ChunkSize) {
		if g.id == 0 {
			continue
		}
		u.visible += int64(g.end - g.start)
		if n := len(u.runs); n > 0 && g.start-u.runs[n-1].end < compactGap {
			u.runs[n-1].end = g.end
		} else {
			u.runs = append(u.runs, seg{start: g.start, end: g.end})
		}
	}
	return u
}

// wasteful reports whether a chunk's objects cost enough more than its
// visible bytes for a background compaction to pay: a quarter more, and at
// least a block, so small files are not rewritten after every overwrite.
func (s *Store) wasteful(list []meta.Slice) bool {
	if len(list) < 2 {
		return false
	}
	if s.cfg.CompactSlices > 0 && len(list) >= s.cfg.CompactSlices {
		return true
	}
	u := usageOf(list)
	waste := u.stored - u.visible
	return waste >= int64(s.bs) && waste > u.visible/4
}

// compactIfWasteful compacts a chunk the background was told of, if its
// objects cost enough more than its data.
func (s *Store) compactIfWasteful(ctx context.Context, ino meta.Ino, index uint32) error {
	list, err := s.m.ReadChunk(ctx, ino, index)
	if err != nil || !s.wasteful(list) {
		return err
	}
	return s.CompactChunk(ctx, ino, index)
}

// CompactChunk rewrites the slices of chunk index of ino as one new slice
// per written range (holes of compactGap or more stay holes, so a sparse
// file keeps costing its written bytes), so reads touch fewer objects and
// the replaced slices' objects can be deleted. It holds one block in
// memory at a time. When the chunk changes meanwhile (a write, a
// truncate), metadata refuses the swap and the new objects are deleted
// again: compaction never loses a concurrent write. A chunk with nothing to
// gain is left alone.
func (s *Store) CompactChunk(ctx context.Context, ino meta.Ino, index uint32) error {
	s.compactRun.Lock()
	defer s.compactRun.Unlock()
	old, err := s.m.ReadChunk(ctx, ino, index)
	if err != nil {
		return fmt.Errorf("compact inode %d chunk %d: %w", ino, index, err)
	}
	if len(old) == 0 {
		return nil
	}
	u := usageOf(old)
	if len(old) == len(u.runs) && u.stored == u.visible {
		return nil // one slice per range, nothing hidden: compact already
	}
	var keys []string
	cleanup := func() {
		for _, k := range keys {
			_ = s.obj.Delete(context.Background(), k)
		}
	}
	buf := s.blockBuf()[:s.bs]
	defer s.recycle(buf)
	repl := make([]meta.Slice, 0, len(u.runs))
	for _, r := range u.runs {
		var id uint64
		err = retry(ctx, s.cfg.MaxRetries, s.cfg.RetryBackoff, "new slice id", func() error {
			id, err = s.m.NewSliceID(ctx)
			return err
		})
		if err != nil {
			cleanup()
			return fmt.Errorf("compact inode %d chunk %d: %w", ino, index, err)
		}
		size := r.end - r.start
		for i := 0; i < numBlocks(size, s.bs); i++ {
			blen := blockLen(size, i, s.bs)
			a := r.start + uint32(i*s.bs)
			tasks, err := s.plan(resolve(old, a, a+uint32(blen)), a, buf[:blen], nil)
			if err == nil {
				err = s.run(ctx, tasks, false)
			}
			if err != nil {
				cleanup()
				if errors.Is(err, storage.ErrNotFound) && s.chunkChanged(ctx, ino, index, old) {
					// Another client compacted (or rewrote) the chunk and
					// its old objects are gone: nothing left to do here.
					return fmt.Errorf("compact inode %d chunk %d: %w", ino, index, meta.ErrChunkChanged)
				}
				return fmt.Errorf("compact inode %d chunk %d: read: %w", ino, index, err)
			}
			key := BlockKey(id, i, blen)
			keys = append(keys, key)
			if err := s.put(ctx, key, buf[:blen]); err != nil {
				cleanup()
				return fmt.Errorf("compact inode %d chunk %d: %w", ino, index, err)
			}
		}
		repl = append(repl, meta.Slice{ID: id, Size: size, Off: 0, Len: size, Pos: r.start})
	}
	if err := s.m.CompactChunk(ctx, ino, index, old, repl); err != nil {
		cleanup()
		return fmt.Errorf("compact inode %d chunk %d: chunk changed or metadata refused: %w", ino, index, err)
	}
	s.stats.compactions.Add(1)
	s.forget(ino, index)
	s.wakeDeleter()
	return nil
}

// chunkChanged reports whether the chunk's slice list is no longer old.
func (s *Store) chunkChanged(ctx context.Context, ino meta.Ino, index uint32, old []meta.Slice) bool {
	now, err := s.m.ReadChunk(ctx, ino, index)
	return err == nil && !slices.Equal(now, old)
}

// CompactFile compacts every chunk of a file of size bytes and returns how
// many it rewrote. A chunk that changes meanwhile is skipped (its writer's
// own compaction takes over).
func (s *Store) CompactFile(ctx context.Context, ino meta.Ino, size uint64) (int, error) {
	n := 0
	for idx := uint32(0); uint64(idx)*meta.ChunkSize < size; idx++ {
		before := s.stats.compactions.Load()
		err := s.CompactChunk(ctx, ino, idx)
		if errors.Is(err, meta.ErrChunkChanged) {
			continue
		}
		if err != nil {
			return n, err
		}
		if s.stats.compactions.Load() > before {
			n++
		}
	}
	return n, nil
}

func (s *Store) wakeDeleter() {
	select {
	case s.deleteWake <- struct{}{}:
	default:
	}
}

func (s *Store) deleteLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.DeleteInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.deleteWake:
		}
		if _, err := s.DeletePending(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("deleting unreferenced objects", "err", err)
		}
	}
}

// DeletePending deletes the objects of slices metadata no longer references
// (overwritten, compacted, truncated, unlinked) and tells metadata they are
// gone. It returns how many slices it finished.
func (s *Store) DeletePending(ctx context.Context) (int, error) {
	done := 0
	for {
		sl, err := s.m.PendingDeletes(ctx, 100)
		if err != nil {
			return done, fmt.Errorf("list slices to delete: %w", err)
		}
		if len(sl) == 0 {
			return done, nil
		}
		// The commits that unreferenced these slices must be durable before
		// their objects go: a power loss would otherwise bring back
		// references to deleted objects.
		if err := s.m.Sync(ctx); err != nil {
			return done, err
		}
		ids := make([]uint64, 0, len(sl))
		for _, x := range sl {
			for _, k := range SliceKeys(x.ID, x.Size, s.bs) {
				if err := retry(ctx, s.cfg.MaxRetries, s.cfg.RetryBackoff, "delete "+k, func() error {
					return s.obj.Delete(ctx, k)
				}); err != nil {
					return done, err
				}
				s.mem.Remove(s.ck(k))
			}
			ids = append(ids, x.ID)
		}
		if err := s.m.DoneDeleting(ctx, ids); err != nil {
			return done, fmt.Errorf("mark %d slices deleted: %w", len(ids), err)
		}
		done += len(ids)
		s.stats.deleted.Add(int64(len(ids)))
	}
}
