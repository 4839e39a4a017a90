package csinode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PodVolumeDir returns the per-pod directory a pod's podfs sidecar mounts FUSE
// on for the volume kubelet publishes at targetPath:
//
//	<podsDir>/<podUID>/<name>
//
// where <name> is the last-but-one element of targetPath. Kubelet's target
// path for a CSI volume is
//
//	<kubelet-dir>/pods/<pod-uid>/volumes/kubernetes.io~csi/<name>/mount
//
// so <name> is the PersistentVolume's name (spec.volumeName of the pod's
// PVC) for a PVC volume, and the pod's volume name (spec.volumes[].name) for
// an inline CSI ephemeral volume. The webhook must point the sidecar at the
// same directory.
func PodVolumeDir(podsDir, podUID, targetPath string) (string, error) {
	if !validPodUID(podUID) {
		return "", fmt.Errorf("pod UID %q is not a valid directory name (letters, digits, '-', '_', '.')", podUID)
	}
	if !filepath.IsAbs(targetPath) || hasDotDot(targetPath) {
		return "", fmt.Errorf("target path %q must be absolute and without ..", targetPath)
	}
	name := filepath.Base(filepath.Dir(filepath.Clean(targetPath)))
	if name == "/" || name == "." {
		return "", fmt.Errorf("target path %q has no parent directory to name the volume by", targetPath)
	}
	return filepath.Join(podsDir, podUID, name), nil
}

var podUIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

func validPodUID(uid string) bool {
	return podUIDRE.MatchString(uid) && !strings.Contains(uid, "..")
}

// publication is a validated NodePublishVolume request.
type publication struct {
	volumeID string
	target   string // clean, absolute, under the kubelet directory
	podDir   string // PodVolumeDir of the target
	readOnly bool
}

// publish makes p.podDir a shared mount and binds it onto p.target.
func (d *Driver) publish(p publication) error {
	t, err := readMounts()
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if tb := t.base(p.target); tb != nil {
		return d.checkPublished(t, tb, p)
	}
	created, err := d.preparePodDir(t, p.podDir)
	if err != nil {
		return err
	}
	if err := d.bindTarget(p); err != nil {
		if created {
			if cerr := d.removePodDir(p.podDir); cerr != nil {
				d.log.Error("roll back the per-pod directory", "dir", p.podDir, "err", cerr)
			}
		}
		return err
	}
	d.log.Debug("published", "volume_id", p.volumeID, "target", p.target, "pod_dir", p.podDir, "read_only", p.readOnly)
	return nil
}

// checkPublished decides whether the mount found at p.target is this very
// publication (success: the call is a retry) or something else (AlreadyExists).
func (d *Driver) checkPublished(t mountTable, tb *mountinfo.Info, p publication) error {
	db := t.base(p.podDir)
	if db == nil || !sameSource(tb, db) {
		return status.Errorf(codes.AlreadyExists,
			"target path %s is already mounted, but not from the per-pod directory %s: unpublish it first", p.target, p.podDir)
	}
	if ro := isReadOnly(tb); ro != p.readOnly {
		return status.Errorf(codes.AlreadyExists,
			"target path %s is already published with read-only=%t, the request asks for read-only=%t", p.target, ro, p.readOnly)
	}
	return nil
}

// preparePodDir makes dir a mount point of its own peer group, so a mount the
// sidecar makes on it propagates to every bind of it (the target paths) and
// nowhere else. It reports whether it created the mount.
func (d *Driver) preparePodDir(t mountTable, dir string) (bool, error) {
	if db := t.base(dir); db != nil {
		// A bind of the directory now would bind whatever is mounted on top
		// of it and miss the sidecar's later remounts.
		if top := t.top(dir); top != db {
			return false, status.Errorf(codes.FailedPrecondition,
				"per-pod directory %s is already served by a %s mount but the target is not bound to it; delete the pod to start over", dir, top.FSType)
		}
		if isShared(db) {
			return false, nil
		}
		if err := d.setPropagation(dir, "--make-shared"); err != nil {
			return false, status.Error(codes.Internal, err.Error())
		}
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false, status.Errorf(codes.Internal, "create per-pod directory: %v", err)
	}
	fail := func(err error) (bool, error) {
		if cerr := d.removePodDir(dir); cerr != nil {
			d.log.Error("roll back the per-pod directory", "dir", dir, "err", cerr)
		}
		return false, status.Error(codes.Internal, err.Error())
	}
	if err := d.bindOwnGroup(dir); err != nil {
		return fail(err)
	}
	if err := d.setPropagation(dir, "--make-shared"); err != nil {
		return fail(err)
	}
	return true, nil
}

