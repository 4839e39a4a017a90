package webhook

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"podfs.io/podfs/pkg/fs"
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

// SidecarLabel marks every injected pod with its sidecar's placement:
// SidecarLabelNative or SidecarLabelContainer. The apps-done controller
// watches the latter (it tells those sidecars when the app is done); a
// PodMonitor selects both.
const (
	SidecarLabel          = "podfs.io/sidecar"
	SidecarLabelContainer = "container"
	SidecarLabelNative    = "native"

	// MetricsPortName names the sidecar's metrics port (podfs-metrics:
	// apps often call their own port "metrics").
	MetricsPortName = "podfs-metrics"
	// DefaultMetricsPort is where the sidecar serves metrics unless the
	// configuration says otherwise (metricsPort; 0 = none).
	DefaultMetricsPort = 9567

	// Values of AnnPlacement.
	PlacementNative    = "native"
	PlacementContainer = "container"
)

// Names of the volumes the webhook adds for the sidecar ("-N" appended when
// the pod already has a volume so named).
const (
	runVolumeName     = "podfs-run"
	cacheVolumeName   = "podfs-cache"
	secretVolumeName  = "podfs-secret"
	podInfoVolumeName = "podfs-podinfo"
	istioProxy        = "istio-proxy"
)

// defaultCacheDirSize is pkg/data's bound of a disk cache whose size is not
// given (Cache.CacheDirSize 0).
const defaultCacheDirSize = 10 << 30

// Op is one RFC 6902 JSON patch operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
	From  string `json:"from,omitempty"` // of "move"
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
	m, err := mutate(ctx, lk, in)
	return m.ops, err
}

// mutation is what mutate decided.
type mutation struct {
	ops []Op
	// pullSecrets the sidecar's image needs in the pod's namespace.
	pullSecrets []string
}

func mutate(ctx context.Context, lk Lookup, in Input) (mutation, error) {
	pod := in.Pod
	if pod.Labels[volumeset.InjectLabel] == "false" {
		return mutation{}, nil
	}
	if _, ok := pod.Annotations[volumeset.InjectedAnnotation]; ok {
		return mutation{ops: unmountToken(pod)}, nil
	}
	serverless := in.Serverless || targetsVirtualKubelet(pod)
	vols, err := findVolumes(ctx, lk, in.Namespace, pod, serverless)
	if err != nil || len(vols) == 0 {
		return mutation{}, err
	}
	ops, pullSecrets, err := inject(pod, vols, in, serverless)
	return mutation{ops: ops, pullSecrets: pullSecrets}, err
}

