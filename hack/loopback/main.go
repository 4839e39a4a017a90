// Command loopback mounts a local directory through a plain go-fuse loopback
// file system with the same FUSE settings podfs uses (1 MiB requests and
// readahead, 1 s caches, direct mount): the FUSE ceiling hack/bench.sh
// compares podfs with. It serves until SIGTERM/SIGINT, then unmounts.
//
//	go run ./hack/loopback [-passthrough] SOURCE-DIR MOUNTPOINT
//
// FUSE passthrough (kernel 6.9+, root) is off unless asked for: go-fuse's
// loopback files would otherwise hand their reads and writes to the kernel,
// which then never sends them to the FUSE server, and the figures would be
// the local file system's, not a FUSE file system's ceiling.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose files never use passthrough.
type node struct{ fs.LoopbackNode }

// file is a loopback file that declines passthrough.
type file struct{ *fs.LoopbackFile }

func (file) PassthroughFd() (int, bool) { return 0, false }

func wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return file{lf}
	}
	return fh
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return wrap(fh), fl, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, wrap(fh), fl, errno
}

func main() {
	passthrough := flag.Bool("passthrough", false, "let the kernel serve file reads and writes itself (FUSE passthrough)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopback [-passthrough] SOURCE-DIR MOUNTPOINT")
		os.Exit(2)
	}
	src, mp := flag.Arg(0), flag.Arg(1)
	var root fs.InodeEmbedder
	var err error
	if *passthrough {
		root, err = fs.NewLoopbackRoot(src)
	} else {
		root, err = newRoot(src)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: source %s: %v\n", src, err)
		os.Exit(1)
	}
	sec := time.Second
	server, err := fs.Mount(mp, root, &fs.Options{
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			FsName:        "loopback:" + src,
			Name:          "loopback",
			MaxWrite:      1 << 20,
			MaxReadAhead:  1 << 20,
			MaxBackground: 64,
			DisableSplice: true, // as podfs: 1 MiB replies do not fit a pipe
			DirectMount:   os.Geteuid() == 0,
			Options:       []string{"default_permissions"},
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: mount %s: %v\n", mp, err)
		os.Exit(1)
	}
	setReadahead(mp)
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		if err := server.Unmount(); err != nil {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}()
	server.Wait()
}

// newRoot is fs.NewLoopbackRoot with nodes that never use passthrough.
func newRoot(dir string) (fs.InodeEmbedder, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, err
	}
	r := &fs.LoopbackRoot{Path: dir, Dev: uint64(st.Dev)}
	r.NewNode = func(rd *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{fs.LoopbackNode{RootData: rd}}
	}
	r.RootNode = r.NewNode(r, nil, "", &st)
	return r.RootNode, nil
}

// setReadahead raises the kernel's readahead window for the mount to 1 MiB,
// as podfs does for its mounts (the FUSE INIT reply cannot raise it above
// 128 KiB, which halves streaming reads).
func setReadahead(mp string) {
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil {
		return
	}
	major, minor := (st.Dev>>8)&0xfff, (st.Dev&0xff)|((st.Dev>>12)&0xfff00)
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	if err := os.WriteFile(p, []byte("1024"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "loopback: readahead left at the kernel default: %v\n", err)
	}
}
