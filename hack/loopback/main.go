// Command loopback mounts a local directory through a plain go-fuse loopback
// file system with the same FUSE settings podfs uses (1 MiB requests and
// readahead, 1 s caches, direct mount): the FUSE ceiling hack/bench.sh
// compares podfs with. It serves until SIGTERM/SIGINT, then unmounts.
//
//	go run ./hack/loopback SOURCE-DIR MOUNTPOINT
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: loopback SOURCE-DIR MOUNTPOINT")
		os.Exit(2)
	}
	root, err := fs.NewLoopbackRoot(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: source %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	sec := time.Second
	server, err := fs.Mount(os.Args[2], root, &fs.Options{
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			FsName:        "loopback:" + os.Args[1],
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
		fmt.Fprintf(os.Stderr, "loopback: mount %s: %v\n", os.Args[2], err)
		os.Exit(1)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		if err := server.Unmount(); err != nil {
			_ = syscall.Unmount(os.Args[2], syscall.MNT_DETACH)
		}
	}()
	server.Wait()
}
