// Package fs serves a podfs volume through FUSE: a go-fuse/v2 RawFileSystem
// whose node ids are podfs inode numbers, over pkg/meta and pkg/data.
package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/redact"
	"podfs.io/podfs/pkg/secretfiles"
	"podfs.io/podfs/pkg/storage"
)

// Config says what to mount where and how.
type Config struct {
	MetaURL string
	// StorageURL overrides the storage URL recorded in the volume's settings
	// (a sidecar may reach the same pool through other monitors or
	// credentials); "" = use the recorded one.
	StorageURL string
	// SecretDir holds the files of the volume's Secret: the URLs (the
	// recorded storage URL too) read the files they name under
	// /etc/podfs/secret from there (package secretfiles); "" = as named.
	SecretDir  string
	MountPoint string
	SubDir     string // serve this directory of the volume as the root; "" = the whole volume
	ReadOnly   bool
	// Options are mount options as a user writes them after -o, e.g.
	// "allow_other", "attr_timeout=1s"; unknown ones are an error.
	Options []string
	// AttrTimeout and EntryTimeout are how long the kernel caches attributes
	// and names; 0 = DefaultTimeout (use -o attr_timeout=0 for none).
	AttrTimeout  time.Duration
	EntryTimeout time.Duration
	// StackOnDeadMount mounts on top of a dead mount found at MountPoint
	// instead of clearing it. A sidecar restarted in its pod needs this: the
	// app container's view of the volume is a copy of the dead mount, which
	// receives (by propagation) a mount made on top of it, but never one made
	// after the dead mount was cleared.
	StackOnDeadMount bool
	// DirMtimeSkip is how recent a directory's stored mtime and ctime may be
	// for a create, unlink, rename or link in it to leave them unchanged
	// (saving a metadata write per operation in a busy directory); 0 = the
	// metadata engine's default (100 ms), negative = always update them.
	DirMtimeSkip time.Duration
	// SyncDelay is how long the embedded metadata engine (bolt) may keep a
	// change in the page cache before making it durable; 0 = the engine's
	// default (meta.DefaultSyncDelay), negative = durable before each call
	// returns. fsync makes everything durable at once.
	SyncDelay   time.Duration
	Data        data.Config
	MetricsAddr string // serve Prometheus metrics here; "" = none
	Logger      *slog.Logger
	// Conn, when set, is a FUSE connection mounted by another process to
	// serve instead of mounting: no mount(2) here, and Unmount detaches
	// (the mount stays, for the next server). MountPoint is then only the
	// name logs and the metadata session show.
	Conn *Conn
}

// Mount is a served podfs mount.
type Mount struct {
	cfg    Config
	mp     string
	log    *slog.Logger
	m      meta.Meta
	d      *data.Store
	obj    storage.Store
	fs     *fileSystem
	server *fuse.Server
	format *meta.Format
	// attached is set when serving a handed-off connection (Config.Conn).
	attached *fuseconn.Attached

	served       chan struct{} // closed when the FUSE serve loop ends
	stopMetrics  func()
	stopRefresh  chan struct{}
	unmountOnce  sync.Once
	unmountErr   error
	shutdownOnce sync.Once
	shutdownErr  error
}

// Format is the volume's settings as loaded at mount.
func (m *Mount) Format() meta.Format { return *m.format }

// Metrics is the mount's Prometheus registry (what --metrics serves), for a
// process that serves several mounts' metrics itself.
func (m *Mount) Metrics() prometheus.Gatherer { return m.fs.met.reg }

// MountPoint is the absolute path served.
func (m *Mount) MountPoint() string { return m.mp }

