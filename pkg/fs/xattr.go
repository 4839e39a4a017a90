package fs

import (
	"context"
	"errors"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/meta"
)

// secMarker is an xattr on the volume root recording that some file of the
// volume has (or had) a security.* or system.posix_acl_* attribute. Until it
// exists, getxattr of those names is answered ENODATA from memory: ls -l and
// cp ask for them on every file, and nearly no volume has any. It is hidden
// from listxattr.
const secMarker = "trusted.podfs.secxattrs"

// selinuxXattr is the label GNU ls -l asks every file for. podfs keeps no
// SELinux labels: answering EOPNOTSUPP (rather than ENODATA) makes ls stop
// asking for the rest of the listing, as it does on other file systems
// without label support.
const selinuxXattr = "security.selinux"

// isSecurityXattr reports whether name is one of the attributes the kernel
// and coreutils probe on every file.
func isSecurityXattr(name string) bool {
	return strings.HasPrefix(name, "security.") || strings.HasPrefix(name, "system.posix_acl_")
}

// loadSecXattrs reads the volume's marker (at mount, then now and then, so
// attributes another client set are seen).
func (fs *fileSystem) loadSecXattrs(ctx context.Context) error {
	_, err := fs.m.GetXattr(ctx, meta.RootIno, secMarker)
	switch {
	case err == nil:
		fs.secXattrs.Store(true)
		return nil
	case errors.Is(err, syscall.ENODATA), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOSYS):
		return nil
	default:
		return err
	}
}

func (fs *fileSystem) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	defer fs.met.op(opGetxattr)()
	if name == selinuxXattr {
		fs.met.xattrFastPath.Inc()
		return 0, fuse.ENOTSUP
	}
	if name == CompactXattr {
		return fs.compactCounters(dest)
	}
	if name == secMarker || (isSecurityXattr(name) && !fs.secXattrs.Load()) {
		fs.met.xattrFastPath.Inc()
		return 0, fuse.ENODATA
	}
	ino := fs.toMeta(h.NodeId)
	v, err := fs.m.GetXattr(context.Background(), ino, name)
	if err != nil {
		return 0, fs.status("getxattr", ino, err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), fuse.OK
	}
	if len(v) > len(dest) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (fs *fileSystem) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	defer fs.met.op(opListxattr)()
	ino := fs.toMeta(h.NodeId)
	names, err := fs.m.ListXattr(context.Background(), ino)
	if err != nil {
		return 0, fs.status("listxattr", ino, err)
	}
	var b []byte
	for _, n := range names {
		if n == secMarker {
			continue
		}
		b = append(b, n...)
		b = append(b, 0)
	}
	if len(dest) == 0 {
		return uint32(len(b)), fuse.OK
	}
	if len(b) > len(dest) {
		return uint32(len(b)), fuse.ERANGE
	}
	return uint32(copy(dest, b)), fuse.OK
}

func (fs *fileSystem) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, value []byte) fuse.Status {
	defer fs.met.op(opSetxattr)()
	if fs.readOnly {
		return fuse.EROFS
	}
	if name == secMarker {
		return fuse.EPERM
	}
	if name == selinuxXattr {
		return fuse.ENOTSUP
	}
	if name == CompactXattr {
		return fs.compactControl(in)
	}
	ctx := context.Background()
	ino := fs.toMeta(in.NodeId)
	if isSecurityXattr(name) && !fs.secXattrs.Load() {
		// Record first, so no client can miss the attribute set below.
		if err := fs.m.SetXattr(ctx, meta.RootIno, secMarker, []byte{1}, 0); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fs.status("setxattr marker", meta.RootIno, err)
		}
		fs.secXattrs.Store(true)
	}
	flags := in.Flags
	if name == meta.ACLAccess && in.SetXAttrFlags&fuse.SETXATTR_ACL_KILL_SGID != 0 {
		flags |= meta.XattrACLKillSgid
	}
	return fs.status("setxattr", ino, fs.m.SetXattr(ctx, ino, name, value, flags))
}

func (fs *fileSystem) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer fs.met.op(opRemovexattr)()
	if fs.readOnly {
		return fuse.EROFS
	}
	if name == selinuxXattr {
		return fuse.ENOTSUP
	}
	if name == secMarker || (isSecurityXattr(name) && !fs.secXattrs.Load()) {
		return fuse.ENODATA
	}
	ino := fs.toMeta(h.NodeId)
	return fs.status("removexattr", ino, fs.m.RemoveXattr(context.Background(), ino, name))
}
