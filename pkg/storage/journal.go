package storage

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The small-object journal of a file store with Fsync (an intent log, like
// ZFS's ZIL): making a new file durable costs ext4 a journal commit, about
// 600 us, while one O_DIRECT|O_DSYNC write over already-written blocks
// changes no file-system metadata and costs half of that or less. So a Put
// of an object smaller than directMin writes one checksummed record into a
// preallocated, zero-filled segment file and returns; concurrent Puts share
// that write. Until spilled, Get reads the object from its segment (pinned
// against reuse meanwhile), so the journal holds no object in memory. A
// spiller later writes the objects to their own files without syncing each,
// makes a segment's worth durable with one syncfs, and only then retires
// the segment and drops its objects from the index. It spills once the
// store is quiet, or the journal half full: write-back during a burst of
// Puts would slow each of them (every journal write flushes the disk's
// cache), and objects deleted before their spill are never written at all.
//
// Files under <root>/.podfs-journal are named seg-N; which segment a file
// holds, if any, says its first block:
//
//	crc32c(4) | magic(4) | seq(8) | state(1)
//
// with state active (records of segment seq follow) or retired (spilled:
// the file is a spare, its bytes stale). Sequence numbers only grow, also
// across restarts (a retired header keeps its seq), so the stale records of
// a recycled file never pass for the current segment's. A header is only
// rewritten after the second block was overwritten, with zeros (to make the
// file active) or a seal (to retire it: the segment then holds nothing
// even while its header still says active), so a header that does not
// read back is a torn write (nothing, or that seal, follows it) or, if a
// valid record follows, damage that Open refuses. Records start at the
// second block, each padded to whole blocks:
//
//	crc32c(4) | kind(1) | 0(3) | seq(8) | batch(8) | key length(4) | data length(4) | key | data
//
// The checksum covers everything after it; batch is the offset of the
// first record of the write that carried this one. Kinds: put, delete (a
// tombstone: replay must not resurrect the object) and seal, which ends a
// segment the writer left for the next one. Replay stops a segment at the
// first record that is not a valid one of it; in a sealed-off segment that
// can only be damage, and in the last segment it is the torn tail of a write
// never acknowledged, unless a valid record of a later write follows it.

const (
	journalDir = ".podfs-journal"
	jBlock     = 4096
	jRecHeader = 32
	jSegHeader = 17
	jMagic     = 0x4a444f50 // "PODJ"

	jPut    = 1
	jDelete = 2
	jSeal   = 3

	jActive  = 1
	jRetired = 2

	// DefaultJournalSegment is a journal segment's size when FileOptions
	// does not say: about 130 objects of 128 KiB.
	DefaultJournalSegment = 16 << 20
	// minJournalSegment holds the largest journaled object (just under
	// directMin) with its header and the seal.
	minJournalSegment = 2 * directMin
	// journalPending bounds the segments written but not yet retired (the
	// journal's files take up to journalPending+3 segments): past it Puts
	// wait for the spiller. Past half of it the spiller spills even while
	// Puts come.
	journalPending = 16
	// journalIdle is how long the journal must get no record before the
	// active segment is sealed and the sealed ones are spilled.
	journalIdle = 200 * time.Millisecond
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockBuf returns n zero bytes (n a multiple of jBlock) at a block-aligned
// address, as O_DIRECT wants.
func blockBuf(n int) []byte {
	raw := make([]byte, n+jBlock)
	mis := int(uintptr(unsafe.Pointer(unsafe.SliceData(raw))) & (jBlock - 1))
	start := 0
	if mis != 0 {
		start = jBlock - mis
	}
	return raw[start : start+n : start+n]
}

func roundBlock(n int) int { return (n + jBlock - 1) &^ (jBlock - 1) }

// recordLen is the bytes a record of key and n data bytes takes.
func recordLen(key string, n int) int { return roundBlock(jRecHeader + len(key) + n) }

// encodeRecord writes a record into b (recordLen bytes).
func encodeRecord(b []byte, kind byte, seq uint64, batch int64, key string, data []byte) {
	b[4] = kind
	clear(b[5:8])
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(batch))
	binary.LittleEndian.PutUint32(b[24:], uint32(len(key)))
	binary.LittleEndian.PutUint32(b[28:], uint32(len(data)))
	copy(b[jRecHeader:], key)
	copy(b[jRecHeader+len(key):], data)
	end := jRecHeader + len(key) + len(data)
	clear(b[end:]) // padding: no stale bytes of an earlier batch on disk
	binary.LittleEndian.PutUint32(b, crc32.Checksum(b[4:end], castagnoli))
}

// record is one decoded journal record; data aliases the segment's buffer.
type record struct {
	kind  byte
	batch int64
	key   string
	data  []byte
	size  int // bytes taken, padding included
}

// decodeRecord reads the record at the start of b if it is a valid one of
// segment seq.
func decodeRecord(b []byte, seq uint64) (record, bool) {
	if len(b) < jRecHeader || binary.LittleEndian.Uint64(b[8:]) != seq {
		return record{}, false
	}
	kind := b[4]
	kl := int(binary.LittleEndian.Uint32(b[24:]))
	dl := int(binary.LittleEndian.Uint32(b[28:]))
	if kind < jPut || kind > jSeal || kl > len(b) || dl > len(b) || jRecHeader+kl+dl > len(b) {
		return record{}, false
	}
	end := jRecHeader + kl + dl
	if crc32.Checksum(b[4:end], castagnoli) != binary.LittleEndian.Uint32(b) {
		return record{}, false
	}
	return record{
		kind:  kind,
		batch: int64(binary.LittleEndian.Uint64(b[16:])),
		key:   string(b[jRecHeader : jRecHeader+kl]),
		data:  b[jRecHeader+kl : end : end],
		size:  roundBlock(end),
	}, true
}

func segHeader(seq uint64, state byte) []byte {
	b := blockBuf(jBlock)
	binary.LittleEndian.PutUint32(b[4:], jMagic)
	binary.LittleEndian.PutUint64(b[8:], seq)
	b[16] = state
	binary.LittleEndian.PutUint32(b, crc32.Checksum(b[4:jSegHeader], castagnoli))
	return b
}

// readSegHeader returns the seq and state a segment file's first block
// names, or ok=false for a file that never held a segment.
func readSegHeader(b []byte) (seq uint64, state byte, ok bool) {
	if len(b) < jSegHeader || binary.LittleEndian.Uint32(b[4:]) != jMagic ||
		crc32.Checksum(b[4:jSegHeader], castagnoli) != binary.LittleEndian.Uint32(b) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[8:]), b[16], true
}

