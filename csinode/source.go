package csinode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/sidecar/volumeset"
)

// volumeSource resolves where the volume's metadata and data live from the
// volume attributes and the nodePublishSecretRef Secret kubelet passes
// along. The sidecar gets it with the connection, so neither the pod spec
// nor the sidecar's environment carries a URL or a credential, and the
// Secret may live in any namespace (kubelet reads it, not the pod).
func volumeSource(vc, secrets map[string]string, mountFlags []string) (*fuseconn.Source, error) {
	invalid := func(format string, a ...any) (*fuseconn.Source, error) {
		return nil, status.Errorf(codes.InvalidArgument, format, a...)
	}
	pick := func(plain, key string, required bool, what string) (string, error) {
		v, k := vc[plain], vc[key]
		switch {
		case v != "" && k != "":
			return "", fmt.Errorf("volume attributes have both %s and %s: keep one", plain, key)
		case v != "":
			return v, nil
		case k != "":
			if len(secrets) == 0 {
				return "", fmt.Errorf("volume attribute %s=%q names a key of the nodePublishSecretRef Secret, but kubelet passed no Secret: set nodePublishSecretRef on the PersistentVolume (or the StorageClass's csi.storage.k8s.io/node-publish-secret-name)", key, k)
			}
			s, ok := secrets[k]
			if !ok || s == "" {
				return "", fmt.Errorf("the nodePublishSecretRef Secret has no key %q (named by volume attribute %s): add it to the Secret", k, key)
			}
			return strings.TrimSpace(s), nil
		case required:
			return "", fmt.Errorf("volume attributes have neither %s nor %s: set the %s (or the key of the Secret holding it)", plain, key, what)
		}
		return "", nil
	}
	src := &fuseconn.Source{}
	var err error
	if src.MetaURL, err = pick(volumeset.AttrMetaURL, volumeset.AttrMetaURLSecretKey, true, "metadata URL"); err != nil {
		return invalid("%v", err)
	}
	if src.StorageURL, err = pick(volumeset.AttrStorageURL, volumeset.AttrStorageURLSecret, false, "storage URL"); err != nil {
		return invalid("%v", err)
	}
	if sd := strings.Trim(vc[volumeset.AttrSubDir], "/"); sd != "" {
		if path.Clean(sd) != sd || sd == ".." || strings.HasPrefix(sd, "../") {
			return invalid("volume attribute %s=%q must be a clean path inside the volume (no . or .. elements)", volumeset.AttrSubDir, vc[volumeset.AttrSubDir])
		}
		src.SubDir = sd
	}
	opts := slices.Clone(mountFlags)
	if s := vc[volumeset.AttrMountOptions]; s != "" {
		o, err := volumeset.ParseOptions(s)
		if err != nil {
			return invalid("volume attribute %s: %v", volumeset.AttrMountOptions, err)
		}
		opts = append(opts, o...)
	}
	src.Options = opts
	return src, nil
}

// podVolumeName finds the pod's name for the volume kubelet publishes as
// pvName, when the sidecar needs it: only for volumes the webhook admitted
// with a claim (the PV unknown then). It returns "" when the pod's sidecar
// knows the volume by its PV name already.
func (d *Driver) podVolumeName(ctx context.Context, pod *corev1.Pod, pvName string) (string, error) {
	set, err := sidecarSet(pod)
	if err != nil || set == nil {
		return "", err
	}
	var claims []volumeset.Volume
	for _, v := range set.Volumes {
		if v.Handoff == pvName {
			return "", nil
		}
		if v.Claim != "" {
			claims = append(claims, v)
		}
	}
	for _, v := range claims {
		pvc, err := d.cfg.Pods.GetPVC(ctx, pod.Namespace, v.Claim)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", status.Errorf(codes.Unavailable, "read PersistentVolumeClaim %s/%s of pod %s/%s: %v", pod.Namespace, v.Claim, pod.Namespace, pod.Name, err)
		}
		if pvc.Spec.VolumeName == pvName {
			return v.Name, nil
		}
	}
	return "", status.Errorf(codes.FailedPrecondition,
		"pod %s/%s has no podfs volume for PersistentVolume %s: its sidecar was injected for other volumes; recreate the pod so the webhook sees the bound claim",
		pod.Namespace, pod.Name, pvName)
}

// sidecarSet decodes the volume set the webhook gave the pod's sidecar.
func sidecarSet(pod *corev1.Pod) (*volumeset.VolumeSet, error) {
	cs := append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
	i := slices.IndexFunc(cs, isSidecar)
	if i < 0 {
		return nil, nil
	}
	for _, e := range cs[i].Env {
		if e.Name == volumeset.EnvVar {
			var s volumeset.VolumeSet
			if err := json.Unmarshal([]byte(e.Value), &s); err != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "the %s container of pod %s/%s has an unreadable %s: %v", volumeset.ContainerName, pod.Namespace, pod.Name, volumeset.EnvVar, err)
			}
			return &s, nil
		}
	}
	return nil, nil
}

// writeClaim tells the sidecar which PV serves its pod volume podVolume:
// the file ClaimsDir/<podVolume> holds the PV name (written atomically).
func writeClaim(handoffDir, podVolume, pvName string) error {
	rel, _ := strings.CutPrefix(volumeset.ClaimsDir, volumeset.HandoffDir+"/")
	dir := filepath.Join(handoffDir, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	p := filepath.Join(dir, podVolume)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(pvName), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return errors.Join(fmt.Errorf("rename %s: %w", tmp, err), os.Remove(tmp))
	}
	return nil
}
