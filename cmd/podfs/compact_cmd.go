package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	podfs "podfs.io/podfs/pkg/fs"
)

func runCompact(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("compact", "PATH...", `
Compact the files under each PATH of a mounted podfs: every chunk whose
slices (left by overwrites, truncates and random writes) cost more storage
than the data they show is rewritten as one slice per written range (holes
stay holes), then the replaced objects are deleted. The mount serving PATH
does the work, so it runs as root on the machine of the mount. Mounts also
compact fragmented chunks in the background as they write them.`)
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("compact takes one or more PATHs in a mounted podfs (see podfs compact --help)")
	}
	for _, root := range pos {
		if err := compactTree(ctx, root); err != nil {
			return err
		}
	}
	return nil
}

// compactTree compacts every regular file under root, then has the mount
// delete what the compactions replaced, and prints what it did.
func compactTree(ctx context.Context, root string) error {
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	dir := root
	if !st.IsDir() {
		dir = filepath.Dir(root)
	}
	before, err := compactCounters(dir)
	if err != nil {
		return err
	}
	start := time.Now()
	files := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if err := unix.Lsetxattr(p, podfs.CompactXattr, nil, 0); err != nil {
			return fmt.Errorf("compact %s: %w", p, err)
		}
		files++
		return nil
	})
	if err != nil {
		return err
	}
	if err := unix.Setxattr(dir, podfs.CompactXattr, []byte("delete"), 0); err != nil {
		return fmt.Errorf("delete replaced objects (%s): %w", dir, err)
	}
	after, err := compactCounters(dir)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d files, %d chunks compacted, %d slices' objects deleted, in %s\n",
		root, files, after[0]-before[0], after[1]-before[1], time.Since(start).Round(time.Millisecond))
	return nil
}

// compactCounters reads the mount's compaction and deletion counters.
func compactCounters(dir string) ([2]int64, error) {
	var c [2]int64
	buf := make([]byte, 128)
	n, err := unix.Getxattr(dir, podfs.CompactXattr, buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return c, fmt.Errorf("%s is not in a podfs mount served by this version of podfs", dir)
	}
	if err != nil {
		return c, fmt.Errorf("read compaction counters of %s: %w", dir, err)
	}
	for _, kv := range strings.Fields(string(buf[:n])) {
		k, v, _ := strings.Cut(kv, "=")
		var x int64
		fmt.Sscan(v, &x)
		switch k {
		case "compactions":
			c[0] = x
		case "deleted":
			c[1] = x
		}
	}
	return c, nil
}
