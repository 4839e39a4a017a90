package meta

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkQuota measures what quotas cost: creates, and creates (with
// open) each followed by a 4 KiB write as the file system does it
// (ReserveSpace, WriteChunk, Release), by 8 goroutines in
// directories under a parent without a quota ("none"), with one ("quota"),
// and with two nested ones ("nested"). Compare "none" with BenchmarkMeta's
// create on a build without quotas for the cost when a volume has none.
func BenchmarkQuota(b *testing.B) {
	for _, ec := range benchEngines() {
		if ec.name == "bolt" || ec.name == "etcd" {
			continue // bolt-delay and bolt-nosync show bolt; etcd is slow here
		}
		b.Run(ec.name, func(b *testing.B) {
			ctx := context.Background()
			var seq atomic.Int64
			for _, mode := range []string{"none", "quota", "nested"} {
				// A fresh volume per mode: the tikv mock never collects old
				// versions and slows down (until requests time out as
				// "region unavailable") as a volume's history grows.
				c := ec.newVolume(b)(b)
				top, _, err := c.Mkdir(ctx, RootIno, mode, 0o755, 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				parent := top
				if mode != "none" {
					if err := c.SetQuota(ctx, top, 1<<50, 1<<40); err != nil {
						b.Fatal(err)
					}
				}
				if mode == "nested" {
					if parent, _, err = c.Mkdir(ctx, top, "inner", 0o755, 0, 0); err != nil {
						b.Fatal(err)
					}
					if err := c.SetQuota(ctx, parent, 1<<50, 1<<40); err != nil {
						b.Fatal(err)
					}
				}
				for _, write := range []bool{false, true} {
					name := mode + "/create"
					if write {
						name += "+write4k"
					}
					b.Run(name, func(b *testing.B) {
						parallel8(b)
						defer reportCPU(b)()
						defer reportRPCs(b, ec)()
						b.RunParallel(func(pb *testing.PB) {
							d, _, err := c.Mkdir(ctx, parent, fmt.Sprintf("c%d", seq.Add(1)), 0o755, 0, 0)
							if err != nil {
								b.Error(err)
								return
							}
							i := 0
							for pb.Next() {
								i++
								var err error
								if !write {
									_, _, err = c.Mknod(ctx, d, fmt.Sprintf("f%d", i), 0o644, 0, 0, 0)
								} else {
									err = createWrite(ctx, c, d, fmt.Sprintf("f%d", i))
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						})
						b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
					})
				}
			}
		})
	}
}

// createWrite creates a file and writes 4 KiB to it as the file system does.
func createWrite(ctx context.Context, c *Client, d Ino, name string) error {
	f, _, err := c.Create(ctx, d, name, 0o644, 0, 0, 0)
	if err != nil {
		return err
	}
	if err := c.ReserveSpace(ctx, f, 4096); err != nil {
		return err
	}
	id, err := c.NewSliceID(ctx)
	if err != nil {
		return err
	}
	if err := c.WriteChunk(ctx, f, 0, Slice{ID: id, Size: 4096, Len: 4096}, time.Now()); err != nil {
		return err
	}
	return c.Release(ctx, f)
}