// New mounts the volume and returns once the kernel serves the mount point. A
// dead mount left at the mount point by a crashed process is cleared first.
// Every check that can fail runs before anything is changed.
func New(ctx context.Context, cfg Config) (*Mount, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.MetaURL == "" {
		return nil, errors.New("no metadata URL: give one, e.g. bolt:///var/lib/podfs/meta.db")
	}
	if cfg.SecretDir != "" {
		cfg.MetaURL = secretfiles.Rebase(cfg.MetaURL, cfg.SecretDir)
		cfg.StorageURL = secretfiles.Rebase(cfg.StorageURL, cfg.SecretDir)
	}
	mp, state, err := mountTarget(&cfg)
	if err != nil {
		return nil, err
	}
	mo, err := resolveOptions(&cfg)
	if err != nil {
		return nil, err
	}
	// On the embedded engine with a sync delay (the default), a file store
	// defers its syncs too: the engine makes the store durable (one syncfs)
	// before writing the metadata that refers to its new objects.
	pu, _ := meta.ParseURL(cfg.MetaURL)
	lazy := pu != nil && pu.Scheme == "bolt" && cfg.SyncDelay >= 0
	var deferred atomic.Pointer[storage.File]
	barrier := func() error {
		if f := deferred.Load(); f != nil {
			return f.Sync()
		}
		return nil
	}
	m, err := openMeta(ctx, cfg.MetaURL, meta.Options{Logger: log, DirMtimeSkip: cfg.DirMtimeSkip,
		SyncDelay: cfg.SyncDelay, DataBarrier: barrier})
	if err != nil {
		return nil, err
	}
	mnt := &Mount{cfg: cfg, mp: mp, log: log, m: m, served: make(chan struct{}), stopRefresh: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			mnt.abort()
		}
	}()
	format, err := m.Load(ctx)
	if errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("no volume at %s: format one first (podfs format %s NAME --storage URL)", redactURL(cfg.MetaURL), redactURL(cfg.MetaURL))
	}
	if err != nil {
		return nil, fmt.Errorf("load the volume at %s: %w", redactURL(cfg.MetaURL), err)
	}
	if format.Version > meta.FormatVersion {
		return nil, fmt.Errorf("volume %q has format version %d, this podfs understands up to %d: upgrade podfs", format.Name, format.Version, meta.FormatVersion)
	}
	mnt.format = format
	if mo.fuse.FsName == "" {
		mo.fuse.FsName = "podfs:" + format.Name
	}
	root, err := resolveSubDir(ctx, m, cfg.SubDir)
	if err != nil {
		return nil, err
	}
	storeURL := cfg.StorageURL
	if storeURL == "" {
		storeURL = format.Storage
		if cfg.SecretDir != "" {
			storeURL = secretfiles.Rebase(storeURL, cfg.SecretDir)
		}
	}
	if pu != nil && pu.Scheme != "bolt" {
		storeURL = storage.SharedURL(storeURL) // other mounts may share it
	}
	if lazy {
		// The barrier's syncfs makes small objects durable for less than
		// the journal's synchronous write each.
		storeURL = storage.DefaultFileOption(storeURL, "journal", "false")
	}
	obj, err := OpenStorage(ctx, storeURL)
	if err != nil {
		return nil, fmt.Errorf("open the volume's storage %s: %w", redactURL(storeURL), err)
	}
	// A journal asked for in the URL stays: it makes each object durable
	// as it is stored, and the barrier has nothing left to do.
	if f, ok := obj.(*storage.File); ok && lazy && !f.Journaled() {
		f.DeferSync()
		deferred.Store(f)
	}
	met := newMetrics()
	dcfg := cfg.Data
	if format.BlockSize > 0 {
		dcfg.BlockSize = format.BlockSize
	}
	if dcfg.Logger == nil {
		dcfg.Logger = log
	}
	d, err := data.New(m, &instrumentedStore{Store: obj, m: met}, dcfg)
	if err != nil {
		obj.Close()
		return nil, fmt.Errorf("start the data layer: %w", err)
	}
	mnt.d, mnt.obj = d, obj
	registerLayerMetrics(met, m, d)
	if cfg.MetricsAddr != "" {
		stop, err := met.serve(cfg.MetricsAddr, log)
		if err != nil {
			return nil, err
		}
		mnt.stopMetrics = stop
	}
	cfg.ReadOnly = mo.readOnly
	cfg.AttrTimeout, cfg.EntryTimeout = mo.attrTimeout, mo.entryTimeout
	fsys := newFileSystem(m, d, root, &cfg, met, log)
	if err := fsys.loadSecXattrs(ctx); err != nil {
		return nil, fmt.Errorf("read the volume's xattr marker: %w", err)
	}
	mnt.fs = fsys

	// A predecessor killed with writes acknowledged but uncommitted owes
	// the app an fsync error, unless its journal had them all (data.New
	// has committed them by now).
	prevLost := cfg.Conn != nil && cfg.Conn.PrevCrashed && !d.JournalIntact()
	if cfg.Conn != nil && cfg.Conn.PrevCrashed && !prevLost {
		log.Info("the previous server of this connection died; its write journal had every write it acknowledged, and they are committed")
	}
	fsys.initHandles(prevLost)
	switch {
	case cfg.Conn != nil:
		// Mounted by the connection's holder.
	case state == mpStale && cfg.StackOnDeadMount:
		log.Warn("mounting on top of a dead mount left at the mount point", "mountpoint", mp)
	default:
		if err := prepareMountPoint(mp, state); err != nil {
			return nil, err
		}
		if state == mpStale {
			log.Warn("cleared a dead mount left at the mount point", "mountpoint", mp)
		}
	}
	if err := m.NewSession(ctx, mp); err != nil {
		return nil, fmt.Errorf("register this mount's session: %w", err)
	}
	var server *fuse.Server
	if cfg.Conn != nil {
		server, mnt.attached, err = attachServer(ctx, fsys, cfg.Conn, &mo.fuse, log)
	} else {
		server, err = newServer(fsys, mp, &mo.fuse)
	}
	if err != nil {
		_ = m.CloseSession(context.Background())
		return nil, err
	}
	mnt.server = server
	go func() {
		server.Serve()
		close(mnt.served)
	}()
	if cfg.Conn != nil {
		go mnt.refresh()
		ok = true
		log.Info("serving a handed-off FUSE connection", "volume", format.Name, "name", mp, "subdir", cfg.SubDir,
			"readonly", mo.readOnly, "continued", mnt.attached.Continued)
		return mnt, nil
	}
	if err := server.WaitMount(); err != nil {
		_ = Unmount(mp, true)
		<-mnt.served
		_ = m.CloseSession(context.Background())
		return nil, fmt.Errorf("wait for the mount at %s: %w", mp, err)
	}
	if mo.fuse.DirectMount {
		if err := disablePoll(mp); err != nil {
			log.Warn("could not switch off FUSE poll requests", "err", err)
		}
	}
	setReadahead(mp, log)
	go mnt.refresh()
	ok = true
	log.Info("mounted", "volume", format.Name, "mountpoint", mp, "subdir", cfg.SubDir, "readonly", mo.readOnly)
	return mnt, nil
}

