package data

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta"
)

// JournalIntact reports whether an earlier process served this store's
// journal and New committed every write it had acknowledged: a server
// continuing after that process was killed owes the application no error
// for lost writes.
func (s *Store) JournalIntact() bool { return s.journalIntact }

// startJournal replays what an earlier process left in the journal
// directory, commits it, and starts a fresh journal.
func (s *Store) startJournal(ctx context.Context) error {
	dir := s.cfg.JournalDir
	// A stopping predecessor holds the lock until it has committed.
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	lock, old, intact, err := openJournalDir(lctx, dir, s.vol)
	cancel()
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	var last uint64
	if len(old) > 0 {
		last = old[len(old)-1]
		recs, files, err := readJournal(dir, old, s.log)
		if err == nil {
			err = s.replay(ctx, recs)
		}
		for _, f := range files {
			f.Close()
		}
		if err != nil {
			return fmt.Errorf("data: replay the write journal %s: %w", dir, err)
		}
		// Committed: the old segments are done with, oldest first (a
		// crash midway leaves a suffix, whose replay repeats the same
		// writes).
		for _, seq := range old {
			if err := removeFile(filepath.Join(dir, segName(seq))); err != nil {
				return fmt.Errorf("data: drop the replayed write journal: %w", err)
			}
		}
	}
	j, err := newJournal(dir, lock, last, s.budget.bufLimit, s.log)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	s.journal, s.journalIntact = j, intact
	ok = true
	return nil
}

// replay writes the journal's uncommitted writes again, per file in their
// order, and commits them.
func (s *Store) replay(ctx context.Context, recs []jrecord) error {
	done := map[uint64]bool{}
	for _, r := range recs {
		if r.kind == recDone {
			done[r.jid] = true
		}
	}
	var order []uint64
	ops := map[uint64][]jrecord{}
	for _, r := range recs {
		switch {
		case r.kind == recData && !done[r.jid]:
		case r.kind == recTruncate && len(ops[r.ino]) > 0:
			// Cuts the uncommitted writes before it; the length in
			// metadata was changed by the process that journaled it.
		default:
			continue
		}
		if _, ok := ops[r.ino]; !ok {
			order = append(order, r.ino)
		}
		ops[r.ino] = append(ops[r.ino], r)
	}
	var writes, bytes int64
	for _, ino := range order {
		a, err := s.m.GetAttr(ctx, meta.Ino(ino))
		if errors.Is(err, syscall.ENOENT) {
			s.log.Warn("write journal: the file of uncommitted writes is gone; dropping them", "ino", ino, "records", len(ops[ino]))
			continue
		}
		if err != nil {
			return fmt.Errorf("inode %d: %w", ino, err)
		}
		f := s.Open(meta.Ino(ino), a.Size)
		for _, r := range ops[ino] {
			if r.kind == recTruncate {
				err = f.Truncate(ctx, r.off)
			} else {
				var p []byte
				if p, err = r.load(); err == nil {
					_, err = f.WriteAt(ctx, p, int64(r.off))
				}
				writes++
				bytes += int64(r.n)
			}
			if err != nil {
				break
			}
		}
		if rerr := f.Release(ctx); err == nil {
			err = rerr
		}
		if err != nil {
			return fmt.Errorf("inode %d: %w", ino, err)
		}
	}
	if writes > 0 {
		s.log.Info("write journal: committed the writes a previous process acknowledged but had not committed",
			"writes", writes, "bytes", bytes, "files", len(order))
	}
	return nil
}
