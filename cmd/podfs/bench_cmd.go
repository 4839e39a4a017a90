package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// benchResult is one line of the summary table.
type benchResult struct {
	name    string
	count   int64
	bytes   int64
	elapsed time.Duration
}

func (r benchResult) rate() string {
	s := r.elapsed.Seconds()
	if s <= 0 {
		return "-"
	}
	if r.bytes > 0 {
		return fmt.Sprintf("%.1f MiB/s", float64(r.bytes)/s/(1<<20))
	}
	return fmt.Sprintf("%.0f /s", float64(r.count)/s)
}

func (r benchResult) perOp() string {
	if r.count == 0 {
		return "-"
	}
	return (r.elapsed / time.Duration(r.count)).Round(time.Microsecond).String()
}

func runBench(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("bench", "PATH [options]", `
Benchmark the file system mounted at PATH (any directory works; compare podfs
with a local disk): a big file written and read sequentially, small files
written, then many empty files created, stat'ed, listed (ls -l) and removed in
one directory. Works in a fresh directory under PATH and removes it at the
end. Prints progress while it runs and a summary table.`)
	bigSize := &sizeFlag{v: 1 << 30}
	f.Var(bigSize, "big-size", "size of the big file (0 skips the big-file steps)")
	ioSize := &sizeFlag{v: 1 << 20}
	f.Var(ioSize, "io-size", "size of each big-file read and write")
	smallCount := f.Int("small-count", 1000, "number of small files written (0 skips)")
	smallSize := &sizeFlag{v: 128 << 10}
	f.Var(smallSize, "small-size", "size of each small file")
	files := f.Int("files", 10000, "number of empty files created, stat'ed, listed and removed (0 skips)")
	dropCaches := f.Bool("drop-caches", os.Geteuid() == 0, "drop the kernel's caches before reads and stats (root only), so they measure the file system, not the page cache")
	format := f.String("format", "table", "summary format: table, or tsv (name, count, seconds, MiB/s, ops/s) for scripts")
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("bench takes one PATH (see podfs bench --help)")
	}
	if ioSize.v <= 0 || *smallCount < 0 || *files < 0 || (bigSize.v > 0 && bigSize.v < ioSize.v) {
		return usagef("--big-size must be 0 or at least --io-size; counts must not be negative")
	}
	if *format != "table" && *format != "tsv" {
		return usagef("--format %q: use table or tsv", *format)
	}
	st, err := os.Stat(pos[0])
	if err != nil || !st.IsDir() {
		return fmt.Errorf("bench PATH %s must be an existing directory (a mounted podfs): %v", pos[0], err)
	}
	dir, err := os.MkdirTemp(pos[0], "podfs-bench-")
	if err != nil {
		return fmt.Errorf("create a work directory under %s: %w", pos[0], err)
	}
	defer os.RemoveAll(dir)

	b := &bencher{ctx: ctx, drop: *dropCaches}
	var steps []func() (benchResult, error)
	if bigSize.v > 0 {
		big := filepath.Join(dir, "big")
		steps = append(steps,
			func() (benchResult, error) { return b.writeBig(big, bigSize.v, ioSize.v) },
			func() (benchResult, error) { return b.readBig(big, ioSize.v) },
			func() (benchResult, error) { return benchResult{}, os.Remove(big) })
	}
	if *smallCount > 0 {
		small := filepath.Join(dir, "small")
		steps = append(steps,
			func() (benchResult, error) { return b.smallFiles(small, *smallCount, smallSize.v) },
			func() (benchResult, error) { return b.removeFiles(small, "remove small files", *smallCount) })
	}
	if *files > 0 {
		many := filepath.Join(dir, "many")
		steps = append(steps,
			func() (benchResult, error) { return b.smallFiles(many, *files, 0) },
			func() (benchResult, error) { return b.statFiles(many, *files) },
			func() (benchResult, error) { return b.listLong(many, *files) },
			func() (benchResult, error) { return b.removeFiles(many, "remove empty files", *files) })
	}
	var results []benchResult
	for _, step := range steps {
		r, err := step()
		if err != nil {
			return err
		}
		if r.name != "" {
			results = append(results, r)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if *format == "tsv" {
		for _, r := range results {
			s := r.elapsed.Seconds()
			fmt.Printf("%s\t%d\t%.3f\t%.1f\t%.0f\n", r.name, r.count, s, float64(r.bytes)/s/(1<<20), float64(r.count)/s)
		}
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TEST\tCOUNT\tTIME\tRATE\tPER OP\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t\n", r.name, r.count, r.elapsed.Round(time.Millisecond), r.rate(), r.perOp())
	}
	return w.Flush()
}

type bencher struct {
	ctx  context.Context
	drop bool
}

// progress prints how far a step got, once a second, until done is called.
func (b *bencher) progress(name string, done *atomic.Int64, total int64) func() {
	stop := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				fmt.Fprintf(os.Stderr, "\r%-24s %3d%% done in %s\n", name, 100, time.Since(start).Round(time.Millisecond))
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "\r%-24s %3d%%", name, done.Load()*100/max(total, 1))
			}
		}
	}()
	return func() { close(stop); <-finished }
}

func (b *bencher) dropCaches() {
	if b.drop {
		unix.Sync()
		_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	}
}

