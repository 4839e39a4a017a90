package fs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/meta"
)

// blksize is the preferred I/O size stat(2) reports; cp, stdio and friends
// size their buffers by it, and 1 MiB matches MaxWrite.
const blksize = 1 << 20

// fileSystem is the go-fuse RawFileSystem of one mount. The kernel's node id
// is the metadata inode number, except that the served root (SubDir) and the
// volume root swap numbers so the kernel always sees its root as 1.
type fileSystem struct {
	fuse.RawFileSystem // ENOSYS for what is not implemented here

	m        meta.Meta
	d        *data.Store
	rel      *releaser
	log      *slog.Logger
	met      *metrics
	root     meta.Ino // the metadata inode served as the kernel's root
	readOnly bool
	attrTTL  time.Duration
	entryTTL time.Duration

	server atomic.Pointer[fuse.Server]

	// secXattrs is true once the volume may hold security.* or
	// system.posix_acl_* attributes; until then getxattr of those names
	// answers ENODATA without a metadata round trip (ls -l asks for them on
	// every file).
	secXattrs atomic.Bool

	mu      sync.Mutex
	nextFh  uint64
	handles map[uint64]*handle
	dirs    map[uint64]*dirHandle
	open    map[meta.Ino]*openFile
	// seen is the size and mtime in metadata of each file as of its last
	// open here: an open that finds them unchanged keeps the kernel's page
	// cache, otherwise the kernel drops it (close-to-open consistency). Any
	// committed write, ours or another client's, changes the mtime; our
	// own writes went through the page cache anyway.
	seen map[meta.Ino]stamp

	inherit inheritState // handles of a previous server (handed-off connections)
}

type stamp struct {
	size  uint64
	mtime int64
}

// openFile is an inode open in this process: its data handle and the mtime
// of the last local write not yet committed to metadata.
type openFile struct {
	f     *data.File
	refs  int
	mtime atomic.Int64
	// posixLocks is set once a POSIX lock was taken through the inode, so
	// flush only asks metadata to drop locks when there may be some.
	posixLocks atomic.Bool
}

// handle is one FUSE file handle (one open(2)).
type handle struct {
	ino   meta.Ino
	of    *openFile
	flags uint32
}

func newFileSystem(m meta.Meta, d *data.Store, root meta.Ino, cfg *Config, met *metrics, log *slog.Logger) *fileSystem {
	return &fileSystem{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		m:             m,
		d:             d,
		rel:           newReleaser(m, log),
		log:           log,
		met:           met,
		root:          root,
		readOnly:      cfg.ReadOnly,
		attrTTL:       cfg.AttrTimeout,
		entryTTL:      cfg.EntryTimeout,
		handles:       map[uint64]*handle{},
		dirs:          map[uint64]*dirHandle{},
		open:          map[meta.Ino]*openFile{},
		seen:          map[meta.Ino]stamp{},
	}
}

func (fs *fileSystem) String() string { return "podfs" }

func (fs *fileSystem) Init(s *fuse.Server) { fs.server.Store(s) }

// toMeta maps a kernel node id to a metadata inode.
func (fs *fileSystem) toMeta(n uint64) meta.Ino {
	ino := meta.Ino(n)
	switch ino {
	case meta.RootIno:
		return fs.root
	case fs.root:
		return meta.RootIno
	}
	return ino
}

// toKernel maps a metadata inode to a kernel node id (the same swap).
func (fs *fileSystem) toKernel(ino meta.Ino) uint64 { return uint64(fs.toMeta(uint64(ino))) }

// status turns an error from meta or data into what the kernel gets: the
// errno it carries, EIO otherwise (logged, since the kernel only sees EIO).
func (fs *fileSystem) status(op string, ino meta.Ino, err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fuse.Status(errno)
	}
	if errors.Is(err, context.Canceled) {
		return fuse.EINTR
	}
	fs.log.Error("file system operation failed", "op", op, "ino", ino, "err", err)
	return fuse.EIO
}

// fillAttr converts metadata attributes into the kernel's, overlaying what
// this process has written but not yet committed.
func (fs *fileSystem) fillAttr(ino meta.Ino, a *meta.Attr, out *fuse.Attr) {
	size, mtime := a.Size, a.Mtime
	if a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		fs.mu.Lock()
		of := fs.open[ino]
		fs.mu.Unlock()
		if of != nil {
			size = max(size, of.f.Size())
			if t := of.mtime.Load(); t > mtime {
				mtime = t
			}
		}
	}
	*out = fuse.Attr{
		Ino:       fs.toKernel(ino),
		Size:      size,
		Blocks:    (size + 511) / 512,
		Atime:     uint64(a.Atime / 1e9),
		Atimensec: uint32(a.Atime % 1e9),
		Mtime:     uint64(mtime / 1e9),
		Mtimensec: uint32(mtime % 1e9),
		Ctime:     uint64(a.Ctime / 1e9),
		Ctimensec: uint32(a.Ctime % 1e9),
		Mode:      a.Mode,
		Nlink:     a.Nlink,
		Owner:     fuse.Owner{Uid: a.Uid, Gid: a.Gid},
		Rdev:      a.Rdev,
		Blksize:   blksize,
	}
}

