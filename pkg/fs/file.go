package fs

import (
	"context"
	"errors"
	"io"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/meta"
)

// releaseFlockUnlock is FUSE_RELEASE_FLOCK_UNLOCK: the handle held a flock
// the kernel wants dropped with it.
const releaseFlockUnlock = 1 << 1

// maxSeen bounds the open stamps kept for page cache decisions.
const maxSeen = 1 << 17

// cancelCtx is a context ended when the kernel interrupts the request; only
// operations that may block for long (lock waits) pay for the goroutine.
func cancelCtx(cancel <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		select {
		case <-cancel:
			stop()
		case <-ctx.Done():
		}
	}()
	return ctx, stop
}

func writable(flags uint32) bool { return flags&syscall.O_ACCMODE != syscall.O_RDONLY }

func (fs *fileSystem) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer fs.met.op(opCreate)()
	if fs.readOnly {
		return fuse.EROFS
	}
	ctx := context.Background()
	parent := fs.toMeta(in.NodeId)
	mode, inh, err := fs.newNodeMode(ctx, parent, syscall.S_IFREG|in.Mode, in.Umask)
	if err != nil {
		return fs.status("create", parent, err)
	}
	// One transaction makes the file and its open marker.
	ino, a, err := fs.m.Create(ctx, parent, name, mode&0o7777, in.Uid, in.Gid, in.Flags)
	if err == nil {
		err = fs.setInherited(ctx, ino, inh)
	}
	if errors.Is(err, syscall.EEXIST) && in.Flags&syscall.O_EXCL == 0 {
		// Someone created it since the kernel's lookup: open what is there.
		if ino, _, err = fs.m.Lookup(ctx, parent, name); err != nil {
			return fs.status("create", parent, err)
		}
		if a, err = fs.m.Open(ctx, ino, in.Flags); err != nil {
			return fs.status("create open", ino, err)
		}
	}
	if err != nil {
		return fs.status("create", parent, err)
	}
	fs.fillEntry(ino, &a, &out.EntryOut)
	out.OpenOut.Fh = fs.newHandle(ino, &a, in.Flags)
	return fuse.OK
}

func (fs *fileSystem) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer fs.met.op(opOpen)()
	if fs.readOnly && (writable(in.Flags) || in.Flags&syscall.O_TRUNC != 0) {
		return fuse.EROFS
	}
	ino := fs.toMeta(in.NodeId)
	ctx := context.Background()
	var a meta.Attr
	var err error
	if fs.rel.reuse(ino) {
		// A release of ino is still queued: keep its open marker, and
		// only read fresh attributes.
		if a, err = fs.m.GetAttr(ctx, ino); err != nil {
			fs.rel.deferRelease(ino)
		}
	} else {
		a, err = fs.m.Open(ctx, ino, in.Flags)
	}
	if err != nil {
		return fs.status("open", ino, err)
	}
	st := stamp{size: a.Size, mtime: a.Mtime}
	fs.mu.Lock()
	prev, known := fs.seen[ino]
	if !known && len(fs.seen) >= maxSeen {
		clear(fs.seen) // forget old stamps rather than grow without bound
	}
	fs.seen[ino] = st
	fs.mu.Unlock()
	if known && prev == st {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	} else if s := fs.server.Load(); s != nil {
		// Maybe changed elsewhere: without KEEP_CACHE the kernel drops the
		// pages; make it forget the size and times it cached too
		// (close-to-open). Only attributes: this cannot deadlock with open.
		s.InodeNotify(fs.toKernel(ino), -1, 0)
	}
	out.Fh = fs.newHandle(ino, &a, in.Flags)
	return fuse.OK
}

// newHandle registers an open file handle and returns its number.
func (fs *fileSystem) newHandle(ino meta.Ino, a *meta.Attr, flags uint32) uint64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.nextFh++
	fs.addHandleLocked(fs.nextFh, ino, a.Size, flags)
	return fs.nextFh
}

// addHandleLocked registers handle fh of ino; fs.mu is held.
func (fs *fileSystem) addHandleLocked(fh uint64, ino meta.Ino, size uint64, flags uint32) *handle {
	of := fs.open[ino]
	if of == nil {
		of = &openFile{}
		fs.open[ino] = of
		fs.met.openFiles.Inc()
	}
	// data reference counts its handle per inode; one Open per FUSE handle.
	of.f = fs.d.Open(ino, size)
	of.refs++
	h := &handle{ino: ino, of: of, flags: flags}
	fs.handles[fh] = h
	fs.met.handles.Inc()
	return h
}

func (fs *fileSystem) handle(fh uint64) *handle {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.handles[fh]
}

