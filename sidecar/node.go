package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/pkg/redact"
	"podfs.io/podfs/pkg/secretfiles"
	"podfs.io/podfs/sidecar/volumeset"
)

// ConnServer serves FUSE connections the CSI node hands over (ordinary
// nodes); the real one is pkg/fs (FSMounter).
type ConnServer interface {
	// ServeConn serves v on the connection h carries.
	ServeConn(ctx context.Context, v Volume, h *fuseconn.Handoff) (ConnMount, error)
	// ServeFailed answers every request on h's connection with EIO, so the
	// app sees an error instead of a hang when v cannot be served.
	ServeFailed(v Volume, h *fuseconn.Handoff) (Mount, error)
}

// ConnMount is a served handed-over connection. Its Unmount detaches: the
// CSI node keeps the mount and the connection for the next server.
type ConnMount interface {
	Mount
	StatFS(ctx context.Context) (fuseconn.Stats, error)
}

// nodeVolume is one volume of an ordinary node's sidecar.
type nodeVolume struct {
	v      Volume
	h      *fuseconn.Handoff
	m      Mount
	failed error // why v answers EIO; nil when served
	// notOurs: a claim the webhook could not resolve at admission turned
	// out to be bound to another driver's volume.
	notOurs bool
}

// runNode serves the volumes of a sidecar on an ordinary node. Each volume
// is independent: one whose backend cannot be reached answers EIO and is
// reported to the CSI node (which makes it a pod Event), the others serve.
// The sidecar is ready once every volume is served or has failed.
func runNode(ctx context.Context, cfg Config, vols []Volume, st *state) error {
	log := cfg.Log
	srv, ok := cfg.Mounter.(ConnServer)
	if !ok {
		return errors.New("this sidecar's mounter cannot serve FUSE connections handed over by the CSI node")
	}
	done := make(chan *nodeVolume, len(vols))
	for _, v := range vols {
		go func() { done <- serveNodeVolume(ctx, cfg, srv, v) }()
	}
	var served []*nodeVolume
	var unconnected []error
	failed := 0
	for range vols {
		nv := <-done
		if nv.notOurs {
			continue
		}
		if nv.h == nil {
			// No connection at all (the CSI node is down or restarting):
			// the mount exists but nobody could serve it, so the app must
			// not start. Exiting lets the kubelet restart the sidecar,
			// which tries again.
			unconnected = append(unconnected, nv.failed)
			continue
		}
		served = append(served, nv)
		if nv.failed != nil {
			failed++
		}
	}
	detachAll := func() error {
		var errs []error
		for _, nv := range served {
			dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if nv.m != nil {
				if err := nv.m.Unmount(dctx); err != nil {
					errs = append(errs, fmt.Errorf("stop serving volume %q: %w", nv.v.Name, err))
				} else {
					// Everything acknowledged is committed: the next
					// sidecar owes the app no error for lost writes.
					report(dctx, nv.h, fuseconn.Status{Detached: true}, log)
				}
			}
			cancel()
			if err := nv.h.Close(); err != nil {
				log.Warn("close the connection to the CSI node", "volume", nv.v.Name, "err", err)
			}
		}
		return errors.Join(errs...)
	}
	if ctx.Err() != nil {
		log.Info("asked to stop while connecting")
		return detachAll()
	}
	if len(unconnected) > 0 {
		return errors.Join(append(unconnected, detachAll())...)
	}
	st.ready()
	log.Info("all volumes settled", "volumes", len(vols), "failed", failed, "native", cfg.Set.Native)

	var appsDone <-chan struct{}
	if !cfg.Set.Native && cfg.Set.AppsDoneFile != "" {
		appsDone = watchAppsDone(ctx, cfg.Set.AppsDoneFile, cfg.Poll)
	}
	select {
	case <-appsDone:
		log.Info("the app containers are done; stopping")
	case <-ctx.Done():
		// No grace period here, unlike serverless mode: stopping only
		// detaches, and the mounts stay (the CSI node holds them), so the
		// apps keep their files and a new sidecar continues the work.
		log.Info("stopping: flushing and detaching every volume")
	}
	st.stopping()
	return detachAll()
}

