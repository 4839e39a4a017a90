package sidecar

import (
	"context"
	"log/slog"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/fuseconn"
)

// FSMounter mounts volumes with pkg/fs, all in this process.
type FSMounter struct {
	Log *slog.Logger
	// Metrics, when set, gets every mount's metrics under its volume name.
	Metrics *Metrics
}

// Mount implements Mounter.
func (f *FSMounter) Mount(ctx context.Context, v Volume) (Mount, error) {
	m, err := fs.New(ctx, f.config(v))
	if err != nil {
		return nil, err
	}
	f.Metrics.Set(v.Name, m.Metrics())
	return m, nil
}

// ServeConn implements ConnServer: it serves v with pkg/fs on the
// connection the CSI node handed over.
func (f *FSMounter) ServeConn(ctx context.Context, v Volume, h *fuseconn.Handoff) (ConnMount, error) {
	cfg := f.config(v)
	cfg.MountPoint = "" // the CSI node mounted; logs name the connection
	cfg.StackOnDeadMount = false
	cfg.Conn = &fs.Conn{
		File:        h.Conn,
		Init:        h.Init,
		SaveInit:    func(b []byte) error { return h.SaveInit(ctx, b) },
		PrevCrashed: !h.Clean,
	}
	m, err := fs.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	f.Metrics.Set(v.Name, m.Metrics())
	return m, nil
}

// ServeFailed implements ConnServer.
func (f *FSMounter) ServeFailed(v Volume, h *fuseconn.Handoff) (Mount, error) {
	return serveFailed(context.Background(), h, f.logger().With("volume", v.Name))
}

func (f *FSMounter) logger() *slog.Logger {
	if f.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Log
}

// config is pkg/fs's configuration of v.
func (f *FSMounter) config(v Volume) fs.Config {
	log := f.logger()
	return fs.Config{
		MetaURL:    v.MetaURL,
		StorageURL: v.StorageURL,
		SecretDir:  v.SecretDir,
		MountPoint: v.MountPoint,
		SubDir:     v.SubDir,
		ReadOnly:   v.ReadOnly,
		Options:    v.Options,
		// A dead mount here is this sidecar's own before a restart: mount
		// on top so the running app containers see the new one.
		StackOnDeadMount: true,
		Data: data.Config{
			CacheSize:    v.Cache.CacheSize,
			CacheDir:     v.Cache.CacheDir,
			CacheDirSize: v.Cache.CacheDirSize,
			BufferSize:   v.Cache.BufferSize,
			Readahead:    v.Cache.Readahead,
			Logger:       log.With("volume", v.Name),
		},
		Logger: log.With("volume", v.Name),
	}
}
