package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/fuseconn"
)

// failedFS answers every request with EIO: a volume that cannot be served
// (its metadata or object store is unreachable, its URL is wrong) fails
// its callers at once instead of leaving them waiting on a mount nobody
// serves, and the pod's other volumes go on.
type failedFS struct {
	fuse.RawFileSystem
}

func newFailedFS() *failedFS { return &failedFS{RawFileSystem: fuse.NewDefaultRawFileSystem()} }

func (*failedFS) String() string { return "podfs-failed" }

func (*failedFS) Lookup(<-chan struct{}, *fuse.InHeader, string, *fuse.EntryOut) fuse.Status {
	return fuse.EIO
}

// GetAttr answers for the root alone, an empty read-only directory: the
// kubelet stats the volume's mount point to bind it into the app's
// containers, and an error there would keep the whole pod from starting.
func (*failedFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.NodeId != fuse.FUSE_ROOT_ID {
		return fuse.EIO
	}
	out.Ino, out.Mode, out.Nlink = fuse.FUSE_ROOT_ID, fuse.S_IFDIR|0o555, 2
	out.SetTimeout(time.Second)
	return fuse.OK
}
func (*failedFS) SetAttr(<-chan struct{}, *fuse.SetAttrIn, *fuse.AttrOut) fuse.Status {
	return fuse.EIO
}
func (*failedFS) Access(<-chan struct{}, *fuse.AccessIn) fuse.Status            { return fuse.EIO }
func (*failedFS) Open(<-chan struct{}, *fuse.OpenIn, *fuse.OpenOut) fuse.Status { return fuse.EIO }
func (*failedFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, _ *fuse.OpenOut) fuse.Status {
	if in.NodeId == fuse.FUSE_ROOT_ID {
		return fuse.OK // readdir answers EIO
	}
	return fuse.EIO
}
func (*failedFS) ReadDir(<-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status {
	return fuse.EIO
}
func (*failedFS) ReadDirPlus(<-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status {
	return fuse.EIO
}
func (*failedFS) StatFs(<-chan struct{}, *fuse.InHeader, *fuse.StatfsOut) fuse.Status {
	return fuse.EIO
}
func (*failedFS) Create(<-chan struct{}, *fuse.CreateIn, string, *fuse.CreateOut) fuse.Status {
	return fuse.EIO
}
func (*failedFS) Mkdir(<-chan struct{}, *fuse.MkdirIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EIO
}
func (*failedFS) Mknod(<-chan struct{}, *fuse.MknodIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EIO
}
func (*failedFS) Unlink(<-chan struct{}, *fuse.InHeader, string) fuse.Status { return fuse.EIO }
func (*failedFS) Rmdir(<-chan struct{}, *fuse.InHeader, string) fuse.Status  { return fuse.EIO }
func (*failedFS) Rename(<-chan struct{}, *fuse.RenameIn, string, string) fuse.Status {
	return fuse.EIO
}
func (*failedFS) Symlink(<-chan struct{}, *fuse.InHeader, string, string, *fuse.EntryOut) fuse.Status {
	return fuse.EIO
}
func (*failedFS) Readlink(<-chan struct{}, *fuse.InHeader) ([]byte, fuse.Status) {
	return nil, fuse.EIO
}
func (*failedFS) GetXAttr(<-chan struct{}, *fuse.InHeader, string, []byte) (uint32, fuse.Status) {
	return 0, fuse.EIO
}
func (*failedFS) ListXAttr(<-chan struct{}, *fuse.InHeader, []byte) (uint32, fuse.Status) {
	return 0, fuse.EIO
}

// failedMount serves failedFS on a handed-over connection.
type failedMount struct {
	a      *fuseconn.Attached
	served chan struct{}
	once   sync.Once
	err    error
}

// serveFailed attaches failedFS to h's connection.
func serveFailed(ctx context.Context, h *fuseconn.Handoff, log *slog.Logger) (*failedMount, error) {
	fsys := newFailedFS()
	a, err := fuseconn.Attach(ctx, fuseconn.AttachConfig{
		Conn:     h.Conn,
		Init:     h.Init,
		SaveInit: func(b []byte) error { return h.SaveInit(ctx, b) },
		NewServer: func(mp string) (*fuse.Server, error) {
			return fuse.NewServer(fsys, mp, &fuse.MountOptions{Name: "podfs", MaxWrite: 1 << 20})
		},
		Log: log,
	})
	if err != nil {
		return nil, fmt.Errorf("attach to the FUSE connection: %w", err)
	}
	m := &failedMount{a: a, served: make(chan struct{})}
	go func() {
		a.Server.Serve()
		close(m.served)
	}()
	return m, nil
}

// Unmount stops answering (the next sidecar takes over the connection).
func (m *failedMount) Unmount(ctx context.Context) error {
	m.once.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		m.err = m.a.StopReading(ctx, m.served)
	})
	return m.err
}

func (m *failedMount) Wait() error {
	<-m.served
	return errors.New("stopped answering")
}