func (fs *fileSystem) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer fs.met.op(opRead)()
	h := fs.useHandle(in.Fh, in.NodeId, in.Flags)
	if h == nil {
		return nil, fuse.EBADF
	}
	if len(buf) > int(in.Size) {
		buf = buf[:in.Size]
	}
	n, err := h.of.f.ReadAt(context.Background(), buf, int64(in.Offset))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fs.status("read", h.ino, err)
	}
	fs.met.readBytes.Add(float64(n))
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (fs *fileSystem) Write(cancel <-chan struct{}, in *fuse.WriteIn, p []byte) (uint32, fuse.Status) {
	defer fs.met.op(opWrite)()
	h := fs.useHandle(in.Fh, in.NodeId, in.Flags)
	if h == nil {
		return 0, fuse.EBADF
	}
	if fs.readOnly || !writable(h.flags) {
		return 0, fuse.EBADF
	}
	off := int64(in.Offset)
	if h.flags&syscall.O_APPEND != 0 {
		// The kernel placed the write at the end it knows, which may be
		// stale when another client appended since; the data layer knows
		// the length as of our open plus our own writes.
		off = max(off, int64(h.of.f.Size()))
	}
	ctx := context.Background()
	if err := fs.reserve(ctx, h, off, len(p)); err != nil {
		return 0, fs.status("write", h.ino, err)
	}
	n, err := h.of.f.WriteAt(ctx, p, off)
	h.of.mtime.Store(time.Now().UnixNano())
	fs.met.writeBytes.Add(float64(n))
	if err != nil {
		return uint32(n), fs.status("write", h.ino, err)
	}
	return uint32(n), fuse.OK
}

// Flush runs on every close(2): commit what this process wrote, so another
// client that opens the file next sees it, and drop the closer's POSIX locks
// (the kernel does not track them when the file system does locking).
func (fs *fileSystem) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer fs.met.op(opFlush)()
	h := fs.handle(in.Fh)
	if h == nil && fs.inherited(in.Fh) {
		return fs.status("flush", fs.toMeta(in.NodeId), fs.flushInherited(&in.InHeader))
	}
	if h == nil {
		return fuse.EBADF
	}
	ctx := context.Background()
	err := h.of.f.Flush(ctx)
	if h.of.posixLocks.Load() {
		unlock := meta.Plock{Type: syscall.F_UNLCK, Start: 0, End: 1<<63 - 1}
		if lerr := fs.m.SetLk(ctx, h.ino, in.LockOwner, false, unlock); lerr != nil && err == nil {
			err = lerr
		}
	}
	return fs.status("flush", h.ino, err)
}

func (fs *fileSystem) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer fs.met.op(opFsync)()
	ctx := context.Background()
	if fs.owesLoss(in.Fh) {
		fs.log.Warn("fsync through a file handle of a server that died: writes it acknowledged may be lost", "ino", fs.toMeta(in.NodeId), "fh", in.Fh)
		return fuse.EIO
	}
	h := fs.handle(in.Fh)
	if h == nil && fs.inherited(in.Fh) {
		err := fs.flushInherited(&in.InHeader)
		if err == nil {
			err = fs.m.Sync(ctx)
		}
		return fs.status("fsync", fs.toMeta(in.NodeId), err)
	}
	if h == nil {
		return fuse.EBADF
	}
	err := h.of.f.Flush(ctx)
	if err == nil {
		err = fs.m.Sync(ctx)
	}
	return fs.status("fsync", h.ino, err)
}

func (fs *fileSystem) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	defer fs.met.op(opRelease)()
	fs.mu.Lock()
	h := fs.handles[in.Fh]
	delete(fs.handles, in.Fh)
	if h == nil {
		fs.mu.Unlock()
		return
	}
	fs.met.handles.Dec()
	h.of.refs--
	last := h.of.refs == 0
	if last {
		delete(fs.open, h.ino)
		fs.met.openFiles.Dec()
	}
	fs.mu.Unlock()

	ctx := context.Background()
	if in.ReleaseFlags&releaseFlockUnlock != 0 {
		if err := fs.m.Flock(ctx, h.ino, in.LockOwner, syscall.F_UNLCK, false); err != nil {
			fs.log.Warn("drop flock on release", "ino", h.ino, "err", err)
		}
	}
	if err := h.of.f.Release(ctx); err != nil {
		fs.log.Error("release: data not committed", "ino", h.ino, "err", err)
	}
	fs.rel.deferRelease(h.ino)
}

