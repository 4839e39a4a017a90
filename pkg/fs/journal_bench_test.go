package fs

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/meta"
)

// BenchmarkJournalFUSEWrite writes 512 MiB through a real FUSE mount in
// 1 MiB writes and fsyncs, with and without the write journal a sidecar
// on an ordinary node keeps: the journal's cost to a sequential writer.
// The volume is bolt + file://, whose metadata commits syncfs the store's
// file system: a journal on that same file system ("journal-samefs") is
// then written to disk too, one on another ("journal-tmpfs", /dev/shm)
// stays in memory as on a node whose object store is not a local disk.
func BenchmarkJournalFUSEWrite(b *testing.B) {
	testenv.RequireRoot(b)
	const total, io = 512 << 20, 1 << 20
	payload := make([]byte, io)
	for i := range payload {
		payload[i] = byte(i*13 + i>>10)
	}
	for _, journal := range []string{"journal-samefs", "journal-tmpfs", "plain"} {
		b.Run(journal, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			metaURL := "bolt://" + filepath.Join(dir, "meta.db")
			m, err := meta.Open(ctx, metaURL, meta.Options{})
			if err != nil {
				b.Fatal(err)
			}
			err = m.Init(ctx, meta.Format{Name: "bench", UUID: "00000000-0000-4000-8000-0000000000c1", BlockSize: 4 << 20,
				Storage: "file://" + filepath.Join(dir, "data"), CreatedAt: time.Now(), Version: meta.FormatVersion})
			m.Close(ctx)
			if err != nil {
				b.Fatal(err)
			}
			mp := filepath.Join(dir, "mnt")
			if err := os.Mkdir(mp, 0o755); err != nil {
				b.Fatal(err)
			}
			cfg := Config{MetaURL: metaURL, MountPoint: mp, Logger: slog.New(slog.DiscardHandler)}
			switch journal {
			case "journal-samefs":
				cfg.Data = data.Config{JournalDir: filepath.Join(dir, "journal")}
			case "journal-tmpfs":
				jd, err := os.MkdirTemp("/dev/shm", "podfs-journal-")
				if err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(jd)
				cfg.Data = data.Config{JournalDir: jd}
			}
			mnt, err := New(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := mnt.Unmount(ctx); err != nil {
					b.Error(err)
				}
			}()
			b.SetBytes(total)
			i := 0
			for b.Loop() {
				f, err := os.Create(filepath.Join(mp, "f"+string(rune('a'+i%26))))
				if err != nil {
					b.Fatal(err)
				}
				for off := 0; off < total; off += io {
					if _, err := f.Write(payload); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				if err := f.Close(); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
