// Package sidecar is the runtime of the podfs-sidecar container (`podfs
// sidecar`): it reads the volume set the webhook wrote (volumeset.EnvVar),
// serves every volume in this one process, reports ready through a unix
// socket the startup probe asks, and stops cleanly on SIGTERM or when the
// app containers are done (non-native sidecars learn it from the
// podfs.io/apps-done annotation).
//
// On ordinary nodes (volumeset.ModeNode) it mounts nothing and needs no
// privilege: the CSI node has mounted FUSE at each volume's target path and
// hands the connection over a unix socket (pkg/fuseconn); the sidecar
// serves it, and on stopping flushes and detaches, leaving the mount to the
// next sidecar. On serverless nodes it mounts FUSE into emptyDirs itself
// and unmounts every mount before it exits — a Bidirectional mount left
// behind keeps the pod Terminating forever.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"podfs.io/podfs/sidecar/volumeset"
)

// Volume is a volume ready to mount: mount point expanded, secrets resolved.
type Volume struct {
	volumeset.Volume
	MetaURL    string // resolved, possibly from a Secret
	StorageURL string
	// SecretDir holds the volume's Secret as files, where the URLs'
	// /etc/podfs/secret/KEY paths are read from (package secretfiles).
	SecretDir string
}

// Mounter mounts one volume; the real one is pkg/fs (FSMounter).
type Mounter interface {
	Mount(ctx context.Context, v Volume) (Mount, error)
}

// Preparer is a Mounter that sets up what all the volumes share (the
// memory budget) before the first is mounted.
type Preparer interface {
	Prepare(ctx context.Context, vols []Volume) error
}

// Mount is one served mount.
type Mount interface {
	// Unmount flushes and unmounts, lazily when busy. Safe to call twice.
	Unmount(ctx context.Context) error
	// Wait returns when the mount ends, with why if not cleanly.
	Wait() error
}

// Config configures Run.
type Config struct {
	Set     *volumeset.VolumeSet
	Mounter Mounter
	Getenv  func(string) string // default os.Getenv
	// ProbeSocket is where the startup probe asks; "" = volumeset.ProbeSocket.
	ProbeSocket string
	// TerminationLog gets the reason of a failure (the kubelet shows it in
	// the container's status); "" = none.
	TerminationLog string
	// StopGrace bounds how long a non-native sidecar waits, after SIGTERM,
	// for the apps to finish before unmounting; default 20s.
	StopGrace time.Duration
	// Poll is how often the apps-done file is read; default 1s.
	Poll time.Duration
	// HandoffDir is where the CSI node offers the FUSE connections on
	// ordinary nodes; "" = volumeset.HandoffDir.
	HandoffDir string
	// SecretsDir is where the Secret files the CSI node sends with a
	// connection are kept, a directory per volume (ordinary nodes; an
	// in-memory emptyDir the webhook adds); "" = volumeset.SecretsDir.
	SecretsDir string
	// HandoffWait bounds the wait for a volume's connection; default 2m.
	HandoffWait time.Duration
	Log         *slog.Logger
}