// serveNodeVolume connects to the CSI node's socket for v and serves the
// connection it gets, or EIO when v cannot be served.
func serveNodeVolume(ctx context.Context, cfg Config, srv ConnServer, v Volume) *nodeVolume {
	nv := &nodeVolume{v: v}
	if v.Claim != "" {
		pv, err := claimedPV(cfg.HandoffDir, v.Name)
		if errors.Is(err, fs.ErrNotExist) {
			// The kubelet publishes every volume before it starts any
			// container: no file means no podfs volume.
			cfg.Log.Info("the volume's claim is not bound to a podfs volume; nothing to serve", "volume", v.Name, "claim", v.Claim)
			nv.notOurs = true
			return nv
		}
		if err != nil {
			nv.failed = fmt.Errorf("volume %q (claim %q): %w", v.Name, v.Claim, err)
			return nv
		}
		v.Handoff = pv
		nv.v = v
	}
	log := cfg.Log.With("volume", v.Name, "pv", v.Handoff)
	dctx, cancel := context.WithTimeout(ctx, cfg.HandoffWait)
	h, err := fuseconn.Dial(dctx, cfg.HandoffDir, v.Handoff, log)
	cancel()
	if err != nil {
		nv.failed = fmt.Errorf("volume %q: no FUSE connection from the podfs CSI node in %s within %s (is the CSI node running on this node?): %w",
			v.Name, cfg.HandoffDir, cfg.HandoffWait, err)
		return nv
	}
	nv.h = h
	start := time.Now()
	err = fromSource(&v, h.Volume.Source, cfg.SecretsDir)
	nv.v = v
	var m ConnMount
	if err == nil {
		m, err = srv.ServeConn(ctx, v, h)
	}
	if err == nil {
		nv.m = m
		h.ServeStats(m.StatFS)
		report(ctx, h, fuseconn.Status{Served: true}, log)
		log.Info("serving", "took", time.Since(start), "continued", h.Init != nil)
		return nv
	}
	nv.failed = err
	log.Error("volume cannot be served; it answers EIO", "err", err)
	report(ctx, h, fuseconn.Status{Error: redact.Text(err.Error())}, log) // it becomes a pod Event
	if fm, ferr := srv.ServeFailed(v, h); ferr != nil {
		log.Error("cannot answer EIO either", "err", ferr)
	} else {
		nv.m = fm
	}
	return nv
}

func report(ctx context.Context, h *fuseconn.Handoff, s fuseconn.Status, log *slog.Logger) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := h.Report(rctx, s); err != nil {
		log.Warn("could not tell the CSI node how the volume is served", "err", err)
	}
}

// fromSource fills in what the CSI node sent with the connection: where the
// volume's metadata and data live (never in the sidecar's environment).
// The volume's Secret, if any, is written under secretsDir, in a directory
// of the volume's own.
func fromSource(v *Volume, src *fuseconn.Source, secretsDir string) error {
	if src == nil {
		return fmt.Errorf("volume %q: the CSI node sent no metadata URL with the connection (a podfs CSI node older than this sidecar?): upgrade the CSI node DaemonSet", v.Name)
	}
	v.MetaURL, v.StorageURL, v.SubDir = src.MetaURL, src.StorageURL, src.SubDir
	if len(src.Files) > 0 {
		dir := filepath.Join(secretsDir, v.Handoff)
		if err := secretfiles.Write(dir, src.Files); err != nil {
			return fmt.Errorf("volume %q: keep its Secret's files: %w", v.Name, err)
		}
		v.SecretDir = dir
	}
	// The PV's options first, the webhook's (configuration, annotations) on top.
	v.Options = volumeset.MergeOptions(slices.Clone(src.Options), v.Options...)
	return nil
}

// claimedPV reads the PV name the CSI node published the pod's volume
// podVolume as (see volumeset.ClaimsDir).
func claimedPV(handoffDir, podVolume string) (string, error) {
	rel, _ := strings.CutPrefix(volumeset.ClaimsDir, volumeset.HandoffDir+"/")
	b, err := os.ReadFile(filepath.Join(handoffDir, rel, podVolume))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// handoffDefaults fills what Config leaves zero for ordinary nodes.
func handoffDefaults(cfg *Config) {
	if cfg.HandoffDir == "" {
		cfg.HandoffDir = volumeset.HandoffDir
	}
	if cfg.SecretsDir == "" {
		cfg.SecretsDir = volumeset.SecretsDir
	}
	if cfg.HandoffWait == 0 {
		cfg.HandoffWait = 2 * time.Minute
	}
}