func (fs *fileSystem) fillEntry(ino meta.Ino, a *meta.Attr, out *fuse.EntryOut) {
	out.NodeId = fs.toKernel(ino)
	out.Generation = 0
	out.SetEntryTimeout(fs.entryTTL)
	out.SetAttrTimeout(fs.attrTTL)
	fs.fillAttr(ino, a, &out.Attr)
}

func (fs *fileSystem) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer fs.met.op(opLookup)()
	parent := fs.toMeta(h.NodeId)
	ctx := context.Background()
	if name == "." || (name == ".." && parent == fs.root) {
		a, err := fs.m.GetAttr(ctx, parent)
		if err != nil {
			return fs.status("lookup", parent, err)
		}
		fs.fillEntry(parent, &a, out)
		return fuse.OK
	}
	ino, a, err := fs.m.Lookup(ctx, parent, name)
	if err != nil {
		return fs.status("lookup", parent, err)
	}
	fs.fillEntry(ino, &a, out)
	return fuse.OK
}

// Forget needs no work: node ids are inode numbers, nothing is kept per lookup.
func (fs *fileSystem) Forget(nodeid, nlookup uint64) {}

func (fs *fileSystem) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer fs.met.op(opGetattr)()
	ino := fs.toMeta(in.NodeId)
	a, err := fs.m.GetAttr(context.Background(), ino)
	if err != nil {
		return fs.status("getattr", ino, err)
	}
	out.SetTimeout(fs.attrTTL)
	fs.fillAttr(ino, &a, &out.Attr)
	return fuse.OK
}

func (fs *fileSystem) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer fs.met.op(opSetattr)()
	if fs.readOnly {
		return fuse.EROFS
	}
	ino := fs.toMeta(in.NodeId)
	ctx := context.Background()
	var set uint32
	var a meta.Attr
	if m, ok := in.GetMode(); ok {
		set |= meta.SetMode
		a.Mode = m
	}
	if u, ok := in.GetUID(); ok {
		set |= meta.SetUid
		a.Uid = u
	}
	if g, ok := in.GetGID(); ok {
		set |= meta.SetGid
		a.Gid = g
	}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			set |= meta.SetAtimeNow
		} else {
			set |= meta.SetAtime
			a.Atime = int64(in.Atime)*1e9 + int64(in.Atimensec)
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			set |= meta.SetMtimeNow
		} else {
			set |= meta.SetMtime
			a.Mtime = int64(in.Mtime)*1e9 + int64(in.Mtimensec)
		}
	}
	if in.Valid&fuse.FATTR_CTIME != 0 {
		set |= meta.SetCtime
		a.Ctime = int64(in.Ctime)*1e9 + int64(in.Ctimensec)
	}
	size, truncate := in.GetSize()
	var of *openFile
	if truncate {
		set |= meta.SetSize
		a.Size = size
		fs.mu.Lock()
		of = fs.open[ino]
		fs.mu.Unlock()
		if of != nil {
			// Commit what is buffered first, so no later upload of it can
			// re-extend the file past the new length.
			if err := of.f.Flush(ctx); err != nil {
				return fs.status("setattr flush", ino, err)
			}
		}
	}
	if set&(meta.SetMtime|meta.SetMtimeNow) != 0 && of == nil {
		fs.mu.Lock()
		of = fs.open[ino]
		fs.mu.Unlock()
	}
	na, err := fs.m.SetAttr(ctx, ino, set, a)
	if err != nil {
		return fs.status("setattr", ino, err)
	}
	if of != nil {
		if truncate {
			if err := of.f.Truncate(ctx, size); err != nil {
				return fs.status("setattr truncate", ino, err)
			}
		}
		// An explicit mtime wins over the one of buffered writes.
		of.mtime.Store(0)
	}
	out.SetTimeout(fs.attrTTL)
	fs.fillAttr(ino, &na, &out.Attr)
	return fuse.OK
}

func (fs *fileSystem) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer fs.met.op(opMknod)()
	if fs.readOnly {
		return fuse.EROFS
	}
	parent := fs.toMeta(in.NodeId)
	ctx := context.Background()
	mode, inh, err := fs.newNodeMode(ctx, parent, in.Mode, in.Umask)
	if err != nil {
		return fs.status("mknod", parent, err)
	}
	ino, a, err := fs.m.Mknod(ctx, parent, name, mode, in.Rdev, in.Uid, in.Gid)
	if err == nil {
		err = fs.setInherited(ctx, ino, inh)
	}
	if err != nil {
		return fs.status("mknod", parent, err)
	}
	fs.fillEntry(ino, &a, out)
	return fuse.OK
}

