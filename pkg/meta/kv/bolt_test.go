package kv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func openTestBolt(t *testing.T) (*Bolt, string) {
	path := filepath.Join(t.TempDir(), "meta.db")
	b, err := OpenBolt(path, BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, path
}

func TestBoltSecondOpenFailsFast(t *testing.T) {
	_, path := openTestBolt(t)
	start := time.Now()
	_, err := OpenBolt(path, BoltOptions{LockTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second open: %v", err)
	}
	t.Logf("refused after %v", time.Since(start))
}

// A failing transaction in a commit group is dropped alone; the others of the
// group commit, and later members see earlier members' writes.
func TestBoltGroupCommitIsolation(t *testing.T) {
	b, _ := openTestBolt(t)
	ctx := context.Background()
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Txn(ctx, b, func(tx Tx) error {
				tx.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("v"))
				if i%2 == 1 {
					return boom
				}
				// Read-modify-write of a shared counter: no lost updates.
				v, _ := tx.Get([]byte("n"))
				tx.Set([]byte("n"), []byte(fmt.Sprint(atoi(v)+1)))
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 1 && !errors.Is(err, boom) || i%2 == 0 && err != nil {
			t.Fatalf("txn %d: %v", i, err)
		}
	}
	n := 0
	err := b.View(ctx, func(tx Tx) error {
		v, _ := tx.Get([]byte("n"))
		if atoi(v) != 100 {
			return fmt.Errorf("counter %s, want 100", v)
		}
		return tx.Scan([]byte("k"), []byte("l"), 0, func(k, _ []byte) bool {
			if (k[3]-'0')%2 == 1 {
				t.Errorf("key %s of a failed transaction was written", k)
			}
			n++
			return true
		})
	})
	if err != nil || n != 100 {
		t.Fatalf("view: %v, %d keys", err, n)
	}
}

func atoi(b []byte) int {
	n := 0
	fmt.Sscan(string(b), &n)
	return n
}

// Scan inside a transaction merges its own writes and deletes with the store.
func TestOverlayScan(t *testing.T) {
	b, _ := openTestBolt(t)
	ctx := context.Background()
	if err := Txn(ctx, b, func(tx Tx) error {
		for _, k := range []string{"a1", "a3", "a5", "b"} {
			tx.Set([]byte(k), []byte(k))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := Txn(ctx, b, func(tx Tx) error {
		got = got[:0]
		tx.Set([]byte("a2"), []byte("x"))
		tx.Delete([]byte("a3"))
		tx.Set([]byte("a5"), []byte("y"))
		tx.Set([]byte("a0"), []byte("z"))
		return tx.Scan([]byte("a"), PrefixEnd([]byte("a")), 3, func(k, v []byte) bool {
			got = append(got, string(k)+"="+string(v))
			return true
		})
	}); err != nil {
		t.Fatal(err)
	}
	if want := "a0=z a1=a1 a2=x"; strings.Join(got, " ") != want {
		t.Fatalf("scan %q, want %q", got, want)
	}
	if err := b.View(ctx, func(tx Tx) error {
		tx.Set([]byte("x"), nil)
		return nil
	}); !errors.Is(err, errReadOnly) {
		t.Fatalf("write in view: %v", err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{{"a", "b"}, {"a\xff", "b"}, {"\xff\xff", ""}} {
		if got := string(PrefixEnd([]byte(tc.in))); got != tc.want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// BenchmarkBoltUpdate measures small transactions (3 writes, as a create)
// from 8 goroutines, syncing to disk.
func BenchmarkBoltUpdate(b *testing.B) {
	e, err := OpenBolt(filepath.Join(b.TempDir(), "m.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.SetParallelism(8 / min(8, runtime.GOMAXPROCS(0)))
	var seq atomic.Int64
	start := e.commits.Load()
	b.RunParallel(func(pb *testing.PB) {
		g := seq.Add(1) << 32
		for pb.Next() {
			g++
			err := Txn(context.Background(), e, func(tx Tx) error {
				k := fmt.Appendf(nil, "k%016x", g)
				if _, err := tx.Get(k); err != nil {
					return err
				}
				tx.Set(k, make([]byte, 60))
				tx.Set(append(k, 'e'), make([]byte, 9))
				tx.Set([]byte(fmt.Sprintf("u%d", g%64)), make([]byte, 16))
				return nil
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	b.ReportMetric(float64(b.N)/float64(e.commits.Load()-start), "txn/commit")
}

// BenchmarkFdatasync is the disk's price of durability, for reading the bolt
// figures: every bolt commit costs two of these, whatever its size.
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for i := 0; b.Loop(); i++ {
		if _, err := f.WriteAt(buf, int64(i%16)*4096); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoltCommit1 is one caller's small transaction, durable at once or
// with SyncDelay: the latency a single writer (one FUSE create) waits for.
func BenchmarkBoltCommit1(b *testing.B) {
	for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
		name := "durable"
		if delay > 0 {
			name = "delay=" + delay.String()
		}
		b.Run(name, func(b *testing.B) { benchCommit1(b, BoltOptions{SyncDelay: delay}) })
	}
}

// benchCommit1 commits one small transaction at a time: the latency a lone
// writer sees.
func benchCommit1(b *testing.B, opt BoltOptions) {
	e, err := OpenBolt(filepath.Join(b.TempDir(), "m.db"), opt)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	// Let the background preparation of the spare segment end first.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		e.spareMu.Lock()
		ready := e.spare != ""
		e.spareMu.Unlock()
		if ready || time.Now().After(deadline) {
			break
		}
	}
	for i := 0; b.Loop(); i++ {
		if err := e.Update(context.Background(), func(tx Tx) error {
			tx.Set(fmt.Appendf(nil, "k%016x", i), make([]byte, 60))
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
}
