package data

import (
	"context"
	"testing"

	"podfs.io/podfs/pkg/storage"
)

// BenchmarkJournalWrite measures what the write journal costs a sequential
// writer: 256 MiB in 1 MiB calls through the data layer onto a file store,
// committed at the end, with and without a journal.
func BenchmarkJournalWrite(b *testing.B) {
	const total, io = 256 << 20, 1 << 20
	ctx := context.Background()
	payload := make([]byte, io)
	for i := range payload {
		payload[i] = byte(i*7 + i>>12)
	}
	for _, journal := range []bool{false, true} {
		name := "plain"
		if journal {
			name = "journal"
		}
		b.Run(name, func(b *testing.B) {
			obj, err := storage.Open(ctx, "file://"+b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer obj.Close()
			m, ino := newBoltMetaBS(b, benchBlock)
			cfg := Config{BlockSize: benchBlock, BufferSize: 128 << 20, CacheSize: 64 << 20, CompactSlices: -1, DeleteInterval: -1}
			if journal {
				cfg.JournalDir = b.TempDir()
			}
			s, err := New(m, obj, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(ctx)
			b.SetBytes(total)
			for b.Loop() {
				f := s.Open(ino, 0)
				for off := int64(0); off < total; off += io {
					if _, err := f.WriteAt(ctx, payload, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
