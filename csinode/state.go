package csinode

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"podfs.io/podfs/pkg/fuseconn"
)

// pubRecord is what the plugin remembers of a publication on disk, so that a
// restarted plugin (its pod deleted and recreated by the DaemonSet) offers
// the mounts it made again. The connections themselves died with the old
// process; the sidecars still hold theirs and give them back (adoption).
type pubRecord struct {
	VolumeID           string `json:"volumeID"`
	Target             string `json:"target"`
	Name               string `json:"name"`
	PodNamespace       string `json:"podNamespace"`
	PodName            string `json:"podName"`
	PodUID             string `json:"podUID"`
	HandoffDir         string `json:"handoffDir"`
	ReadOnly           bool   `json:"readOnly,omitempty"`
	DefaultPermissions bool   `json:"defaultPermissions,omitempty"`
}

func (d *Driver) recordPath(target string) string {
	sum := sha256.Sum256([]byte(target))
	return filepath.Join(d.cfg.StateDir, hex.EncodeToString(sum[:12])+".json")
}

// saveRecord writes v's record atomically.
func (d *Driver) saveRecord(v *published) error {
	r := pubRecord{VolumeID: v.volumeID, Target: v.target, Name: v.name, PodNamespace: v.pod.namespace, PodName: v.pod.name,
		PodUID: v.pod.uid, HandoffDir: v.handoffDir, ReadOnly: v.readOnly, DefaultPermissions: v.defaultPermissions}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create the state directory: %w", err)
	}
	p := d.recordPath(v.target)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

func (d *Driver) removeRecord(target string) {
	if err := os.Remove(d.recordPath(target)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("remove the publication record", "target", target, "err", err)
	}
}

// recover offers again every publication a previous run of the plugin made
// whose mount is still there; the records of the others are removed.
func (d *Driver) recover(ctx context.Context) error {
	ents, err := os.ReadDir(d.cfg.StateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the state directory: %w", err)
	}
	t, err := readMounts()
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(d.cfg.StateDir, e.Name())
		b, err := os.ReadFile(p)
		var r pubRecord
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil || r.Target == "" || !within(r.Target, d.cfg.KubeletDir) {
			d.log.Warn("dropping an unreadable publication record", "file", p, "err", err)
			os.Remove(p)
			continue
		}
		if m := t.top(r.Target); m == nil || m.FSType != FSType {
			d.log.Info("publication gone while the plugin was down", "target", r.Target)
			os.Remove(p)
			continue
		}
		v := &published{publication: publication{volumeID: r.VolumeID, target: r.Target, name: r.Name,
			pod:      podRef{namespace: r.PodNamespace, name: r.PodName, uid: r.PodUID},
			readOnly: r.ReadOnly, defaultPermissions: r.DefaultPermissions}, handoffDir: r.HandoffDir}
		pod := &corev1.Pod{}
		pod.Namespace, pod.Name, pod.UID = r.PodNamespace, r.PodName, types.UID(r.PodUID)
		h, err := fuseconn.Hold(ctx, fuseconn.HolderConfig{
			Dir:          r.HandoffDir,
			Volume:       fuseconn.Volume{Name: r.Name, VolumeID: r.VolumeID, ReadOnly: r.ReadOnly},
			OnStatus:     func(s fuseconn.Status) { d.sidecarStatus(pod, v.publication, s) },
			OnDisconnect: func() { go d.releaseIfPodEnds(v) },
			Log:          d.log.With("volume_id", r.VolumeID, "pod", v.pod.String()),
		})
		if err != nil {
			d.log.Error("cannot offer a recovered publication again; a sidecar restart will not find it", "target", r.Target, "err", err)
			continue
		}
		v.holder = h
		d.store(v)
		d.log.Info("recovered a publication: its sidecar gives the connection back", "target", r.Target, "pod", v.pod.String())
	}
	return nil
}
