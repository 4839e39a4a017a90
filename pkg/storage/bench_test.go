package storage

import (
	"context"
	"fmt"
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
