// Command fsx is an fsx-style load: random pwrite, truncate and mmap writes
// on a few files, checked against an in-memory copy at the end (and at each
// reopen). hack/bench-compact.sh runs it to measure how much object storage
// fragmented files cost.
//
//	go run ./hack/fsx [-files 3] [-max 10MiB] [-ops 20000] [-seed 1] DIR
package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

func main() {
	files := flag.Int("files", 3, "number of files")
	maxSize := flag.Int("max", 10<<20, "largest file size in bytes")
	ops := flag.Int("ops", 20000, "operations in all")
	maxWrite := flag.Int("write", 256<<10, "largest write in bytes")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: fsx [flags] DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *files, *maxSize, *ops, *maxWrite, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "fsx:", err)
		os.Exit(1)
	}
}

func run(dir string, nfiles, maxSize, ops, maxWrite int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	type file struct {
		f     *os.File
		model []byte
	}
	fs := make([]*file, nfiles)
	for i := range fs {
		p := filepath.Join(dir, fmt.Sprintf("fsx%d", i))
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cur, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fs[i] = &file{f: f, model: cur}
	}
	buf := make([]byte, maxWrite)
	for n := 0; n < ops; n++ {
		x := fs[rng.IntN(len(fs))]
		switch op := rng.IntN(10); {
		case op < 6: // pwrite
			off := rng.IntN(maxSize)
			l := 1 + rng.IntN(min(maxWrite, maxSize-off))
			for i := range buf[:l] {
				buf[i] = byte(rng.Uint32())
			}
			if _, err := x.f.WriteAt(buf[:l], int64(off)); err != nil {
				return fmt.Errorf("op %d: pwrite: %w", n, err)
			}
			if end := off + l; end > len(x.model) {
				x.model = append(x.model, make([]byte, end-len(x.model))...)
			}
			copy(x.model[off:], buf[:l])
		case op < 8: // truncate, shrinking more often than growing
			size := rng.IntN(maxSize)
			if err := x.f.Truncate(int64(size)); err != nil {
				return fmt.Errorf("op %d: truncate: %w", n, err)
			}
			if size < len(x.model) {
				x.model = x.model[:size]
			} else {
				x.model = append(x.model, make([]byte, size-len(x.model))...)
			}
		default: // a write through a shared mapping
			if len(x.model) == 0 {
				continue
			}
			m, err := unix.Mmap(int(x.f.Fd()), 0, len(x.model), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				return fmt.Errorf("op %d: mmap: %w", n, err)
			}
			off := rng.IntN(len(x.model))
			l := 1 + rng.IntN(min(maxWrite, len(x.model)-off))
			for i := off; i < off+l; i++ {
				b := byte(rng.Uint32())
				m[i], x.model[i] = b, b
			}
			err = unix.Msync(m, unix.MS_SYNC)
			if uerr := unix.Munmap(m); err == nil {
				err = uerr
			}
			if err != nil {
				return fmt.Errorf("op %d: msync: %w", n, err)
			}
		}
	}
	var total int
	for i, x := range fs {
		if err := x.f.Sync(); err != nil {
			return err
		}
		got, err := os.ReadFile(x.f.Name())
		if err != nil {
			return err
		}
		if !bytes.Equal(got, x.model) {
			return fmt.Errorf("file %d differs from the model (%d bytes, want %d)", i, len(got), len(x.model))
		}
		total += len(got)
	}
	fmt.Printf("fsx: %d ops on %d files, %d bytes in all, data checked\n", ops, nfiles, total)
	return nil
}
