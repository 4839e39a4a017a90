package data

import (
	"bufio"
	"context"
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
	"time"

	"golang.org/x/sys/unix"
)

// The write journal keeps every write a store acknowledged until the slice
// holding it is committed, in files that outlive the process (Config.JournalDir).
// A serving process killed with writes acknowledged but not committed then
// loses none: the next one replays the journal's uncommitted writes and
// commits them before it serves (see replayJournal).
//
// The journal is a sequence of segment files seg-<n>. Records are appended
// with one write(2) each and never synced: a process crash keeps the page
// cache, and a machine crash loses the mount's unsynced writes anyway.
// Every record is
//
//	magic u32 | crc u32 | kind u8 | pad [3]u8 | len u32 | jid u64 | ino u64 | off u64 | seg u64 | payload [len]u8
//
// little endian, crc (Castagnoli) over everything after it, so a record
// torn by the crash is recognized and ends its segment. seg is the
// segment's number: segment files are reused (renamed and written over
// from the start, which costs the page cache no new pages), and a record
// of an earlier use also ends the segment. Kinds:
//
//	data     bytes written at off of ino into the write slice jid
//	done     slice jid is committed (or dropped): its data records are dead
//	truncate ino was cut to off bytes (cuts replayed writes too)
//
// A segment is deleted once it and every older one hold only dead data
// records; segments go in order so that a done record never disappears
// before the data records it kills. Back-pressure keeps the journal at
// about the write-buffer budget: a writer finding it full makes every
// buffered slice upload and commit, which frees the oldest segments.

const (
	journalMagic  = 0x4c4a4650 // "PFJL"
	journalHeader = 48

	// journalFree is how many emptied segment files are kept for reuse.
	journalFree = 2

	recData     = 1
	recDone     = 2
	recTruncate = 3

	// journalResetAt: a journal left with only dead records is truncated
	// to nothing once it is this big.
	journalResetAt = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type journal struct {
	dir     string
	log     *slog.Logger
	limit   int64 // bytes of all segments before writers wait
	segSize int64 // a segment is closed once this big
	lock    *os.File

	mu      sync.Mutex
	segs    []*jsegment // oldest first; the last is written to
	cur     *os.File
	free    []string // emptied segment files kept for reuse
	total   int64
	nextJID uint64
	space   chan struct{} // closed and replaced whenever total drops
	broken  error
}

type jsegment struct {
	seq  uint64
	size int64
	live int // slices with data records here not yet done
}

// jrecord is a record read back for replay. Its payload stays in the
// segment (a journal may be as big as the write buffers): load reads it.
type jrecord struct {
	kind    byte
	jid     uint64
	ino     uint64
	off     uint64
	segNo   uint64
	n       int      // payload length
	seg     *os.File // the segment, for payload
	payload int64    // where the payload starts in it
}

// load reads the record's payload.
func (r *jrecord) load() ([]byte, error) {
	p := make([]byte, r.n)
	if _, err := r.seg.ReadAt(p, r.payload); err != nil {
		return nil, fmt.Errorf("read the write journal %s at %d: %w", r.seg.Name(), r.payload, err)
	}
	return p, nil
}

func segName(seq uint64) string { return fmt.Sprintf("seg-%016d", seq) }

func (j *journal) segPath(seq uint64) string { return filepath.Join(j.dir, segName(seq)) }

// openJournalDir takes dir for volume vol: it creates it, locks it
// against another process, and checks that it is this volume's. It
// returns the segments left by a previous process, oldest first, and
// whether that process journaled every write it acknowledged (intact).
func openJournalDir(ctx context.Context, dir, vol string) (lock *os.File, old []uint64, intact bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, false, fmt.Errorf("create the write journal directory: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, false, fmt.Errorf("open the write journal's lock: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			lf.Close() // and with it the lock
		}
	}()
	// A process that just exited or was killed releases the lock at once;
	// one still running (stopping) holds it until it has committed.
	for {
		err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil, false, fmt.Errorf("lock the write journal %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, false, fmt.Errorf("the write journal %s is held by another process: %w", dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	volFile := filepath.Join(dir, "volume")
	b, err := os.ReadFile(volFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.WriteFile(volFile, []byte(vol+"\n"), 0o600); err != nil {
			return nil, nil, false, fmt.Errorf("write the write journal's volume: %w", err)
		}
		intact = false // no process journaled here before
	case err != nil:
		return nil, nil, false, fmt.Errorf("read the write journal's volume: %w", err)
	case strings.TrimSpace(string(b)) != vol:
		return nil, nil, false, fmt.Errorf("the write journal %s belongs to volume %s, not %s: give each volume its own journal directory",
			dir, strings.TrimSpace(string(b)), vol)
	default:
		intact = true
	}
	if _, err := os.Stat(filepath.Join(dir, "broken")); err == nil {
		intact = false // the previous process stopped journaling
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, false, fmt.Errorf("list the write journal: %w", err)
	}
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), "seg-"); ok {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil {
				old = append(old, n)
			}
		}
	}
	slices.Sort(old)
	ok = true
	return lf, old, intact, nil
}