// abort releases what a failed New opened.
func (m *Mount) abort() {
	ctx := context.Background()
	if m.stopMetrics != nil {
		m.stopMetrics()
	}
	if m.d != nil {
		_ = m.d.Close(ctx)
		_ = m.obj.Close()
	}
	if m.fs != nil {
		m.fs.rel.close()
	}
	_ = m.m.Close(ctx)
}

// refresh re-reads, now and then, what other clients may change that this
// one caches for the life of the mount.
func (m *Mount) refresh() {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.stopRefresh:
			return
		case <-m.served:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if !m.fs.secXattrs.Load() {
				if err := m.fs.loadSecXattrs(ctx); err != nil {
					m.log.Warn("refresh xattr marker", "err", err)
				}
			}
			cancel()
		}
	}
}

// resolveSubDir finds the directory served as the root.
func resolveSubDir(ctx context.Context, m meta.Meta, sub string) (meta.Ino, error) {
	ino := meta.RootIno
	for _, name := range strings.Split(sub, "/") {
		if name == "" || name == "." {
			continue
		}
		next, a, err := m.Lookup(ctx, ino, name)
		if errors.Is(err, syscall.ENOENT) {
			return 0, fmt.Errorf("sub-directory %q does not exist in the volume: create it first (mount the volume and mkdir -p it)", sub)
		}
		if err != nil {
			return 0, fmt.Errorf("look up sub-directory %q: %w", sub, err)
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return 0, fmt.Errorf("sub-directory %q: %s is not a directory", sub, name)
		}
		ino = next
	}
	return ino, nil
}

// setReadahead raises the kernel's readahead window for the mount to ioSize:
// the FUSE INIT reply cannot raise it above the default 128 KiB.
func setReadahead(mp string, log *slog.Logger) {
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil {
		return
	}
	major, minor := (st.Dev>>8)&0xfff, (st.Dev&0xff)|((st.Dev>>12)&0xfff00)
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	if err := os.WriteFile(p, []byte(fmt.Sprint(ioSize>>10)), 0o644); err != nil {
		log.Debug("readahead left at the kernel default", "path", p, "err", err)
	}
}

// Unmount flushes buffered data, commits slices, closes the metadata session
// and unmounts (lazily when busy). It is safe to call more than once.
//
// A handed-off connection (Config.Conn) is not unmounted but detached: no
// new requests are taken, the ones read are answered (until ctx ends: the
// rest are left to the next server), then the same flush and commit.
func (m *Mount) Unmount(ctx context.Context) error {
	m.unmountOnce.Do(func() {
		if ctx.Err() != nil {
			// A caller stopping on a signal may pass its already-ended
			// context; buffered data must still be written.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
		}
		if m.attached != nil {
			m.unmountErr = m.detach(ctx)
			return
		}
		// Make written data durable first: if the unmount below has to be
		// lazy, processes may keep the mount for a while.
		ferr := m.fs.flushAll(ctx)
		if ferr != nil {
			m.log.Error("flush before unmount", "err", ferr)
		}
		uerr := m.unmountKernel()
		select {
		case <-m.served:
		case <-ctx.Done():
			m.log.Warn("unmounted lazily; processes still use the mount, stopping anyway", "mountpoint", m.mp)
		case <-time.After(10 * time.Second):
			m.log.Warn("unmounted lazily; processes still use the mount, stopping anyway", "mountpoint", m.mp)
		}
		m.unmountErr = errors.Join(ferr, uerr, m.shutdown(ctx))
	})
	return m.unmountErr
}

