package webhook

import (
	"context"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"podfs.io/podfs/sidecar/volumeset"
)

// Lookup reads the objects the mutation needs. The server backs it with
// informer caches (no API round trip per admission); NotFound errors must
// satisfy apierrors.IsNotFound.
type Lookup interface {
	PVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
	PV(ctx context.Context, name string) (*corev1.PersistentVolume, error)
	StorageClass(ctx context.Context, name string) (*storagev1.StorageClass, error)
}

// Refusal is a reason to deny a pod: the message names the volume and says
// what to fix.
type Refusal struct{ Msg string }

func (r *Refusal) Error() string { return r.Msg }

func refusef(format string, a ...any) error { return &Refusal{Msg: fmt.Sprintf(format, a...)} }

// PV volumeAttributes keys (defined with the volume set contract).
const (
	AttrMetaURL          = volumeset.AttrMetaURL
	AttrMetaURLSecretKey = volumeset.AttrMetaURLSecretKey
	AttrStorageURL       = volumeset.AttrStorageURL
	AttrStorageURLSecret = volumeset.AttrStorageURLSecret
	AttrSubDir           = volumeset.AttrSubDir
	AttrMountOptions     = volumeset.AttrMountOptions
)

// podfsVolume is one of the pod's volumes that podfs serves.
type podfsVolume struct {
	index    int    // in pod.spec.volumes
	name     string // pod volume name
	handoff  string // kubelet's name for the volume: PV name, or the pod's volume name for inline volumes
	pvc      *corev1.PersistentVolumeClaim
	class    string
	attrs    map[string]string
	secret   string // Secret in the pod's namespace with the credentials, or ""
	readOnly bool
	pvOpts   []string
	// claim is set for a claim whose PV is not known yet (ordinary nodes
	// only): not bound, or not created yet. The CSI node tells the sidecar
	// which PV it became (volumeset.Volume.Claim).
	claim string
	// maybe: the claim does not exist yet, so it may not be podfs's at all.
	maybe bool
}

// findVolumes returns the pod's podfs volumes, or a Refusal. On ordinary
// nodes a claim that is not bound yet (or does not exist yet) may become
// podfs's: it is returned with claim set.
func findVolumes(ctx context.Context, lk Lookup, ns string, pod *corev1.Pod, serverless bool) ([]podfsVolume, error) {
	var out []podfsVolume
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.CSI != nil:
			if v.CSI.Driver != volumeset.DriverName {
				continue
			}
			pv := podfsVolume{index: i, name: v.Name, handoff: v.Name, attrs: v.CSI.VolumeAttributes,
				readOnly: v.CSI.ReadOnly != nil && *v.CSI.ReadOnly}
			if v.CSI.NodePublishSecretRef != nil {
				pv.secret = v.CSI.NodePublishSecretRef.Name
			}
			out = append(out, pv)
		case v.PersistentVolumeClaim != nil:
			pv, ok, err := pvcVolume(ctx, lk, ns, i, v, serverless)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, pv)
			}
		case v.Ephemeral != nil && v.Ephemeral.VolumeClaimTemplate != nil:
			// The PVC does not exist yet; its class tells whether it would
			// be podfs's, which only inline CSI volumes support.
			if c := v.Ephemeral.VolumeClaimTemplate.Spec.StorageClassName; c != nil && *c != "" {
				sc, err := lk.StorageClass(ctx, *c)
				if err == nil && sc.Provisioner == volumeset.DriverName {
					return nil, refusef("volume %q: a generic ephemeral volume of StorageClass %q (podfs) is not supported; use an inline CSI volume (csi.driver: %s) instead", v.Name, *c, volumeset.DriverName)
				}
			}
		}
	}
	return out, nil
}

