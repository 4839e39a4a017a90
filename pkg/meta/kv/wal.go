package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// The bolt engine's write-ahead log: a sequence of segment files beside the
// database, <db>.wal.<seq as 16 hex digits>, each holding the commit groups
// written since the previous checkpoint froze the memtable. A group is one
// record:
//
//	crc32c(4) | payload length(4) | segment seq(8) | payload
//
// where the checksum covers everything after it, and the payload is the
// group's writes in commit order, each kind(1) | uvarint key length | key
// [| uvarint value length | value]. Segments are preallocated and recycled,
// so the bytes after the last record are zeros or records of an older
// segment (another seq): either ends the log, as does a torn or corrupt
// record — one that was never acknowledged, since callers are answered only
// after its fdatasync. A segment the committer left for a new one ends with
// a seal, an empty record, so a damaged record before the end of the log
// (acknowledged writes lost) is told from a torn tail.

const (
	walHeader = 16
	// walSegmentSize is a segment's preallocation; a segment that outgrows
	// it just grows, and the memtable is checkpointed soon after.
	walSegmentSize = 32 << 20
	opSet          = 1
	opDelete       = 2
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

func walName(db string, seq uint64) string { return fmt.Sprintf("%s.wal.%016x", db, seq) }

func spareName(db string) string { return db + ".wal.spare" }

// walSegments lists the segment numbers beside db in ascending order.
func walSegments(db string) ([]uint64, error) {
	dir, base := filepath.Split(db)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list write-ahead log of %s: %w", db, err)
	}
	var seqs []uint64
	prefix := base + ".wal."
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || len(rest) != 16 {
			continue
		}
		seq, err := strconv.ParseUint(rest, 16, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

// appendOp adds one write to a record's payload.
func appendOp(rec []byte, key string, val []byte) []byte {
	if val == nil {
		rec = append(rec, opDelete)
		rec = binary.AppendUvarint(rec, uint64(len(key)))
		return append(rec, key...)
	}
	rec = append(rec, opSet)
	rec = binary.AppendUvarint(rec, uint64(len(key)))
	rec = append(rec, key...)
	rec = binary.AppendUvarint(rec, uint64(len(val)))
	return append(rec, val...)
}

// sealRecord fills in the header of rec (walHeader bytes reserved at its
// start) for segment seq.
func sealRecord(rec []byte, seq uint64) {
	binary.LittleEndian.PutUint32(rec[4:], uint32(len(rec)-walHeader))
	binary.LittleEndian.PutUint64(rec[8:], seq)
	binary.LittleEndian.PutUint32(rec[0:], crc32.Checksum(rec[4:], crc32c))
}

// walSegment is the segment the committer appends to. Where the file
// system allows, it writes with O_DIRECT|O_DSYNC: on the segment's blocks,
// written before (zero-filled or recycled), a write is durable when it
// returns, with no separate flush — about two thirds of the latency of a
// buffered write plus fdatasync on this project's disks. Direct writes
// cover whole blocks, so the segment keeps its partial last block in blk
// and rewrites it with each record (with the same bytes where it held
// acknowledged records already).
type walSegment struct {
	f        *os.File
	path     string
	seq      uint64
	off      int64
	noSync   bool
	direct   bool
	blk      []byte // direct: the bytes from blkStart (block aligned) to off
	blkStart int64
}

const walBlock = 4096

// alignedBuf returns a zeroed buffer of n bytes at a block-aligned address.
func alignedBuf(n int) []byte {
	b := make([]byte, n+walBlock)
	skip := (walBlock - int(uintptr(unsafe.Pointer(&b[0]))%walBlock)) % walBlock
	return b[skip : skip+n : skip+n]
}

// append writes sealed records and makes them durable.
func (w *walSegment) append(rec []byte) error {
	if w.direct {
		return w.appendDirect(rec)
	}
	if _, err := w.f.WriteAt(rec, w.off); err != nil {
		return fmt.Errorf("write-ahead log %s: write at %d: %w", w.path, w.off, err)
	}
	if !w.noSync {
		if err := w.sync(); err != nil {
			return err
		}
	}
	w.off += int64(len(rec))
	return nil
}

// sync makes the records appended so far durable.
func (w *walSegment) sync() error {
	if err := syscall.Fdatasync(int(w.f.Fd())); err != nil {
		return fmt.Errorf("write-ahead log %s: fdatasync: %w", w.path, err)
	}
	return nil
}

func (w *walSegment) appendDirect(rec []byte) error {
	have := int(w.off - w.blkStart)
	end := have + len(rec)
	size := (end + walBlock - 1) &^ (walBlock - 1)
	if size > cap(w.blk) {
		nb := alignedBuf(2 * size)
		copy(nb, w.blk[:have])
		w.blk = nb
	}
	buf := w.blk[:size]
	copy(buf[have:], rec)
	clear(buf[end:])
	if _, err := w.f.WriteAt(buf, w.blkStart); err != nil {
		return fmt.Errorf("write-ahead log %s: write at %d: %w", w.path, w.blkStart, err)
	}
	w.off += int64(len(rec))
	// Keep only the partial last block for the next record.
	if full := end &^ (walBlock - 1); full > 0 {
		copy(w.blk, w.blk[full:end])
		w.blkStart += int64(full)
	}
	return nil
}

// segmentFile makes a new segment file at path, filled with zeros (so later
// direct writes overwrite written blocks: no extent changes to commit), and
// makes it and its name durable. With noSync it only reserves the space.
func segmentFile(path string, noSync bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write-ahead log: create %s: %w", path, err)
	}
	defer f.Close()
	if noSync {
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, walSegmentSize); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
			return fmt.Errorf("write-ahead log: preallocate %s: %w", path, err)
		}
		return nil
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < walSegmentSize; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros, off); err != nil {
			return fmt.Errorf("write-ahead log: fill %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write-ahead log: sync %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// createSegment makes segment seq, from the spare (a checkpointed segment,
// whose stale records carry an older seq) when there is one, else from a
// new file, and makes its name durable.
func createSegment(db string, seq uint64, spare string, opt BoltOptions) (*walSegment, error) {
	noSync, buffered := opt.NoSync, opt.BufferedLog
	path := walName(db, seq)
	if spare != "" {
		if err := os.Rename(spare, path); err != nil {
			return nil, fmt.Errorf("write-ahead log: reuse %s as %s: %w", spare, path, err)
		}
		if !noSync {
			if err := syncDir(filepath.Dir(path)); err != nil {
				return nil, err
			}
		}
	} else if err := segmentFile(path, noSync); err != nil {
		return nil, err
	}
	w := &walSegment{path: path, seq: seq, noSync: noSync}
	var err error
	if !noSync && !buffered {
		w.f, err = os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT|syscall.O_DSYNC, 0)
		if err == nil {
			w.direct = true
			w.blk = alignedBuf(64 << 10)
			return w, nil
		}
		// Not every file system takes O_DIRECT (tmpfs): write and flush.
	}
	w.f, err = os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("write-ahead log: open %s: %w", path, err)
	}
	return w, nil
}

