// Package storage keeps podfs's data blocks in an object store: a local
// directory (file://, the default), Ceph RADOS (rados://) or memory (mem://,
// for tests). Open reads a storage URL (Forms lists them). A RADOS user's
// key comes from a file, keyring= or keyfile=, as a mounted Secret gives it;
// key= in the URL is kept for compatibility but stores the key wherever the
// URL goes. Errors show URLs redacted (package redact) and name the user and
// the key's source when cephx refuses it.
package storage

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned (wrapped) for an object that does not exist.
var ErrNotFound = errors.New("object not found")

// Object describes one stored object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store is an object store. Keys are slash-separated paths without a leading slash.
type Store interface {
	// Put stores data under key, replacing any object there; when it returns
	// nil the object is durable.
	Put(ctx context.Context, key string, data []byte) error
	// Get reads up to len(p) bytes of key starting at off, returning how many it
	// read; a read past the end returns what is there and no error.
	Get(ctx context.Context, key string, off int64, p []byte) (int, error)
	// Delete removes key; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	Head(ctx context.Context, key string) (Object, error)
	// List returns up to limit objects whose keys start with prefix and sort
	// after marker, in key order.
	List(ctx context.Context, prefix, marker string, limit int) ([]Object, error)
	// String names the store for logs and errors (never with credentials).
	String() string
	Close() error
}

// IsLocal reports whether s keeps its objects on this machine's own disks,
// where the kernel's page cache already caches and reads ahead: the data
// layer then reads objects directly instead of through its own block cache.
// Wrappers (metrics, fault injection) pass it on with an Unwrap() Store method.
func IsLocal(s Store) bool {
	if l, ok := s.(interface{ Local() bool }); ok {
		return l.Local()
	}
	if u, ok := s.(interface{ Unwrap() Store }); ok {
		return IsLocal(u.Unwrap())
	}
	return false
}

// Prefetcher is a store that can be told which objects will be read soon,
// so it starts loading them without the caller waiting or copying.
type Prefetcher interface {
	// Prefetch hints that bytes [off, off+n) of key will be read soon. It
	// returns once the hint is given (not when the bytes are loaded) and
	// ignores missing objects: it is only a hint.
	Prefetch(key string, off, n int64)
}

// AsPrefetcher returns the Prefetcher of s or of a store it wraps (through
// an Unwrap() Store method), or nil.
func AsPrefetcher(s Store) Prefetcher {
	if p, ok := s.(Prefetcher); ok {
		return p
	}
	if u, ok := s.(interface{ Unwrap() Store }); ok {
		return AsPrefetcher(u.Unwrap())
	}
	return nil
}
