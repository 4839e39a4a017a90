package csinode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/mount-utils"
)

// volumeStats reports the usage of the file system published at path and
// whether it is healthy: abnormal when the sidecar has not mounted podfs yet,
// or when its FUSE mount is dead (the sidecar crashed).
func (d *Driver) volumeStats(ctx context.Context, path string) (*csi.NodeGetVolumeStatsResponse, error) {
	notFound := status.Errorf(codes.NotFound, "%s is not a volume published by %s", path, DriverName)
	if !filepath.IsAbs(path) || hasDotDot(path) {
		return nil, notFound
	}
	path = resolveParent(filepath.Clean(path))
	t, err := readMounts()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	base := t.base(path)
	if base == nil || !within(path, d.cfg.KubeletDir) || d.publishedPodDir(t, path) == "" {
		return nil, notFound
	}

	st, err := statfs(ctx, path)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.Errorf(codes.DeadlineExceeded, "%v: the file system at %s does not answer", err, path)
		}
		if mount.IsCorruptedMnt(err) {
			// Kubelet drops a response without usage, condition and all, so
			// the dead mount reports zero usage alongside the condition.
			return &csi.NodeGetVolumeStatsResponse{
				Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES}, {Unit: csi.VolumeUsage_INODES}},
				VolumeCondition: &csi.VolumeCondition{Abnormal: true, Message: fmt.Sprintf(
					"the podfs mount at %s is dead (%v): the pod's podfs-sidecar exited or crashed; restart the pod", path, err)},
			}, nil
		}
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", path, err)
	}
	cond := &csi.VolumeCondition{Message: "served by " + t.top(path).FSType}
	if t.top(path) == base {
		cond = &csi.VolumeCondition{Abnormal: true, Message: fmt.Sprintf(
			"nothing is mounted on the per-pod directory yet: the pod's podfs-sidecar has not mounted %s", path)}
	}
	bsize := uint64(st.Bsize)
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{
				Unit:      csi.VolumeUsage_BYTES,
				Total:     int64(st.Blocks * bsize),
				Available: int64(st.Bavail * bsize),
				Used:      int64((st.Blocks - st.Bfree) * bsize),
			},
			{
				Unit:      csi.VolumeUsage_INODES,
				Total:     int64(st.Files),
				Available: int64(st.Ffree),
				Used:      int64(st.Files - st.Ffree),
			},
		},
		VolumeCondition: cond,
	}, nil
}

// statfs runs statfs(2) but gives up when ctx ends: a FUSE server that hangs
// instead of dying blocks the call, and kubelet's call has a deadline.
func statfs(ctx context.Context, path string) (*unix.Statfs_t, error) {
	type result struct {
		st  unix.Statfs_t
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		if err := unix.Statfs(path, &r.st); err != nil {
			r.err = &os.PathError{Op: "statfs", Path: path, Err: err}
		}
		done <- r
	}()
	select {
	case r := <-done:
		return &r.st, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("statfs %s: %w", path, ctx.Err())
	}
}