// bindOwnGroup mounts dir onto itself as a mount of a new peer group in
// every mount namespace the pods directory propagates to. A plain bind of
// dir would join the pods directory's peer group, and changing its
// propagation afterwards (--make-private, --make-shared) changes only this
// process's namespace: the node's copy, which the sidecar's container gets,
// would stay in the old group and the sidecar's mount would never reach the
// target paths bound here. Binding from a private copy instead makes the
// kernel invent a new group for the mount and all its propagated copies.
func (d *Driver) bindOwnGroup(dir string) error {
	stage, err := os.MkdirTemp("", "podfs-stage-")
	if err != nil {
		return fmt.Errorf("staging directory: %w", err)
	}
	defer os.Remove(stage)
	if err := d.mounter.Mount(dir, stage, "", []string{"bind"}); err != nil {
		return fmt.Errorf("bind %s onto %s: %w", dir, stage, err)
	}
	defer func() {
		if err := d.mounter.Unmount(stage); err != nil {
			d.log.Error("unmount staging bind", "dir", stage, "err", err)
		}
	}()
	if err := d.setPropagation(stage, "--make-private"); err != nil {
		return err
	}
	if err := d.mounter.Mount(stage, dir, "", []string{"bind"}); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", dir, err)
	}
	return nil
}

// bindTarget binds p.podDir onto p.target (read-only when asked). The bind
// joins the per-pod directory's peer group, which is what makes the sidecar's
// later mount appear at the target. The read-only flag belongs to the bind
// alone: a mount propagated on top of it keeps its own flags, so the sidecar
// must mount a read-only volume read-only itself.
func (d *Driver) bindTarget(p publication) error {
	if err := os.MkdirAll(p.target, 0o750); err != nil {
		return status.Errorf(codes.Internal, "create target path: %v", err)
	}
	opts := []string{"bind"}
	if p.readOnly {
		opts = append(opts, "ro")
	}
	if err := d.mounter.Mount(p.podDir, p.target, "", opts); err != nil {
		// mount-utils binds first and remounts read-only second: undo a
		// half-done read-only bind rather than leave it writable.
		if cerr := d.unmountAll(p.target); cerr != nil {
			d.log.Error("roll back the target path", "target", p.target, "err", cerr)
		}
		return status.Errorf(codes.Internal, "bind %s onto %s: %v", p.podDir, p.target, err)
	}
	return nil
}

// unpublish unmounts target and, once no other bind uses it, the per-pod
// directory behind it. Both directories are removed; a target that is already
// gone is success.
func (d *Driver) unpublish(target string) error {
	t, err := readMounts()
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	podDir := d.podDirOf(t, target)
	if podDir != "" && !d.busy.tryLock(podDir) {
		return status.Errorf(codes.Aborted, "an operation on %s is in progress", podDir)
	}
	if podDir != "" {
		defer d.busy.unlock(podDir)
	}
	if err := d.unmountAll(target); err != nil {
		return status.Errorf(codes.Internal, "unpublish %s: %v", target, err)
	}
	if podDir == "" {
		d.log.Debug("unpublished", "target", target)
		return nil
	}
	if t, err = readMounts(); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if db := t.base(podDir); db != nil {
		// Other targets bound to it. Copies elsewhere (a container that sees
		// the host's root under /host) do not count.
		others := slices.DeleteFunc(t.binds(db), func(m *mountinfo.Info) bool { return !within(m.Mountpoint, d.cfg.KubeletDir) })
		if len(others) > 0 {
			d.log.Info("unpublished; per-pod directory still in use", "target", target, "pod_dir", podDir, "other_binds", len(others))
			return nil
		}
	}
	if err := d.removePodDir(podDir); err != nil {
		return status.Errorf(codes.Internal, "unpublish %s: %v", target, err)
	}
	d.log.Debug("unpublished", "target", target, "pod_dir", podDir)
	return nil
}

// publishedPodDir finds the per-pod directory published at target: the bind
// under the pods directory that shows the same directory as the target's
// mount, or "" when target is not such a bind.
func (d *Driver) publishedPodDir(t mountTable, target string) string {
	tb := t.base(target)
	if tb == nil {
		return ""
	}
	for _, m := range t.binds(tb) {
		if within(m.Mountpoint, d.cfg.PodsDir) && m.Mountpoint != d.cfg.PodsDir && t.base(m.Mountpoint) == m {
			return m.Mountpoint
		}
	}
	return ""
}

// podDirOf finds the per-pod directory that belongs to target: the published
// one, or else the one kubelet's path layout names (a publish interrupted
// between its steps leaves a per-pod directory and no target mount).
func (d *Driver) podDirOf(t mountTable, target string) string {
	if dir := d.publishedPodDir(t, target); dir != "" {
		return dir
	}
	rel, err := filepath.Rel(filepath.Join(d.cfg.KubeletDir, "pods"), target)
	if err != nil {
		return ""
	}
	parts := strings.Split(rel, "/")
	if len(parts) != 5 || parts[1] != "volumes" || parts[2] != "kubernetes.io~csi" {
		return ""
	}
	dir, err := PodVolumeDir(d.cfg.PodsDir, parts[0], target)
	if err != nil {
		return ""
	}
	return dir
}

// removePodDir unmounts everything on a per-pod directory, removes it, and
// removes the pod's directory too once it is empty.
func (d *Driver) removePodDir(dir string) error {
	if err := d.unmountAll(dir); err != nil {
		return err
	}
	if err := os.Remove(filepath.Dir(dir)); err != nil && !errors.Is(err, os.ErrNotExist) && !isNotEmpty(err) {
		return fmt.Errorf("remove pod directory: %w", err)
	}
	return nil
}

func isNotEmpty(err error) bool {
	return errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}