// inject builds the patch that adds the sidecar serving vols (FUSE mounted
// by the sidecar itself when serverless), and names the pull secrets it
// relies on.
func inject(pod *corev1.Pod, vols []podfsVolume, in Input, serverless bool) ([]Op, []string, error) {
	cfg := in.Config
	isPodfs := make(map[string]bool, len(vols))
	for _, v := range vols {
		isPodfs[v.name] = !v.maybe
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
		return nil, nil, refusef("annotation %s=%q: want %q (an init container with restartPolicy Always; the default where the cluster supports it) or %q (an ordinary container ahead of the apps, which start sooner)", AnnPlacement, p, PlacementNative, PlacementContainer)
	}
	proxy := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == istioProxy })
	if proxy >= 0 {
		native = false
	}
	var at int
	if native {
		if i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == istioProxy }); i >= 0 {
			at = i + 1
		}
		for _, c := range pod.Spec.InitContainers[:at] {
			if usesAny(&c, isPodfs) {
				return nil, nil, refusef("init container %q uses a podfs volume but runs before %s, which must start first so the network is up; move it after %s", c.Name, istioProxy, istioProxy)
			}
		}
	} else {
		// After istio-proxy (moved first when it is not: see the patch
		// below), before every other container.
		if proxy >= 0 {
			at = 1
		}
		for _, c := range pod.Spec.InitContainers {
			if usesAny(&c, isPodfs) {
				return nil, nil, refusef("init container %q uses podfs volume(s), which only a native sidecar can serve before the app starts (API server and the node's kubelet >= 1.29, no istio-proxy among the containers, no %s=%s); drop the volume from the init container", c.Name, AnnPlacement, PlacementContainer)
			}
		}
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == volumeset.ContainerName {
			return nil, nil, refusef("the pod already has a container named %q but no %s annotation; rename that container", c.Name, volumeset.InjectedAnnotation)
		}
	}

	res, err := sidecarResources(pod, vols, cfg)
	if err != nil {
		return nil, nil, err
	}
	var annOpts []string
	if s, ok := pod.Annotations[AnnMountOptions]; ok {
		annOpts, err = volumeset.ParseOptions(s)
		if err != nil {
			return nil, nil, refusef("annotation %s=%q: %v; write options comma-separated, e.g. \"allow_other,attr_timeout=1s\"", AnnMountOptions, s, err)
		}
		if err := fs.CheckOptions(annOpts); err != nil {
			return nil, nil, refusef("annotation %s=%q: %v", AnnMountOptions, s, err)
		}
	}
	image, pull, env := cfg.Image, cfg.ImagePullPolicy, slices.Clone(cfg.Env)
	pullSecrets := addPullSecrets(nil, cfg.ImagePullSecrets)
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
		pullSecrets = addPullSecrets(pullSecrets, p.ImagePullSecrets)
		env = mergeEnv(env, p.Env)
	}

	runVol := uniqueName(runVolumeName, pod)
	infoVol := uniqueName(podInfoVolumeName, pod, runVol)
	cacheVol := uniqueName(cacheVolumeName, pod, runVol, infoVol)
	set := volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: native}
	if serverless {
		set.Mode = volumeset.ModeServerless
	}
	// The run-time emptyDir (probe socket; on ordinary nodes the CSI node's
	// handoff sockets, found by this mount path) in both modes: the root
	// file system may be read-only.
	mounts := []corev1.VolumeMount{{Name: runVol, MountPath: volumeset.RunDir}}
	secretsVol := uniqueName(secretVolumeName+"s", pod, runVol, infoVol, cacheVol)
	if !serverless {
		mounts = append(mounts, corev1.VolumeMount{Name: secretsVol, MountPath: volumeset.SecretsDir})
	}
	bidi := corev1.MountPropagationBidirectional
	var secretEnv []corev1.EnvVar
	var secretVols []corev1.Volume
	for i := range vols {
		v := &vols[i]
		mp := ""
		if serverless {
			mp = volumeset.ServerlessDir + "/" + v.name
			mounts = append(mounts, corev1.VolumeMount{Name: v.name, MountPath: mp, MountPropagation: &bidi})
		}
		e, senv, err := volumeEntry(i, v, mp, cfg, annOpts)
		if err != nil {
			return nil, nil, err
		}
		if err := fs.CheckOptions(e.Options); err != nil {
			return nil, nil, refusef("volume %q: %v; the options come from the webhook configuration (mountOptions, patches), the PersistentVolume (spec.mountOptions, volumeAttributes mountOptions) and the annotation %s: fix the one that has it", v.name, err, AnnMountOptions)
		}
		if !serverless {
			// The CSI node sends the URLs with the connection, so the
			// pod spec carries neither them nor their Secret.
			e.MetaURL, e.MetaURLEnv, e.StorageURL, e.StorageURLEnv, e.SubDir = "", "", "", "", ""
			senv = nil
			if v.claim == "" {
				e.Handoff = v.handoff
			} else {
				e.Claim = v.claim
			}
		}
		if serverless && v.secret != "" {
			// The Secret's keys as files, for credentials the URLs name
			// as /etc/podfs/secret/KEY (CA, client certificate, keyring).
			name := uniqueName(fmt.Sprintf("%s-%d", secretVolumeName, i), pod, runVol, infoVol, cacheVol)
			e.SecretDir = fmt.Sprintf("%s/%d", volumeset.SecretsDir, i)
			mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: e.SecretDir, ReadOnly: true})
			secretVols = append(secretVols, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: v.secret, DefaultMode: ptr(int32(0o444))}}})
		}
		set.Volumes = append(set.Volumes, e)
		secretEnv = append(secretEnv, senv...)
	}
	cacheMounts, cacheLimit, err := cacheVolumeMounts(cacheVol, set.Volumes, cfg)
	if err != nil {
		return nil, nil, err
	}
	mounts = append(mounts, cacheMounts...)
	if !native {
		set.AppsDoneFile = volumeset.PodInfoDir + "/annotations"
		mounts = append(mounts, corev1.VolumeMount{Name: infoVol, MountPath: volumeset.PodInfoDir, ReadOnly: true})
	}
	js, err := set.Encode()
	if err != nil {
		// Bad PV attributes (a subDir with "..", an option with a space).
		return nil, nil, refusef("the sidecar's volume set is invalid: %s; fix the PersistentVolume's volumeAttributes or the webhook configuration", strings.ReplaceAll(err.Error(), "\n", "; "))
	}

	sc := corev1.Container{
		Name:            volumeset.ContainerName,
		Image:           image,
		ImagePullPolicy: pull,
		Command:         []string{"podfs", "sidecar"},
		Ports:           metricsPort(pod, cfg),
		Env: slices.Concat([]corev1.EnvVar{
			{Name: volumeset.PodUIDEnv, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
			{Name: volumeset.EnvVar, Value: js},
		}, secretEnv, env),
		Resources:                res,
		VolumeMounts:             mounts,
		SecurityContext:          sidecarSecurityContext(serverless),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if len(sc.Ports) > 0 {
		sc.Command = append(sc.Command, "--metrics-addr=:"+strconv.Itoa(int(sc.Ports[0].ContainerPort)))
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
	if serverless {
		// Propagation first: these paths use the original container indices.
		// The sidecar mounts FUSE into the emptyDir after the kubelet bound it
		// into the app containers (and again after a restart): only
		// HostToContainer lets them see it. On ordinary nodes the mount exists
		// before any container starts and outlives sidecar restarts (the CSI
		// node keeps the kernel connection), so the app's mounts stay as
		// written.
		hostToContainer := corev1.MountPropagationHostToContainer
		for _, k := range []struct {
			kind string
			cs   []corev1.Container
		}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
			kind, cs := k.kind, k.cs
			for ci := range cs {
				for mi, m := range cs[ci].VolumeMounts {
					if isPodfs[m.Name] && (m.MountPropagation == nil || *m.MountPropagation == corev1.MountPropagationNone) {
						ops = append(ops, Op{Op: "add", Path: "/spec/" + kind + "/" + strconv.Itoa(ci) + "/volumeMounts/" + strconv.Itoa(mi) + "/mountPropagation", Value: hostToContainer})
					}
				}
			}
		}
		for _, v := range vols {
			ops = append(ops, Op{Op: "replace", Path: "/spec/volumes/" + strconv.Itoa(v.index), Value: corev1.Volume{Name: v.name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}})
		}
	}
	// On disk, not tmpfs: the CSI node creates the handoff sockets in it
	// from the host, possibly before the kubelet would have mounted a tmpfs
	// there, which would then hide them.
	newVols := []corev1.Volume{{Name: runVol, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	if !serverless {
		// The Secret files the CSI node hands over, kept in memory only.
		secretVols = append(secretVols, corev1.Volume{Name: secretsVol, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: resource.NewQuantity(4<<20, resource.BinarySI)}}})
	}
	if len(cacheMounts) > 0 {
		src := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: cacheLimit}}
		if cfg.CacheVolume != nil {
			src = *cfg.CacheVolume.DeepCopy()
		}
		newVols = append(newVols, corev1.Volume{Name: cacheVol, VolumeSource: src})
	}
	newVols = append(newVols, secretVols...)
	if !native {
		newVols = append(newVols, corev1.Volume{Name: infoVol, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}}}}})
	}
	for _, nv := range newVols {
		ops = append(ops, Op{Op: "add", Path: "/spec/volumes/-", Value: nv}) // pod.spec.volumes is non-empty: it holds a podfs volume
	}
	list, cs := "/spec/containers", pod.Spec.Containers
	if !native && proxy > 0 {
		// istio-proxy behind an app container (istio's default without
		// holdApplicationUntilProxyStarts): move it first, as that option
		// does, so the sidecar can follow it (its traffic goes through the
		// proxy) and still start before every app container.
		ops = append(ops, Op{Op: "move", From: "/spec/containers/" + strconv.Itoa(proxy), Path: "/spec/containers/0"})
	}
	if native {
		list, cs = "/spec/initContainers", pod.Spec.InitContainers
	}
	if len(cs) == 0 {
		ops = append(ops, Op{Op: "add", Path: list, Value: []corev1.Container{sc}})
	} else {
		ops = append(ops, Op{Op: "add", Path: list + "/" + strconv.Itoa(at), Value: sc})
	}
	ops = appendPullSecretOps(ops, pod, pullSecrets)
	if pod.Annotations == nil {
		ops = append(ops, Op{Op: "add", Path: "/metadata/annotations", Value: map[string]string{volumeset.InjectedAnnotation: injectedValue(native, serverless)}})
	} else {
		ops = append(ops, Op{Op: "add", Path: "/metadata/annotations/" + escapePointer(volumeset.InjectedAnnotation), Value: injectedValue(native, serverless)})
	}
	// The apps-done controller watches only pods labelled "container".
	label := SidecarLabelNative
	if !native {
		label = SidecarLabelContainer
	}
	if pod.Labels == nil {
		ops = append(ops, Op{Op: "add", Path: "/metadata/labels", Value: map[string]string{SidecarLabel: label}})
	} else {
		ops = append(ops, Op{Op: "add", Path: "/metadata/labels/" + escapePointer(SidecarLabel), Value: label})
	}
	return ops, pullSecrets, nil
}

