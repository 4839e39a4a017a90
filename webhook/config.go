package webhook

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/sidecar/volumeset"
)

// ConfigKey is the key of the webhook's ConfigMap that holds its Config as YAML.
const ConfigKey = "config.yaml"

// Config is what the webhook puts into every sidecar. It is read from the
// ConfigMap the webhook watches (key config.yaml):
//
//	image: podfs:v1
//	resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 1Gi}}
//	mountOptions: [allow_other]
//	env: [{name: PODFS_LOG, value: info}]
//	cache: {cacheSize: 256Mi, bufferSize: 300Mi, readahead: 16Mi, cacheDir: /var/cache/podfs, cacheDirSize: 20Gi}
//	cacheVolumeSizeLimit: 30Gi
//	patches:
//	- name: seqread
//	  pvcSelector: {matchLabels: {podfs.io/profile: seqread}}
//	  storageClassNames: [podfs-seqread]
//	  mountOptions: [attr_timeout=60s]
//	  cache: {readahead: 256Mi}
//
// # Precedence
//
// pod annotation > matching patch > default, field by field:
//
//   - image, imagePullPolicy, resources, env: the default, then every patch
//     that matches any of the pod's podfs volumes in the order listed (a
//     later patch wins over an earlier one; resources merge per resource
//     name, env per variable name), then the annotations
//     podfs.io/sidecar-{cpu,memory}-{request,limit}.
//   - mount options (per volume): the default list, then the PV's
//     spec.mountOptions and volumeAttributes mountOptions, then each patch
//     matching that volume, then the pod annotation podfs.io/mount-options.
//     Options merge by key ("key" or "key=value"): a later source replaces
//     an earlier option with the same key.
//   - cache (per volume): the default, then each matching patch, field by field.
//
// A patch matches a PVC volume when its pvcSelector matches the PVC's
// labels or the PVC's StorageClass is one of its storageClassNames (both
// given: either). Inline CSI volumes have no PVC and match no patch.
//
// An invalid ConfigMap (bad YAML, unknown field, bad quantity, a patch that
// selects nothing) is logged, reported as a Warning event InvalidConfig on
// the ConfigMap, and the last good configuration stays in use.
type Config struct {
	Image           string            `json:"image"`
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// ImagePullSecrets are added to every injected pod's
	// spec.imagePullSecrets (names it lacks), for the sidecar's image. They
	// must exist in the app's namespace: admission warns, naming any that
	// does not.
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	Resources        corev1.ResourceRequirements   `json:"resources,omitzero"`
	MountOptions     []string                      `json:"mountOptions,omitempty"`
	Env              []corev1.EnvVar               `json:"env,omitempty"`
	Cache            CacheConfig                   `json:"cache,omitzero"`
	// CacheVolumeSizeLimit is the sizeLimit of the emptyDir the sidecar's
	// disk caches live in (added when a volume has a cacheDir: the
	// sidecar's root file system is read-only). It is raised per pod to
	// what the caches may fill, the sum of their cacheDirSize (10Gi when
	// unset) plus an eighth, so the kubelet never evicts a pod for its
	// cache. Empty: that sum.
	CacheVolumeSizeLimit *resource.Quantity `json:"cacheVolumeSizeLimit,omitempty"`
	// CacheVolume replaces that emptyDir with another volume source: an
	// emptyDir of your own (medium Memory, another sizeLimit) or a generic
	// ephemeral volume (a PVC per pod of a local-SSD StorageClass). It must
	// be writable by the sidecar's user (65532): set the pod's fsGroup, or
	// use a StorageClass that makes it so. Nothing else is accepted: the
	// sidecar gets no hostPath.
	CacheVolume *corev1.VolumeSource `json:"cacheVolume,omitempty"`
	// MetricsPort is where the sidecar serves Prometheus metrics for all
	// its volumes (container port podfs-metrics); unset = 9567, 0 = none.
	MetricsPort *int32 `json:"metricsPort,omitempty"`
	// TerminationGracePeriod is not set: the pod's own applies.
	Patches []Patch `json:"patches,omitempty"`
}

// CacheConfig is the data layer tuning as quantities.
type CacheConfig struct {
	CacheSize    *resource.Quantity `json:"cacheSize,omitempty"`
	CacheDir     string             `json:"cacheDir,omitempty"`
	CacheDirSize *resource.Quantity `json:"cacheDirSize,omitempty"`
	BufferSize   *resource.Quantity `json:"bufferSize,omitempty"`
	Readahead    *resource.Quantity `json:"readahead,omitempty"`
}

