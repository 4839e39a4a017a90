package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// blockKey and parseBlockKey name a slice's block objects. They must match
// the data layer's naming.
// TODO(fs): use pkg/data's key functions once the data layer lands.
func blockKey(id uint64, index int) string { return fmt.Sprintf("chunks/%d/%d", id, index) }

func parseBlockKey(key string) (id uint64, index int, ok bool) {
	n, err := fmt.Sscanf(key, "chunks/%d/%d", &id, &index)
	return id, index, err == nil && n == 2
}

const blocksPrefix = "chunks/"

// blocksOf lists the objects of a slice and their sizes.
func blocksOf(s meta.Slice, blockSize int) []int64 {
	var sizes []int64
	for left := int64(s.Size); left > 0; left -= int64(blockSize) {
		sizes = append(sizes, min(left, int64(blockSize)))
	}
	return sizes
}

// checkObjects verifies every block object of every referenced slice;
// report gets one line per problem.
func checkObjects(ctx context.Context, m meta.Meta, store storage.Store, f *meta.Format, report func(string)) (problems, checked int, err error) {
	seen := map[uint64]bool{}
	err = m.ListSlices(ctx, func(ino meta.Ino, s meta.Slice) error {
		if s.ID == 0 || seen[s.ID] {
			return nil
		}
		seen[s.ID] = true
		for i, want := range blocksOf(s, f.BlockSize) {
			key := blockKey(s.ID, i)
			checked++
			o, err := store.Head(ctx, key)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				problems++
				report(fmt.Sprintf("inode %d: object %s of slice %d is missing", ino, key, s.ID))
			case err != nil:
				return fmt.Errorf("head %s: %w", key, err)
			case o.Size != want:
				problems++
				report(fmt.Sprintf("inode %d: object %s has %d bytes, want %d", ino, key, o.Size, want))
			}
		}
		return nil
	})
	return problems, checked, err
}

// gcMinAge protects objects an active client may have uploaded but not yet
// committed to metadata.
const gcMinAge = time.Hour

// collectGarbage deletes the objects of slices metadata marked deletable,
// and finds (and with del deletes) objects no slice references.
func collectGarbage(ctx context.Context, m meta.Meta, store storage.Store, f *meta.Format, del bool) error {
	pending, err := m.PendingDeletes(ctx, 1<<20)
	if err != nil {
		return fmt.Errorf("list slices waiting for deletion: %w", err)
	}
	fmt.Printf("%d slices wait for deletion\n", len(pending))
	if del && len(pending) > 0 {
		var ids []uint64
		for _, s := range pending {
			for i := range blocksOf(s, f.BlockSize) {
				if err := store.Delete(ctx, blockKey(s.ID, i)); err != nil {
					return fmt.Errorf("delete %s: %w", blockKey(s.ID, i), err)
				}
			}
			ids = append(ids, s.ID)
		}
		if err := m.DoneDeleting(ctx, ids); err != nil {
			return fmt.Errorf("mark slices deleted: %w", err)
		}
	}
	live := map[uint64]bool{}
	if err := m.ListSlices(ctx, func(_ meta.Ino, s meta.Slice) error {
		live[s.ID] = true
		return nil
	}); err != nil {
		return fmt.Errorf("list referenced slices: %w", err)
	}
	for _, s := range pending {
		live[s.ID] = !del // still pending unless just deleted
	}
	var leaked, leakedBytes, young int64
	marker := ""
	for {
		objs, err := store.List(ctx, blocksPrefix, marker, 1000)
		if err != nil {
			return fmt.Errorf("list objects: %w", err)
		}
		for _, o := range objs {
			id, _, ok := parseBlockKey(o.Key)
			if !ok || live[id] {
				continue
			}
			if time.Since(o.ModTime) < gcMinAge {
				young++
				continue
			}
			leaked++
			leakedBytes += o.Size
			if del {
				if err := store.Delete(ctx, o.Key); err != nil {
					return fmt.Errorf("delete leaked %s: %w", o.Key, err)
				}
			}
		}
		if len(objs) < 1000 {
			break
		}
		marker = objs[len(objs)-1].Key
	}
	verb := "found"
	if del {
		verb = "deleted"
	}
	fmt.Printf("%s %d leaked objects (%s); skipped %d unreferenced objects younger than %s (maybe uploads in flight)\n",
		verb, leaked, formatSize(leakedBytes), young, gcMinAge)
	return nil
}
