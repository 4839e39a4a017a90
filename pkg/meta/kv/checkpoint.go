package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// checkpointJob is a frozen memtable layer on its way into the bolt file,
// and the log segment holding the same writes, dropped once it is there.
type checkpointJob struct {
	layer *memtable
	seg   string
	seq   uint64
	done  chan struct{}
	// Set before done closes.
	err      error
	failedAt time.Time
}

// walBucket holds walKey: the number of the last log segment whose writes
// the bolt file holds, so recovery skips segments a crash kept after their
// checkpoint.
var walBucket, walKey = []byte("podfs-wal"), []byte("checkpointed")

// applyToBolt writes a layer (the writes of log segments up to seq) into the
// bolt file in one transaction, synced unless NoSync: the file stays a
// consistent checkpoint.
func (b *Bolt) applyToBolt(layer *memtable, seq uint64) error {
	err := b.db.Update(func(tx *bolt.Tx) error {
		wb, err := tx.CreateBucketIfNotExists(walBucket)
		if err != nil {
			return err
		}
		if err := wb.Put(walKey, binary.BigEndian.AppendUint64(nil, seq)); err != nil {
			return err
		}
		bk := tx.Bucket(boltBucket)
		layer.Ascend(func(e *memEntry) bool {
			if e.val == nil {
				err = bk.Delete([]byte(e.key))
			} else {
				err = bk.Put([]byte(e.key), e.val)
			}
			return err == nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("bolt: checkpoint into %s: %w", b.path, err)
	}
	return nil
}

// recover replays the write-ahead log segments a crash (or a failed close)
// left into the bolt file, removes them and returns the number of the next
// segment. Segments replay in order, each up to its first invalid record;
// only the last may end that way (a torn tail, never acknowledged) — an
// unsealed earlier one lost acknowledged writes, and opening refuses.
func (b *Bolt) recover() (uint64, error) {
	seqs, err := walSegments(b.path)
	if err != nil {
		return 0, fmt.Errorf("bolt: %w", err)
	}
	if _, err := os.Stat(spareName(b.path)); err == nil {
		b.spare = spareName(b.path)
	}
	os.Remove(spareName(b.path) + ".tmp") // an interrupted makeSpare
	var done uint64                       // segments already in the file
	if err := b.db.View(func(tx *bolt.Tx) error {
		if wb := tx.Bucket(walBucket); wb != nil {
			if v := wb.Get(walKey); len(v) == 8 {
				done = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("bolt: read checkpoint mark: %w", err)
	}
	if len(seqs) == 0 {
		return done + 1, nil
	}
	layer := newMemtable()
	for i, seq := range seqs {
		if seq <= done {
			continue
		}
		sealed, err := readSegment(walName(b.path, seq), seq, func(k string, v []byte) {
			layer.ReplaceOrInsert(&memEntry{key: k, val: v})
		})
		if err != nil {
			return 0, fmt.Errorf("bolt: %w", err)
		}
		if !sealed && i < len(seqs)-1 {
			return 0, fmt.Errorf("bolt: write-ahead log %s is damaged before its end, so committed transactions are lost; "+
				"move the %s.wal.* files aside to open the database without them", walName(b.path, seq), b.path)
		}
	}
	last := seqs[len(seqs)-1]
	// Records a crashed process of this boot answered but had not yet
	// written to the segment are in its staging file.
	if last > done {
		staged, err := readStage(b.path, b.boot, last, func(k string, v []byte) {
			layer.ReplaceOrInsert(&memEntry{key: k, val: v})
		})
		if err != nil {
			return 0, fmt.Errorf("bolt: %w", err)
		}
		if staged {
			// Their data, written by the crashed process too, may still
			// be in the page cache only: make it durable before them.
			syscall.Sync()
		}
	}
	if err := b.applyToBolt(layer, max(last, done)); err != nil {
		return 0, err
	}
	b.log.Info("replayed write-ahead log", "segments", len(seqs), "keys", layer.Len())
	for _, seq := range seqs {
		b.dropSegment(walName(b.path, seq))
	}
	os.Remove(stageName(b.path))
	return max(last, done) + 1, nil
}

func (b *Bolt) takeSpare() string {
	b.spareMu.Lock()
	defer b.spareMu.Unlock()
	s := b.spare
	b.spare = ""
	return s
}

// dropSegment disposes of a checkpointed segment: kept as the spare for the
// next new segment (its blocks are allocated and written, the cheapest to
// overwrite), or removed.
func (b *Bolt) dropSegment(path string) {
	b.spareMu.Lock()
	defer b.spareMu.Unlock()
	if b.spare == "" {
		if err := os.Rename(path, spareName(b.path)); err == nil {
			b.spare = spareName(b.path)
			return
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.log.Warn("remove checkpointed write-ahead log", "path", path, "err", err)
	}
}

// maybeCheckpoint freezes the memtable when it is large or old and hands
// it to the checkpointer, one at a time. When the memtable outgrows four
// times the limit while a checkpoint still runs, it waits for it: the
// writers are outrunning the disk.
func (b *Bolt) maybeCheckpoint() {
	if b.memBytes == 0 || b.failed != nil {
		return
	}
	var logged int64 // the flusher writes the segment of a lazy engine
	if b.lazy.on {
		logged = b.lazy.stage.off
	} else {
		logged = b.seg.off
	}
	if b.memBytes < b.opt.CheckpointBytes && logged < walSegmentSize && time.Since(b.memSince) < b.opt.CheckpointAge {
		return
	}
	if b.ckpt != nil {
		select {
		case <-b.ckpt.done:
		default:
			if b.memBytes < 4*b.opt.CheckpointBytes {
				return
			}
			<-b.ckpt.done
		}
		if b.ckpt.err != nil {
			// The layer is still frozen and its segment kept: try again,
			// once a second at most.
			if time.Since(b.ckpt.failedAt) < time.Second {
				return
			}
			b.ckpt = &checkpointJob{layer: b.ckpt.layer, seg: b.ckpt.seg, seq: b.ckpt.seq, done: make(chan struct{})}
			b.ckptJobs <- b.ckpt
			return
		}
		b.ckpt = nil
	}
	if err := b.freeze(); err != nil {
		b.failed = err
		b.log.Error("write-ahead log rotation failed: refusing writes", "err", err)
	}
}

// freeze seals the current segment, starts the next one, and moves the
// active layer to frozen for the checkpointer.
func (b *Bolt) freeze() error {
	// Recovery refuses a log whose earlier segment lost records: a lazy
	// one gets every staged record before its seal.
	if err := b.lazy.drain(b.seg); err != nil {
		return fmt.Errorf("bolt: %w", err)
	}
	seal := make([]byte, walHeader)
	sealRecord(seal, b.seg.seq)
	if err := b.seg.append(seal); err != nil {
		return fmt.Errorf("bolt: %w", err)
	}
	next, err := createSegment(b.path, b.seg.seq+1, b.takeSpare(), b.opt)
	if err != nil {
		return fmt.Errorf("bolt: %w", err)
	}
	old := b.seg
	old.f.Close()
	b.seg = next
	if b.lazy.on {
		if err := b.lazy.stage.reset(next.seq); err != nil {
			return fmt.Errorf("bolt: %w", err)
		}
	}
	b.stateMu.Lock()
	cur := b.state.Load()
	// cur.active is the immutable clone of b.mem as of the last commit.
	b.state.Store(&memState{active: newMemtable(), frozen: cur.active, ckpts: cur.ckpts + 1})
	b.stateMu.Unlock()
	b.ckpt = &checkpointJob{layer: cur.active, seg: old.path, seq: old.seq, done: make(chan struct{})}
	b.mem, b.memBytes = newMemtable(), 0
	b.ckptJobs <- b.ckpt
	return nil
}

// checkpointer writes frozen layers into the bolt file, then drops them
// from the readers' state and their segment from the disk.
func (b *Bolt) checkpointer() {
	defer close(b.ckptExit)
	b.makeSpare()
	for job := range b.ckptJobs {
		b.ckptStarted.Add(1)
		job.err = b.applyToBolt(job.layer, job.seq)
		if job.err != nil {
			// A retry counts as another checkpoint for readers (ckpts).
			b.stateMu.Lock()
			cur := b.state.Load()
			b.state.Store(&memState{active: cur.active, frozen: cur.frozen, ckpts: cur.ckpts + 1})
			b.stateMu.Unlock()
			job.failedAt = time.Now()
			b.log.Error("checkpoint failed; the writes stay in the write-ahead log", "err", job.err)
			close(job.done)
			continue
		}
		b.stateMu.Lock()
		cur := b.state.Load()
		b.state.Store(&memState{active: cur.active, ckpts: cur.ckpts})
		b.stateMu.Unlock()
		b.dropSegment(job.seg)
		close(job.done)
	}
}

// finalCheckpoint (Close, the committer stopped) writes the active layer
// into the bolt file and retires the log segment: after a close the
// directory holds the bolt file and at most the spare segment.
func (b *Bolt) finalCheckpoint() error {
	// The barrier first: the bolt file must not refer to data a power loss
	// could still take.
	if err := b.lazy.drain(b.seg); err != nil {
		return fmt.Errorf("bolt: %w", err)
	}
	b.seg.f.Close()
	if b.lazy.on {
		b.lazy.stage.close()
	}
	if b.memBytes > 0 {
		b.ckptStarted.Add(1)
		if err := b.applyToBolt(b.mem, b.seg.seq); err != nil {
			return err
		}
	}
	// The segment stays as the spare for the next open (or goes).
	b.dropSegment(b.seg.path)
	os.Remove(stageName(b.path))
	if !b.opt.NoSync {
		return syncDir(filepath.Dir(b.path))
	}
	return nil
}
