package kv_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"podfs.io/podfs/pkg/meta/kv"
	"podfs.io/podfs/pkg/meta/kv/tikvmock"
)

// BenchmarkTiKVUpdate measures the mock cluster itself: two-key
// transactions from 8 goroutines, the floor under every podfs operation;
// rpc/op counts the requests each sends to the store (1: its 1PC prewrite).
func BenchmarkTiKVUpdate(b *testing.B) {
	cli, rpcs := tikvmock.NewCounted(b)
	e := kv.NewTiKV(cli, "tikv-mock", []byte("bench\x00"))
	before := rpcs.Snapshot()
	b.SetParallelism(8 / min(8, runtime.GOMAXPROCS(0)))
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		g := seq.Add(1) << 32
		for pb.Next() {
			g++
			if err := kv.Txn(context.Background(), e, func(tx kv.Tx) error {
				tx.Set(fmt.Appendf(nil, "a%016x", g), []byte("v"))
				tx.Set(fmt.Appendf(nil, "b%016x", g), []byte("v"))
				return nil
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	var n int64
	for name, c := range rpcs.Snapshot() {
		n += c - before[name]
	}
	b.ReportMetric(float64(n)/float64(b.N), "rpc/op")
}

// Transactions on the mock: reads see committed writes, a conflicting
// writer retries, deletes and scans across the prefix behave.
func TestTiKVEngine(t *testing.T) {
	ctx := context.Background()
	cli := tikvmock.New(t, []byte("t\x00m"))
	e := kv.NewTiKV(cli, "tikv-mock", []byte("t\x00"))
	other := kv.NewTiKV(cli, "tikv-mock-other", []byte("u\x00"))
	if err := kv.Txn(ctx, e, func(tx kv.Tx) error {
		for _, k := range []string{"a", "m", "n", "z"} {
			tx.Set([]byte(k), []byte("v"+k))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Txn(ctx, other, func(tx kv.Tx) error {
		tx.Set([]byte("a"), []byte("other volume"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A forced conflict: the first attempt's read is overwritten before it commits.
	attempts := 0
	if err := kv.Txn(ctx, e, func(tx kv.Tx) error {
		attempts++
		v, _ := tx.Get([]byte("m"))
		if attempts == 1 {
			if err := kv.Txn(ctx, e, func(tx2 kv.Tx) error {
				tx2.Set([]byte("m"), []byte("racer"))
				return nil
			}); err != nil {
				return err
			}
		}
		tx.Set([]byte("m"), append(v, '+'))
		tx.Delete([]byte("n"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if attempts != 2 {
		t.Fatalf("%d attempts, want 2 (one conflict)", attempts)
	}
	var got []string
	if err := e.View(ctx, func(tx kv.Tx) error {
		vals, err := tx.BatchGet([][]byte{[]byte("a"), []byte("nope"), []byte("m")})
		if err != nil {
			return err
		}
		if string(vals[0]) != "va" || vals[1] != nil || string(vals[2]) != "racer+" {
			return fmt.Errorf("batch get %q", vals)
		}
		return tx.Scan([]byte(""), nil, 0, func(k, v []byte) bool {
			got = append(got, string(k)+"="+string(v))
			return true
		})
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[a=va m=racer+ z=vz]" {
		t.Fatalf("scan %q", got)
	}
}

// Commits take one phase when every key is in one region (the mock runs
// TiKV's 1PC through tikvmock), two phases across regions; either way a
// snapshot taken before the commit keeps its view and one taken after it
// sees the commit.
func TestTiKVOnePC(t *testing.T) {
	ctx := context.Background()
	cli, rpcs := tikvmock.NewCounted(t, []byte("t\x00m"))
	e := kv.NewTiKV(cli, "tikv-mock", []byte("t\x00"))
	write := func(keys ...string) map[string]int64 {
		t.Helper()
		before := rpcs.Snapshot()
		if err := kv.Txn(ctx, e, func(tx kv.Tx) error {
			for _, k := range keys {
				tx.Set([]byte(k), []byte("v"+k))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		d := map[string]int64{}
		for name, n := range rpcs.Snapshot() {
			if n > before[name] {
				d[name] = n - before[name]
			}
		}
		return d
	}
	if d := write("a", "b", "c"); d["Prewrite"] != 1 || d["Commit"] != 0 {
		t.Errorf("one-region commit sent %v, want 1 prewrite and no commit (1PC)", d)
	}
	if d := write("a", "z"); d["Prewrite"] != 2 || d["Commit"] == 0 {
		t.Errorf("two-region commit sent %v, want 2 prewrites and a commit (2PC)", d)
	}

	if err := e.View(ctx, func(old kv.Tx) error {
		v, err := old.Get([]byte("b"))
		if err != nil || string(v) != "vb" {
			return fmt.Errorf("b = %q, %v before the commit", v, err)
		}
		if err := kv.Txn(ctx, e, func(tx kv.Tx) error {
			tx.Set([]byte("b"), []byte("new"))
			tx.Set([]byte("c"), []byte("new"))
			return nil
		}); err != nil {
			return err
		}
		vals, err := old.BatchGet([][]byte{[]byte("b"), []byte("c")})
		if err != nil || string(vals[0]) != "vb" || string(vals[1]) != "vc" {
			return fmt.Errorf("the older snapshot read %q, %v after the commit, want its own view", vals, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.View(ctx, func(tx kv.Tx) error {
		vals, err := tx.BatchGet([][]byte{[]byte("b"), []byte("c")})
		if err != nil || string(vals[0]) != "new" || string(vals[1]) != "new" {
			return fmt.Errorf("a snapshot after the commit read %q, %v", vals, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A limited scan fetches what it uses: a page of 1000 keys is one request.
func TestTiKVScanBatch(t *testing.T) {
	ctx := context.Background()
	cli, rpcs := tikvmock.NewCounted(t)
	e := kv.NewTiKV(cli, "tikv-mock", []byte("s\x00"))
	if err := kv.Txn(ctx, e, func(tx kv.Tx) error {
		for i := range 1500 {
			tx.Set(fmt.Appendf(nil, "k%05d", i), []byte("v"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ limit, want, scans int }{{1000, 1000, 1}, {1, 1, 1}, {0, 1500, 6}} {
		before := rpcs.Snapshot()["Scan"]
		n := 0
		if err := e.View(ctx, func(tx kv.Tx) error {
			return tx.Scan([]byte("k"), []byte("l"), tc.limit, func(_, _ []byte) bool { n++; return true })
		}); err != nil {
			t.Fatal(err)
		}
		if got := rpcs.Snapshot()["Scan"] - before; n != tc.want || got != int64(tc.scans) {
			t.Errorf("scan with limit %d: %d keys in %d requests, want %d in %d", tc.limit, n, got, tc.want, tc.scans)
		}
	}
}

// Contended read-modify-write through 1PC (one region) and 2PC (two) loses
// no update: conflicts surface at prewrite and Txn retries them.
func TestTiKVContention(t *testing.T) {
	ctx := context.Background()
	cli := tikvmock.New(t, []byte("c\x00m"))
	e := kv.NewTiKV(cli, "tikv-mock", []byte("c\x00"))
	incr := func(tx kv.Tx, k string) error {
		v, err := tx.Get([]byte(k))
		if err != nil {
			return err
		}
		n := 0
		if v != nil {
			if n, err = strconv.Atoi(string(v)); err != nil {
				return err
			}
		}
		tx.Set([]byte(k), []byte(strconv.Itoa(n+1)))
		return nil
	}
	const workers, rounds = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				// Odd workers also bump a key in the other region: two phases.
				if err := kv.Txn(ctx, e, func(tx kv.Tx) error {
					if err := incr(tx, "a"); err != nil || w%2 == 0 {
						return err
					}
					return incr(tx, "z")
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := e.View(ctx, func(tx kv.Tx) error {
		vals, err := tx.BatchGet([][]byte{[]byte("a"), []byte("z")})
		if err != nil {
			return err
		}
		if string(vals[0]) != strconv.Itoa(workers*rounds) || string(vals[1]) != strconv.Itoa(workers/2*rounds) {
			return fmt.Errorf("counters a=%s z=%s, want %d and %d", vals[0], vals[1], workers*rounds, workers/2*rounds)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