// jseg is a segment file in use: the one the writer appends to, or one
// sealed and waiting for the spiller.
type jseg struct {
	path    string
	fd      *os.File
	nsfd    *os.File // direct without O_DSYNC (nil where fd is buffered), for tombstones
	rfd     *os.File // buffered, for Gets
	direct  bool     // fd is O_DIRECT|O_DSYNC; else buffered writes and fdatasync
	seq     uint64
	off     int64 // where the next record goes
	size    int64
	ents    []*jentry // in write order; guarded by journal.mu
	readers int       // Gets reading it now, which its reuse waits for; guarded by journal.mu
}

// openSeg opens a segment file for writing, directly where the file system
// allows (tmpfs does not).
func openSeg(path string, seq uint64, size int64) (*jseg, error) {
	s := &jseg{path: path, seq: seq, off: jBlock, size: size}
	rfd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	s.rfd = rfd
	fd, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT|syscall.O_DSYNC, 0)
	if err == nil {
		if s.nsfd, err = os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0); err != nil {
			fd.Close()
			rfd.Close()
			return nil, fmt.Errorf("journal: open %s: %w", path, err)
		}
		s.fd, s.direct = fd, true
		return s, nil
	}
	if fd, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		rfd.Close()
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	s.fd = fd
	return s, nil
}

func (s *jseg) close() {
	s.fd.Close()
	s.rfd.Close()
	if s.nsfd != nil {
		s.nsfd.Close()
	}
}

// readAll returns the segment's records (up to off) in memory, read
// directly where written directly (it is read once, to be spilled: no use
// filling the page cache with it).
func (s *jseg) readAll() ([]byte, error) {
	buf := blockBuf(int(s.off))
	fd := s.rfd
	if s.direct {
		fd = s.fd
	}
	if _, err := fd.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", s.path, err)
	}
	return buf, nil
}

// writeAt writes b (block-aligned, whole blocks) at off and makes it durable.
func (s *jseg) writeAt(b []byte, off int64) error { return s.write(b, off, true) }

// setHeader durably makes the file segment seq in the given state (active:
// see journal.retire for retired). The first record's block is zeroed
// first, so whenever a header write could be torn no record follows it; a
// header that does not read back while a valid record follows is therefore
// damage, which Open refuses (see replay).
func (s *jseg) setHeader(seq uint64, state byte) error {
	if err := s.writeAt(blockBuf(jBlock), jBlock); err != nil {
		return err
	}
	return s.writeAt(segHeader(seq, state), 0)
}

