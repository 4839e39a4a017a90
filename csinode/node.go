package csinode

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// nodeServer is the CSI Node service. It embeds the generated stub so that
// NodeStageVolume, NodeUnstageVolume and NodeExpandVolume answer Unimplemented:
// podfs has nothing to stage and nothing to grow.
type nodeServer struct {
	csi.UnimplementedNodeServer
	d *Driver
}

func (s *nodeServer) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	rpc := func(t csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
		return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}}
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{
		rpc(csi.NodeServiceCapability_RPC_GET_VOLUME_STATS),
		rpc(csi.NodeServiceCapability_RPC_VOLUME_CONDITION),
		// A shared file system: every access mode works, including the
		// single-node ones this capability makes legal.
		rpc(csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER),
	}}, nil
}

func (s *nodeServer) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	// No topology and no volume limit: a podfs volume is reachable from every
	// node, and publishing costs a bind mount.
	return &csi.NodeGetInfoResponse{NodeId: s.d.cfg.NodeID}, nil
}

func (s *nodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	p, err := s.d.validatePublish(req)
	if err != nil {
		return nil, err
	}
	if !s.d.busy.tryLock(p.target) {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is in progress", p.target)
	}
	defer s.d.busy.unlock(p.target)
	if err := s.d.publish(ctx, p); err != nil {
		return nil, err
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	target, err := s.d.checkTargetPath(req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	if !s.d.busy.tryLock(target) {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is in progress", target)
	}
	defer s.d.busy.unlock(target)
	if err := s.d.unpublish(target); err != nil {
		return nil, err
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if req.GetVolumePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_path is missing")
	}
	return s.d.volumeStats(ctx, req.GetVolumePath())
}

// validatePublish checks a NodePublishVolume request without touching the
// disk and says what is wrong and how to fix it.
func (d *Driver) validatePublish(req *csi.NodePublishVolumeRequest) (publication, error) {
	invalid := func(format string, a ...any) (publication, error) {
		return publication{}, status.Errorf(codes.InvalidArgument, format, a...)
	}
	if req.GetVolumeId() == "" {
		return invalid("volume_id is missing")
	}
	target, err := d.checkTargetPath(req.GetTargetPath())
	if err != nil {
		return publication{}, err
	}
	readOnly, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return publication{}, err
	}
	vc := req.GetVolumeContext()
	pod := podRef{namespace: vc[ContextPodNamespace], name: vc[ContextPodName], uid: vc[ContextPodUID]}
	if pod.uid == "" || pod.name == "" || pod.namespace == "" {
		return invalid("the volume context lacks the pod's name, namespace or UID (%s, %s, %s): set podInfoOnMount: true in the CSIDriver object %s",
			ContextPodName, ContextPodNamespace, ContextPodUID, DriverName)
	}
	if !validPodUID(pod.uid) {
		return invalid("pod UID %q from the volume context is not a valid directory name", pod.uid)
	}
	// Kubelet's target paths name the pod: a request whose pod UID disagrees
	// with its path would hand one pod's volume to another pod's sidecar.
	if podsRoot := filepath.Join(d.cfg.KubeletDir, "pods"); within(target, podsRoot) && target != podsRoot {
		rel, _ := filepath.Rel(podsRoot, target)
		if owner, _, _ := strings.Cut(rel, "/"); owner != pod.uid {
			return invalid("target path %s belongs to pod %s, but the volume context names pod %s", target, owner, pod.uid)
		}
	}
	name := filepath.Base(filepath.Dir(target))
	if name == "/" || name == "." {
		return invalid("target path %q has no parent directory to name the volume by", target)
	}
	p := publication{
		volumeID: req.GetVolumeId(),
		target:   target,
		name:     name,
		pod:      pod,
		readOnly: req.GetReadonly() || readOnly,
	}
	if err := kernelOptions(&p, req.GetVolumeCapability().GetMount().GetMountFlags(), vc[AttrMountOptions]); err != nil {
		return publication{}, err
	}
	if p.source, err = volumeSource(vc, req.GetSecrets(), req.GetVolumeCapability().GetMount().GetMountFlags()); err != nil {
		return publication{}, err
	}
	p.ephemeral = vc[ContextEphemeral] == "true"
	return p, nil
}

var podUIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

func validPodUID(uid string) bool {
	return podUIDRE.MatchString(uid) && !strings.Contains(uid, "..")
}

// checkTargetPath returns the target path cleaned, or InvalidArgument when it
// is missing, relative, has a ".." element or lies outside the kubelet
// directory (the plugin mounts as root: it binds only where kubelet asks).
func (d *Driver) checkTargetPath(p string) (string, error) {
	switch {
	case p == "":
		return "", status.Error(codes.InvalidArgument, "target_path is missing")
	case !filepath.IsAbs(p):
		return "", status.Errorf(codes.InvalidArgument, "target path %q is relative: it must be absolute", p)
	case hasDotDot(p):
		return "", status.Errorf(codes.InvalidArgument, "target path %q has a .. element", p)
	}
	p = resolveParent(filepath.Clean(p))
	if !within(p, d.cfg.KubeletDir) || p == d.cfg.KubeletDir {
		return "", status.Errorf(codes.InvalidArgument,
			"target path %s is not below the kubelet directory %s (if kubelet runs with another --root-dir, pass it as --kubelet-dir)", p, d.cfg.KubeletDir)
	}
	return p, nil
}

// checkCapability accepts mount volumes in any known access mode and reports
// whether the mode is a read-only one.
func checkCapability(c *csi.VolumeCapability) (readOnly bool, err error) {
	if c == nil {
		return false, status.Error(codes.InvalidArgument, "volume_capability is missing")
	}
	if c.GetBlock() != nil {
		return false, status.Error(codes.InvalidArgument,
			"block access type is not supported: podfs is a file system, use volumeMode: Filesystem")
	}
	if c.GetMount() == nil {
		return false, status.Error(codes.InvalidArgument, "volume_capability has no access type: podfs needs the mount access type")
	}
	mode := c.GetAccessMode().GetMode()
	switch mode {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true, nil
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return false, nil
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return false, status.Error(codes.InvalidArgument, "volume_capability has no access mode")
	default:
		return false, status.Errorf(codes.InvalidArgument, "access mode %d is not one this plugin knows", mode)
	}
}

// resolveParent resolves symbolic links in p's parent directory, because the
// mount table lists resolved paths. p itself is left alone: it may be a mount
// point whose stat hangs or fails.
func resolveParent(p string) string {
	real, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		return p
	}
	return filepath.Join(real, filepath.Base(p))
}