// metricsPort is the sidecar's metrics port, or none: when the
// configuration turns metrics off, on the host network (where the port
// would be the node's: two such pods could not share a node, and the
// scheduler would keep them apart), or when another container of the pod
// declares that port or name.
func metricsPort(pod *corev1.Pod, cfg *Config) []corev1.ContainerPort {
	port := int32(DefaultMetricsPort)
	if cfg.MetricsPort != nil {
		port = *cfg.MetricsPort
	}
	if port == 0 || pod.Spec.HostNetwork {
		return nil
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == port || p.Name == MetricsPortName }) {
			return nil
		}
	}
	return []corev1.ContainerPort{{Name: MetricsPortName, ContainerPort: port, Protocol: corev1.ProtocolTCP}}
}

// addPullSecrets appends the names of refs not in names yet.
func addPullSecrets(names []string, refs []corev1.LocalObjectReference) []string {
	for _, r := range refs {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	return names
}

// appendPullSecretOps adds the names the pod does not list yet to its
// spec.imagePullSecrets.
func appendPullSecretOps(ops []Op, pod *corev1.Pod, names []string) []Op {
	var missing []corev1.LocalObjectReference
	for _, n := range names {
		if !slices.ContainsFunc(pod.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) bool { return r.Name == n }) {
			missing = append(missing, corev1.LocalObjectReference{Name: n})
		}
	}
	switch {
	case len(missing) == 0:
	case len(pod.Spec.ImagePullSecrets) == 0:
		ops = append(ops, Op{Op: "add", Path: "/spec/imagePullSecrets", Value: missing})
	default:
		for _, r := range missing {
			ops = append(ops, Op{Op: "add", Path: "/spec/imagePullSecrets/-", Value: r})
		}
	}
	return ops
}

