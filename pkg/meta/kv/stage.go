package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// The staging file, <db>.wal.stage, mirrors the log segment being written
// when commits are answered before they are durable (BoltOptions.SyncDelay):
// every record goes there first, through the page cache, and reaches the
// segment only later, after the data it refers to is durable (the barrier).
// A crash of the process leaves the page cache, and with it every answered
// record, in place: the next open of the same boot replays the staging
// file. After a reboot the staging file may hold anything (the kernel writes
// pages back in any order, before or after the data they refer to), so it
// is ignored and the segments alone count: what was not synced is lost, as
// its callers were told it could be.
//
// Layout: stageMagic | boot id length(1) | boot id | segment seq(8), padded
// to stageHeader bytes, then records as in a segment (of that seq).
const (
	stageMagic  = "podfs-wal-stage\x00"
	stageHeader = 128
)

func stageName(db string) string { return db + ".wal.stage" }

// bootIDPath holds the kernel's random id of the current boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

func currentBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

type stageFile struct {
	f    *os.File
	path string
	boot string
	off  int64
}

// openStage creates (or empties) the staging file for segment seq.
func openStage(db, boot string, seq uint64) (*stageFile, error) {
	path := stageName(db)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write-ahead log: open %s: %w", path, err)
	}
	s := &stageFile{f: f, path: path, boot: boot}
	if err := s.reset(seq); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// reset empties the file for segment seq. A crash halfway leaves a header
// that does not parse, or the previous segment's records: neither replays
// over a newer segment (see readStage).
func (s *stageFile) reset(seq uint64) error {
	if err := s.f.Truncate(0); err != nil {
		return fmt.Errorf("write-ahead log: truncate %s: %w", s.path, err)
	}
	h := make([]byte, stageHeader)
	copy(h, stageMagic)
	h[len(stageMagic)] = byte(len(s.boot))
	n := copy(h[len(stageMagic)+1:], s.boot)
	binary.LittleEndian.PutUint64(h[len(stageMagic)+1+n:], seq)
	if _, err := s.f.WriteAt(h, 0); err != nil {
		return fmt.Errorf("write-ahead log: write %s: %w", s.path, err)
	}
	s.off = stageHeader
	return nil
}

func (s *stageFile) append(rec []byte) error {
	if _, err := s.f.WriteAt(rec, s.off); err != nil {
		return fmt.Errorf("write-ahead log: write %s at %d: %w", s.path, s.off, err)
	}
	s.off += int64(len(rec))
	return nil
}

func (s *stageFile) close() error { return s.f.Close() }

// readStage replays the staging file beside db into fn when it was written
// in this boot (boot, non-empty) for segment seq; it reports whether it did.
func readStage(db, boot string, seq uint64, fn func(key string, val []byte)) (bool, error) {
	data, err := os.ReadFile(stageName(db))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read write-ahead log %s: %w", stageName(db), err)
	}
	if boot == "" || len(data) < stageHeader || !bytes.HasPrefix(data, []byte(stageMagic)) {
		return false, nil
	}
	n := int(data[len(stageMagic)])
	if len(stageMagic)+1+n+8 > stageHeader || string(data[len(stageMagic)+1:len(stageMagic)+1+n]) != boot ||
		binary.LittleEndian.Uint64(data[len(stageMagic)+1+n:]) != seq {
		return false, nil
	}
	readRecords(data[stageHeader:], seq, fn)
	return true, nil
}