// Patch changes the sidecar for the volumes it selects.
type Patch struct {
	Name              string                `json:"name"`
	PVCSelector       *metav1.LabelSelector `json:"pvcSelector,omitempty"`
	StorageClassNames []string              `json:"storageClassNames,omitempty"`
	Image             string                `json:"image,omitempty"`
	ImagePullPolicy   corev1.PullPolicy     `json:"imagePullPolicy,omitempty"`
	// ImagePullSecrets add to the default's (for a patch's own image).
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	Resources        *corev1.ResourceRequirements  `json:"resources,omitempty"`
	MountOptions     []string                      `json:"mountOptions,omitempty"`
	Env              []corev1.EnvVar               `json:"env,omitempty"`
	Cache            *CacheConfig                  `json:"cache,omitempty"`

	selector labels.Selector
}

// DefaultConfig is used until a valid ConfigMap is seen.
func DefaultConfig(image string) *Config {
	c := &Config{
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("128Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("1Gi"),
			},
		},
		MountOptions: []string{"allow_other"},
	}
	if err := c.compile(); err != nil {
		panic(err) // the built-in default is valid by construction
	}
	return c
}

// ParseConfig reads and validates a Config from YAML; defaultImage fills an
// absent image.
func ParseConfig(data []byte, defaultImage string) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("parse %s: %w", ConfigKey, err)
	}
	if c.Image == "" {
		c.Image = defaultImage
	}
	if err := c.compile(); err != nil {
		return nil, err
	}
	return &c, nil
}

// compile validates c and prepares the patches' selectors.
func (c *Config) compile() error {
	var errs []error
	if c.Image == "" {
		errs = append(errs, errors.New("image is empty: set image in the ConfigMap or --sidecar-image"))
	}
	errs = append(errs, checkPullPolicy("imagePullPolicy", c.ImagePullPolicy))
	errs = append(errs, checkPullSecrets("imagePullSecrets", c.ImagePullSecrets))
	errs = append(errs, checkOptions("mountOptions", c.MountOptions))
	errs = append(errs, checkEnv("env", c.Env))
	errs = append(errs, checkCache("cache", &c.Cache))
	errs = append(errs, checkResources("resources", c.Resources))
	if q := c.CacheVolumeSizeLimit; q != nil && q.Sign() <= 0 {
		errs = append(errs, fmt.Errorf("cacheVolumeSizeLimit %s must be positive (leave it out for the sum of the caches' cacheDirSize)", q))
	}
	if v := c.CacheVolume; v != nil {
		switch {
		case v.EmptyDir != nil && v.Ephemeral == nil && *v == (corev1.VolumeSource{EmptyDir: v.EmptyDir}):
		case v.Ephemeral != nil && v.Ephemeral.VolumeClaimTemplate != nil && *v == (corev1.VolumeSource{Ephemeral: v.Ephemeral}):
		default:
			errs = append(errs, errors.New("cacheVolume: want exactly one of emptyDir or ephemeral (with a volumeClaimTemplate); the sidecar gets no hostPath or other node storage"))
		}
	}
	if p := c.MetricsPort; p != nil && (*p < 0 || *p > 65535) {
		errs = append(errs, fmt.Errorf("metricsPort %d: want 1-65535, or 0 for no metrics", *p))
	}
	names := map[string]bool{}
	for i := range c.Patches {
		p := &c.Patches[i]
		where := fmt.Sprintf("patches[%d] (%q)", i, p.Name)
		if p.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is empty", where))
		}
		if names[p.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", where))
		}
		names[p.Name] = true
		if p.PVCSelector == nil && len(p.StorageClassNames) == 0 {
			errs = append(errs, fmt.Errorf("%s: selects nothing: set pvcSelector or storageClassNames", where))
		}
		if p.PVCSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(p.PVCSelector)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.pvcSelector: %w", where, err))
			}
			p.selector = s
		}
		errs = append(errs, checkPullPolicy(where+".imagePullPolicy", p.ImagePullPolicy))
		errs = append(errs, checkPullSecrets(where+".imagePullSecrets", p.ImagePullSecrets))
		errs = append(errs, checkOptions(where+".mountOptions", p.MountOptions))
		errs = append(errs, checkEnv(where+".env", p.Env))
		if p.Cache != nil {
			errs = append(errs, checkCache(where+".cache", p.Cache))
		}
		if p.Resources != nil {
			errs = append(errs, checkResources(where+".resources", *p.Resources))
		}
	}
	return errors.Join(errs...)
}

