package fs

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/meta"
)

// A server continuing a handed-off connection (see Conn) gets requests on
// file and directory handles its predecessor opened: the kernel keeps them
// across servers. Handle numbers carry the issuing server's generation in
// their top 32 bits, so a handle this server never issued is recognized
// (and a new one never collides with an inherited one), and is opened
// again from the node id on first use, under the same number.

// inheritState is what the file system knows about its predecessor.
type inheritState struct {
	gen uint64 // this server's generation, in the top bits of its handles

	mu sync.Mutex
	// unclean: the predecessor may have died with acknowledged writes
	// uncommitted (Conn.PrevCrashed).
	unclean bool
	// settled holds inherited handles that owe no error: known read-only,
	// or their fsync reported the possible loss already.
	settled map[uint64]bool
}

// initHandles picks this server's handle generation.
func (fs *fileSystem) initHandles(prevCrashed bool) {
	gen := uint64(rand.Uint32()>>1) | 1 // nonzero: a first server's handles are told apart too
	fs.inherit.gen = gen
	fs.inherit.unclean = prevCrashed
	fs.inherit.settled = map[uint64]bool{}
	fs.mu.Lock()
	fs.nextFh = gen << 32
	fs.mu.Unlock()
}

// inherited reports whether fh was issued by a previous server.
func (fs *fileSystem) inherited(fh uint64) bool {
	return fh != 0 && fh>>32 != fs.inherit.gen
}

// useHandle returns the handle fh, opening an inherited one with the
// open flags the kernel reports for it.
func (fs *fileSystem) useHandle(fh, nodeID uint64, flags uint32) *handle {
	if h := fs.handle(fh); h != nil || !fs.inherited(fh) {
		return h
	}
	ino := fs.toMeta(nodeID)
	// The kernel keeps the flags open(2) was given, less the ones that
	// act only at open.
	flags &^= syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC | syscall.O_NOCTTY
	a, err := fs.m.Open(context.Background(), ino, flags)
	if err != nil {
		fs.status("reopen inherited handle", ino, err)
		return nil
	}
	if !writable(flags) {
		fs.settle(fh)
	}
	fs.mu.Lock()
	if h := fs.handles[fh]; h != nil {
		// A concurrent request adopted it first.
		fs.mu.Unlock()
		fs.rel.deferRelease(ino)
		return h
	}
	h := fs.addHandleLocked(fh, ino, a.Size, flags)
	fs.mu.Unlock()
	fs.log.Debug("reopened a file handle of the previous server", "fh", fh, "ino", ino, "flags", flags)
	return h
}

func (fs *fileSystem) settle(fh uint64) {
	fs.inherit.mu.Lock()
	fs.inherit.settled[fh] = true
	fs.inherit.mu.Unlock()
}

// owesLoss reports, once per handle, that fsync through inherited handle fh
// must fail: its previous server died and may have lost writes made
// through it that it had acknowledged.
func (fs *fileSystem) owesLoss(fh uint64) bool {
	if !fs.inherited(fh) {
		return false
	}
	fs.inherit.mu.Lock()
	defer fs.inherit.mu.Unlock()
	if !fs.inherit.unclean || fs.inherit.settled[fh] {
		return false
	}
	fs.inherit.settled[fh] = true
	return true
}

// inodeFile returns what this process has open of ino, for requests on an
// inherited handle that carry no open flags (flush, fsync).
func (fs *fileSystem) inodeFile(nodeID uint64) (meta.Ino, *openFile) {
	ino := fs.toMeta(nodeID)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return ino, fs.open[ino]
}

// useDirHandle returns directory handle fh, opening an inherited one. The
// listing restarts from the metadata: offsets are entry indexes in name
// order, so the kernel's offset finds the same place.
func (fs *fileSystem) useDirHandle(fh, nodeID uint64) *dirHandle {
	fs.mu.Lock()
	dh := fs.dirs[fh]
	fs.mu.Unlock()
	if dh != nil || !fs.inherited(fh) {
		return dh
	}
	ino := fs.toMeta(nodeID)
	a, err := fs.m.GetAttr(context.Background(), ino)
	if err != nil || a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil
	}
	parent := a.Parent
	if ino == fs.root || parent == 0 {
		parent = ino
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if dh := fs.dirs[fh]; dh != nil {
		return dh
	}
	dh = &dirHandle{ino: ino, parent: parent}
	fs.dirs[fh] = dh
	return dh
}

// flushInherited is Flush or Fsync through an inherited handle no request
// has used here yet: nothing was written through it in this process, but
// what other handles buffered for the inode is committed as usual.
func (fs *fileSystem) flushInherited(in *fuse.InHeader) error {
	_, of := fs.inodeFile(in.NodeId)
	if of == nil {
		return nil
	}
	return of.f.Flush(context.Background())
}
