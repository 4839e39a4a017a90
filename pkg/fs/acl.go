package fs

import (
	"context"
	"errors"
	"syscall"

	"podfs.io/podfs/pkg/meta"
)

// inherited is what a new node takes from its directory's default ACL.
type inherited struct {
	access, dflt []byte // nil: none
}

// newNodeMode returns the mode a node created in parent gets from the mode
// and umask of the create request. The kernel leaves the umask to podfs
// (FUSE_DONT_MASK) because a directory's default ACL replaces it: the node
// then inherits that ACL, limited by the requested mode, and the inherited
// ACLs are returned for setInherited once the node exists.
func (fs *fileSystem) newNodeMode(ctx context.Context, parent meta.Ino, mode, umask uint32) (uint32, *inherited, error) {
	if !fs.secXattrs.Load() {
		// The volume never held an ACL: no directory has a default one.
		return mode &^ (umask & 0o777), nil, nil
	}
	v, err := fs.m.GetXattr(ctx, parent, meta.ACLDefault)
	if errors.Is(err, syscall.ENODATA) {
		return mode &^ (umask & 0o777), nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	def, err := meta.ParseACL(v)
	if err != nil || len(def) == 0 {
		return mode &^ (umask & 0o777), nil, err
	}
	perm, access, dflt := meta.Inherit(def, mode&0o7777, mode&syscall.S_IFMT == syscall.S_IFDIR)
	return mode&syscall.S_IFMT | perm, &inherited{access: access, dflt: dflt}, nil
}

// setInherited gives a node just created the ACLs it inherited. It runs
// after the create's transaction: a crash in between leaves the node with
// its (already restricted) mode bits and without the named entries, which
// only ever grants less than asked.
func (fs *fileSystem) setInherited(ctx context.Context, ino meta.Ino, in *inherited) error {
	if in == nil {
		return nil
	}
	if in.access != nil {
		if err := fs.m.SetXattr(ctx, ino, meta.ACLAccess, in.access, 0); err != nil {
			return err
		}
	}
	if in.dflt != nil {
		return fs.m.SetXattr(ctx, ino, meta.ACLDefault, in.dflt, 0)
	}
	return nil
}
