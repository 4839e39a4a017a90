package data

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/storage"
)

const (
	benchTotal = 1 << 30 // bytes per pass
	benchBlock = 4 << 20
	benchIO    = 1 << 20 // application write/read size through the data layer
)

// heapPeak samples the live heap until stop is called and returns the peak.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

func clearStore(b *testing.B, s storage.Store) {
	ctx := context.Background()
	objs, err := s.List(ctx, "", "", 0)
	if err != nil {
		b.Fatal(err)
	}
	for _, o := range objs {
		if err := s.Delete(ctx, o.Key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSequential writes and reads 1 GiB on each backend: raw 4 MiB
// objects (one stream, and MaxUploads streams: all the backend can do) and
// through the data layer's own API in 1 MiB calls, in the same run.
// Reported: MB/s, and for the data layer the peak heap and write buffer.
func BenchmarkSequential(b *testing.B) {
	ctx := context.Background()
	cfg := Config{BlockSize: benchBlock, BufferSize: 128 << 20, CacheSize: 64 << 20, MaxUploads: 20,
		CompactSlices: -1, DeleteInterval: -1}
	payload := make([]byte, benchBlock)
	for i := range payload {
		payload[i] = byte(i*7 + i>>12)
	}
	for _, backend := range []string{"file", "rados"} {
		var obj storage.Store
		var err error
		switch backend {
		case "file":
			obj, err = storage.Open(ctx, "file://"+b.TempDir())
		case "rados":
			obj, err = storage.Open(ctx, testenv.SharedCeph(b).URL("namespace=benchseq"))
		}
		if err != nil {
			b.Fatal(err)
		}
		open := func(*testing.B) storage.Store { return obj }
		rawWrite := func(b *testing.B, streams int) {
			s := open(b)
			b.SetBytes(benchTotal)
			for b.Loop() {
				var wg sync.WaitGroup
				next := atomic.Int64{}
				for w := 0; w < streams; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1) - 1
							if i >= benchTotal/benchBlock {
								return
							}
							if err := s.Put(ctx, fmt.Sprintf("raw/%d", i), payload); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}
		}
		rawRead := func(b *testing.B, streams int) {
			s := open(b)
			b.SetBytes(benchTotal)
			for b.Loop() {
				var wg sync.WaitGroup
				next := atomic.Int64{}
				for w := 0; w < streams; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						p := make([]byte, benchBlock)
						for {
							i := next.Add(1) - 1
							if i >= benchTotal/benchBlock {
								return
							}
							if n, err := s.Get(ctx, fmt.Sprintf("raw/%d", i), 0, p); err != nil || n != benchBlock {
								b.Error(n, err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}
		}
		m, ino := newBoltMetaBS(b, benchBlock)
		written := false
		b.Run(backend+"/raw-write-1", func(b *testing.B) { rawWrite(b, 1) })
		b.Run(backend+"/raw-write-20", func(b *testing.B) { rawWrite(b, cfg.MaxUploads) })
		b.Run(backend+"/data-write", func(b *testing.B) {
			s := open(b)
			b.SetBytes(benchTotal)
			var peak uint64
			var st Stats
			for b.Loop() {
				runtime.GC()
				stop := heapPeak()
				d, err := New(m, s, cfg)
				if err != nil {
					b.Fatal(err)
				}
				f := d.Open(ino, 0)
				for off := int64(0); off < benchTotal; off += benchIO {
					if _, err := f.WriteAt(ctx, payload[off%benchBlock:off%benchBlock+benchIO], off); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Release(ctx); err != nil {
					b.Fatal(err)
				}
				d.Close(ctx)
				peak, st = stop(), d.Stats()
				written = true
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(st.PeakBuffer)/(1<<20), "peak-buffer-MiB")
		})
		b.Run(backend+"/raw-read-1", func(b *testing.B) { rawRead(b, 1) })
		b.Run(backend+"/raw-read-16", func(b *testing.B) { rawRead(b, 16) })
		b.Run(backend+"/data-read", func(b *testing.B) {
			s := open(b)
			if !written { // data-write filtered out: write the file untimed
				d, _ := New(m, s, cfg)
				f := d.Open(ino, 0)
				for off := int64(0); off < benchTotal; off += benchIO {
					if _, err := f.WriteAt(ctx, payload[off%benchBlock:off%benchBlock+benchIO], off); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Release(ctx); err != nil {
					b.Fatal(err)
				}
				d.Close(ctx)
			}
			b.SetBytes(benchTotal)
			p := make([]byte, benchIO)
			var peak uint64
			for b.Loop() {
				runtime.GC()
				stop := heapPeak()
				d, err := New(m, s, cfg) // a fresh cache each pass
				if err != nil {
					b.Fatal(err)
				}
				f := d.Open(ino, fileLength(b, m, ino))
				for off := int64(0); off < benchTotal; off += benchIO {
					if n, err := f.ReadAt(ctx, p, off); err != nil || n != benchIO {
						b.Fatal(n, err)
					}
				}
				f.Release(ctx)
				d.Close(ctx)
				peak = stop()
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
		clearStore(b, obj)
		obj.Close()
	}
}
