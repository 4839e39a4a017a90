package meta

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// ReadChunk implements Meta. It is one point read: the data layer calls it
// for every chunk it opens.
func (c *Client) ReadChunk(ctx context.Context, ino Ino, index uint32) ([]Slice, error) {
	var ss []Slice
	err := c.view(ctx, func(tx kv.Tx) error {
		b, err := tx.Get(chunkKey(ino, index))
		if err != nil {
			return err
		}
		ss, err = decodeSlices(b)
		if err != nil {
			return fmt.Errorf("%v: %w", err, syscall.EIO)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read chunk %d of %d: %w", index, ino, err)
	}
	return ss, nil
}

func checkSlice(s Slice) error {
	if uint64(s.Pos)+uint64(s.Len) > ChunkSize || s.Len == 0 || s.ID != 0 && uint64(s.Off)+uint64(s.Len) > uint64(s.Size) {
		return fmt.Errorf("slice %+v does not fit its chunk or object: %w", s, syscall.EINVAL)
	}
	return nil
}

// WriteChunk implements Meta: one transaction of three point reads (inode,
// chunk, usage shard) and three writes. Each call must carry a slice id of
// its own (NewSliceID): ids are the unit of garbage collection. Repeating a
// call whose outcome was lost (a timeout after commit) is harmless: a slice
// already in the list is not appended again. CompactChunk is likewise safe to
// repeat.
func (c *Client) WriteChunk(ctx context.Context, ino Ino, index uint32, s Slice, mtime time.Time) error {
	if err := checkSlice(s); err != nil {
		return fmt.Errorf("write chunk %d of %d: %w", index, ino, err)
	}
	if err := c.checkSpaceQuota(ctx); err != nil {
		return fmt.Errorf("write chunk %d of %d: %w", index, ino, err)
	}
	var grew int64
	hint := c.fileChainHint(ino)
	err := c.txnOn(ctx, []Ino{ino}, func(tx kv.Tx) error {
		grew = 0
		k, uk := chunkKey(ino, index), randomUsageKey()
		shard := c.quotaShard()
		if err := prefetch(tx, quotaKeys([][]byte{attrKey(ino), k, uk}, hint, shard)...); err != nil {
			return err
		}
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		if !isReg(a.Mode) {
			return fmt.Errorf("inode %d is not a regular file: %w", ino, syscall.EINVAL)
		}
		b, err := tx.Get(k)
		if err != nil {
			return err
		}
		if len(b)%sliceSize != 0 {
			return fmt.Errorf("corrupt chunk record of %d bytes: %w", len(b), syscall.EIO)
		}
		if hasSlice(b, s) {
			// A retry of a commit whose outcome the caller did not learn:
			// a second copy would be a reference nothing counts.
			return nil
		}
		tx.Set(k, appendSlice(b, s))
		end := uint64(index)*ChunkSize + uint64(s.Pos) + uint64(s.Len)
		var grow int64
		if end > a.Size {
			grow = align4k(end) - align4k(a.Size)
			a.Size = end
		}
		if grow != 0 {
			chain, err := c.chainTx(a.Parent)
			if err != nil {
				return err
			}
			if err := c.chargeTxAt(tx, chain, shard, grow, 0); err != nil {
				return err
			}
		}
		grew = grow
		a.Mtime = mtime.UnixNano()
		a.Ctime = a.Mtime
		putAttr(tx, ino, &a)
		return addUsageAt(tx, uk, grow, 0)
	})
	if err != nil {
		return fmt.Errorf("write chunk %d of %d: %w", index, ino, err)
	}
	c.useReservation(ino, grew, false)
	return nil
}

// hasSlice reports whether the encoded list b holds s already.
func hasSlice(b []byte, s Slice) bool {
	want := appendSlice(make([]byte, 0, sliceSize), s)
	for i := 0; i+sliceSize <= len(b); i += sliceSize {
		if string(b[i:i+sliceSize]) == string(want) {
			return true
		}
	}
	return false
}

// checkSpaceQuota refuses writes once the capacity quota is used up.
func (c *Client) checkSpaceQuota(ctx context.Context) error {
	f, err := c.settings(ctx)
	if err != nil || f.Capacity == 0 {
		return err
	}
	st, err := c.cachedStatFS(ctx)
	if err != nil {
		return err
	}
	if st.AvailSpace == 0 {
		return fmt.Errorf("capacity quota of %d bytes reached: %w", f.Capacity, syscall.ENOSPC)
	}
	return nil
}

// CompactChunk implements Meta.
func (c *Client) CompactChunk(ctx context.Context, ino Ino, index uint32, old, repl []Slice) error {
	if len(old) == 0 {
		return fmt.Errorf("compact chunk %d of %d: no slices to replace: %w", index, ino, syscall.EINVAL)
	}
	for _, s := range repl {
		if err := checkSlice(s); err != nil {
			return fmt.Errorf("compact chunk %d of %d: %w", index, ino, err)
		}
	}
	err := c.txnOn(ctx, []Ino{ino}, func(tx kv.Tx) error {
		k := chunkKey(ino, index)
		b, err := tx.Get(k)
		if err != nil {
			return err
		}
		cur, err := decodeSlices(b)
		if err != nil {
			return fmt.Errorf("%v: %w", err, syscall.EIO)
		}
		if len(repl) > 0 && repl[0].ID != 0 && len(cur) >= len(repl) && slices.Equal(cur[:len(repl)], repl) {
			return nil // a retry of this compaction, which committed (its ids are new)
		}
		if len(cur) < len(old) || !slices.Equal(cur[:len(old)], old) {
			return ErrChunkChanged
		}
		next := append(slices.Clone(repl), cur[len(old):]...)
		if len(next) == 0 {
			tx.Delete(k)
		} else {
			tx.Set(k, encodeSlices(next))
		}
		for _, o := range old {
			if err := dropSlice(tx, o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("compact chunk %d of %d: %w", index, ino, err)
	}
	return nil
}

// dropSlice removes one reference to s: a slice referenced once (no refs
// key) becomes a pending delete; otherwise its extra-reference count drops.
func dropSlice(tx kv.Tx, s Slice) error {
	if s.ID == 0 {
		return nil
	}
	rk := refsKey(s.ID)
	b, err := tx.Get(rk)
	if err != nil {
		return err
	}
	if n := u64(b); n > 0 {
		if n == 1 {
			tx.Delete(rk)
		} else {
			tx.Set(rk, be64(nil, n-1))
		}
		return nil
	}
	tx.Set(pendingKey(s.ID), be32(nil, s.Size))
	return nil
}

// addSliceRef records one more reference to slice id (copy_file_range).
func addSliceRef(tx kv.Tx, id uint64) error {
	if id == 0 {
		return nil
	}
	rk := refsKey(id)
	b, err := tx.Get(rk)
	if err != nil {
		return err
	}
	tx.Set(rk, be64(nil, u64(b)+1))
	return nil
}

// chunkList is one chunk's key and its decoded slice list.
type chunkList struct {
	key    []byte
	slices []Slice
}

// scanChunks reads up to limit (0 = all) chunk lists with keys in [start, end).
func scanChunks(tx kv.Tx, start, end []byte, limit int) ([]chunkList, error) {
	var out []chunkList
	var bad error
	if err := tx.Scan(start, end, limit, func(k, v []byte) bool {
		ss, err := decodeSlices(v)
		if err != nil {
			bad = fmt.Errorf("chunk %x: %v: %w", k, err, syscall.EIO)
			return false
		}
		out = append(out, chunkList{key: k, slices: ss})
		return true
	}); err != nil {
		return nil, err
	}
	return out, bad
}

// dropChunks releases every slice of chunks and deletes their keys.
func dropChunks(tx kv.Tx, chunks []chunkList) error {
	for _, c := range chunks {
		for _, s := range c.slices {
			if err := dropSlice(tx, s); err != nil {
				return err
			}
		}
		tx.Delete(c.key)
	}
	return nil
}

// truncate changes a regular file's length in tx: chunks wholly beyond the
// new end are dropped, and the chunk holding the new end gets a hole over the
// cut part, so a later extension reads zeros.
func truncate(tx kv.Tx, ino Ino, a *Attr, size uint64) error {
	old := a.Size
	if size < old {
		firstDead := uint32((size + ChunkSize - 1) / ChunkSize)
		dead, err := scanChunks(tx, chunkKey(ino, firstDead), kv.PrefixEnd(inoKey(pChunk, ino)), 0)
		if err != nil {
			return err
		}
		if err := dropChunks(tx, dead); err != nil {
			return err
		}
		if pos := uint32(size % ChunkSize); pos != 0 {
			idx := uint32(size / ChunkSize)
			k := chunkKey(ino, idx)
			b, err := tx.Get(k)
			if err != nil {
				return err
			}
			if b != nil {
				stop := uint64(ChunkSize)
				if old-uint64(idx)*ChunkSize < stop {
					stop = old - uint64(idx)*ChunkSize
				}
				tx.Set(k, appendSlice(b, Slice{Pos: pos, Len: uint32(stop) - pos}))
			}
		}
	}
	a.Size = size
	return addUsage(tx, align4k(size)-align4k(old), 0)
}

// reapLater queues a removed inode's chunks for the reaper (a full queue
// leaves it to PendingDeletes).
func (c *Client) reapLater(ino Ino) {
	if ino == 0 {
		return
	}
	select {
	case c.reap <- ino:
	default:
	}
}

func (c *Client) reaper() {
	defer c.bg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.stop
		cancel()
	}()
	for {
		select {
		case <-c.stop:
			return
		case ino := <-c.reap:
			if err := c.reapFile(ctx, ino); err != nil && ctx.Err() == nil {
				c.log.Warn("release the chunks of a removed file", "ino", ino, "err", err)
			}
		}
	}
}

// reapFile turns a removed file's chunks into pending deletes, a few chunks
// per transaction so a huge file never makes one huge transaction (etcd
// refuses transactions of more than --max-txn-ops operations, 128 by
// default; each chunk costs a few per slice).
func (c *Client) reapFile(ctx context.Context, ino Ino) error {
	const per = 8
	for done := false; !done; {
		err := c.txn(ctx, func(tx kv.Tx) error {
			done = false
			b, err := tx.Get(removedKey(ino))
			if err != nil {
				return err
			}
			if b == nil {
				done = true
				return nil
			}
			p := inoKey(pChunk, ino)
			chunks, err := scanChunks(tx, p, kv.PrefixEnd(p), per)
			if err != nil {
				return err
			}
			if err := dropChunks(tx, chunks); err != nil {
				return err
			}
			if len(chunks) < per {
				tx.Delete(removedKey(ino))
				done = true
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reap inode %d: %w", ino, err)
		}
	}
	return nil
}

// ListSlices implements Meta. It pages through the chunk keys, one read
// transaction per page, and calls fn outside any transaction.
func (c *Client) ListSlices(ctx context.Context, fn func(ino Ino, s Slice) error) error {
	start, end := []byte{pChunk}, []byte{pChunk + 1}
	for {
		type rec struct {
			ino Ino
			ss  []Slice
		}
		var page []rec
		var last []byte
		err := c.view(ctx, func(tx kv.Tx) error {
			page, last = page[:0], nil
			var derr error
			err := tx.Scan(start, end, 1000, func(k, v []byte) bool {
				last = k
				ss, err := decodeSlices(v)
				if err != nil || len(k) != 13 {
					derr = fmt.Errorf("chunk key %x: %v: %w", k, err, syscall.EIO)
					return false
				}
				page = append(page, rec{Ino(u64(k[1:9])), ss})
				return true
			})
			if err != nil {
				return err
			}
			return derr
		})
		if err != nil {
			return fmt.Errorf("list slices: %w", err)
		}
		for _, r := range page {
			for _, s := range r.ss {
				if s.ID == 0 {
					continue
				}
				if err := fn(r.ino, s); err != nil {
					return err
				}
			}
		}
		if len(page) < 1000 {
			return nil
		}
		start = append(last, 0)
	}
}

// PendingDeletes implements Meta. It first finishes releasing the chunks of
// removed files (left behind by a crash or a full reaper queue).
func (c *Client) PendingDeletes(ctx context.Context, limit int) ([]Slice, error) {
	if limit <= 0 {
		limit = 1000
	}
	var removed []Ino
	var out []Slice
	err := c.view(ctx, func(tx kv.Tx) error {
		removed, out = removed[:0], out[:0]
		if err := tx.Scan([]byte{pRemoved}, []byte{pRemoved + 1}, 16, func(k, _ []byte) bool {
			removed = append(removed, Ino(u64(k[1:])))
			return true
		}); err != nil {
			return err
		}
		return tx.Scan([]byte{pPending}, []byte{pPending + 1}, limit, func(k, v []byte) bool {
			out = append(out, Slice{ID: u64(k[1:]), Size: uint32(u64(append(make([]byte, 4), v...)))})
			return true
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pending deletes: %w", err)
	}
	if len(removed) == 0 {
		return out, nil
	}
	for _, ino := range removed {
		if err := c.reapFile(ctx, ino); err != nil {
			return nil, fmt.Errorf("pending deletes: %w", err)
		}
	}
	return c.PendingDeletes(ctx, limit)
}

// DoneDeleting implements Meta.
func (c *Client) DoneDeleting(ctx context.Context, ids []uint64) error {
	for len(ids) > 0 {
		n := min(len(ids), 100)
		batch := ids[:n]
		ids = ids[n:]
		if err := c.txn(ctx, func(tx kv.Tx) error {
			for _, id := range batch {
				tx.Delete(pendingKey(id))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("done deleting: %w", err)
		}
	}
	return nil
}
