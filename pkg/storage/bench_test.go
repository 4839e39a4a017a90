package storage

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

// benchStores opens the real backends: a file store (with fsync, the
// default) in a temp dir and the shared Ceph cluster's pool.
func benchStores(b *testing.B) map[string]Store {
	f, err := Open(context.Background(), "file://"+b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	c := testenv.SharedCeph(b)
	r, err := Open(context.Background(), c.URL("namespace=bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return map[string]Store{"file": f, "rados": r}
}

var benchSizes = []struct {
	name string
	size int
}{{"4KiB", 4 << 10}, {"4MiB", 4 << 20}}

func BenchmarkPutGet(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"file", "rados"} {
		for _, sz := range benchSizes {
			data := make([]byte, sz.size)
			for i := range data {
				data[i] = byte(i)
			}
			b.Run(fmt.Sprintf("put/%s/%s", name, sz.name), func(b *testing.B) {
				s := benchStores(b)[name]
				b.SetBytes(int64(sz.size))
				for i := 0; b.Loop(); i++ {
					if err := s.Put(ctx, fmt.Sprintf("bench/%s/%d", sz.name, i%256), data); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("get/%s/%s", name, sz.name), func(b *testing.B) {
				s := benchStores(b)[name]
				for i := 0; i < 64; i++ {
					if err := s.Put(ctx, fmt.Sprintf("bench/%s/%d", sz.name, i), data); err != nil {
						b.Fatal(err)
					}
				}
				p := make([]byte, sz.size)
				b.SetBytes(int64(sz.size))
				for i := 0; b.Loop(); i++ {
					if n, err := s.Get(ctx, fmt.Sprintf("bench/%s/%d", sz.name, i%64), 0, p); err != nil || n != sz.size {
						b.Fatal(n, err)
					}
				}
			})
		}
	}
}

// BenchmarkFileSmallPut puts new small objects (each its own key, as
// podfs's flushes do) into a file store with fsync, with the journal and
// without, from 1 and 8 goroutines. The timer includes Close, which spills
// what the journal still holds: ns/op is sustained, not buffered; put-ns/op
// is until the last Put returned, what the writers waited for.
func BenchmarkFileSmallPut(b *testing.B) {
	ctx := context.Background()
	for _, size := range []int{4 << 10, 128 << 10} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i)
		}
		for _, journal := range []bool{true, false} {
			for _, par := range []int{1, 8} {
				name := fmt.Sprintf("%dKiB/journal=%v/goroutines=%d", size>>10, journal, par)
				b.Run(name, func(b *testing.B) {
					s, err := NewFile(b.TempDir(), FileOptions{Fsync: true, NoJournal: !journal})
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(size))
					b.ResetTimer()
					var next atomic.Int64
					var wg sync.WaitGroup
					for range par {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for {
								i := next.Add(1) - 1
								if i >= int64(b.N) {
									return
								}
								if err := s.Put(ctx, fmt.Sprintf("chunks/%d/%d", i%256, i), data); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "put-ns/op")
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
				})
			}
		}
	}
}