func (b *bencher) writeBig(path string, size, bs int64) (benchResult, error) {
	buf := make([]byte, bs)
	_, _ = rand.Read(buf)
	var done atomic.Int64
	stop := b.progress("write big file", &done, size)
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		stop()
		return benchResult{}, err
	}
	for done.Load() < size && b.ctx.Err() == nil {
		n, err := f.Write(buf[:min(bs, size-done.Load())])
		if err != nil {
			stop()
			f.Close()
			return benchResult{}, fmt.Errorf("write %s: %w", path, err)
		}
		done.Add(int64(n))
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	elapsed := time.Since(start)
	stop()
	if err != nil {
		return benchResult{}, fmt.Errorf("sync %s: %w", path, err)
	}
	return benchResult{name: fmt.Sprintf("write big file (%s)", formatSize(bs)), count: size / bs, bytes: size, elapsed: elapsed}, nil
}

func (b *bencher) readBig(path string, bs int64) (benchResult, error) {
	b.dropCaches()
	f, err := os.Open(path)
	if err != nil {
		return benchResult{}, err
	}
	defer f.Close()
	st, _ := f.Stat()
	buf := make([]byte, bs)
	var done atomic.Int64
	stop := b.progress("read big file", &done, st.Size())
	start := time.Now()
	for b.ctx.Err() == nil {
		n, err := f.Read(buf)
		done.Add(int64(n))
		if n == 0 || err != nil {
			break
		}
	}
	elapsed := time.Since(start)
	stop()
	if done.Load() != st.Size() {
		return benchResult{}, fmt.Errorf("read %d bytes of %s, want %d", done.Load(), path, st.Size())
	}
	return benchResult{name: fmt.Sprintf("read big file (%s)", formatSize(bs)), count: st.Size() / bs, bytes: st.Size(), elapsed: elapsed}, nil
}

func smallName(dir string, i int) string { return filepath.Join(dir, fmt.Sprintf("small-%06d", i)) }

func (b *bencher) smallFiles(dir string, n int, size int64) (benchResult, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return benchResult{}, err
	}
	buf := make([]byte, size)
	_, _ = rand.Read(buf)
	name := fmt.Sprintf("write small files (%s)", formatSize(size))
	if size == 0 {
		name = "create empty files"
	}
	var done atomic.Int64
	stop := b.progress(name, &done, int64(n))
	defer stop()
	start := time.Now()
	for i := 0; i < n && b.ctx.Err() == nil; i++ {
		if err := os.WriteFile(smallName(dir, i), buf, 0o644); err != nil {
			return benchResult{}, fmt.Errorf("write small file: %w", err)
		}
		done.Add(1)
	}
	return benchResult{name: name, count: done.Load(), elapsed: time.Since(start)}, nil
}

func (b *bencher) statFiles(dir string, n int) (benchResult, error) {
	b.dropCaches()
	var done atomic.Int64
	stop := b.progress("stat files", &done, int64(n))
	defer stop()
	start := time.Now()
	var st unix.Stat_t
	for i := 0; i < n && b.ctx.Err() == nil; i++ {
		if err := unix.Stat(smallName(dir, i), &st); err != nil {
			return benchResult{}, fmt.Errorf("stat small file: %w", err)
		}
		done.Add(1)
	}
	name := "stat files"
	if b.drop {
		name += " (cold)"
	}
	return benchResult{name: name, count: done.Load(), elapsed: time.Since(start)}, nil
}

func (b *bencher) removeFiles(dir, name string, n int) (benchResult, error) {
	var done atomic.Int64
	stop := b.progress(name, &done, int64(n))
	defer stop()
	start := time.Now()
	for i := 0; i < n && b.ctx.Err() == nil; i++ {
		if err := os.Remove(smallName(dir, i)); err != nil {
			return benchResult{}, fmt.Errorf("remove small file: %w", err)
		}
		done.Add(1)
	}
	return benchResult{name: name, count: done.Load(), elapsed: time.Since(start)}, nil
}

// listLong is GNU ls -l (coreutils 9): read the directory, then for every
// entry lstat it, ask for its SELinux label and whether it has an ACL. Like
// ls, it stops asking a question once the file system answered that it does
// not support it (ENOTSUP), since that costs a FUSE request per file.
func (b *bencher) listLong(dir string, n int) (benchResult, error) {
	b.dropCaches()
	var done atomic.Int64
	stop := b.progress("ls -l", &done, int64(n))
	defer stop()
	start := time.Now()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return benchResult{}, err
	}
	var st unix.Stat_t
	label := make([]byte, 255)
	askLabel, askACL := true, true
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if err := unix.Lstat(p, &st); err != nil {
			return benchResult{}, err
		}
		if askLabel {
			if _, err := unix.Lgetxattr(p, "security.selinux", label); err == unix.ENOTSUP {
				askLabel = false
			}
		}
		if askACL {
			if _, err := unix.Getxattr(p, "system.posix_acl_access", nil); err == unix.ENOTSUP {
				askACL = false
			}
		}
		done.Add(1)
	}
	if len(ents) != n {
		return benchResult{}, fmt.Errorf("ls -l listed %d entries, want %d", len(ents), n)
	}
	return benchResult{name: "ls -l (entries)", count: int64(n), elapsed: time.Since(start)}, nil
}