// makeSpare prepares a spare segment if there is none, off the commit path
// (the committer takes it at its next rotation).
func (b *Bolt) makeSpare() {
	b.spareMu.Lock()
	have := b.spare != ""
	b.spareMu.Unlock()
	if have {
		return
	}
	tmp := spareName(b.path) + ".tmp"
	if err := segmentFile(tmp, b.opt.NoSync); err != nil {
		b.log.Warn("prepare a write-ahead log segment", "err", err)
		os.Remove(tmp)
		return
	}
	b.spareMu.Lock()
	defer b.spareMu.Unlock()
	if b.spare != "" {
		os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, spareName(b.path)); err != nil {
		b.log.Warn("prepare a write-ahead log segment", "err", err)
		os.Remove(tmp)
		return
	}
	b.spare = spareName(b.path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// readSegment calls fn for every write of segment seq's valid records, in
// order, and reports whether the segment ends with the seal the committer
// writes before moving on to the next segment. It stops at the first record
// that is not a valid one of this segment: the zeros of preallocation, bytes
// of the recycled segment's older records (another seq), or a torn write.
func readSegment(path string, seq uint64, fn func(key string, val []byte)) (sealed bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read write-ahead log %s: %w", path, err)
	}
	return readRecords(data, seq, fn), nil
}

// readRecords calls fn for every write of the valid records of segment seq
// at the start of data, and reports whether they end with a seal.
func readRecords(data []byte, seq uint64, fn func(key string, val []byte)) (sealed bool) {
	for off := 0; off+walHeader <= len(data); {
		h := data[off:]
		n := int(binary.LittleEndian.Uint32(h[4:]))
		if binary.LittleEndian.Uint64(h[8:]) != seq || walHeader+n > len(h) ||
			crc32.Checksum(h[4:walHeader+n], crc32c) != binary.LittleEndian.Uint32(h) {
			return false
		}
		if n == 0 {
			return true
		}
		ops, err := decodeOps(h[walHeader : walHeader+n])
		if err != nil {
			return false
		}
		for _, op := range ops {
			fn(op.key, op.val)
		}
		off += walHeader + n
	}
	return false
}

// decodeOps parses a record's payload (checksummed already: an error here
// means a bug or a checksum collision, treated as damage).
func decodeOps(p []byte) ([]memEntry, error) {
	var ops []memEntry
	for len(p) > 0 {
		kind := p[0]
		p = p[1:]
		kl, n := binary.Uvarint(p)
		if n <= 0 || uint64(len(p)-n) < kl {
			return nil, errors.New("bad key length")
		}
		key := string(p[n : n+int(kl)])
		p = p[n+int(kl):]
		switch kind {
		case opDelete:
			ops = append(ops, memEntry{key: key})
		case opSet:
			vl, n := binary.Uvarint(p)
			if n <= 0 || uint64(len(p)-n) < vl {
				return nil, errors.New("bad value length")
			}
			ops = append(ops, memEntry{key: key, val: append(make([]byte, 0, vl), p[n:n+int(vl)]...)})
			p = p[n+int(vl):]
		default:
			return nil, fmt.Errorf("bad op kind %d", kind)
		}
	}
	return ops, nil
}