// unmountKernel detaches the mount from the kernel.
func (m *Mount) unmountKernel() error {
	err := syscall.Unmount(m.mp, 0)
	if errors.Is(err, syscall.EBUSY) {
		m.log.Info("mount point busy: unmounting lazily", "mountpoint", m.mp)
		err = syscall.Unmount(m.mp, syscall.MNT_DETACH)
	}
	if errors.Is(err, syscall.EPERM) {
		err = m.server.Unmount() // not root: fusermount -u
	}
	if errors.Is(err, syscall.EINVAL) {
		select {
		case <-m.served:
			return nil // already unmounted by someone else
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.mp, err)
	}
	return nil
}

// shutdown stops the data layer (flushing it), closes the session and the
// metadata engine, once, whoever ends the mount.
func (m *Mount) shutdown(ctx context.Context) error {
	m.shutdownOnce.Do(func() {
		close(m.stopRefresh)
		var errs []error
		if err := m.d.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush data: %w", err))
		}
		if err := m.obj.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close storage: %w", err))
		}
		m.fs.rel.close()
		if err := m.m.CloseSession(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close session: %w", err))
		}
		if err := m.m.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close metadata: %w", err))
		}
		if m.stopMetrics != nil {
			m.stopMetrics()
		}
		m.shutdownErr = errors.Join(errs...)
		m.log.Info("unmounted", "mountpoint", m.mp, "err", m.shutdownErr)
	})
	return m.shutdownErr
}

// Wait blocks until the mount ends (unmounted by anyone) and returns why, if not cleanly.
func (m *Mount) Wait() error {
	<-m.served
	return m.shutdown(context.Background())
}

// flushAll commits every open file's buffered writes.
func (fs *fileSystem) flushAll(ctx context.Context) error {
	fs.mu.Lock()
	files := make([]*openFile, 0, len(fs.open))
	for _, of := range fs.open {
		files = append(files, of)
	}
	fs.mu.Unlock()
	var errs []error
	for _, of := range files {
		if err := of.f.Flush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// redactURL drops credentials from a URL for messages.
func redactURL(u string) string { return redact.URL(u) }

// Status is a mounted volume's state, as podfs status shows it.
type Status struct {
	MetaURL    string
	MountPoint string
	Format     meta.Format
	StatFS     meta.StatFS
	Sessions   []meta.Session
	Frag       *meta.Fragmentation // nil when it could not be read
}

// Status reads the volume's usage and sessions through this mount's
// metadata client (the only way while an embedded engine is held by it).
func (m *Mount) Status(ctx context.Context) (*Status, error) {
	st, err := m.m.StatFS(ctx)
	if err != nil {
		return nil, fmt.Errorf("statfs: %w", err)
	}
	sessions, err := m.m.ListSessions(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	st2 := &Status{MetaURL: redactURL(m.cfg.MetaURL), MountPoint: m.mp, Format: *m.format, StatFS: st, Sessions: sessions}
	st2.Format.Storage = redactURL(st2.Format.Storage)
	if f, err := m.m.Fragmentation(ctx); err == nil {
		st2.Frag = &f
	}
	return st2, nil
}

// mountTarget resolves where the mount goes and what is there now. A
// handed-off connection is mounted already: its MountPoint is only a name.
func mountTarget(cfg *Config) (string, mpState, error) {
	if cfg.Conn != nil {
		if cfg.Conn.File == nil {
			return "", 0, errors.New("a handed-off FUSE connection without its descriptor")
		}
		if cfg.MountPoint == "" {
			return connLabel(cfg.Conn), mpDir, nil
		}
		return cfg.MountPoint, mpDir, nil
	}
	if cfg.MountPoint == "" {
		return "", 0, errors.New("no mount point: give the directory to mount on")
	}
	mp, err := filepath.Abs(cfg.MountPoint)
	if err != nil {
		return "", 0, fmt.Errorf("mount point %s: %w", cfg.MountPoint, err)
	}
	state, err := checkMountPoint(mp)
	if err != nil {
		return "", 0, err
	}
	return mp, state, nil
}