// Resolve expands mount points and reads secrets from the environment.
func Resolve(set *volumeset.VolumeSet, getenv func(string) string) ([]Volume, error) {
	uid := getenv(volumeset.PodUIDEnv)
	var errs []error
	out := make([]Volume, 0, len(set.Volumes))
	for _, v := range set.Volumes {
		r := Volume{Volume: v, MetaURL: v.MetaURL, StorageURL: v.StorageURL, SecretDir: v.SecretDir}
		if v.MountPoint != "" { // ordinary nodes: the CSI node mounts
			mp, err := volumeset.ExpandMountPoint(v.MountPoint, uid)
			if err != nil {
				errs = append(errs, fmt.Errorf("volume %q: %w", v.Name, err))
			}
			r.MountPoint = mp
		}
		if v.MetaURLEnv != "" {
			if r.MetaURL = getenv(v.MetaURLEnv); r.MetaURL == "" {
				errs = append(errs, fmt.Errorf("volume %q: the metadata URL comes from $%s, which is empty: check the key in the PV's nodePublishSecretRef Secret", v.Name, v.MetaURLEnv))
			}
		}
		if v.StorageURLEnv != "" {
			if r.StorageURL = getenv(v.StorageURLEnv); r.StorageURL == "" {
				errs = append(errs, fmt.Errorf("volume %q: the storage URL comes from $%s, which is empty: check the key in the PV's nodePublishSecretRef Secret", v.Name, v.StorageURLEnv))
			}
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Run serves the volume set until ctx ends (SIGTERM), the apps are done,
// or a mount fails. It returns nil after a clean stop; otherwise the error
// says why, and every mount has been unmounted either way.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.ProbeSocket == "" {
		cfg.ProbeSocket = volumeset.ProbeSocket
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 20 * time.Second
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	log := cfg.Log
	st := &state{}
	probe, perr := serveProbe(cfg.ProbeSocket, st)
	if perr != nil {
		return perr
	}
	defer probe.Close()
	defer func() {
		if err != nil {
			st.fail(err.Error())
			writeTerminationLog(cfg.TerminationLog, err.Error())
		}
	}()

	vols, err := Resolve(cfg.Set, cfg.Getenv)
	if err != nil {
		return err
	}
	if p, ok := cfg.Mounter.(Preparer); ok {
		if err := p.Prepare(ctx, vols); err != nil {
			return err
		}
	}
	if cfg.Set.Mode == volumeset.ModeNode {
		handoffDefaults(&cfg)
		return runNode(ctx, cfg, vols, st)
	}
	var mounts []*served
	unmountAll := func() error {
		var errs []error
		for i := len(mounts) - 1; i >= 0; i-- {
			m := mounts[i]
			uctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := m.m.Unmount(uctx); err != nil {
				errs = append(errs, fmt.Errorf("unmount volume %q at %s: %w", m.v.Name, m.v.MountPoint, err))
			} else {
				log.Info("unmounted", "volume", m.v.Name, "mount_point", m.v.MountPoint)
				// Dead mounts of earlier runs we mounted on top of: the
				// pod is stopping, nothing needs them any more.
				if err := ClearDeadMount(m.v.MountPoint); err != nil {
					errs = append(errs, fmt.Errorf("volume %q: %w", m.v.Name, err))
				}
			}
			cancel()
		}
		return errors.Join(errs...)
	}
	died := make(chan *served, len(vols))
	for _, v := range vols {
		if ctx.Err() != nil {
			log.Info("asked to stop while mounting")
			return unmountAll()
		}
		// A dead mount left by this sidecar's previous run stays: the new
		// mount goes on top of it (see fs.Config.StackOnDeadMount), so the
		// running app containers' copies of it receive the new mount.
		if _, err := os.Lstat(v.MountPoint); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(v.MountPoint, 0o755); err != nil {
				return errors.Join(fmt.Errorf("volume %q: create mount point: %w", v.Name, err), unmountAll())
			}
		}
		start := time.Now()
		m, err := cfg.Mounter.Mount(ctx, v)
		if err != nil && ctx.Err() != nil {
			// SIGTERM while mounting: a stop, not a failure.
			log.Info("asked to stop while mounting", "volume", v.Name, "err", err)
			return unmountAll()
		}
		if err != nil {
			return errors.Join(fmt.Errorf("mount volume %q at %s: %w", v.Name, v.MountPoint, err), unmountAll())
		}
		s := &served{v: v, m: m}
		mounts = append(mounts, s)
		go func() {
			s.err = m.Wait()
			died <- s
		}()
		log.Info("mounted", "volume", v.Name, "mount_point", v.MountPoint, "took", time.Since(start))
	}
	st.ready()
	log.Info("all volumes served", "volumes", len(mounts), "native", cfg.Set.Native)

	var appsDone <-chan struct{}
	if !cfg.Set.Native && cfg.Set.AppsDoneFile != "" {
		appsDone = watchAppsDone(ctx, cfg.Set.AppsDoneFile, cfg.Poll)
	}
	select {
	case s := <-died:
		st.fail("mount of volume " + s.v.Name + " ended")
		why := fmt.Errorf("the mount of volume %q at %s ended unexpectedly: %v", s.v.Name, s.v.MountPoint, s.err)
		return errors.Join(why, unmountAll())
	case <-appsDone:
		log.Info("the app containers are done; unmounting")
		st.stopping()
		return unmountAll()
	case <-ctx.Done():
	}
	st.stopping()
	if !cfg.Set.Native {
		// Every container got SIGTERM at once: give the apps time to
		// finish (or the apps-done signal) before pulling the file system
		// from under them. Native sidecars are stopped after the apps.
		log.Info("SIGTERM: waiting for the app containers", "grace", cfg.StopGrace)
		t := time.NewTimer(cfg.StopGrace)
		select {
		case <-t.C:
		case <-watchAppsDone(context.Background(), cfg.Set.AppsDoneFile, cfg.Poll):
		}
		t.Stop()
	}
	log.Info("stopping: unmounting every volume")
	return unmountAll()
}

type served struct {
	v   Volume
	m   Mount
	err error
}

// watchAppsDone closes the returned channel once the downward API file
// shows podfs.io/apps-done="true".
func watchAppsDone(ctx context.Context, file string, every time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	if file == "" {
		return ch
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if AppsDone(file) {
				close(ch)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ch
}

// AppsDone reads a downward API annotations file (lines key="value").
func AppsDone(file string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && k == volumeset.AppsDoneAnnotation && strings.Trim(v, `"`) == "true" {
			return true
		}
	}
	return false
}

func writeTerminationLog(path, msg string) {
	if path == "" {
		return
	}
	if len(msg) > 4000 { // the kubelet keeps 4 KiB
		msg = msg[:4000]
	}
	_ = os.WriteFile(path, []byte(msg), 0o644)
}

// state is what the probe reports.
type state struct {
	mu     sync.Mutex
	phase  string // mounting, ready, stopping, failed
	reason string
}

func (s *state) get() (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == "" {
		return "mounting", ""
	}
	return s.phase, s.reason
}

func (s *state) ready() { s.set("ready", "") }

func (s *state) stopping() { s.set("stopping", "") }

func (s *state) fail(reason string) { s.set("failed", reason) }

func (s *state) set(p, r string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == "failed" {
		return // the first failure is the reason
	}
	s.phase, s.reason = p, r
}
