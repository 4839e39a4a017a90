package sidecar

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/sidecar/volumeset"
)

// FSMounter mounts volumes with pkg/fs, all in this process.
type FSMounter struct {
	Log *slog.Logger
	// Metrics, when set, gets every mount's metrics under its volume name.
	Metrics *Metrics
	// MemoryLimit overrides the container memory limit the shared memory
	// budget is sized from (read from the cgroup, else $PODFS_MEMORY_LIMIT);
	// 0 = find it.
	MemoryLimit int64
	// IdleRelease is how long the volumes must see no read or write (and
	// hold no unwritten data) before the sidecar gives its cache memory
	// back; 0 = DefaultIdleRelease, negative = never.
	IdleRelease time.Duration
	// JournalDir, when set, keeps a write journal per handed-over
	// connection under it (JournalDir/<handoff name>), so a sidecar killed
	// with writes acknowledged but not yet committed loses none of them:
	// the next one replays the journal before serving. It must outlive the
	// process (the pod's /run/podfs emptyDir).
	JournalDir string
	// CgroupRoot is where the memory limit is read; "" = /sys/fs/cgroup.
	CgroupRoot string

	mu      sync.Mutex
	mounted int
	budget  *data.Budget
}

// DefaultIdleRelease is how long a sidecar idles before it gives memory back.
const DefaultIdleRelease = time.Minute

// DefaultJournalDir is where the sidecar keeps its write journals: in the
// pod's run directory, an emptyDir that outlives the sidecar's process.
const DefaultJournalDir = volumeset.RunDir + "/journal"

// Prepare sizes the memory budget all of vols share from the container's
// memory limit, and gives memory back whenever the volumes idle, until ctx
// ends. Run calls it before serving.
func (f *FSMounter) Prepare(ctx context.Context, vols []Volume) error {
	root := f.CgroupRoot
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	limit, from, err := memoryLimit(root, f.MemoryLimit, os.Getenv)
	if err != nil {
		return err
	}
	b, cache, buffer := sharedBudget(limit, vols)
	log := f.logger()
	if limit > 0 {
		if os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(goMemLimit(limit))
		}
		if limit < 256<<20 {
			log.Warn("the memory limit is small for a podfs sidecar; it may be OOM-killed under load (give it at least 256Mi)", "limit", limit)
		}
	}
	log.Info("memory budget shared by every volume", "memory_limit", limit, "limit_from", from,
		"block_cache", cache, "write_buffers", buffer)
	f.mu.Lock()
	f.budget = b
	f.mu.Unlock()
	idle := f.IdleRelease
	if idle == 0 {
		idle = DefaultIdleRelease
	}
	if idle > 0 {
		go b.ReleaseWhenIdle(ctx, idle, func(before, now data.BudgetStats) {
			log.Info("idle: gave memory back", "idle", idle, "cache_before", before.CacheBytes,
				"cache_now", now.CacheBytes, "write_buffers_now", now.Buffer)
		})
	}
	return nil
}

// Budget is the memory budget the volumes share (nil before the first
// mount or Prepare).
func (f *FSMounter) Budget() *data.Budget {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.budget
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
	if f.JournalDir != "" && !v.ReadOnly {
		cfg.Data.JournalDir = filepath.Join(f.JournalDir, v.Handoff)
	}
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
	f.mu.Lock()
	if f.budget == nil {
		// Mounted without Prepare: one budget for the process all the same.
		f.budget, _, _ = sharedBudget(0, []Volume{v})
	}
	budget := f.budget
	f.mu.Unlock()
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
			Budget:       budget,
			CacheDir:     v.Cache.CacheDir,
			CacheDirSize: v.Cache.CacheDirSize,
			Readahead:    v.Cache.Readahead,
			Logger:       log.With("volume", v.Name),
		},
		Logger: log.With("volume", v.Name),
	}
}