func (fs *fileSystem) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer fs.met.op(opMkdir)()
	if fs.readOnly {
		return fuse.EROFS
	}
	parent := fs.toMeta(in.NodeId)
	ctx := context.Background()
	mode, inh, err := fs.newNodeMode(ctx, parent, syscall.S_IFDIR|in.Mode, in.Umask)
	if err != nil {
		return fs.status("mkdir", parent, err)
	}
	ino, a, err := fs.m.Mkdir(ctx, parent, name, mode, in.Uid, in.Gid)
	if err == nil {
		err = fs.setInherited(ctx, ino, inh)
	}
	if err != nil {
		return fs.status("mkdir", parent, err)
	}
	fs.fillEntry(ino, &a, out)
	return fuse.OK
}

func (fs *fileSystem) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer fs.met.op(opUnlink)()
	if fs.readOnly {
		return fuse.EROFS
	}
	parent := fs.toMeta(h.NodeId)
	return fs.status("unlink", parent, fs.m.Unlink(context.Background(), parent, name))
}

func (fs *fileSystem) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer fs.met.op(opRmdir)()
	if fs.readOnly {
		return fuse.EROFS
	}
	parent := fs.toMeta(h.NodeId)
	return fs.status("rmdir", parent, fs.m.Rmdir(context.Background(), parent, name))
}

func (fs *fileSystem) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer fs.met.op(opRename)()
	if fs.readOnly {
		return fuse.EROFS
	}
	if in.Flags&^(meta.RenameNoReplace|meta.RenameExchange) != 0 {
		return fuse.EINVAL // RENAME_WHITEOUT is for overlay file systems
	}
	from, to := fs.toMeta(in.NodeId), fs.toMeta(in.Newdir)
	return fs.status("rename", from, fs.m.Rename(context.Background(), from, oldName, to, newName, in.Flags))
}

func (fs *fileSystem) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	defer fs.met.op(opLink)()
	if fs.readOnly {
		return fuse.EROFS
	}
	ino, parent := fs.toMeta(in.Oldnodeid), fs.toMeta(in.NodeId)
	a, err := fs.m.Link(context.Background(), ino, parent, name)
	if err != nil {
		return fs.status("link", ino, err)
	}
	fs.fillEntry(ino, &a, out)
	return fuse.OK
}

func (fs *fileSystem) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	defer fs.met.op(opSymlink)()
	if fs.readOnly {
		return fuse.EROFS
	}
	parent := fs.toMeta(h.NodeId)
	ino, a, err := fs.m.Symlink(context.Background(), parent, name, target, h.Uid, h.Gid)
	if err != nil {
		return fs.status("symlink", parent, err)
	}
	fs.fillEntry(ino, &a, out)
	return fuse.OK
}

func (fs *fileSystem) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	defer fs.met.op(opReadlink)()
	ino := fs.toMeta(h.NodeId)
	t, err := fs.m.Readlink(context.Background(), ino)
	if err != nil {
		return nil, fs.status("readlink", ino, err)
	}
	return []byte(t), fuse.OK
}

// Access checks permissions when the mount runs without default_permissions
// (with it the kernel checks and never asks).
func (fs *fileSystem) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	defer fs.met.op(opAccess)()
	ino := fs.toMeta(in.NodeId)
	a, err := fs.m.GetAttr(context.Background(), ino)
	if err != nil {
		return fs.status("access", ino, err)
	}
	if in.Mask&fuse.W_OK != 0 && fs.readOnly {
		return fuse.EROFS
	}
	return accessOK(&a, in.Uid, in.Gid, in.Mask)
}

// accessOK applies the owner/group/other permission bits as access(2) does.
func accessOK(a *meta.Attr, uid, gid, mask uint32) fuse.Status {
	mask &= 7
	if mask == 0 {
		return fuse.OK
	}
	if uid == 0 {
		// root may do anything but execute a file nobody may execute.
		if mask&fuse.X_OK != 0 && a.Mode&syscall.S_IFMT != syscall.S_IFDIR && a.Mode&0o111 == 0 {
			return fuse.EACCES
		}
		return fuse.OK
	}
	perm := a.Mode & 7
	switch {
	case uid == a.Uid:
		perm = (a.Mode >> 6) & 7
	case gid == a.Gid:
		perm = (a.Mode >> 3) & 7
	}
	if mask&perm != mask {
		return fuse.EACCES
	}
	return fuse.OK
}

func (fs *fileSystem) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer fs.met.op(opStatfs)()
	// A mount of a sub-directory (a provisioned volume's) reports the
	// nearest directory quota at or above it, so df shows the claim's size.
	st, err := fs.m.StatFSDir(context.Background(), fs.root)
	if err != nil {
		return fs.status("statfs", 0, err)
	}
	const bsize = 4096
	*out = fuse.StatfsOut{
		Blocks:  st.TotalSpace / bsize,
		Bfree:   st.AvailSpace / bsize,
		Bavail:  st.AvailSpace / bsize,
		Files:   st.UsedInodes + st.AvailInodes,
		Ffree:   st.AvailInodes,
		Bsize:   bsize,
		NameLen: 255,
		Frsize:  bsize,
	}
	return fuse.OK
}
