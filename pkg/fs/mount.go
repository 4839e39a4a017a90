// Package fs serves a podfs volume through FUSE: a go-fuse/v2 RawFileSystem
// whose node ids are podfs inode numbers, over pkg/meta and pkg/data.
package fs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"podfs.io/podfs/pkg/data"
)

// Config says what to mount where and how.
type Config struct {
	MetaURL string
	// StorageURL overrides the storage URL recorded in the volume's settings
	// (a sidecar may reach the same pool through other monitors or
	// credentials); "" = use the recorded one.
	StorageURL string
	MountPoint string
	SubDir     string // serve this directory of the volume as the root; "" = the whole volume
	ReadOnly   bool
	// Options are mount options as a user writes them after -o, e.g.
	// "allow_other", "attr_timeout=1s"; unknown ones are an error.
	Options      []string
	AttrTimeout  time.Duration
	EntryTimeout time.Duration
	Data         data.Config
	MetricsAddr  string // serve Prometheus metrics here; "" = none
	Logger       *slog.Logger
}

// Mount is a served podfs mount.
type Mount struct{}

// New mounts the volume and returns once the kernel serves the mount point. A
// dead mount left at the mount point by a crashed process is cleared first.
func New(ctx context.Context, cfg Config) (*Mount, error) {
	return nil, errors.New("fs: not implemented")
}

// Unmount flushes buffered data, commits slices, closes the metadata session
// and unmounts (lazily when busy). It is safe to call more than once.
func (m *Mount) Unmount(ctx context.Context) error { return nil }

// Wait blocks until the mount ends (unmounted by anyone) and returns why, if not cleanly.
func (m *Mount) Wait() error { return nil }