func checkPullPolicy(where string, p corev1.PullPolicy) error {
	switch p {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		return nil
	}
	return fmt.Errorf("%s %q: want Always, IfNotPresent or Never", where, p)
}

func checkPullSecrets(where string, refs []corev1.LocalObjectReference) error {
	for _, r := range refs {
		if errs := validation.IsDNS1123Subdomain(r.Name); len(errs) > 0 {
			return fmt.Errorf("%s: %q is not a Secret name: %s", where, r.Name, strings.Join(errs, "; "))
		}
	}
	return nil
}

func checkOptions(where string, opts []string) error {
	for _, o := range opts {
		if o == "" || strings.ContainsAny(o, ", \t\n") {
			return fmt.Errorf("%s: %q is not one mount option (no commas or spaces; one per list entry)", where, o)
		}
	}
	if err := fs.CheckOptions(opts); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

func checkEnv(where string, env []corev1.EnvVar) error {
	for _, e := range env {
		if e.Name == "" {
			return fmt.Errorf("%s: an entry has no name", where)
		}
		if e.Name == volumeset.EnvVar || e.Name == volumeset.PodUIDEnv || strings.HasPrefix(e.Name, "PODFS_VOL") {
			return fmt.Errorf("%s: %s is set by the webhook itself", where, e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef == nil && e.ValueFrom.ConfigMapKeyRef == nil && e.ValueFrom.FieldRef == nil && e.ValueFrom.ResourceFieldRef == nil {
			return fmt.Errorf("%s: %s has an empty valueFrom", where, e.Name)
		}
	}
	return nil
}

func checkCache(where string, c *CacheConfig) error {
	for _, q := range []struct {
		n string
		v *resource.Quantity
	}{{"cacheSize", c.CacheSize}, {"cacheDirSize", c.CacheDirSize}, {"bufferSize", c.BufferSize}, {"readahead", c.Readahead}} {
		if q.v != nil && q.v.Sign() < 0 {
			return fmt.Errorf("%s.%s %s is negative", where, q.n, q.v)
		}
	}
	if c.CacheDir != "" && !strings.HasPrefix(c.CacheDir, "/") {
		return fmt.Errorf("%s.cacheDir %q must be an absolute path", where, c.CacheDir)
	}
	return nil
}

func checkResources(where string, r corev1.ResourceRequirements) error {
	for n, req := range r.Requests {
		if lim, ok := r.Limits[n]; ok && req.Cmp(lim) > 0 {
			return fmt.Errorf("%s: %s request %s exceeds its limit %s", where, n, req.String(), lim.String())
		}
	}
	return nil
}

// matches reports whether p selects the PVC with these labels and class.
func (p *Patch) matches(pvcLabels map[string]string, storageClass string, isPVC bool) bool {
	if !isPVC {
		return false
	}
	if p.selector != nil && p.selector.Matches(labels.Set(pvcLabels)) {
		return true
	}
	return storageClass != "" && slices.Contains(p.StorageClassNames, storageClass)
}

// mergeCache overlays the set fields of src onto dst.
func mergeCache(dst *volumeset.Cache, src *CacheConfig) {
	if src == nil {
		return
	}
	if src.CacheSize != nil {
		dst.CacheSize = src.CacheSize.Value()
	}
	if src.CacheDir != "" {
		dst.CacheDir = src.CacheDir
	}
	if src.CacheDirSize != nil {
		dst.CacheDirSize = src.CacheDirSize.Value()
	}
	if src.BufferSize != nil {
		dst.BufferSize = src.BufferSize.Value()
	}
	if src.Readahead != nil {
		dst.Readahead = src.Readahead.Value()
	}
}

// mergeEnv overlays src onto dst by variable name.
func mergeEnv(dst []corev1.EnvVar, src []corev1.EnvVar) []corev1.EnvVar {
	for _, e := range src {
		if i := slices.IndexFunc(dst, func(d corev1.EnvVar) bool { return d.Name == e.Name }); i >= 0 {
			dst[i] = e
		} else {
			dst = append(dst, e)
		}
	}
	return dst
}

// mergeResources overlays src onto dst per resource name.
func mergeResources(dst *corev1.ResourceRequirements, src *corev1.ResourceRequirements) {
	if src == nil {
		return
	}
	for n, q := range src.Requests {
		if dst.Requests == nil {
			dst.Requests = corev1.ResourceList{}
		}
		dst.Requests[n] = q
	}
	for n, q := range src.Limits {
		if dst.Limits == nil {
			dst.Limits = corev1.ResourceList{}
		}
		dst.Limits[n] = q
	}
}
