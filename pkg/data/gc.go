package data

import (
	"context"
	"fmt"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// GCOptions tunes GCWith.
type GCOptions struct {
	Delete bool // delete the orphans found (else only report)
	// MinAge spares objects younger than this: a client may have uploaded them
	// for a slice it has not committed yet. GC uses 1 hour.
	MinAge    time.Duration
	BlockSize int // the volume's block size; 0 = read it from metadata
	MaxList   int // orphan keys to list in the report; default 1000
}

// GCReport is what GC found.
type GCReport struct {
	Objects     int   // block objects seen
	Bytes       int64 // their size
	Referenced  int   // objects some slice references
	Orphans     int   // objects no slice references (old enough)
	OrphanBytes int64
	Young       int      // unreferenced but younger than MinAge: left alone
	Foreign     int      // keys under chunks/ podfs did not write: left alone
	Deleted     int      // orphans deleted
	OrphanKeys  []string // the first MaxList orphans
}

func (r *GCReport) String() string {
	return fmt.Sprintf("%d objects (%d bytes): %d referenced, %d orphans (%d bytes, %d deleted), %d too young to judge, %d foreign",
		r.Objects, r.Bytes, r.Referenced, r.Orphans, r.OrphanBytes, r.Deleted, r.Young, r.Foreign)
}

// GC finds the block objects no slice references (left by crashed writers,
// failed commits, interrupted deletions) and, with delete, removes those
// older than an hour.
func GC(ctx context.Context, m meta.Meta, store storage.Store, delete bool) (*GCReport, error) {
	return GCWith(ctx, m, store, GCOptions{Delete: delete, MinAge: time.Hour})
}

func blockSizeOf(ctx context.Context, m meta.Meta, bs int) (int, error) {
	if bs > 0 {
		return bs, nil
	}
	f, err := m.Load(ctx)
	if err != nil {
		return 0, fmt.Errorf("load volume format: %w", err)
	}
	if f.BlockSize <= 0 {
		return 4 << 20, nil
	}
	return f.BlockSize, nil
}

// referenced maps every referenced slice id to its size.
func referenced(ctx context.Context, m meta.Meta) (map[uint64]uint32, error) {
	refs := map[uint64]uint32{}
	err := m.ListSlices(ctx, func(_ meta.Ino, s meta.Slice) error {
		if s.ID != 0 {
			refs[s.ID] = s.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list slices: %w", err)
	}
	return refs, nil
}

// listAll calls fn for every object under prefix, page by page.
func listAll(ctx context.Context, store storage.Store, prefix string, fn func(storage.Object) error) error {
	marker := ""
	for {
		objs, err := store.List(ctx, prefix, marker, 1000)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := fn(o); err != nil {
				return err
			}
		}
		if len(objs) < 1000 {
			return nil
		}
		marker = objs[len(objs)-1].Key
	}
}

// GCWith is GC with options.
func GCWith(ctx context.Context, m meta.Meta, store storage.Store, opts GCOptions) (*GCReport, error) {
	bs, err := blockSizeOf(ctx, m, opts.BlockSize)
	if err != nil {
		return nil, err
	}
	if opts.MaxList == 0 {
		opts.MaxList = 1000
	}
	// List objects first, then slices: an object uploaded and committed
	// between the two steps is then seen as referenced, never as an orphan.
	var objs []storage.Object
	if err := listAll(ctx, store, KeyPrefix, func(o storage.Object) error {
		objs = append(objs, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("gc: list objects in %s: %w", store, err)
	}
	refs, err := referenced(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if opts.Delete {
		// An object is an orphan in the committed state; that state must
		// survive a power loss before its objects go.
		if err := m.Sync(ctx); err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
	}
	r := &GCReport{}
	now := time.Now()
	for _, o := range objs {
		r.Objects++
		r.Bytes += o.Size
		id, idx, blen, ok := ParseBlockKey(o.Key)
		if !ok {
			r.Foreign++
			continue
		}
		if size, ok := refs[id]; ok && idx < numBlocks(size, bs) && blen == blockLen(size, idx, bs) {
			r.Referenced++
			continue
		}
		if opts.MinAge > 0 && now.Sub(o.ModTime) < opts.MinAge {
			r.Young++
			continue
		}
		r.Orphans++
		r.OrphanBytes += o.Size
		if len(r.OrphanKeys) < opts.MaxList {
			r.OrphanKeys = append(r.OrphanKeys, o.Key)
		}
		if opts.Delete {
			if err := store.Delete(ctx, o.Key); err != nil {
				return r, fmt.Errorf("gc: %w", err)
			}
			r.Deleted++
		}
	}
	return r, nil
}

// MissingBlock is a block a slice references that the object store lacks.
type MissingBlock struct {
	Ino   meta.Ino
	Slice meta.Slice
	Key   string
}

// ObjectReport is what CheckObjects found.
type ObjectReport struct {
	Slices  int // distinct slices referenced
	Blocks  int // block objects they need
	Missing []MissingBlock
}

// CheckObjects verifies that every block of every referenced slice exists
// with the right length (for fsck).
func CheckObjects(ctx context.Context, m meta.Meta, store storage.Store, blockSize int) (*ObjectReport, error) {
	bs, err := blockSizeOf(ctx, m, blockSize)
	if err != nil {
		return nil, err
	}
	have := map[string]int64{}
	if err := listAll(ctx, store, KeyPrefix, func(o storage.Object) error {
		have[o.Key] = o.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check objects: list %s: %w", store, err)
	}
	r := &ObjectReport{}
	seen := map[uint64]bool{}
	err = m.ListSlices(ctx, func(ino meta.Ino, s meta.Slice) error {
		if s.ID == 0 {
			return nil
		}
		first := !seen[s.ID]
		seen[s.ID] = true
		if first {
			r.Slices++
		}
		for i, k := range SliceKeys(s.ID, s.Size, bs) {
			if first {
				r.Blocks++
			}
			if sz, ok := have[k]; !ok || sz != int64(blockLen(s.Size, i, bs)) {
				r.Missing = append(r.Missing, MissingBlock{Ino: ino, Slice: s, Key: k})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check objects: list slices: %w", err)
	}
	return r, nil
}
