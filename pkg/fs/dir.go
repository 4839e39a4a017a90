package fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/meta"
)

// readdirPage is how many entries one metadata Readdir call returns; a
// directory is listed page by page as the kernel asks for more.
const readdirPage = 1024

// dirHandle is one opendir(3) stream. Entry i of the stream (".", "..",
// then the children in name order) has offset i+1, so the offset the kernel
// passes back is the index of the next entry to return.
type dirHandle struct {
	ino    meta.Ino
	parent meta.Ino

	mu      sync.Mutex
	entries []meta.Entry
	eof     bool
}

func (fs *fileSystem) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer fs.met.op(opOpendir)()
	ino := fs.toMeta(in.NodeId)
	a, err := fs.m.GetAttr(context.Background(), ino)
	if err != nil {
		return fs.status("opendir", ino, err)
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fuse.ENOTDIR
	}
	parent := a.Parent
	if ino == fs.root || parent == 0 {
		parent = ino
	}
	fs.mu.Lock()
	fs.nextFh++
	fh := fs.nextFh
	fs.dirs[fh] = &dirHandle{ino: ino, parent: parent}
	fs.mu.Unlock()
	out.Fh = fh
	return fuse.OK
}

func (fs *fileSystem) ReleaseDir(in *fuse.ReleaseIn) {
	fs.mu.Lock()
	delete(fs.dirs, in.Fh)
	fs.mu.Unlock()
}

func (fs *fileSystem) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.status("fsyncdir", meta.Ino(in.NodeId), fs.m.Sync(context.Background()))
}

func (fs *fileSystem) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer fs.met.op(opReaddir)()
	return fs.readDir(in, out, false)
}

func (fs *fileSystem) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer fs.met.op(opReaddirplus)()
	return fs.readDir(in, out, true)
}

func (fs *fileSystem) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	dh := fs.useDirHandle(in.Fh, in.NodeId)
	if dh == nil {
		return fuse.EBADF
	}
	dh.mu.Lock()
	defer dh.mu.Unlock()
	ctx := context.Background()
	idx := in.Offset
	if idx == 0 && len(dh.entries) > 0 {
		// rewinddir(3): list afresh.
		dh.entries, dh.eof = nil, false
	}
	for ; ; idx++ {
		var e fuse.DirEntry
		var me *meta.Entry
		switch idx {
		case 0:
			e = fuse.DirEntry{Name: ".", Ino: fs.toKernel(dh.ino), Mode: syscall.S_IFDIR}
		case 1:
			e = fuse.DirEntry{Name: "..", Ino: fs.toKernel(dh.parent), Mode: syscall.S_IFDIR}
		default:
			j := int(idx - 2)
			for j >= len(dh.entries) && !dh.eof {
				cursor := ""
				if n := len(dh.entries); n > 0 {
					cursor = dh.entries[n-1].Name
				}
				page, err := fs.m.Readdir(ctx, dh.ino, cursor, readdirPage)
				if err != nil {
					return fs.status("readdir", dh.ino, err)
				}
				dh.entries = append(dh.entries, page...)
				dh.eof = len(page) < readdirPage
			}
			if j >= len(dh.entries) {
				return fuse.OK
			}
			me = &dh.entries[j]
			e = fuse.DirEntry{Name: me.Name, Ino: fs.toKernel(me.Ino), Mode: me.Attr.Mode}
		}
		e.Off = idx + 1
		if !plus {
			if !out.AddDirEntry(e) {
				return fuse.OK
			}
			continue
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return fuse.OK
		}
		if me != nil {
			// "." and ".." keep a zero node id: the kernel links no inode for them.
			fs.fillEntry(me.Ino, &me.Attr, eo)
		}
	}
}
