package webhook

import (
	"context"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"podfs.io/podfs/sidecar/volumeset"
)

// Per-pod tuning annotations.
const (
	AnnCPURequest    = "podfs.io/sidecar-cpu-request"
	AnnCPULimit      = "podfs.io/sidecar-cpu-limit"
	AnnMemoryRequest = "podfs.io/sidecar-memory-request"
	AnnMemoryLimit   = "podfs.io/sidecar-memory-limit"
	AnnMountOptions  = "podfs.io/mount-options"
	// AnnPlacement chooses where the sidecar goes: "native" (the default
	// where the cluster has native sidecars) or "container" (an ordinary
	// container ahead of the apps: the app starts about a kubelet relist,
	// ~1 s, sooner, but a pod that must complete waits for apps-done).
	AnnPlacement = "podfs.io/sidecar-placement"
)

// SidecarLabel marks pods whose sidecar is an ordinary container
// (SidecarLabelContainer): the apps-done controller tells those sidecars
// when the app is done.
const (
	SidecarLabel          = "podfs.io/sidecar"
	SidecarLabelContainer = "container"

	// Values of AnnPlacement.
	PlacementNative    = "native"
	PlacementContainer = "container"
)

// Names of the volumes the webhook adds for the sidecar.
const (
	hostVolumeName    = "podfs-host"
	podInfoVolumeName = "podfs-podinfo"
	istioProxy        = "istio-proxy"
)

// Op is one RFC 6902 JSON patch operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Input is what one admission decides on.
type Input struct {
	Pod       *corev1.Pod
	Namespace string
	// Serverless is true when the namespace is labelled podfs.io/injection=serverless.
	Serverless bool
	// Native says whether the cluster runs native sidecars (>= 1.29).
	Native bool
	Config *Config
}

