package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// objectFor is the content tests store under key: its length and bytes
// follow from the key, so a reader can check any object it finds.
func objectFor(key string) []byte {
	h := fnv.New64a()
	h.Write([]byte(key))
	r := rand.New(rand.NewPCG(h.Sum64(), 7))
	sizes := []int{0, 100, 4 << 10, 60_000, 128 << 10, 300_000}
	b := make([]byte, sizes[r.IntN(len(sizes))])
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// checkObject fails unless key reads back as objectFor(key), byte-exact.
func checkObject(t *testing.T, s Store, key string) {
	t.Helper()
	want := objectFor(key)
	o, err := s.Head(context.Background(), key)
	if err != nil {
		t.Fatalf("head %s: %v", key, err)
	}
	if o.Size != int64(len(want)) {
		t.Fatalf("head %s: size %d, want %d", key, o.Size, len(want))
	}
	got := make([]byte, len(want)+10)
	n, err := s.Get(context.Background(), key, 0, got)
	if err != nil || !bytes.Equal(got[:n], want) {
		t.Fatalf("get %s: %d bytes (want %d), err %v, equal %v", key, n, len(want), err, bytes.Equal(got[:n], want))
	}
}

func openJournaled(t *testing.T, dir string, seg int64) *File {
	t.Helper()
	f, err := NewFile(dir, FileOptions{Fsync: true, JournalSegment: seg})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// poll calls done until it reports true, failing the test (with what done
// last said) after a minute.
func poll(t *testing.T, done func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, msg := done()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done after a minute: %s", msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spilled waits until the journal holds no object (all in their files).
func spilled(t *testing.T, f *File) {
	t.Helper()
	poll(t, func() (bool, string) {
		f.j.mu.Lock()
		defer f.j.mu.Unlock()
		return len(f.j.index) == 0, fmt.Sprintf("journal still holds %d objects", len(f.j.index))
	})
}

// Objects are served from the journal, then from their files once spilled;
// Close spills everything and a reopened store has them all.
func TestJournalSpillAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openJournaled(t, dir, minJournalSegment)
	var keys []string
	for i := range 60 {
		k := fmt.Sprintf("chunks/%d/%d", i%7, i)
		keys = append(keys, k)
		if err := f.Put(ctx, k, objectFor(k)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		checkObject(t, f, k)
	}
	if err := f.Delete(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	spilled(t, f)
	for _, k := range keys[1:] {
		checkObject(t, f, k)
		if _, err := os.Stat(f.path(k)); err != nil {
			t.Fatalf("spilled object has no file: %v", err)
		}
	}
	if _, err := f.Head(ctx, keys[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted object: %v", err)
	}
	// A replaced object, and one put again after its delete.
	if err := f.Put(ctx, keys[1], []byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := f.Put(ctx, keys[0], objectFor(keys[0])); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openJournaled(t, dir, minJournalSegment)
	defer f.Close()
	if len(f.j.index) != 0 {
		t.Fatalf("closed store reopened with %d journaled objects", len(f.j.index))
	}
	checkObject(t, f, keys[0])
	for _, k := range keys[2:] {
		checkObject(t, f, k)
	}
	p := make([]byte, 10)
	if n, err := f.Get(ctx, keys[1], 0, p); err != nil || string(p[:n]) != "new" {
		t.Fatalf("replaced object reads %q, %v", p[:n], err)
	}
	objs, err := f.List(ctx, "", "", 0)
	if err != nil || len(objs) != len(keys) {
		t.Fatalf("list: %d objects, %v; want %d", len(objs), err, len(keys))
	}
}

// A Put of a large object (past the journal) of a key the journal still
// holds waits for it, so the spiller cannot overwrite it with the older one.
func TestJournalLargePutAfterSmall(t *testing.T) {
	ctx := context.Background()
	f := openJournaled(t, t.TempDir(), 0)
	defer f.Close()
	if err := f.Put(ctx, "k", []byte("small")); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("B"), directMin)
	if err := f.Put(ctx, "k", big); err != nil {
		t.Fatal(err)
	}
	spilled(t, f)
	got := make([]byte, len(big))
	if n, err := f.Get(ctx, "k", 0, got); err != nil || n != len(big) || !bytes.Equal(got, big) {
		t.Fatalf("large object after small one: %d bytes, %v", n, err)
	}
}

// Readers see the right bytes while objects move from the journal to their
// files and segments retire and are reused under them (run with -race).
func TestJournalReadsDuringSpill(t *testing.T) {
	ctx := context.Background()
	f := openJournaled(t, t.TempDir(), minJournalSegment)
	defer f.Close()
	var (
		mu    sync.Mutex
		acked []string
	)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				k := fmt.Sprintf("w%d/%03d", w, i)
				if err := f.Put(ctx, k, objectFor(k)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				n := len(acked)
				var k string
				if n > 0 {
					k = acked[rng.IntN(n)]
				}
				mu.Unlock()
				if k == "" {
					continue
				}
				want := objectFor(k)
				got := make([]byte, len(want))
				if m, err := f.Get(ctx, k, 0, got); err != nil || m != len(want) || !bytes.Equal(got, want) {
					t.Errorf("get %s during spill: %d bytes, %v", k, m, err)
					return
				}
				prefix := k[:3]
				objs, err := f.List(ctx, prefix, "", 0)
				if err != nil {
					t.Error(err)
					return
				}
				found := false
				for _, o := range objs {
					if o.Key == k {
						found = o.Size == int64(len(want))
					}
				}
				if !found {
					t.Errorf("list %s during spill misses %s (or its size)", prefix, k)
					return
				}
			}
		}()
	}
	wg.Wait()
	spilled(t, f)
	close(stop)
	readers.Wait()
	for _, k := range acked {
		checkObject(t, f, k)
	}
}

// writeSegment lays down segment file seg-n holding segment seq with the
// given records, each from its own write but for those marked batch -1,
// which were written with the record before them; sealed or not.
func writeSegment(t *testing.T, dir string, n int, seq uint64, recs []record, sealed bool) string {
	t.Helper()
	jd := filepath.Join(dir, journalDir)
	if err := os.MkdirAll(jd, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(jd, fmt.Sprintf("seg-%d", n))
	if err := zeroFile(path, minJournalSegment); err != nil {
		t.Fatal(err)
	}
	s, err := openSeg(path, seq, minJournalSegment)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.setHeader(seq, jActive); err != nil {
		t.Fatal(err)
	}
	batch := s.off
	for _, r := range recs {
		if r.batch != -1 {
			batch = s.off
		}
		b := blockBuf(recordLen(r.key, len(r.data)))
		encodeRecord(b, r.kind, seq, batch, r.key, r.data)
		if err := s.writeAt(b, s.off); err != nil {
			t.Fatal(err)
		}
		s.off += int64(len(b))
	}
	if sealed {
		if err := s.seal(); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// damage flips a byte of the record at off (a block offset) in path.
func damage(t *testing.T, path string, off int64) {
	t.Helper()
	flipByte(t, path, off+jRecHeader+1)
}

// flipByte inverts the byte at off in path.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func put(key string) record { return record{kind: jPut, key: key, data: objectFor(key)} }

func TestJournalReplay(t *testing.T) {
	ctx := context.Background()
	recOff := func(keys ...string) int64 { // offset of the record after keys'
		off := int64(jBlock)
		for _, k := range keys {
			off += int64(recordLen(k, len(objectFor(k))))
		}
		return off
	}
	t.Run("torn tail ignored", func(t *testing.T) {
		dir := t.TempDir()
		writeSegment(t, dir, 0, 5, []record{put("a/1"), put("a/2")}, true)
		p := writeSegment(t, dir, 1, 6, []record{put("b/1"), put("b/2"), put("b/3")}, false)
		damage(t, p, recOff("b/1", "b/2")) // the last write, torn
		f := openJournaled(t, dir, 0)
		defer f.Close()
		for _, k := range []string{"a/1", "a/2", "b/1", "b/2"} {
			checkObject(t, f, k)
		}
		if _, err := f.Head(ctx, "b/3"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("torn record's object: %v, want not found", err)
		}
		spilled(t, f)
		for _, k := range []string{"a/1", "a/2", "b/1", "b/2"} {
			checkObject(t, f, k)
		}
	})
	for _, tc := range []struct {
		name    string
		layout  func(dir string) (damaged string)
		wantErr bool
	}{
		{"damage before acknowledged records refused", func(dir string) string {
			p := writeSegment(t, dir, 0, 6, []record{put("b/1"), put("b/2"), put("b/3")}, false)
			damage(t, p, recOff("b/1"))
			return p
		}, true},
		{"damaged header refused", func(dir string) string {
			writeSegment(t, dir, 0, 5, []record{put("a/1")}, true)
			p := writeSegment(t, dir, 1, 6, []record{put("b/1")}, false)
			flipByte(t, p, 9) // in the header's seq: its checksum fails
			return p
		}, true},
		{"damaged middle segment refused", func(dir string) string {
			writeSegment(t, dir, 0, 5, []record{put("a/1")}, true)
			p := writeSegment(t, dir, 1, 6, []record{put("b/1"), put("b/2")}, true)
			writeSegment(t, dir, 2, 7, []record{put("c/1")}, false)
			damage(t, p, recOff("b/1"))
			return p
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := tc.layout(dir)
			_, err := NewFile(dir, FileOptions{Fsync: true})
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("open: %v, want an error naming %s as damaged", err, p)
			}
			t.Log(err)
		})
	}
	t.Run("torn header write ignored", func(t *testing.T) {
		// A header write torn while the file became a segment: no record
		// follows it (setHeader zeroes the first record's block first).
		dir := t.TempDir()
		writeSegment(t, dir, 0, 5, []record{put("a/1")}, false)
		jd := filepath.Join(dir, journalDir)
		p := filepath.Join(jd, "seg-1")
		if err := zeroFile(p, minJournalSegment); err != nil {
			t.Fatal(err)
		}
		hdr := segHeader(6, jActive)
		fh, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fh.WriteAt(hdr[:jSegHeader-3], 0) // the state byte and more missing
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		f := openJournaled(t, dir, 0)
		defer f.Close()
		checkObject(t, f, "a/1")
	})
	t.Run("torn header of a retirement", func(t *testing.T) {
		// Retiring wrote the seal over the first record, then the header
		// write was torn: the file holds nothing, and its seq stays used.
		dir := t.TempDir()
		p := writeSegment(t, dir, 0, 7, []record{put("r/1"), put("r/2")}, true)
		s, err := openSeg(p, 7, minJournalSegment)
		if err != nil {
			t.Fatal(err)
		}
		seal := blockBuf(jBlock)
		encodeRecord(seal, jSeal, 7, jBlock, "", nil)
		if err := s.writeAt(seal, jBlock); err != nil {
			t.Fatal(err)
		}
		s.close()
		flipByte(t, p, 9) // in the header's seq
		f := openJournaled(t, dir, 0)
		defer f.Close()
		if f.j.replayed != 0 {
			t.Fatalf("%d objects replayed from a retired segment", f.j.replayed)
		}
		if f.j.seq < 7 {
			t.Fatalf("last seq %d after a retired segment 7", f.j.seq)
		}
		if err := f.Put(ctx, "r/3", objectFor("r/3")); err != nil {
			t.Fatal(err)
		}
		checkObject(t, f, "r/3")
	})
	t.Run("torn write ignored whole", func(t *testing.T) {
		// The second write carried b/2 and b/3; b/2 did not reach the disk.
		dir := t.TempDir()
		later := put("b/3")
		later.batch = -1
		p := writeSegment(t, dir, 0, 6, []record{put("b/1"), put("b/2"), later}, false)
		damage(t, p, recOff("b/1"))
		f := openJournaled(t, dir, 0)
		defer f.Close()
		checkObject(t, f, "b/1")
		for _, k := range []string{"b/2", "b/3"} {
			if _, err := f.Head(ctx, k); !errors.Is(err, ErrNotFound) {
				t.Fatalf("object of a torn write: %v, want not found", err)
			}
		}
	})
	t.Run("tombstone keeps an object deleted", func(t *testing.T) {
		dir := t.TempDir()
		// The object was spilled before its delete was journaled.
		if err := os.MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "d", "1"), objectFor("d/1"), 0o644); err != nil {
			t.Fatal(err)
		}
		writeSegment(t, dir, 0, 9, []record{put("d/1"), put("d/2"), {kind: jDelete, key: "d/1"}}, false)
		f := openJournaled(t, dir, 0)
		defer f.Close()
		if _, err := f.Head(ctx, "d/1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted object after replay: %v", err)
		}
		spilled(t, f)
		if _, err := os.Stat(filepath.Join(dir, "d", "1")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("deleted object's file after spill: %v", err)
		}
		checkObject(t, f, "d/2")
	})
}

// Two stores never share a journal: the second is refused with the way
// out; a store without a journal spills what one left, and skips a
// journal another store holds.
func TestJournalOwnership(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openJournaled(t, dir, 0)
	defer a.Close()
	_, err := NewFile(dir, FileOptions{Fsync: true})
	if err == nil || !strings.Contains(err.Error(), "journal=false") {
		t.Fatalf("second journaled store on one directory: %v, want a refusal naming journal=false", err)
	}
	b, err := NewFile(dir, FileOptions{Fsync: true, NoJournal: true})
	if err != nil {
		t.Fatalf("store without a journal beside a journaled one: %v", err)
	}
	b.Close()
	if err := a.Put(ctx, "k/1", objectFor("k/1")); err != nil {
		t.Fatal(err)
	}
	a.j.mu.Lock()
	held := a.j.index["k/1"] != nil
	a.j.mu.Unlock()
	if !held {
		t.Fatal("object not in the journal: the test needs it there")
	}
	// A crash: the journal is left as it is (the lock goes with the process).
	closeFD(a.j.lockFD)
	a.j.lockFD = -1
	c, err := NewFile(dir, FileOptions{Fsync: true, NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.j != nil {
		t.Fatal("journal=false store kept a journal")
	}
	checkObject(t, c, "k/1")
	if _, err := os.Stat(filepath.Join(dir, "k", "1")); err != nil {
		t.Fatalf("journal left behind not spilled: %v", err)
	}
}

func TestSharedURL(t *testing.T) {
	for in, want := range map[string]string{
		"file:///data":              "file:///data?journal=false",
		"file:///data?fsync=true":   "file:///data?fsync=true&journal=false",
		"file:///data?journal=true": "file:///data?journal=true",
		"rados://pool?mon_host=h:1": "rados://pool?mon_host=h:1",
		"mem://x":                   "mem://x",
	} {
		if got := SharedURL(in); got != want {
			t.Errorf("SharedURL(%q) = %q, want %q", in, got, want)
		}
	}
}
