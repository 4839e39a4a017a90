package meta

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// Benchmarks run the namespace operations with 8 goroutines (RunParallel
// with the parallelism scaled to 8 on this machine's cores), per engine.
// bolt makes every commit durable before answering (--sync-delay 0);
// bolt-delay answers at once and syncs within DefaultSyncDelay, as mounts
// do by default.
func benchEngines() []engineCase {
	bolt := func(name string, opt kv.BoltOptions) engineCase {
		return engineCase{name: name, newVolume: func(t testing.TB) func(testing.TB) *Client {
			path := filepath.Join(t.TempDir(), "meta.db")
			return func(t testing.TB) *Client {
				e, err := kv.OpenBolt(path, opt)
				if err != nil {
					t.Fatal(err)
				}
				return startClient(t, e)
			}
		}}
	}
	return append([]engineCase{bolt("bolt", kv.BoltOptions{}), bolt("bolt-delay", kv.BoltOptions{SyncDelay: DefaultSyncDelay}), {name: "bolt-nosync", newVolume: func(t testing.TB) func(testing.TB) *Client {
		// The CPU ceiling of the bolt path: no fsync (a crash loses recent
		// transactions), so the disk's state does not hide the code's cost.
		path := filepath.Join(t.TempDir(), "meta.db")
		return func(t testing.TB) *Client {
			e, err := kv.OpenBolt(path, kv.BoltOptions{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			return startClient(t, e)
		}
	}}}, benchNetEngines()...)
}

func parallel8(b *testing.B) {
	p := (8 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	b.SetParallelism(p)
}

// reportCPU reports the process's CPU time (user and system, every
// goroutine: the engine's, and the in-process TiKV mock's) per operation,
// a figure that other work on a shared machine disturbs less than ops/s.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op") }
}

// reportRPCs reports the requests the engine's store served per operation
// (the tikv mock's: how many round trips a create costs on a real cluster),
// in all and by type in the log, and the keys they named: the mock's work,
// a figure that load on the machine does not disturb.
func reportRPCs(b *testing.B, ec engineCase) func() {
	if ec.rpcs == nil || ec.rpcs.Load() == nil {
		return func() {}
	}
	r := ec.rpcs.Load()
	before, keys := r.Snapshot(), r.Keys()
	return func() {
		var n int64
		for name, v := range r.Snapshot() {
			n += v - before[name]
		}
		b.ReportMetric(float64(n)/float64(b.N), "rpc/op")
		b.ReportMetric(float64(r.Keys()-keys)/float64(b.N), "keys/op")
		b.Logf("requests per op: %s", r.Since(before, b.N))
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkMeta(b *testing.B) {
	for _, ec := range benchEngines() {
		b.Run(ec.name, func(b *testing.B) {
			c := ec.newVolume(b)(b)
			ctx := context.Background()
			var seq atomic.Int64

			b.Run("create", func(b *testing.B) {
				parallel8(b)
				b.ReportAllocs()
				defer reportCPU(b)()
				defer reportRPCs(b, ec)()
				b.RunParallel(func(pb *testing.PB) {
					// One directory per goroutine: the kernel serializes
					// creates in one directory of one mount anyway.
					d, _, err := c.Mkdir(ctx, RootIno, fmt.Sprintf("c%d", seq.Add(1)), 0o755, 0, 0)
					if err != nil {
						b.Error(err)
						return
					}
					i := 0
					for pb.Next() {
						i++
						if _, _, err := c.Mknod(ctx, d, fmt.Sprintf("f%d", i), 0o644, 0, 0, 0); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})

			// One goroutine: the latency of one create, what a FUSE file
			// system serving one writer waits for.
			b.Run("create1", func(b *testing.B) {
				b.ReportAllocs()
				defer reportCPU(b)()
				defer reportRPCs(b, ec)()
				d, _, err := c.Mkdir(ctx, RootIno, fmt.Sprintf("c%d", seq.Add(1)), 0o755, 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; b.Loop(); i++ {
					if _, _, err := c.Mknod(ctx, d, fmt.Sprintf("f%d", i), 0o644, 0, 0, 0); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})

			// The directory of 10k files that lookup, getattr and readdir10k
			// read, made by the first of them that runs (none when -bench
			// selects only creates: they need not wait for it).
			const files = 10000
			var (
				d       Ino
				inos    []Ino
				setup   sync.Once
				setupOK bool
			)
			fill := func(b *testing.B) {
				setup.Do(func() {
					var err error
					if d, _, err = c.Mkdir(ctx, RootIno, "lookup", 0o755, 0, 0); err != nil {
						b.Error(err)
						return
					}
					inos = make([]Ino, files)
					for i := range files {
						if inos[i], _, err = c.Mknod(ctx, d, fmt.Sprintf("f%05d", i), 0o644, 0, 0, 0); err != nil {
							b.Error(err)
							return
						}
					}
					setupOK = true
				})
				if !setupOK {
					b.Fatal("the lookup directory could not be made")
				}
			}
			b.Run("lookup", func(b *testing.B) {
				fill(b)
				b.ResetTimer() // the first of them made the directory
				parallel8(b)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := int(seq.Add(1000))
					for pb.Next() {
						i++
						if _, _, err := c.Lookup(ctx, d, fmt.Sprintf("f%05d", i%files)); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
			b.Run("getattr", func(b *testing.B) {
				fill(b)
				b.ResetTimer() // the first of them made the directory
				parallel8(b)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := int(seq.Add(1000))
					for pb.Next() {
						i++
						if _, err := c.GetAttr(ctx, inos[i%files]); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
			b.Run("readdir10k", func(b *testing.B) {
				fill(b)
				b.ResetTimer() // the first of them made the directory
				parallel8(b)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						n, cursor := 0, ""
						for {
							es, err := c.Readdir(ctx, d, cursor, 1000)
							if err != nil {
								b.Error(err)
								return
							}
							if len(es) == 0 {
								break
							}
							n += len(es)
							cursor = es[len(es)-1].Name
						}
						if n != files {
							b.Errorf("readdir saw %d entries", n)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
			b.Run("rename", func(b *testing.B) {
				parallel8(b)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					g := seq.Add(1)
					rd, _, err := c.Mkdir(ctx, RootIno, fmt.Sprintf("r%d", g), 0o755, 0, 0)
					if err != nil {
						b.Error(err)
						return
					}
					if _, _, err := c.Mknod(ctx, rd, "a0", 0o644, 0, 0, 0); err != nil {
						b.Error(err)
						return
					}
					i := 0
					for pb.Next() {
						if err := c.Rename(ctx, rd, fmt.Sprintf("a%d", i), rd, fmt.Sprintf("a%d", i+1), 0); err != nil {
							b.Error(err)
							return
						}
						i++
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		})
	}
}