// Mutate decides whether the pod gets a podfs sidecar and returns the JSON
// patch that adds it (nil: leave the pod alone). A *Refusal error means
// deny the pod with its message; another error means the decision could
// not be made (the API server applies the failure policy).
func Mutate(ctx context.Context, lk Lookup, in Input) ([]Op, error) {
	pod := in.Pod
	if pod.Labels[volumeset.InjectLabel] == "false" {
		return nil, nil
	}
	if _, ok := pod.Annotations[volumeset.InjectedAnnotation]; ok {
		return nil, nil
	}
	vols, err := findVolumes(ctx, lk, in.Namespace, pod)
	if err != nil || len(vols) == 0 {
		return nil, err
	}
	cfg := in.Config
	serverless := in.Serverless || targetsVirtualKubelet(pod)
	isPodfs := make(map[string]bool, len(vols))
	for _, v := range vols {
		isPodfs[v.name] = true
	}

	// Where the sidecar goes. A native sidecar is an init container placed
	// first, or right after a native istio-proxy so the network is up. With
	// istio-proxy as an ordinary container the sidecar must follow it among
	// the containers, which makes it non-native.
	native := in.Native
	switch p := pod.Annotations[AnnPlacement]; p {
	case "", PlacementNative:
	case PlacementContainer:
		native = false
	default:
		return nil, refusef("annotation %s=%q: want %q (an init container with restartPolicy Always; the default where the cluster supports it) or %q (an ordinary container ahead of the apps, which start sooner)", AnnPlacement, p, PlacementNative, PlacementContainer)
	}
	if slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == istioProxy }) {
		native = false
	}
	var at int
	if native {
		if i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == istioProxy }); i >= 0 {
			at = i + 1
		}
		for _, c := range pod.Spec.InitContainers[:at] {
			if usesAny(&c, isPodfs) {
				return nil, refusef("init container %q uses a podfs volume but runs before %s, which must start first so the network is up; move it after %s", c.Name, istioProxy, istioProxy)
			}
		}
	} else {
		if i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == istioProxy }); i >= 0 {
			at = i + 1
		}
		for _, c := range pod.Spec.InitContainers {
			if usesAny(&c, isPodfs) {
				return nil, refusef("init container %q uses podfs volume(s), which only a native sidecar (Kubernetes >= 1.29, or no istio-proxy among the containers) can serve before the app starts; drop the volume from the init container", c.Name)
			}
		}
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == volumeset.ContainerName {
			return nil, refusef("the pod already has a container named %q but no %s annotation; rename that container", c.Name, volumeset.InjectedAnnotation)
		}
	}

	res, err := sidecarResources(pod, vols, cfg)
	if err != nil {
		return nil, err
	}
	var annOpts []string
	if s, ok := pod.Annotations[AnnMountOptions]; ok {
		annOpts, err = volumeset.ParseOptions(s)
		if err != nil {
			return nil, refusef("annotation %s=%q: %v; write options comma-separated, e.g. \"allow_other,attr_timeout=1s\"", AnnMountOptions, s, err)
		}
	}
	image, pull, env := cfg.Image, cfg.ImagePullPolicy, slices.Clone(cfg.Env)
	for i := range cfg.Patches {
		p := &cfg.Patches[i]
		if !slices.ContainsFunc(vols, func(v podfsVolume) bool { return p.matches(pvcLabels(v.pvc), v.class, v.pvc != nil) }) {
			continue
		}
		if p.Image != "" {
			image = p.Image
		}
		if p.ImagePullPolicy != "" {
			pull = p.ImagePullPolicy
		}
		env = mergeEnv(env, p.Env)
	}

	hostVol := uniqueName(hostVolumeName, pod)
	infoVol := uniqueName(podInfoVolumeName, pod)
	set := volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: native}
	if serverless {
		set.Mode = volumeset.ModeServerless
	}
	mounts := make([]corev1.VolumeMount, 0, len(vols)+1)
	bidi := corev1.MountPropagationBidirectional
	if !serverless {
		mounts = append(mounts, corev1.VolumeMount{Name: hostVol, MountPath: volumeset.PodsDir, MountPropagation: &bidi})
	}
	var secretEnv []corev1.EnvVar
	for i := range vols {
		v := &vols[i]
		mp := volumeset.PodsDir + "/" + volumeset.PodUIDRef + "/" + v.dirName
		if serverless {
			mp = volumeset.ServerlessDir + "/" + v.name
			mounts = append(mounts, corev1.VolumeMount{Name: v.name, MountPath: mp, MountPropagation: &bidi})
		}
		e, senv, err := volumeEntry(i, v, mp, cfg, annOpts)
		if err != nil {
			return nil, err
		}
		set.Volumes = append(set.Volumes, e)
		secretEnv = append(secretEnv, senv...)
	}
	if !native {
		set.AppsDoneFile = volumeset.PodInfoDir + "/annotations"
		mounts = append(mounts, corev1.VolumeMount{Name: infoVol, MountPath: volumeset.PodInfoDir, ReadOnly: true})
	}
	js, err := set.Encode()
	if err != nil {
		// Bad PV attributes (a subDir with "..", an option with a space).
		return nil, refusef("the sidecar's volume set is invalid: %s; fix the PersistentVolume's volumeAttributes or the webhook configuration", strings.ReplaceAll(err.Error(), "\n", "; "))
	}

	sc := corev1.Container{
		Name:            volumeset.ContainerName,
		Image:           image,
		ImagePullPolicy: pull,
		Command:         []string{"podfs", "sidecar"},
		Env: slices.Concat([]corev1.EnvVar{
			{Name: volumeset.PodUIDEnv, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
			{Name: volumeset.EnvVar, Value: js},
		}, secretEnv, env),
		Resources:    res,
		VolumeMounts: mounts,
		SecurityContext: &corev1.SecurityContext{
			Privileged: ptr(true),
			RunAsUser:  ptr(int64(0)),
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	// A postStart hook that returns once every mount is served holds back the
	// next container exactly as long as needed: the kubelet runs the hook before
	// it starts the next container, in both placements. A startup probe instead
	// adds up to a probe period plus an exec per try (e2e measured 2 s of extra
	// pod start-up time with one), and a readiness probe on a native sidecar
	// would hold back the pod's Ready condition until its first pass.
	sc.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: []string{"podfs", "sidecar", "--probe", "--wait=5m"}}}}
	if native {
		sc.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	} else {
		sc.ReadinessProbe = &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"podfs", "sidecar", "--probe"}}},
			PeriodSeconds:    1,
			TimeoutSeconds:   5,
			FailureThreshold: 3,
		}
	}

	ops := make([]Op, 0, 8)
	// Propagation first: these paths use the original container indices.
	hostToContainer := corev1.MountPropagationHostToContainer
	for _, k := range []struct {
		kind string
		cs   []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		kind, cs := k.kind, k.cs
		for ci := range cs {
			for mi, m := range cs[ci].VolumeMounts {
				if isPodfs[m.Name] && (m.MountPropagation == nil || *m.MountPropagation == corev1.MountPropagationNone) {
					ops = append(ops, Op{"add", "/spec/" + kind + "/" + strconv.Itoa(ci) + "/volumeMounts/" + strconv.Itoa(mi) + "/mountPropagation", hostToContainer})
				}
			}
		}
	}
	if serverless {
		for _, v := range vols {
			ops = append(ops, Op{"replace", "/spec/volumes/" + strconv.Itoa(v.index), corev1.Volume{Name: v.name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}})
		}
	}
	var newVols []corev1.Volume
	if !serverless {
		dirOrCreate := corev1.HostPathDirectoryOrCreate
		newVols = append(newVols, corev1.Volume{Name: hostVol, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: volumeset.PodsDir, Type: &dirOrCreate}}})
	}
	if !native {
		newVols = append(newVols, corev1.Volume{Name: infoVol, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}}}}})
	}
	for _, nv := range newVols {
		ops = append(ops, Op{"add", "/spec/volumes/-", nv}) // pod.spec.volumes is non-empty: it holds a podfs volume
	}
	list, cs := "/spec/containers", pod.Spec.Containers
	if native {
		list, cs = "/spec/initContainers", pod.Spec.InitContainers
	}
	if len(cs) == 0 {
		ops = append(ops, Op{"add", list, []corev1.Container{sc}})
	} else {
		ops = append(ops, Op{"add", list + "/" + strconv.Itoa(at), sc})
	}
	if pod.Annotations == nil {
		ops = append(ops, Op{"add", "/metadata/annotations", map[string]string{volumeset.InjectedAnnotation: injectedValue(native, serverless)}})
	} else {
		ops = append(ops, Op{"add", "/metadata/annotations/" + escapePointer(volumeset.InjectedAnnotation), injectedValue(native, serverless)})
	}
	if !native {
		// The apps-done controller watches only pods with this label.
		if pod.Labels == nil {
			ops = append(ops, Op{"add", "/metadata/labels", map[string]string{SidecarLabel: SidecarLabelContainer}})
		} else {
			ops = append(ops, Op{"add", "/metadata/labels/" + escapePointer(SidecarLabel), SidecarLabelContainer})
		}
	}
	return ops, nil
}