// write writes b at off, durably with sync. Without, the bytes are on the
// device (a killed process loses nothing) but maybe only in its volatile
// cache, until the next durable write's flush: for tombstones, which need
// no more than that (see File.Delete).
func (s *jseg) write(b []byte, off int64, sync bool) error {
	fd := s.fd
	if !sync && s.nsfd != nil {
		fd = s.nsfd
	}
	if _, err := fd.WriteAt(b, off); err != nil {
		return fmt.Errorf("journal %s: write at %d: %w", s.path, off, err)
	}
	if !s.direct && sync {
		if err := unix.Fdatasync(int(s.fd.Fd())); err != nil {
			return fmt.Errorf("journal %s: fdatasync: %w", s.path, err)
		}
	}
	return nil
}

// seal ends the segment so replay tells its end from damage.
func (s *jseg) seal() error {
	b := blockBuf(jBlock)
	encodeRecord(b, jSeal, s.seq, s.off, "", nil)
	if err := s.writeAt(b, s.off); err != nil {
		return err
	}
	s.off += jBlock
	return nil
}

// jentry is a journaled object (or tombstone) the index points to: its
// bytes are size bytes at off in seg's file.
type jentry struct {
	key  string
	off  int64
	size int
	del  bool
	mod  time.Time
	seg  *jseg
	// spilled: the object is in its file (durably) and Gets read that; the
	// entry stays until its segment is retired (see spillAll). Guarded by
	// journal.mu.
	spilled bool
}

// readAt reads the object's bytes from off into p (the segment pinned).
// A segment written directly is read directly too: buffered reads of a file
// that O_DIRECT writes can cache pages (readahead past the last record)
// that a later direct write does not replace, and then return stale zeros
// for the start of the next record, even after a restart.
func (e *jentry) readAt(p []byte, off int64) (int, error) {
	if off >= int64(e.size) {
		return 0, nil
	}
	n := int(min(int64(len(p)), int64(e.size)-off))
	at := e.off + off
	if !e.seg.direct {
		if _, err := e.seg.rfd.ReadAt(p[:n], at); err != nil {
			return 0, fmt.Errorf("journal %s: read at %d: %w", e.seg.path, at, err)
		}
		return n, nil
	}
	start := at &^ (jBlock - 1)
	buf := blockBuf(roundBlock(int(at-start) + n))
	if _, err := e.seg.fd.ReadAt(buf, start); err != nil {
		return 0, fmt.Errorf("journal %s: read at %d: %w", e.seg.path, at, err)
	}
	copy(p[:n], buf[at-start:])
	return n, nil
}

// readFileDirect reads a whole segment file past the page cache where the
// file system allows (see jentry.readAt), else through it.
func readFileDirect(path string) ([]byte, error) {
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return os.ReadFile(path)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	buf := blockBuf(roundBlock(int(st.Size())))
	n, err := io.ReadFull(fh, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return buf[:min(n, int(st.Size()))], nil
}

// journal is a file store's small-object journal.
type journal struct {
	f       *File
	dir     string
	segSize int64
	log     *slog.Logger
	rootFD  int
	lockFD  int // the journal directory, flock'ed

	mu       sync.Mutex
	changed  *sync.Cond // a segment retired, a spare appeared, or closing
	wrote    *sync.Cond // a leader's write ended (see append)
	leading  bool       // a caller of append is writing
	index    map[string]*jentry
	queue    []*jreq
	closing  bool
	spares   []string
	nextFile int    // number of the next new segment file
	seq      uint64 // last segment seq used
	toSpill  []*jseg
	pending  int   // segments sealed but not retired
	replayed int   // objects and tombstones Open found in the journal
	bgErr    error // the spiller's or preparer's last failure, nil after a success
	awaiting int   // Puts waiting for a key to leave the journal

	lastWrite atomic.Int64 // when the last record was written (unix ns)

	wmu        sync.Mutex // held to write: guards active and wbuf; taken before mu
	active     *jseg
	wbuf       []byte // the write buffer, reused
	spillKick  chan struct{}
	spareKick  chan struct{}
	stop       chan struct{}
	writerDone chan struct{} // closed when the sealer has sealed the last segment at close
	bgWG       sync.WaitGroup

	// retireMark, if set (by crash tests), runs before (step 0) and
	// between (step 1) the two writes of a segment's retirement.
	retireMark func(step int)
}

// openJournal replays the journal of f (rebuilding the index of objects not
// yet spilled, which the spiller then spills) and starts its goroutines.
//
// Only one store may use a journal at a time (it would replay and reuse
// the other's segments): it holds an exclusive lock on the journal
// directory. With drain, the journal only replays and spills what a store
// that used it left (see NewFile), and the caller closes it at once.
func openJournal(f *File, segSize int64, log *slog.Logger, drain bool) (*journal, error) {
	j := &journal{
		f: f, dir: filepath.Join(f.root, journalDir), segSize: segSize, log: log,
		index: map[string]*jentry{}, rootFD: -1, lockFD: -1,
		spillKick: make(chan struct{}, 1),
		spareKick: make(chan struct{}, 1), stop: make(chan struct{}), writerDone: make(chan struct{}),
	}
	j.changed = sync.NewCond(&j.mu)
	j.wrote = sync.NewCond(&j.mu)
	if err := os.MkdirAll(j.dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal of %s: %w", f, err)
	}
	lock, err := unix.Open(j.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("journal of %s: %w", f, err)
	}
	if err := unix.Flock(lock, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(lock)
		if errors.Is(err, unix.EWOULDBLOCK) && drain {
			return nil, errJournalBusy
		}
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("file storage %s: another store (another podfs process, or mount) uses its journal %s: "+
				"a directory several mounts share needs journal=false in every mount's storage URL", f, j.dir)
		}
		return nil, fmt.Errorf("journal of %s: lock %s: %w", f, j.dir, err)
	}
	j.lockFD = lock
	fd, err := unix.Open(f.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(lock)
		return nil, fmt.Errorf("journal of %s: open root: %w", f, err)
	}
	j.rootFD = fd
	fail := func(err error) (*journal, error) {
		unix.Close(fd)
		unix.Close(lock)
		for _, s := range j.toSpill {
			s.close()
		}
		return nil, err
	}
	if err := j.replay(); err != nil {
		return fail(err)
	}
	if len(j.spares) == 0 && !drain {
		if err := j.newSpare(); err != nil {
			return fail(err)
		}
	}
	j.bgWG.Add(3)
	go j.sealer()
	go j.spiller()
	go j.preparer()
	j.spillKick <- struct{}{}
	if !drain {
		j.spareKick <- struct{}{}
	}
	return j, nil
}