// readJournal reads the records of the segments seqs, in order, checking
// each but keeping no payload. A record that does not check out ends its
// segment (a write torn by the crash). The caller closes the files.
func readJournal(dir string, seqs []uint64, log *slog.Logger) ([]jrecord, []*os.File, error) {
	var out []jrecord
	var files []*os.File
	for _, seq := range seqs {
		name := filepath.Join(dir, segName(seq))
		f, err := os.Open(name)
		if err != nil {
			return nil, files, fmt.Errorf("read the write journal: %w", err)
		}
		files = append(files, f)
		st, err := f.Stat()
		if err != nil {
			return nil, files, fmt.Errorf("read the write journal: %w", err)
		}
		br := bufio.NewReaderSize(f, 1<<20)
		var pos int64
		var h [journalHeader]byte
		for pos < st.Size() {
			r, n, err := decodeRecord(br, h[:])
			if err == nil && r.segNo != seq {
				break // written by an earlier use of the file
			}
			if err != nil {
				// A record torn by the crash, or what an earlier use of
				// the file left after the last record.
				log.Debug("write journal: segment ends", "segment", name, "at", pos, "file_size", st.Size(), "why", err)
				break
			}
			r.seg, r.payload = f, pos+journalHeader
			out = append(out, r)
			pos += int64(n)
		}
	}
	return out, files, nil
}

// decodeRecord reads the record at the start of r, checking it whole, and
// returns it (without its payload) and its length.
func decodeRecord(r io.Reader, h []byte) (jrecord, int, error) {
	if _, err := io.ReadFull(r, h[:journalHeader]); err != nil {
		return jrecord{}, 0, fmt.Errorf("short header: %w", err)
	}
	if binary.LittleEndian.Uint32(h) != journalMagic {
		return jrecord{}, 0, errors.New("no record magic")
	}
	n := int64(binary.LittleEndian.Uint32(h[12:]))
	sum := crc32.New(castagnoli)
	sum.Write(h[8:journalHeader])
	if _, err := io.CopyN(sum, r, n); err != nil {
		return jrecord{}, 0, fmt.Errorf("short payload: %w", err)
	}
	if sum.Sum32() != binary.LittleEndian.Uint32(h[4:]) {
		return jrecord{}, 0, errors.New("checksum mismatch")
	}
	return jrecord{
		kind:  h[8],
		jid:   binary.LittleEndian.Uint64(h[16:]),
		ino:   binary.LittleEndian.Uint64(h[24:]),
		off:   binary.LittleEndian.Uint64(h[32:]),
		segNo: binary.LittleEndian.Uint64(h[40:]),
		n:     int(n),
	}, journalHeader + int(n), nil
}

