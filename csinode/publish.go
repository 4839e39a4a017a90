package csinode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"podfs.io/podfs/pkg/fuseconn"
)

// FSType is the file system type podfs mounts show in the mount table.
const FSType = "fuse.podfs"

// publication is a validated NodePublishVolume request.
type publication struct {
	volumeID string
	target   string // clean, absolute, under the kubelet directory
	name     string // kubelet's name for the volume: the PV name, or the inline volume's name
	pod      podRef
	readOnly bool
	// defaultPermissions lets the kernel check permissions (the default;
	// the mount option no_default_permissions leaves it to podfs).
	defaultPermissions bool
	// source is what the sidecar needs to serve the volume; it may carry
	// credentials, so it is never written to the state directory.
	source    *fuseconn.Source
	ephemeral bool // an inline CSI volume: name is the pod's volume name
}

// published is a volume this plugin mounted and whose connection it holds.
type published struct {
	publication
	handoffDir string
	holder     *fuseconn.Holder
}

// publish checks that the pod has a podfs sidecar, mounts FUSE at the
// target and offers the connection to the sidecar. Nothing is left behind
// when it fails.
func (d *Driver) publish(ctx context.Context, p publication) (err error) {
	if v := d.lookup(p.target); v != nil {
		return d.checkPublished(v, p)
	}
	t, err := readMounts()
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if m := t.top(p.target); m != nil {
		return status.Errorf(codes.AlreadyExists,
			"target path %s already has a %s mount this plugin does not hold: unpublish it first", p.target, m.FSType)
	}
	pod, dir, err := d.sidecarHandoff(ctx, p.pod)
	if err != nil {
		return err
	}
	claimOf := ""
	if !p.ephemeral {
		if claimOf, err = d.podVolumeName(ctx, pod, p.name); err != nil {
			return err
		}
	}
	if p.source != nil {
		src := *p.source
		src.PodVolume = p.name
		if claimOf != "" {
			src.PodVolume = claimOf
		}
		p.source = &src
	}
	var undo []func()
	defer func() {
		if err != nil {
			for _, f := range slices.Backward(undo) {
				f()
			}
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return status.Errorf(codes.Internal, "create the handoff directory %s: %v", dir, err)
	}
	if err := os.Mkdir(p.target, 0o750); err == nil {
		undo = append(undo, func() { d.removeTarget(p.target) })
	} else if !errors.Is(err, os.ErrExist) {
		return status.Errorf(codes.Internal, "create target path: %v", err)
	}
	conn, err := fuseconn.Mount(p.target, fuseconn.MountOptions{
		FsName:             "podfs:" + p.volumeID,
		Subtype:            "podfs",
		ReadOnly:           p.readOnly,
		AllowOther:         true,
		DefaultPermissions: p.defaultPermissions,
	})
	if err != nil {
		return status.Errorf(codes.Internal, "mount FUSE at %s: %v", p.target, err)
	}
	undo = append(undo, func() {
		conn.Close()
		if err := d.unmount(p.target); err != nil {
			d.log.Error("roll back the FUSE mount", "target", p.target, "err", err)
		}
	})
	v := &published{publication: p, handoffDir: dir}
	h, err := fuseconn.Hold(context.WithoutCancel(ctx), fuseconn.HolderConfig{
		Dir:          dir,
		Volume:       fuseconn.Volume{Name: p.name, VolumeID: p.volumeID, ReadOnly: p.readOnly, Source: p.source},
		Conn:         conn,
		OnStatus:     func(s fuseconn.Status) { d.sidecarStatus(pod, p, s) },
		OnDisconnect: func() { go d.releaseIfPodEnds(v) },
		Log:          d.log.With("volume_id", p.volumeID, "pod", p.pod.String()),
	})
	if err != nil {
		return status.Errorf(codes.Internal, "offer the FUSE connection of %s to pod %s: %v", p.target, p.pod, err)
	}
	conn.Close() // the holder keeps its own copy
	v.holder = h
	if claimOf != "" {
		if err := writeClaim(dir, claimOf, p.name); err != nil {
			h.Close()
			return status.Errorf(codes.Internal, "tell the sidecar of pod %s which volume %s is: %v", p.pod, p.name, err)
		}
	}
	if err := d.saveRecord(v); err != nil {
		h.Close()
		return status.Errorf(codes.Internal, "record the publication of %s: %v", p.target, err)
	}
	d.store(v)
	d.log.Debug("published", "volume_id", p.volumeID, "target", p.target, "pod", p.pod.String(), "handoff", dir, "read_only", p.readOnly)
	return nil
}

// checkPublished decides whether a retried publish asks for what is already
// there (success) or for something else (AlreadyExists).
func (d *Driver) checkPublished(v *published, p publication) error {
	if v.volumeID != p.volumeID || v.pod.uid != p.pod.uid {
		return status.Errorf(codes.AlreadyExists,
			"target path %s is already published for volume %s of pod %s: unpublish it first", p.target, v.volumeID, v.pod)
	}
	if v.readOnly != p.readOnly {
		return status.Errorf(codes.AlreadyExists,
			"target path %s is already published with read-only=%t, the request asks for read-only=%t", p.target, v.readOnly, p.readOnly)
	}
	return nil
}

// sidecarStatus turns what the sidecar reports about a volume into pod
// Events: the sidecar has no API access of its own.
func (d *Driver) sidecarStatus(pod *corev1.Pod, p publication, s fuseconn.Status) {
	if s.Detached {
		d.log.Info("sidecar stopped serving the volume cleanly", "volume_id", p.volumeID, "pod", p.pod.String())
		return
	}
	if s.Served {
		d.log.Info("sidecar serves the volume", "volume_id", p.volumeID, "pod", p.pod.String())
		if d.cfg.Events != nil {
			d.cfg.Events.PodEvent(pod, corev1.EventTypeNormal, ReasonVolumeServed,
				fmt.Sprintf("podfs volume %q (%s) is served by the pod's sidecar", p.name, p.volumeID))
		}
		return
	}
	msg := fmt.Sprintf("podfs volume %q (%s) cannot be served, it answers EIO until the pod is recreated: %s", p.name, p.volumeID, s.Error)
	d.log.Warn("sidecar cannot serve the volume", "volume_id", p.volumeID, "pod", p.pod.String(), "err", s.Error)
	if d.cfg.Events != nil {
		d.cfg.Events.PodEvent(pod, corev1.EventTypeWarning, ReasonVolumeFailed, msg)
	}
}

// releaseIfPodEnds watches v's pod after its sidecar disconnected. A
// sidecar that restarts reconnects within seconds; one that stopped because
// the pod is going away never does, and then the kubelet's teardown (subPath
// cleanup, mount checks) stats the mount, which would wait for a server
// forever. So once the pod is deleted or has finished, the plugin releases
// its copy of the connection: the kernel aborts it and those calls fail at
// once, and NodeUnpublishVolume comes.
func (d *Driver) releaseIfPodEnds(v *published) {
	const every, limit = time.Second, 10 * time.Minute
	for waited := time.Duration(0); waited < limit; waited += every {
		if d.lookup(v.target) != v || v.holder.Connected() {
			return // unpublished, or a sidecar serves again
		}
		ctx, cancel := context.WithTimeout(context.Background(), holdTimeout)
		pod, err := d.cfg.Pods.GetPod(ctx, v.pod.namespace, v.pod.name)
		cancel()
		ends := apierrors.IsNotFound(err) || err == nil && (string(pod.UID) != v.pod.uid || pod.DeletionTimestamp != nil ||
			pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed)
		if ends {
			d.log.Info("the pod is going away and its sidecar stopped: releasing the FUSE connection so the volume's teardown does not wait",
				"volume_id", v.volumeID, "pod", v.pod.String())
			v.holder.Release()
			return
		}
		time.Sleep(every)
	}
}

// unpublish stops offering the connection, unmounts the target and removes
// it. A target that is already gone is success.
func (d *Driver) unpublish(target string) error {
	if v := d.lookup(target); v != nil {
		if err := v.holder.Close(); err != nil {
			d.log.Warn("close the FUSE connection", "target", target, "err", err)
		}
		d.forget(target)
	}
	d.removeRecord(target)
	if err := d.unmount(target); err != nil {
		return status.Errorf(codes.Internal, "unpublish %s: %v", target, err)
	}
	if err := d.removeTarget(target); err != nil {
		return status.Errorf(codes.Internal, "unpublish %s: %v", target, err)
	}
	d.log.Debug("unpublished", "target", target)
	return nil
}

// unmount removes every mount stacked at path, lazily when busy. It never
// stats path: on a FUSE mount nobody serves, stat waits forever.
func (d *Driver) unmount(path string) error {
	for i := 0; ; i++ {
		t, err := readMounts()
		if err != nil {
			return err
		}
		if len(t.at(path)) == 0 {
			return nil
		}
		// A bound loop: a mount that keeps reappearing must not spin forever.
		if i == 16 {
			return fmt.Errorf("mounts keep reappearing at %s", path)
		}
		err = unix.Unmount(path, 0)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(path, unix.MNT_DETACH)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
}

// removeTarget removes the (unmounted) target directory.
func (d *Driver) removeTarget(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// kernelOptions reads the mount options that belong to the kernel mount from
// the PV's mountOptions (mount_flags) and the volume's mountOptions
// attribute: ro. The others (attr_timeout, ...) are the sidecar's business;
// nosuid, nodev and default_permissions are always set (podfs's POSIX ACLs
// are enforced by the kernel, which needs default_permissions).
func kernelOptions(p *publication, flags []string, attr string) error {
	p.defaultPermissions = true
	all := slices.Clone(flags)
	for _, o := range strings.Split(attr, ",") {
		all = append(all, strings.TrimSpace(o))
	}
	for _, o := range all {
		switch o {
		case "ro":
			p.readOnly = true
		case "no_default_permissions":
			return status.Error(codes.InvalidArgument,
				"mount option no_default_permissions: podfs leaves permission checks (and POSIX ACLs) to the kernel, which needs default_permissions; remove the option from the PersistentVolume")
		}
	}
	return nil
}

// holdTimeout bounds how long NodeGetVolumeStats waits for the sidecar.
const holdTimeout = 2 * time.Second
