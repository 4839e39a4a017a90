package sidecar

import (
	"context"
	"log/slog"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/fs"
)

// FSMounter mounts volumes with pkg/fs, all in this process.
type FSMounter struct {
	Log *slog.Logger
	// MetricsAddr, when set, serves the first mount's metrics (one
	// listener per process).
	MetricsAddr string
	mounted     int
}

// Mount implements Mounter.
func (f *FSMounter) Mount(ctx context.Context, v Volume) (Mount, error) {
	metrics := ""
	if f.mounted == 0 {
		metrics = f.MetricsAddr
	}
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := fs.New(ctx, fs.Config{
		MetaURL:    v.MetaURL,
		StorageURL: v.StorageURL,
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
		MetricsAddr: metrics,
		Logger:      log.With("volume", v.Name),
	})
	if err != nil {
		return nil, err
	}
	f.mounted++
	return m, nil
}
