package meta

import (
	"context"
	"fmt"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// Fallocate modes, as fallocate(2).
const (
	FallocKeepSize  = 0x01
	FallocPunchHole = 0x02
	FallocZeroRange = 0x10
)

// Fallocate implements Meta. Plain mode extends the length (storage is
// allocated lazily, so there is nothing to reserve); punch-hole and
// zero-range cover the range with holes.
func (c *Client) Fallocate(ctx context.Context, ino Ino, mode uint32, off, length uint64) error {
	wrap := func(err error) error {
		return fmt.Errorf("fallocate %d [%d, +%d) mode %#x: %w", ino, off, length, mode, err)
	}
	switch {
	case mode&^(FallocKeepSize|FallocPunchHole|FallocZeroRange) != 0:
		return wrap(syscall.EOPNOTSUPP)
	case mode&FallocPunchHole != 0 && mode != FallocPunchHole|FallocKeepSize:
		return wrap(syscall.EOPNOTSUPP)
	case length == 0 || off+length < off:
		return wrap(syscall.EINVAL)
	}
	end := off + length
	return wrapErr(wrap, c.txnOn(ctx, []Ino{ino}, func(tx kv.Tx) error {
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		if isDir(a.Mode) {
			return syscall.EISDIR
		}
		if !isReg(a.Mode) {
			return syscall.ENODEV
		}
		if mode&(FallocPunchHole|FallocZeroRange) != 0 {
			holeEnd := min(end, a.Size)
			if off < holeEnd {
				if err := punch(tx, ino, off, holeEnd); err != nil {
					return err
				}
			}
		}
		if mode&FallocKeepSize == 0 && end > a.Size {
			if err := c.chargeFileTx(tx, &a, align4k(end)-align4k(a.Size), 0); err != nil {
				return err
			}
			if err := addUsage(tx, align4k(end)-align4k(a.Size), 0); err != nil {
				return err
			}
			a.Size = end
		}
		t := now()
		a.Mtime, a.Ctime = t, t
		putAttr(tx, ino, &a)
		return nil
	}))
}

// punch covers [off, end) of ino with holes in the chunks that exist there.
func punch(tx kv.Tx, ino Ino, off, end uint64) error {
	first, last := uint32(off/ChunkSize), uint32((end-1)/ChunkSize)
	var keys, vals [][]byte
	if err := tx.Scan(chunkKey(ino, first), kv.PrefixEnd(chunkKey(ino, last)), 0, func(k, v []byte) bool {
		keys, vals = append(keys, k), append(vals, v)
		return true
	}); err != nil {
		return err
	}
	for i, k := range keys {
		idx := uint32(u64(append(make([]byte, 4), k[9:]...)))
		base := uint64(idx) * ChunkSize
		from, to := max(off, base), min(end, base+ChunkSize)
		tx.Set(k, appendSlice(vals[i], Slice{Pos: uint32(from - base), Len: uint32(to - from)}))
	}
	return nil
}

// visible resolves a chunk's slice list into the non-overlapping pieces a
// read sees, ordered by position; uncovered ranges are absent.
func visible(ss []Slice) []Slice {
	var out []Slice
	for _, s := range ss {
		sEnd := s.Pos + s.Len
		var next []Slice
		for _, o := range out {
			oEnd := o.Pos + o.Len
			if oEnd <= s.Pos || o.Pos >= sEnd {
				next = append(next, o)
				continue
			}
			if o.Pos < s.Pos {
				l := o
				l.Len = s.Pos - o.Pos
				next = append(next, l)
			}
			if oEnd > sEnd {
				r := o
				r.Off += sEnd - o.Pos
				r.Pos = sEnd
				r.Len = oEnd - sEnd
				next = append(next, r)
			}
		}
		out = append(next, s)
	}
	// Order by position (small lists: insertion sort).
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Pos < out[j-1].Pos; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// CopyFileRange implements Meta: the destination range gets references to
// the source's slices (no data moves); gaps become holes. It copies at most
// one chunk's worth per call (a short copy, as copy_file_range(2) allows).
// The caller must have flushed the source's buffered writes.
func (c *Client) CopyFileRange(ctx context.Context, src Ino, srcOff uint64, dst Ino, dstOff, length uint64) (uint64, error) {
	wrap := func(err error) error {
		return fmt.Errorf("copy_file_range %d@%d -> %d@%d (%d bytes): %w", src, srcOff, dst, dstOff, length, err)
	}
	length = min(length, ChunkSize)
	if srcOff+length < srcOff || dstOff+length < dstOff {
		return 0, wrap(syscall.EINVAL)
	}
	if src == dst && srcOff < dstOff+length && dstOff < srcOff+length {
		return 0, wrap(fmt.Errorf("overlapping ranges of one file: %w", syscall.EINVAL))
	}
	var n uint64
	err := c.txnOn(ctx, []Ino{src, dst}, func(tx kv.Tx) error {
		n = 0
		sa, err := getAttr(tx, src)
		if err != nil {
			return err
		}
		da := &sa
		if dst != src {
			a, err := getAttr(tx, dst)
			if err != nil {
				return err
			}
			da = &a
		}
		for _, a := range []*Attr{&sa, da} {
			if isDir(a.Mode) {
				return syscall.EISDIR
			}
			if !isReg(a.Mode) {
				return syscall.EINVAL
			}
		}
		if srcOff >= sa.Size || length == 0 {
			return nil
		}
		n = min(length, sa.Size-srcOff)
		// Pieces of the source window, absolute source offsets.
		type piece struct {
			s   Slice // ID, Size, Off of the source; Pos/Len unused
			at  uint64
			len uint64
		}
		var pieces []piece
		for at := srcOff; at < srcOff+n; {
			idx := uint32(at / ChunkSize)
			base := uint64(idx) * ChunkSize
			stop := min(srcOff+n, base+ChunkSize)
			b, err := tx.Get(chunkKey(src, idx))
			if err != nil {
				return err
			}
			ss, err := decodeSlices(b)
			if err != nil {
				return fmt.Errorf("%v: %w", err, syscall.EIO)
			}
			cur := at
			for _, v := range visible(ss) {
				vs, ve := base+uint64(v.Pos), base+uint64(v.Pos)+uint64(v.Len)
				from, to := max(vs, cur), min(ve, stop)
				if from >= to {
					continue
				}
				if from > cur {
					pieces = append(pieces, piece{at: cur, len: from - cur}) // hole
				}
				p := v
				p.Off += uint32(from - vs)
				pieces = append(pieces, piece{s: p, at: from, len: to - from})
				cur = to
			}
			if cur < stop {
				pieces = append(pieces, piece{at: cur, len: stop - cur})
			}
			at = stop
		}
		// Append them to the destination, split at its chunk boundaries.
		appended := map[uint32][]byte{}
		for _, p := range pieces {
			for done := uint64(0); done < p.len; {
				d := dstOff + (p.at - srcOff) + done
				idx := uint32(d / ChunkSize)
				pos := d % ChunkSize
				l := min(p.len-done, ChunkSize-pos)
				s := Slice{ID: p.s.ID, Pos: uint32(pos), Len: uint32(l)}
				if s.ID != 0 {
					s.Size, s.Off = p.s.Size, p.s.Off+uint32(done)
					if err := addSliceRef(tx, s.ID); err != nil {
						return err
					}
				}
				list, ok := appended[idx]
				if !ok {
					if list, err = tx.Get(chunkKey(dst, idx)); err != nil {
						return err
					}
				}
				appended[idx] = appendSlice(list, s)
				done += l
			}
		}
		for idx, list := range appended {
			tx.Set(chunkKey(dst, idx), list)
		}
		t := now()
		if end := dstOff + n; end > da.Size {
			if err := c.chargeFileTx(tx, da, align4k(end)-align4k(da.Size), 0); err != nil {
				return err
			}
			if err := addUsage(tx, align4k(end)-align4k(da.Size), 0); err != nil {
				return err
			}
			da.Size = end
		}
		da.Mtime, da.Ctime = t, t
		putAttr(tx, dst, da)
		return nil
	})
	if err != nil {
		return 0, wrap(err)
	}
	return n, nil
}
