package data

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// stalled is an object store whose puts hang once stall is closed, and
// fail once the test ends: a process killed now would never commit what
// it has buffered.
type stalled struct {
	storage.Store
	stall, end chan struct{}
}

func newStalled(t *testing.T, s storage.Store) *stalled {
	st := &stalled{Store: s, stall: make(chan struct{}), end: make(chan struct{})}
	t.Cleanup(func() { close(st.end) })
	return st
}

func (s *stalled) Put(ctx context.Context, key string, data []byte) error {
	select {
	case <-s.stall:
		<-s.end
		return errInjected
	default:
	}
	return s.Store.Put(ctx, key, data)
}

// crash abandons s as a killed process would: its journal stays as written,
// its lock is released, and nothing it does later reaches the journal. It
// returns the last segment and where its records end.
func crash(s *Store) (string, int64) {
	j := s.journal
	j.mu.Lock()
	defer j.mu.Unlock()
	last := j.segs[len(j.segs)-1]
	j.broken = errors.New("crashed (test)")
	j.cur.Close()
	j.lock.Close()
	return j.segPath(last.seq), last.size
}

func journalStore(t *testing.T, m meta.Meta, obj storage.Store, dir string, budget *Budget) *Store {
	t.Helper()
	cfg := quietConfig()
	cfg.JournalDir, cfg.Budget = dir, budget
	s, err := New(m, obj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readBack(t *testing.T, s *Store, m meta.Meta, ino meta.Ino) []byte {
	t.Helper()
	return readAll(t, s, m, ino)
}

// Writes acknowledged but not committed when the process died are
// committed by the next store from the journal, in order: over committed
// data, cut by a truncate, and a torn last record is ignored.
func TestJournalReplay(t *testing.T) {
	ctx := context.Background()
	m, ino := newBoltMeta(t)
	obj := storage.NewMem("journal")
	dir := t.TempDir()

	sa := newStalled(t, obj)
	a := journalStore(t, m, sa, dir, nil)
	if a.JournalIntact() {
		t.Fatal("a new journal directory reported intact: no earlier process journaled there")
	}
	f := a.Open(ino, 0)
	committed := pattern(10*page+100, 1)
	if _, err := f.WriteAt(ctx, committed, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	close(sa.stall)
	// Acknowledged, never committed: an overwrite, a write cut by a
	// truncate, and a write beyond the cut.
	over := pattern(3*page, 50)
	if _, err := f.WriteAt(ctx, over, page/2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(ctx, pattern(page, 90), 12*page); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(ctx, 12*page+10); err != nil {
		t.Fatal(err)
	}
	tail := pattern(2*page, 120)
	if _, err := f.WriteAt(ctx, tail, 14*page); err != nil {
		t.Fatal(err)
	}
	last, end := crash(a)
	// A record torn by the crash, right after the last whole one.
	lf, err := os.OpenFile(last, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := make([]byte, journalHeader+100)
	binary.LittleEndian.PutUint32(torn, journalMagic)
	torn[8] = recData
	binary.LittleEndian.PutUint32(torn[12:], 4096) // longer than what follows
	if _, err := lf.WriteAt(torn, end); err != nil {
		t.Fatal(err)
	}
	lf.Close()

	want := make([]byte, 16*page)
	copy(want, committed)
	copy(want[page/2:], over)
	copy(want[12*page:], pattern(10, 90))
	copy(want[14*page:], tail)

	b := journalStore(t, m, obj, dir, nil)
	if !b.JournalIntact() {
		t.Error("the journal of a killed process that journaled everything is not reported intact")
	}
	if got := readBack(t, b, m, ino); !bytes.Equal(got, want) {
		t.Fatalf("after replay: %d bytes, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing left to replay after a clean close.
	if segs, _ := filepath.Glob(filepath.Join(dir, "seg-*")); len(segs) != 0 {
		t.Errorf("segments left after a clean close: %v", segs)
	}
	c := journalStore(t, m, obj, dir, nil)
	defer c.Close(ctx)
	if c.JournalIntact() {
		t.Error("after a clean close the next store reports an intact journal; a server in between may have kept none")
	}
	if got := readBack(t, c, m, ino); !bytes.Equal(got, want) {
		t.Fatalf("after a clean restart: first difference at %d", firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The journal stays near the write-buffer budget however much is written
// without a flush, and a journal directory is refused to another volume.
func TestJournalBounded(t *testing.T) {
	ctx := context.Background()
	m, ino := newBoltMeta(t)
	obj := storage.NewMem("journal")
	dir := t.TempDir()
	budget := NewBudget(64*page, 64*page)
	s := journalStore(t, m, obj, dir, budget)
	defer func() {
		if t.Failed() {
			crash(s)
		}
	}()
	f := s.Open(ino, 0)
	want := pattern(1000*page, 3)
	var most int64
	for off := 0; off < len(want); off += 3 * page {
		end := min(off+3*page, len(want))
		if _, err := f.WriteAt(ctx, want[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
		s.journal.mu.Lock()
		most = max(most, s.journal.total)
		s.journal.mu.Unlock()
	}
	if limit := budget.bufLimit + 3*page + 2*journalHeader; most > limit {
		t.Errorf("the journal grew to %d bytes, over its bound %d", most, limit)
	}
	crash(s)
	// What is left to replay belongs to this volume alone.
	other, _ := newBoltMeta(t) // another volume (its own UUID)
	cfg := quietConfig()
	cfg.JournalDir = dir
	if _, err := New(other, obj, cfg); err == nil || !strings.Contains(err.Error(), "belongs to volume") {
		t.Fatalf("a journal directory of another volume: %v, want a refusal", err)
	}
	s2 := journalStore(t, m, obj, dir, budget)
	if got := readBack(t, s2, m, ino); !bytes.Equal(got, want) {
		t.Fatalf("after replay: first difference at %d of %d", firstDiff(got, want), len(want))
	}
	if err := s2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("1000 pages written unflushed with a %d-byte buffer budget: the journal held at most %d bytes", budget.bufLimit, most)

}
