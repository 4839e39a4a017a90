package fs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// CompactXattr is the control `podfs compact` uses on a mounted volume:
// setting it on a regular file compacts the file's chunks in this mount's
// data layer; setting it on a directory deletes the objects of replaced
// slices now (the pending deletes); reading it on any node returns the
// mount's counters ("compactions=N deleted=M"). The kernel lets only
// CAP_SYS_ADMIN touch trusted.* attributes, which is the permission check.
// It is never stored and never listed.
const CompactXattr = "trusted.podfs.compact"

// compactControl handles a set of CompactXattr.
func (fs *fileSystem) compactControl(in *fuse.SetXAttrIn) fuse.Status {
	if in.Uid != 0 {
		return fuse.EPERM
	}
	ctx := context.Background()
	ino := fs.toMeta(in.NodeId)
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return fs.status("compact", ino, err)
	}
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		if _, err := fs.d.CompactFile(ctx, ino, a.Size); err != nil {
			return fs.status("compact", ino, err)
		}
	case syscall.S_IFDIR:
		if _, err := fs.d.DeletePending(ctx); err != nil {
			return fs.status("delete pending", ino, err)
		}
	}
	return fuse.OK
}

// compactCounters answers a get of CompactXattr.
func (fs *fileSystem) compactCounters(dest []byte) (uint32, fuse.Status) {
	st := fs.d.Stats()
	v := fmt.Sprintf("compactions=%d deleted=%d", st.Compactions, st.Deleted)
	if len(dest) == 0 {
		return uint32(len(v)), fuse.OK
	}
	if len(v) > len(dest) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}