// ServiceAccountTokenPath is where the ServiceAccount admission plugin
// mounts the pod's API token into every container.
const ServiceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// unmountToken keeps the API token out of the sidecar, which needs no API
// access (it reads its pod's annotations from a downward API file). The
// ServiceAccount admission plugin runs before the webhooks, so the sidecar
// added here misses its mount; but a webhook's change makes the API server
// run the in-tree plugins again, which then mount the token into the
// sidecar too, and call this webhook again (reinvocationPolicy IfNeeded):
// the mount is removed here. Nil when there is nothing to remove.
func unmountToken(pod *corev1.Pod) []Op {
	var ops []Op
	for _, k := range []struct {
		kind string
		cs   []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		for ci, c := range k.cs {
			if c.Name != volumeset.ContainerName {
				continue
			}
			for mi := len(c.VolumeMounts) - 1; mi >= 0; mi-- { // last first: indices stay valid
				if path.Clean(c.VolumeMounts[mi].MountPath) == ServiceAccountTokenPath {
					ops = append(ops, Op{Op: "remove", Path: "/spec/" + k.kind + "/" + strconv.Itoa(ci) + "/volumeMounts/" + strconv.Itoa(mi)})
				}
			}
		}
	}
	return ops
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

// uniqueName returns base, or base-N when the pod already has a volume so
// named or it is one of taken.
func uniqueName(base string, pod *corev1.Pod, taken ...string) string {
	name := base
	for n := 1; slices.Contains(taken, name) || slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name }); n++ {
		name = base + "-" + strconv.Itoa(n)
	}
	return name
}

