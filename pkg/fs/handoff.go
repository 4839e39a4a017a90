package fs

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"os"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/fuseconn"
)

// Conn is a FUSE connection mounted by another process (the CSI node, see
// pkg/fuseconn) for this one to serve.
type Conn struct {
	// File is the connection. It must stay open until Unmount or Wait
	// returns; the server serves a copy of its own.
	File *os.File
	// Init is the connection's saved INIT exchange (fuseconn.Handoff.Init);
	// nil when no server has served the connection yet.
	Init []byte
	// SaveInit keeps the INIT exchange when this is the first server
	// (fuseconn.Handoff.SaveInit).
	SaveInit func([]byte) error
	// PrevCrashed says the connection's previous server did not detach
	// cleanly (!fuseconn.Handoff.Clean): it may have acknowledged writes it
	// never committed. Unless its write journal (Config.Data.JournalDir)
	// had them all, and New committed them, fsync through a file handle it
	// opened for writing then answers EIO once, as a local file system
	// reports lost writes.
	PrevCrashed bool
}

// attachServer starts go-fuse on a handed-off connection, continuing it
// when a previous server served it.
func attachServer(ctx context.Context, fsys *fileSystem, c *Conn, fo *fuse.MountOptions, log *slog.Logger) (*fuse.Server, *fuseconn.Attached, error) {
	o := *fo
	o.DirectMount, o.DirectMountStrict = false, false
	if o.Logger == nil {
		// go-fuse's complaints (a failed read, a reply the kernel refused)
		// go to our log rather than stderr.
		o.Logger = stdlog.New(fuseLogWriter{log}, "", 0)
	}
	a, err := fuseconn.Attach(ctx, fuseconn.AttachConfig{
		Conn:     c.File,
		Init:     c.Init,
		SaveInit: c.SaveInit,
		NewServer: func(mp string) (*fuse.Server, error) {
			return fuse.NewServer(fsys, mp, &o)
		},
		Log: log,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("serve the handed-off FUSE connection: %w", err)
	}
	// A successor continues this connection after a kill -9: a request
	// being copied in at that moment must not fail (see prefault.go).
	if err := prefaultReadBuffers(a.Server); err != nil {
		log.Warn("request buffers are not prefaulted: a kill -9 of this server may fail the request the kernel is copying to it with EIO", "err", err)
	}
	return a.Server, a, nil
}

// connLabel names a handed-off mount in logs and its metadata session when
// the configuration gives no mount point.
func connLabel(c *Conn) string {
	return "fuse-fd:" + strings.TrimPrefix(c.File.Name(), "/dev/")
}

// detach ends serving a handed-off connection without unmounting it: no
// new requests are taken, the ones read are answered, then buffered writes
// are committed and the session is closed. Requests still running when ctx
// ends are left to the next server (its resend).
func (m *Mount) detach(ctx context.Context) error {
	serr := m.attached.StopReading(ctx, m.served)
	if serr != nil {
		m.log.Warn("FUSE requests still running at detach: the next server answers them", "err", serr)
	}
	ferr := m.fs.flushAll(ctx)
	if ferr != nil {
		m.log.Error("flush at detach", "err", ferr)
	}
	return errors.Join(ferr, m.shutdown(ctx))
}

// StatFS returns the volume's usage as fuseconn reports it to the holder.
func (m *Mount) StatFS(ctx context.Context) (fuseconn.Stats, error) {
	st, err := m.m.StatFS(ctx)
	if err != nil {
		return fuseconn.Stats{}, fmt.Errorf("statfs of volume %q: %w", m.format.Name, err)
	}
	return fuseconn.Stats{
		TotalBytes:  int64(st.TotalSpace),
		UsedBytes:   int64(st.TotalSpace - st.AvailSpace),
		AvailBytes:  int64(st.AvailSpace),
		TotalInodes: int64(st.UsedInodes + st.AvailInodes),
		UsedInodes:  int64(st.UsedInodes),
		FreeInodes:  int64(st.AvailInodes),
	}, nil
}

// fuseLogWriter takes go-fuse's log lines. Its readers' EAGAIN is how a
// detach ends them (fuseconn.StopReading): not worth a warning.
type fuseLogWriter struct{ log *slog.Logger }

func (w fuseLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "resource temporarily unavailable") {
		w.log.Debug("go-fuse: " + msg)
	} else {
		w.log.Warn("go-fuse: " + msg)
	}
	return len(p), nil
}
