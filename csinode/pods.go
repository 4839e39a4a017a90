package csinode

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"podfs.io/podfs/sidecar/volumeset"
)

// PodSource reads a pod from the API server. NodePublishVolume asks it
// whether the pod has a podfs sidecar to serve the mount.
type PodSource interface {
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// GetPVC reads a claim, to find which of a pod's volumes a PV is when
	// the pod was admitted before its claim was bound.
	GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
}

// EventSink records an Event on a pod (what `kubectl describe pod` shows).
type EventSink interface {
	PodEvent(pod *corev1.Pod, eventType, reason, message string)
}

// Event reasons the plugin uses.
const (
	ReasonNoSidecar    = "PodfsNoSidecar"
	ReasonVolumeFailed = "PodfsVolumeFailed"
	ReasonVolumeServed = "PodfsVolumeServed"
)

// podRef is the pod a NodePublishVolume call is for (podInfoOnMount).
type podRef struct {
	namespace, name, uid string
}

func (p podRef) String() string { return p.namespace + "/" + p.name }

// sidecarHandoff checks that pod has a podfs sidecar that takes FUSE
// connections on ordinary nodes and returns the host directory the plugin
// offers them in: the handoff directory inside the sidecar's run emptyDir.
// A pod without one gets FailedPrecondition, which keeps it in
// ContainerCreating with the message in its events until it is recreated
// right; nothing is mounted or written before this check.
func (d *Driver) sidecarHandoff(ctx context.Context, ref podRef) (*corev1.Pod, string, error) {
	pod, err := d.cfg.Pods.GetPod(ctx, ref.namespace, ref.name)
	if apierrors.IsNotFound(err) {
		return nil, "", status.Errorf(codes.FailedPrecondition, "pod %s does not exist (any more)", ref)
	}
	if err != nil {
		return nil, "", status.Errorf(codes.Unavailable, "read pod %s to find its podfs sidecar: %v", ref, err)
	}
	if string(pod.UID) != ref.uid {
		return nil, "", status.Errorf(codes.FailedPrecondition, "pod %s has UID %s, the request is for UID %s: the pod was recreated", ref, pod.UID, ref.uid)
	}
	refuse := func(format string, a ...any) (*corev1.Pod, string, error) {
		msg := fmt.Sprintf(format, a...)
		if d.cfg.Events != nil {
			d.cfg.Events.PodEvent(pod, corev1.EventTypeWarning, ReasonNoSidecar, msg)
		}
		return nil, "", status.Error(codes.FailedPrecondition, msg)
	}
	i := slices.IndexFunc(pod.Spec.InitContainers, isSidecar)
	c := (*corev1.Container)(nil)
	if i >= 0 {
		c = &pod.Spec.InitContainers[i]
	} else if i = slices.IndexFunc(pod.Spec.Containers, isSidecar); i >= 0 {
		c = &pod.Spec.Containers[i]
	}
	if c == nil {
		if pod.Labels[volumeset.InjectLabel] == "false" {
			return refuse("pod %s uses a podfs volume but carries the label %s: \"false\", so it has no %s container to serve it and nothing is mounted: remove the label and recreate the pod",
				ref, volumeset.InjectLabel, volumeset.ContainerName)
		}
		return refuse("pod %s uses a podfs volume but has no %s container to serve it, so nothing is mounted: label its namespace %s=enabled (kubectl label namespace %s %s=enabled), check that the podfs webhook runs, and recreate the pod",
			ref, volumeset.ContainerName, volumeset.InjectionLabel, ref.namespace, volumeset.InjectionLabel)
	}
	j := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return filepath.Clean(m.MountPath) == volumeset.RunDir })
	if j < 0 {
		return refuse("the %s container of pod %s has no volume at %s to receive its FUSE connections (it was injected for serverless nodes, or by an older podfs webhook): recreate the pod",
			volumeset.ContainerName, ref, volumeset.RunDir)
	}
	vol := c.VolumeMounts[j].Name
	k := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vol })
	if k < 0 || pod.Spec.Volumes[k].EmptyDir == nil {
		return refuse("the volume %q the %s container of pod %s mounts at %s is not an emptyDir: recreate the pod with the podfs webhook's injection",
			vol, volumeset.ContainerName, ref, volumeset.RunDir)
	}
	rel, _ := strings.CutPrefix(volumeset.HandoffDir, volumeset.RunDir+"/")
	dir := filepath.Join(d.cfg.KubeletDir, "pods", ref.uid, "volumes", "kubernetes.io~empty-dir", vol, rel)
	return pod, dir, nil
}

func isSidecar(c corev1.Container) bool { return c.Name == volumeset.ContainerName }