// flushIfOpen commits buffered writes of ino before an operation that
// changes its data in metadata directly.
func (fs *fileSystem) flushIfOpen(ctx context.Context, ino meta.Ino) (*openFile, error) {
	fs.mu.Lock()
	of := fs.open[ino]
	fs.mu.Unlock()
	if of == nil {
		return nil, nil
	}
	return of, of.f.Flush(ctx)
}

func (fs *fileSystem) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	defer fs.met.op(opFallocate)()
	if fs.readOnly {
		return fuse.EROFS
	}
	ctx := context.Background()
	ino := fs.toMeta(in.NodeId)
	of, err := fs.flushIfOpen(ctx, ino)
	if err != nil {
		return fs.status("fallocate flush", ino, err)
	}
	if err := fs.m.Fallocate(ctx, ino, in.Mode, in.Offset, in.Length); err != nil {
		return fs.status("fallocate", ino, err)
	}
	return fs.status("fallocate", ino, fs.resync(ctx, ino, of))
}

// resync tells the data layer of an open file that metadata changed its
// length or slices underneath it.
func (fs *fileSystem) resync(ctx context.Context, ino meta.Ino, of *openFile) error {
	if of == nil {
		return nil
	}
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return err
	}
	return of.f.Truncate(ctx, a.Size)
}

func (fs *fileSystem) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	defer fs.met.op(opCopyFileRange)()
	if fs.readOnly {
		return 0, fuse.EROFS
	}
	ctx := context.Background()
	src, dst := fs.toMeta(in.NodeId), fs.toMeta(in.NodeIdOut)
	if _, err := fs.flushIfOpen(ctx, src); err != nil {
		return 0, fs.status("copy_file_range flush", src, err)
	}
	dof, err := fs.flushIfOpen(ctx, dst)
	if err != nil {
		return 0, fs.status("copy_file_range flush", dst, err)
	}
	n, err := fs.m.CopyFileRange(ctx, src, in.OffIn, dst, in.OffOut, in.Len)
	if err != nil {
		return 0, fs.status("copy_file_range", src, err)
	}
	if err := fs.resync(ctx, dst, dof); err != nil {
		return 0, fs.status("copy_file_range", dst, err)
	}
	return uint32(n), fuse.OK
}

func (fs *fileSystem) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	defer fs.met.op(opGetlk)()
	ino := fs.toMeta(in.NodeId)
	lk := meta.Plock{Type: in.Lk.Typ, Start: in.Lk.Start, End: in.Lk.End, Pid: in.Lk.Pid}
	if err := fs.m.GetLk(context.Background(), ino, in.Owner, &lk); err != nil {
		return fs.status("getlk", ino, err)
	}
	out.Lk = fuse.FileLock{Start: lk.Start, End: lk.End, Typ: lk.Type, Pid: lk.Pid}
	return fuse.OK
}

func (fs *fileSystem) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer fs.met.op(opSetlk)()
	return fs.setLk(cancel, in, false)
}

func (fs *fileSystem) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer fs.met.op(opSetlk)()
	return fs.setLk(cancel, in, true)
}

func (fs *fileSystem) setLk(cancel <-chan struct{}, in *fuse.LkIn, block bool) fuse.Status {
	ino := fs.toMeta(in.NodeId)
	ctx := context.Background()
	if block {
		var stop context.CancelFunc
		ctx, stop = cancelCtx(cancel)
		defer stop()
	}
	if in.LkFlags&fuse.LK_FLOCK != 0 {
		return fs.status("flock", ino, fs.m.Flock(ctx, ino, in.Owner, in.Lk.Typ, block))
	}
	if h := fs.handle(in.Fh); h != nil && in.Lk.Typ != syscall.F_UNLCK {
		h.of.posixLocks.Store(true)
	}
	lk := meta.Plock{Type: in.Lk.Typ, Start: in.Lk.Start, End: in.Lk.End, Pid: in.Lk.Pid}
	return fs.status("setlk", ino, fs.m.SetLk(ctx, ino, in.Owner, block, lk))
}

// reserve refuses (EDQUOT) a write that would grow the file past its
// directory quota, before the bytes are accepted into the write buffer:
// the growth (in 4 KiB blocks, as quotas charge it) is checked against the
// quota's cached usage plus this client's writes not yet committed, and
// reserved until they are. The commit checks again.
func (fs *fileSystem) reserve(ctx context.Context, h *handle, off int64, n int) error {
	if n == 0 {
		return nil
	}
	end, size := uint64(off)+uint64(n), h.of.f.Size()
	if end <= size {
		return nil
	}
	blocks := func(x uint64) uint64 { return (x + 4095) &^ 4095 }
	return fs.m.ReserveSpace(ctx, h.ino, blocks(end)-blocks(size))
}