// injectedValue records how the pod was injected (for humans and the
// apps-done controller).
func injectedValue(native, serverless bool) string {
	s := "native"
	if !native {
		s = "container"
	}
	if serverless {
		s += ",serverless"
	}
	return s
}

// sidecarResources merges default, matching patches and annotations.
func sidecarResources(pod *corev1.Pod, vols []podfsVolume, cfg *Config) (corev1.ResourceRequirements, error) {
	r := *cfg.Resources.DeepCopy()
	for i := range cfg.Patches {
		p := &cfg.Patches[i]
		if slices.ContainsFunc(vols, func(v podfsVolume) bool { return p.matches(pvcLabels(v.pvc), v.class, v.pvc != nil) }) {
			mergeResources(&r, p.Resources)
		}
	}
	for _, a := range []struct {
		ann   string
		name  corev1.ResourceName
		limit bool
	}{
		{AnnCPURequest, corev1.ResourceCPU, false}, {AnnCPULimit, corev1.ResourceCPU, true},
		{AnnMemoryRequest, corev1.ResourceMemory, false}, {AnnMemoryLimit, corev1.ResourceMemory, true},
	} {
		s, ok := pod.Annotations[a.ann]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(s))
		if err != nil || q.Sign() < 0 {
			return r, refusef("annotation %s=%q is not a valid quantity (e.g. \"250m\" for CPU, \"512Mi\" for memory): fix or remove it", a.ann, s)
		}
		l := &r.Requests
		if a.limit {
			l = &r.Limits
		}
		if *l == nil {
			*l = corev1.ResourceList{}
		}
		(*l)[a.name] = q
	}
	for n, req := range r.Requests {
		if lim, ok := r.Limits[n]; ok && req.Cmp(lim) > 0 {
			return r, refusef("the sidecar's %s request %s exceeds its limit %s (from the annotations %s/%s and the webhook's configuration): raise the limit or lower the request", n, req.String(), lim.String(), "podfs.io/sidecar-"+string(n)+"-request", "podfs.io/sidecar-"+string(n)+"-limit")
		}
	}
	return r, nil
}

// targetsVirtualKubelet reports whether the pod asks for a virtual-kubelet
// node through its nodeSelector or tolerations.
func targetsVirtualKubelet(pod *corev1.Pod) bool {
	for k, v := range pod.Spec.NodeSelector {
		if v == "virtual-kubelet" || strings.HasPrefix(k, "virtual-kubelet.io/") {
			return true
		}
	}
	for _, t := range pod.Spec.Tolerations {
		if strings.HasPrefix(t.Key, "virtual-kubelet.io/") || t.Value == "virtual-kubelet" {
			return true
		}
	}
	return false
}

func usesAny(c *corev1.Container, names map[string]bool) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return names[m.Name] })
}

// uniqueName returns base, or base-N when the pod already has a volume so named.
func uniqueName(base string, pod *corev1.Pod) string {
	name := base
	for n := 1; slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name }); n++ {
		name = base + "-" + strconv.Itoa(n)
	}
	return name
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func ptr[T any](v T) *T { return &v }