// sidecarSecurityContext is the sidecar's: on ordinary nodes it only serves
// FUSE descriptors the CSI node hands over, so it runs as an unprivileged
// user with nothing more than Pod Security "restricted" allows. On
// serverless nodes (no CSI node) it mounts FUSE itself, which needs
// CAP_SYS_ADMIN and a Bidirectional mount, i.e. privileged as root; it says
// so explicitly so a pod-level runAsNonRoot or runAsUser does not stop it.
func sidecarSecurityContext(serverless bool) *corev1.SecurityContext {
	if serverless {
		return &corev1.SecurityContext{
			Privileged:   ptr(true),
			RunAsUser:    ptr(int64(0)),
			RunAsNonRoot: ptr(false),
		}
	}
	return &corev1.SecurityContext{
		Privileged:               ptr(false),
		RunAsUser:                ptr(int64(volumeset.SidecarUID)),
		RunAsGroup:               ptr(int64(volumeset.SidecarGID)),
		RunAsNonRoot:             ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		ReadOnlyRootFilesystem:   ptr(true),
	}
}

// cacheVolumeMounts mounts the cache emptyDir at every disk cache directory
// the volumes use (the sidecar's root file system is read-only), one
// sub-directory per distinct directory. The emptyDir's sizeLimit is the
// configured cacheVolumeSizeLimit, raised when needed to what the caches
// may fill (the sum of their cacheDirSize plus an eighth for files in
// flight): the kubelet evicts a pod whose emptyDir exceeds its limit.
func cacheVolumeMounts(name string, vols []volumeset.Volume, cfg *Config) ([]corev1.VolumeMount, *resource.Quantity, error) {
	var dirs []string
	var sum int64
	for _, v := range vols {
		d := v.Cache.CacheDir
		if d == "" {
			continue
		}
		for _, reserved := range []string{volumeset.RunDir, volumeset.PodInfoDir, volumeset.ServerlessDir} {
			if within(d, reserved) || within(reserved, d) {
				return nil, nil, refusef("volume %q: cacheDir %q overlaps %s, which the sidecar uses for itself; choose another cacheDir in the webhook configuration", v.Name, d, reserved)
			}
		}
		size := v.Cache.CacheDirSize
		if size <= 0 {
			size = defaultCacheDirSize
		}
		sum += size
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return nil, nil, nil
	}
	mounts := make([]corev1.VolumeMount, len(dirs))
	for i, d := range dirs {
		mounts[i] = corev1.VolumeMount{Name: name, MountPath: d}
		if len(dirs) > 1 {
			mounts[i].SubPath = strconv.Itoa(i)
		}
	}
	limit := resource.NewQuantity(sum+sum/8, resource.BinarySI)
	if l := cfg.CacheVolumeSizeLimit; l != nil && l.Cmp(*limit) > 0 {
		limit = ptr(l.DeepCopy())
	}
	return mounts, limit, nil
}

// within reports whether path p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func ptr[T any](v T) *T { return &v }
