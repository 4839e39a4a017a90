package csinode

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// volumeStats reports the usage of the volume published at path as the pod's
// sidecar counts it, and whether it is served. It never calls statfs(2) on
// the mount: with no sidecar serving (not started yet, restarting) that
// call waits until one does, and kubelet's calls would pile up behind it.
func (d *Driver) volumeStats(ctx context.Context, path string) (*csi.NodeGetVolumeStatsResponse, error) {
	notFound := status.Errorf(codes.NotFound, "%s is not a volume published by %s", path, DriverName)
	if !filepath.IsAbs(path) || hasDotDot(path) {
		return nil, notFound
	}
	v := d.lookup(resolveParent(filepath.Clean(path)))
	if v == nil {
		return nil, notFound
	}
	ctx, cancel := context.WithTimeout(ctx, holdTimeout)
	defer cancel()
	st, err := v.holder.Stats(ctx)
	if err != nil {
		// Kubelet drops a response without usage, condition and all, so an
		// unserved volume reports zero usage alongside the condition.
		return &csi.NodeGetVolumeStatsResponse{
			Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES}, {Unit: csi.VolumeUsage_INODES}},
			VolumeCondition: &csi.VolumeCondition{Abnormal: true, Message: fmt.Sprintf(
				"no podfs sidecar of pod %s answers for this volume (%v): it has not started yet, is restarting, or failed", v.pod, err)},
		}, nil
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: st.TotalBytes, Available: st.AvailBytes, Used: st.UsedBytes},
			{Unit: csi.VolumeUsage_INODES, Total: st.TotalInodes, Available: st.FreeInodes, Used: st.UsedInodes},
		},
		VolumeCondition: &csi.VolumeCondition{Message: "served by the podfs sidecar of pod " + v.pod.String()},
	}, nil
}
