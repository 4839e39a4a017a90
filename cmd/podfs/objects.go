package main

import (
	"context"
	"fmt"
	"time"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// checkObjects verifies every block object of every referenced slice;
// report gets one line per problem.
func checkObjects(ctx context.Context, m meta.Meta, store storage.Store, f *meta.Format, report func(string)) (problems, checked int, err error) {
	r, err := data.CheckObjects(ctx, m, store, f.BlockSize)
	if err != nil {
		return 0, 0, err
	}
	for _, mb := range r.Missing {
		report(fmt.Sprintf("inode %d: object %s of slice %d is missing or has the wrong size", mb.Ino, mb.Key, mb.Slice.ID))
	}
	return len(r.Missing), r.Blocks, nil
}

// gcMinAge protects objects an active client may have uploaded but not yet
// committed to metadata.
const gcMinAge = time.Hour

// collectGarbage finds (and with del deletes) objects no slice references.
func collectGarbage(ctx context.Context, m meta.Meta, store storage.Store, f *meta.Format, del bool) error {
	r, err := data.GCWith(ctx, m, store, data.GCOptions{Delete: del, MinAge: gcMinAge, BlockSize: f.BlockSize, MaxList: 20})
	if err != nil {
		return err
	}
	fmt.Println(r)
	for _, k := range r.OrphanKeys {
		fmt.Println("orphan:", k)
	}
	if r.Orphans > 0 && !del {
		fmt.Println("run again with --delete to remove the orphans")
	}
	if r.Young > 0 {
		fmt.Printf("%d unreferenced objects are younger than %s (maybe uploads in flight) and were left alone\n", r.Young, gcMinAge)
	}
	return nil
}
