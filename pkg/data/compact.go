package data

import (
	"context"
	"fmt"
	"time"

	"podfs.io/podfs/pkg/meta"
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
			if err := s.CompactChunk(s.ctx, ref.ino, ref.index); err != nil {
				s.log.Info("compaction skipped", "ino", ref.ino, "chunk", ref.index, "err", err)
			}
		}
	}
}

// CompactChunk rewrites the slices of chunk index of ino as one slice
// covering the same range with the same visible bytes, so reads touch fewer
// objects and the replaced slices' objects can be deleted. When the chunk
// changes meanwhile (a write, a truncate), metadata refuses the swap and the
// new objects are deleted again: compaction never loses a concurrent write.
func (s *Store) CompactChunk(ctx context.Context, ino meta.Ino, index uint32) error {
	old, err := s.m.ReadChunk(ctx, ino, index)
	if err != nil {
		return fmt.Errorf("compact inode %d chunk %d: %w", ino, index, err)
	}
	if len(old) < 2 {
		return nil
	}
	start, end := uint32(meta.ChunkSize), uint32(0)
	for _, sl := range old {
		if sl.Len == 0 {
			continue
		}
		start = min(start, sl.Pos)
		end = max(end, sl.Pos+sl.Len)
	}
	if end <= start {
		return nil
	}
	// A sparse chunk (writes far apart) would turn into one slice full of
	// zeros: leave it fragmented, reads stay correct.
	covered := uint32(0)
	for _, g := range resolve(old, start, end) {
		if g.id != 0 {
			covered += g.end - g.start
		}
	}
	if covered < (end-start)/2 {
		return nil
	}
	var id uint64
	err = retry(ctx, s.cfg.MaxRetries, s.cfg.RetryBackoff, "new slice id", func() error {
		id, err = s.m.NewSliceID(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("compact inode %d chunk %d: %w", ino, index, err)
	}
	size := end - start
	var keys []string
	cleanup := func() {
		for _, k := range keys {
			_ = s.obj.Delete(context.Background(), k)
		}
	}
	buf := make([]byte, s.bs)
	for i := 0; i < numBlocks(size, s.bs); i++ {
		blen := blockLen(size, i, s.bs)
		a := start + uint32(i*s.bs)
		tasks, err := s.plan(resolve(old, a, a+uint32(blen)), a, buf[:blen], nil)
		if err == nil {
			err = s.run(ctx, tasks, false)
		}
		if err != nil {
			cleanup()
			return fmt.Errorf("compact inode %d chunk %d: read: %w", ino, index, err)
		}
		key := BlockKey(id, i, blen)
		keys = append(keys, key)
		if err := s.put(ctx, key, buf[:blen]); err != nil {
			cleanup()
			return fmt.Errorf("compact inode %d chunk %d: %w", ino, index, err)
		}
	}
	ns := meta.Slice{ID: id, Size: size, Off: 0, Len: size, Pos: start}
	if err := s.m.CompactChunk(ctx, ino, index, old, ns); err != nil {
		cleanup()
		return fmt.Errorf("compact inode %d chunk %d: chunk changed or metadata refused: %w", ino, index, err)
	}
	s.stats.compactions.Add(1)
	s.forget(ino, index)
	s.wakeDeleter()
	return nil
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