type fileSeg struct {
	path string
	seq  uint64
}

// replay reads the segment files: active ones are replayed in seq order
// into the index and queued for the spiller, the rest become spares.
func (j *journal) replay() error {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return fmt.Errorf("journal of %s: %w", j.f, err)
	}
	var live []fileSeg
	for _, e := range ents {
		p := filepath.Join(j.dir, e.Name())
		n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "seg-"))
		if !strings.HasPrefix(e.Name(), "seg-") || err != nil || !e.Type().IsRegular() {
			// A segment file being made when the process stopped.
			_ = os.Remove(p)
			continue
		}
		j.nextFile = max(j.nextFile, n+1)
		seq, state, ok, rseq, err := peekSegHeader(p)
		if err != nil {
			return err
		}
		if !ok && rseq != 0 {
			return fmt.Errorf("journal of %s: %s is damaged: its header does not read back, yet it holds records of segment %d (move it away to start without them)", j.f, p, rseq)
		}
		if ok {
			j.seq = max(j.seq, seq)
		}
		if ok && state == jActive {
			live = append(live, fileSeg{p, seq})
		} else {
			j.spares = append(j.spares, p)
		}
	}
	slices.SortFunc(live, func(a, b fileSeg) int { return cmp.Compare(a.seq, b.seq) })
	for i, ls := range live {
		if i > 0 && live[i-1].seq == ls.seq {
			return fmt.Errorf("journal of %s: %s and %s both hold segment %d: move the wrong one away", j.f, live[i-1].path, ls.path, ls.seq)
		}
		if err := j.replaySegment(ls, i == len(live)-1); err != nil {
			return err
		}
	}
	j.replayed = len(j.index)
	if len(live) > 0 {
		j.log.Info("journal replayed", "store", j.f.String(), "segments", len(live), "objects", j.replayed)
	}
	return nil
}

