// Package data maps file byte ranges onto objects: chunks of 64 MiB, slices
// written per write session, and blocks of up to BlockSize stored one object
// each. It buffers writes, uploads blocks in the background, commits slices to
// metadata only after their blocks are durable, and serves reads through a
// block cache with readahead.
package data

import (
	"context"
	"errors"
	"log/slog"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// Config tunes the data layer. Zero values take defaults.
type Config struct {
	BlockSize    int    // bytes per block object; default 4 MiB (from the volume's Format)
	BufferSize   int64  // memory for all write buffers together; default 300 MiB
	MaxUploads   int    // concurrent block uploads; default 20
	CacheSize    int64  // in-memory block cache; default 256 MiB
	CacheDir     string // optional local disk cache; "" = none
	CacheDirSize int64  // bound of the disk cache; default 10 GiB
	Readahead    int64  // sequential readahead window in bytes; default 16 MiB
	MaxRetries   int    // retries of a failing object request before EIO; default 10
	Logger       *slog.Logger
}

// Store is the data layer of one mounted volume.
type Store struct{}

// New starts the data layer over m and obj.
func New(m meta.Meta, obj storage.Store, cfg Config) (*Store, error) {
	return nil, errors.New("data: not implemented")
}

// Open returns the shared handle of ino (one per inode, reference counted),
// with size the file's current length from metadata.
func (s *Store) Open(ino meta.Ino, size uint64) *File { return nil }

// Close flushes every file and stops background work.
func (s *Store) Close(ctx context.Context) error { return nil }

// File is the data of one inode, shared by all its open handles in this process.
type File struct{}

// ReadAt reads at off, seeing this process's own buffered writes; it returns
// fewer bytes only at the end of the file.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) { return 0, nil }

// WriteAt buffers p at off; full blocks upload in the background.
func (f *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) { return 0, nil }

// Flush uploads what is buffered and commits its slices to metadata.
func (f *File) Flush(ctx context.Context) error { return nil }

// Size is the file's length including buffered writes.
func (f *File) Size() uint64 { return 0 }

// Truncate drops buffered data and cached slice lists beyond size; the caller
// has already changed the length in metadata.
func (f *File) Truncate(ctx context.Context, size uint64) error { return nil }

// Release drops one reference; the last one flushes and frees the handle.
func (f *File) Release(ctx context.Context) error { return nil }