// newJournal starts journaling in dir (locked by openJournalDir) after
// the segments up to last.
func newJournal(dir string, lock *os.File, last uint64, limit int64, log *slog.Logger) (*journal, error) {
	j := &journal{dir: dir, log: log, lock: lock, limit: limit, segSize: min(max(limit/4, 64<<10), 64<<20),
		space: make(chan struct{})}
	_ = os.Remove(filepath.Join(dir, "broken"))
	if old, _ := filepath.Glob(filepath.Join(dir, "free-*")); len(old) > 0 {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}
	if err := j.rotateLocked(last + 1); err != nil {
		return nil, err
	}
	return j, nil
}

// rotateLocked starts segment seq, in an emptied file when there is one.
func (j *journal) rotateLocked(seq uint64) error {
	flags := os.O_CREATE | os.O_TRUNC | os.O_WRONLY
	if n := len(j.free); n > 0 {
		if err := os.Rename(j.free[n-1], j.segPath(seq)); err == nil {
			flags = os.O_WRONLY
		}
		j.free = j.free[:n-1]
	}
	f, err := os.OpenFile(j.segPath(seq), flags, 0o600)
	if err != nil {
		return fmt.Errorf("start write journal segment: %w", err)
	}
	if j.cur != nil {
		j.cur.Close()
	}
	j.cur = f
	j.segs = append(j.segs, &jsegment{seq: seq})
	return nil
}