func pvcVolume(ctx context.Context, lk Lookup, ns string, i int, v *corev1.Volume, serverless bool) (podfsVolume, bool, error) {
	claim := v.PersistentVolumeClaim.ClaimName
	pending := podfsVolume{index: i, name: v.Name, claim: claim, readOnly: v.PersistentVolumeClaim.ReadOnly}
	pvc, err := lk.PVC(ctx, ns, claim)
	if apierrors.IsNotFound(err) {
		if serverless {
			return podfsVolume{}, false, refusef("volume %q: PersistentVolumeClaim %s/%s does not exist: on serverless nodes podfs must see the claim bound when the pod is created; create it, wait for it to bind (kubectl wait --for=jsonpath='{.status.phase}'=Bound pvc/%s -n %s), then create the pod", v.Name, ns, claim, claim, ns)
		}
		// It may become podfs's: the sidecar learns from the CSI node,
		// and serves nothing if it never publishes the volume.
		pending.maybe = true
		return pending, true, nil
	}
	if err != nil {
		return podfsVolume{}, false, fmt.Errorf("volume %q: read PersistentVolumeClaim %s/%s: %w", v.Name, ns, claim, err)
	}
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	if pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound {
		// An unbound claim of another provisioner is none of podfs's
		// business; one that may become podfs's (a podfs class, or a
		// static PV to come) gets a sidecar that learns its PV from the
		// CSI node when the kubelet publishes it.
		if class != "" {
			sc, err := lk.StorageClass(ctx, class)
			switch {
			case err == nil && sc.Provisioner != volumeset.DriverName:
				return podfsVolume{}, false, nil
			case err != nil && !apierrors.IsNotFound(err):
				return podfsVolume{}, false, fmt.Errorf("volume %q: read StorageClass %s: %w", v.Name, class, err)
			}
		}
		if serverless {
			return podfsVolume{}, false, refusef("volume %q: PersistentVolumeClaim %s/%s is not bound (phase %q): on serverless nodes podfs must see the claim bound when the pod is created; wait for it to bind (kubectl wait --for=jsonpath='{.status.phase}'=Bound pvc/%s -n %s), then create the pod", v.Name, ns, claim, pvc.Status.Phase, claim, ns)
		}
		pending.pvc, pending.class = pvc, class
		return pending, true, nil
	}
	pv, err := lk.PV(ctx, pvc.Spec.VolumeName)
	if apierrors.IsNotFound(err) {
		return podfsVolume{}, false, refusef("volume %q: PersistentVolumeClaim %s/%s is bound to PersistentVolume %q, which does not exist", v.Name, ns, claim, pvc.Spec.VolumeName)
	}
	if err != nil {
		return podfsVolume{}, false, fmt.Errorf("volume %q: read PersistentVolume %s: %w", v.Name, pvc.Spec.VolumeName, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != volumeset.DriverName {
		return podfsVolume{}, false, nil
	}
	out := podfsVolume{index: i, name: v.Name, handoff: pv.Name, pvc: pvc, class: class,
		attrs: pv.Spec.CSI.VolumeAttributes, readOnly: v.PersistentVolumeClaim.ReadOnly || pv.Spec.CSI.ReadOnly,
		pvOpts: pv.Spec.MountOptions}
	if ref := pv.Spec.CSI.NodePublishSecretRef; ref != nil {
		// On ordinary nodes the kubelet reads the Secret for the CSI node,
		// from any namespace; only a serverless sidecar reads it itself.
		if serverless && ref.Namespace != "" && ref.Namespace != ns {
			return podfsVolume{}, false, refusef("volume %q: PersistentVolume %s names Secret %s/%s in nodePublishSecretRef, but the pod runs in namespace %q on a serverless node, where the sidecar reads the Secret itself; podfs never copies secrets across namespaces: put the Secret in %q and point the PV at it (or use a PV per namespace)", v.Name, pv.Name, ref.Namespace, ref.Name, ns, ns)
		}
		out.secret = ref.Name
	}
	return out, true, nil
}

// volumeEntry builds the sidecar's entry for v and the env vars carrying its
// secrets; i numbers the volume within the pod.
func volumeEntry(i int, v *podfsVolume, mountPoint string, cfg *Config, annOpts []string) (volumeset.Volume, []corev1.EnvVar, error) {
	e := volumeset.Volume{Name: v.name, MountPoint: mountPoint, ReadOnly: v.readOnly}
	var env []corev1.EnvVar
	if v.claim == "" {
		var err error
		if env, err = entrySource(i, v, &e); err != nil {
			return e, nil, err
		}
	}
	opts := append([]string(nil), cfg.MountOptions...)
	opts = volumeset.MergeOptions(opts, v.pvOpts...)
	if s := v.attrs[AttrMountOptions]; s != "" {
		o, err := volumeset.ParseOptions(s)
		if err != nil {
			return e, nil, refusef("volume %q: volumeAttributes %s: %v", v.name, AttrMountOptions, err)
		}
		opts = volumeset.MergeOptions(opts, o...)
	}
	mergeCache(&e.Cache, &cfg.Cache)
	for i := range cfg.Patches {
		p := &cfg.Patches[i]
		if p.matches(pvcLabels(v.pvc), v.class, v.pvc != nil) {
			opts = volumeset.MergeOptions(opts, p.MountOptions...)
			mergeCache(&e.Cache, p.Cache)
		}
	}
	e.Options = volumeset.MergeOptions(opts, annOpts...)
	return e, env, nil
}

// entrySource checks where v's metadata and data live and sets them in e:
// plain URLs, or env vars filled from the volume's Secret.
func entrySource(i int, v *podfsVolume, e *volumeset.Volume) ([]corev1.EnvVar, error) {
	var env []corev1.EnvVar
	fromSecret := func(attr, key, envName string) error {
		if v.secret == "" {
			return refusef("volume %q: volumeAttributes %s=%q names a key of the nodePublishSecretRef Secret, but the volume has no nodePublishSecretRef: set one (a Secret in the pod's namespace)", v.name, attr, key)
		}
		env = append(env, corev1.EnvVar{Name: envName, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: v.secret}, Key: key}}})
		return nil
	}
	meta, metaKey := v.attrs[AttrMetaURL], v.attrs[AttrMetaURLSecretKey]
	switch {
	case meta != "" && metaKey != "":
		return nil, refusef("volume %q: volumeAttributes has both %s and %s: keep one", v.name, AttrMetaURL, AttrMetaURLSecretKey)
	case meta != "":
		e.MetaURL = meta
	case metaKey != "":
		e.MetaURLEnv = fmt.Sprintf("PODFS_VOL%d_META_URL", i)
		if err := fromSecret(AttrMetaURLSecretKey, metaKey, e.MetaURLEnv); err != nil {
			return nil, err
		}
	default:
		return nil, refusef("volume %q: volumeAttributes has neither %s nor %s: set the metadata URL (e.g. tikv://pd:2379/vol) or the Secret key holding it", v.name, AttrMetaURL, AttrMetaURLSecretKey)
	}
	st, stKey := v.attrs[AttrStorageURL], v.attrs[AttrStorageURLSecret]
	switch {
	case st != "" && stKey != "":
		return nil, refusef("volume %q: volumeAttributes has both %s and %s: keep one", v.name, AttrStorageURL, AttrStorageURLSecret)
	case st != "":
		e.StorageURL = st
	case stKey != "":
		e.StorageURLEnv = fmt.Sprintf("PODFS_VOL%d_STORAGE_URL", i)
		if err := fromSecret(AttrStorageURLSecret, stKey, e.StorageURLEnv); err != nil {
			return nil, err
		}
	}
	if sd := strings.Trim(v.attrs[AttrSubDir], "/"); sd != "" {
		if path.Clean(sd) != sd || sd == ".." || strings.HasPrefix(sd, "../") {
			return nil, refusef("volume %q: volumeAttributes subDir %q must be a clean relative path inside the volume (no . or .. elements): fix the PersistentVolume", v.name, v.attrs[AttrSubDir])
		}
		e.SubDir = sd
	}
	return env, nil
}

func pvcLabels(p *corev1.PersistentVolumeClaim) map[string]string {
	if p == nil {
		return nil
	}
	return p.Labels
}