// peekSegHeader reads a segment file's header and, where the header is
// not valid, the segment a valid first record names (rseq, 0 for none).
func peekSegHeader(path string) (seq uint64, state byte, ok bool, rseq uint64, err error) {
	// Past the page cache, as the segment was written (see jentry.readAt).
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		fh, err = os.Open(path)
	}
	if err != nil {
		return 0, 0, false, 0, fmt.Errorf("journal: %w", err)
	}
	defer fh.Close()
	b := blockBuf(2 * jBlock)
	n, err := io.ReadFull(fh, b)
	if n < jSegHeader {
		return 0, 0, false, 0, nil // shorter than a header: never a segment
	}
	if seq, state, ok = readSegHeader(b); ok || err != nil {
		return seq, state, ok, 0, nil
	}
	// A seal as the first record: a retirement whose header write was
	// torn (see journal.retire). The segment holds nothing.
	if r := binary.LittleEndian.Uint64(b[jBlock+8:]); r != 0 {
		if rec, valid := decodeRecord(b[jBlock:], r); valid && rec.kind == jSeal {
			return r, jRetired, true, 0, nil
		}
	}
	first := b[jBlock:]
	r := binary.LittleEndian.Uint64(first[8:])
	n = jRecHeader + int(binary.LittleEndian.Uint32(first[24:])) + int(binary.LittleEndian.Uint32(first[28:]))
	if r == 0 || n > minJournalSegment {
		return 0, 0, false, 0, nil
	}
	rec := blockBuf(roundBlock(n))
	if _, err := fh.ReadAt(rec, jBlock); err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, false, 0, nil
	}
	if _, valid := decodeRecord(rec, r); valid {
		rseq = r
	}
	return 0, 0, false, rseq, nil
}

// replaySegment indexes the records of one active segment. An unsealed last
// segment is sealed where its valid records end, so that, once later
// segments follow it, its end is not mistaken for damage.
func (j *journal) replaySegment(ls fileSeg, last bool) error {
	buf, err := readFileDirect(ls.path)
	if err != nil {
		return fmt.Errorf("journal: read %s: %w", ls.path, err)
	}
	s, err := openSeg(ls.path, ls.seq, int64(len(buf)))
	if err != nil {
		return err
	}
	sealed := false
	off := jBlock
	for off < len(buf) {
		r, ok := decodeRecord(buf[off:], ls.seq)
		if !ok {
			break
		}
		if r.kind == jSeal {
			sealed = true
			break
		}
		e := &jentry{key: r.key, del: r.kind == jDelete, off: int64(off + jRecHeader + len(r.key)), size: len(r.data), mod: time.Now(), seg: s}
		if checkKey(r.key) != nil {
			s.close()
			return fmt.Errorf("journal segment %s: record at offset %d names bad key %q: the file is damaged; move it away to open the store (its objects are lost)", ls.path, off, r.key)
		}
		s.ents = append(s.ents, e)
		j.index[r.key] = e
		off += r.size
	}
	s.off = int64(off)
	damaged := !sealed && !last
	if !sealed && last {
		// A torn write ends the log only if no later write follows it.
		for at := off + jBlock; at < len(buf); at += jBlock {
			if r, ok := decodeRecord(buf[at:], ls.seq); ok && r.batch > int64(off) {
				damaged = true
				break
			}
		}
	}
	if damaged {
		s.close()
		return fmt.Errorf("journal segment %s (seq %d) is damaged at offset %d, before records that were acknowledged: "+
			"objects written to it may be lost; move the file away to open the store without them", ls.path, ls.seq, off)
	}
	if !sealed {
		if err := s.seal(); err != nil {
			s.close()
			return err
		}
	}
	j.toSpill = append(j.toSpill, s)
	j.pending++
	return nil
}

// newSpare makes a new segment file, filled with zeros so that later direct
// writes overwrite written blocks and change no metadata, durable under its
// name, and adds it to the spares. A store's first files are small (2, 4,
// 8 MiB, then the segment size): a store that sees few small objects, as
// in most tests, does not pay for filling big ones.
func (j *journal) newSpare() error {
	j.mu.Lock()
	n := j.nextFile
	j.nextFile++
	j.mu.Unlock()
	size := int64(minJournalSegment)
	for i := 0; i < n && size < j.segSize; i++ {
		size *= 2
	}
	size = min(size, j.segSize)
	tmp := filepath.Join(j.dir, fmt.Sprintf("new-%d", n))
	path := filepath.Join(j.dir, fmt.Sprintf("seg-%d", n))
	err := zeroFile(tmp, size)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(j.dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("journal: prepare segment %s: %w", path, err)
	}
	j.mu.Lock()
	j.spares = append(j.spares, path)
	j.changed.Broadcast()
	j.mu.Unlock()
	return nil
}

func zeroFile(path string, size int64) error {
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer fh.Close()
	chunk := make([]byte, min(size, 1<<20))
	var done int64
	for done < size {
		n, err := fh.WriteAt(chunk[:min(int64(len(chunk)), size-done)], done)
		if err != nil {
			return err
		}
		done += int64(n)
	}
	return fh.Sync()
}

// errJournalBusy: another store holds the journal (and spills it).
var errJournalBusy = errors.New("journal in use")

// errClosed is returned by a journal used after Close.
var errClosed = errors.New("file store closed")

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}