// reserve waits while the journal holds limit bytes, making the store's
// buffered slices commit so that segments free up. It must be called
// holding no file lock.
func (j *journal) reserve(ctx context.Context, s *Store, n int64) error {
	for {
		j.mu.Lock()
		if j.broken != nil || j.total == 0 || j.total+n <= j.limit {
			j.mu.Unlock()
			return nil
		}
		ch := j.space
		j.mu.Unlock()
		s.relieve()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// appendLocked writes one record; j.mu is held.
func (j *journal) appendLocked(kind byte, jid, ino, off uint64, payload []byte) error {
	if j.broken != nil {
		return j.broken
	}
	seg := j.segs[len(j.segs)-1]
	if seg.size >= j.segSize {
		if err := j.rotateLocked(seg.seq + 1); err != nil {
			j.failLocked(err)
			return err
		}
		seg = j.segs[len(j.segs)-1]
	}
	var h [journalHeader]byte
	binary.LittleEndian.PutUint32(h[0:], journalMagic)
	h[8] = kind
	binary.LittleEndian.PutUint32(h[12:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[16:], jid)
	binary.LittleEndian.PutUint64(h[24:], ino)
	binary.LittleEndian.PutUint64(h[32:], off)
	binary.LittleEndian.PutUint64(h[40:], seg.seq)
	crc := crc32.Update(crc32.Checksum(h[8:], castagnoli), castagnoli, payload)
	binary.LittleEndian.PutUint32(h[4:], crc)
	want := journalHeader + len(payload)
	n, err := unix.Pwritev(int(j.cur.Fd()), [][]byte{h[:], payload}, seg.size)
	if err == nil && n != want {
		err = io.ErrShortWrite
	}
	if err != nil {
		err = fmt.Errorf("append to the write journal %s: %w", j.dir, err)
		j.failLocked(err)
		return err
	}
	seg.size += int64(want)
	j.total += int64(want)
	return nil
}

// failLocked stops journaling after an error: the directory is marked so
// that the next process knows writes acknowledged from now on may be lost
// in a crash (as without a journal), and the segments are dropped (a
// partial journal replayed over later unjournaled writes would undo them).
func (j *journal) failLocked(err error) {
	if j.broken != nil {
		return
	}
	j.broken = err
	j.log.Error("the write journal failed; writes acknowledged from now on are lost if this process is killed before they are committed", "dir", j.dir, "err", err)
	_ = os.WriteFile(filepath.Join(j.dir, "broken"), []byte(err.Error()+"\n"), 0o600)
	if j.cur != nil {
		j.cur.Close()
		j.cur = nil
	}
	for _, s := range j.segs {
		_ = os.Remove(j.segPath(s.seq))
	}
	for _, f := range j.free {
		_ = os.Remove(f)
	}
	j.segs, j.free, j.total = nil, nil, 0
	close(j.space)
	j.space = make(chan struct{})
}

// write journals data written at off of ino into ws.
func (j *journal) write(ws *wslice, ino, off uint64, data []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return
	}
	if ws.jid == 0 {
		j.nextJID++
		ws.jid = j.nextJID
	}
	if j.appendLocked(recData, ws.jid, ino, off, data) != nil {
		return
	}
	seg := j.segs[len(j.segs)-1]
	if n := len(ws.jsegs); n == 0 || ws.jsegs[n-1] != seg.seq {
		ws.jsegs = append(ws.jsegs, seg.seq)
		seg.live++
	}
}

// truncate journals that ino was cut to size.
func (j *journal) truncate(ino, size uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	_ = j.appendLocked(recTruncate, 0, ino, size, nil)
}

// done journals that ws is committed or dropped, and frees the segments
// that leaves holding only dead records.
func (j *journal) done(ws *wslice) {
	if ws.jid == 0 {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return
	}
	if j.appendLocked(recDone, ws.jid, 0, 0, nil) != nil {
		return
	}
	for _, seq := range ws.jsegs {
		for _, s := range j.segs {
			if s.seq == seq {
				s.live--
			}
		}
	}
	ws.jsegs = nil
	freed := false
	for len(j.segs) > 1 && j.segs[0].live == 0 {
		s := j.segs[0]
		if err := j.dropLocked(s.seq); err != nil {
			j.failLocked(fmt.Errorf("drop a write journal segment: %w", err))
			return
		}
		j.total -= s.size
		j.segs = j.segs[1:]
		freed = true
	}
	if s := j.segs[0]; len(j.segs) == 1 && s.live == 0 && (s.size >= journalResetAt || s.size > j.limit/4) {
		// Start over in the same file as the next segment: its records
		// are all dead, and the renamed file's old ones no longer count.
		if err := os.Rename(j.segPath(s.seq), j.segPath(s.seq+1)); err != nil {
			j.failLocked(fmt.Errorf("reset the write journal: %w", err))
			return
		}
		j.total -= s.size
		s.seq++
		s.size = 0
		freed = true
	}
	if freed {
		close(j.space)
		j.space = make(chan struct{})
	}
}

// dropLocked takes the emptied segment seq out of the journal: kept for
// reuse under a name replay ignores, or removed.
func (j *journal) dropLocked(seq uint64) error {
	if len(j.free) < journalFree {
		name := filepath.Join(j.dir, fmt.Sprintf("free-%016d", seq))
		if err := os.Rename(j.segPath(seq), name); err != nil {
			return err
		}
		j.free = append(j.free, name)
		return nil
	}
	return removeFile(j.segPath(seq))
}

// close ends journaling. Everything was committed (Store.Close flushed), so
// the segments go: the next process has nothing to replay.
func (j *journal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cur != nil {
		j.cur.Close()
		j.cur = nil
	}
	// Only a prefix: a done record must not go before its data records.
	for j.broken == nil && len(j.segs) > 0 && j.segs[0].live == 0 {
		_ = os.Remove(j.segPath(j.segs[0].seq))
		j.segs = j.segs[1:]
	}
	for _, f := range j.free {
		_ = os.Remove(f)
	}
	j.free = nil
	if j.broken == nil && len(j.segs) == 0 {
		// Nothing to replay: a later process that finds no marker knows
		// that whoever served after this one kept no journal, unless it
		// made one itself (see openJournalDir's intact).
		_ = os.Remove(filepath.Join(j.dir, "volume"))
	}
	j.lock.Close()
}

// removeFile removes name; one already gone is fine.
func removeFile(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
