// Package volumeset is the contract between the admission webhook and the
// sidecar runtime: the set of podfs volumes one sidecar serves, passed to the
// sidecar container as JSON in the environment variable EnvVar. The webhook
// builds it, the sidecar decodes and validates it at start. It lives apart
// from the sidecar runtime so the webhook need not import the runtime.
//
// Secrets never appear in the JSON: a metadata or storage URL that comes
// from a Secret is named by an environment variable (MetaURLEnv,
// StorageURLEnv) the webhook fills with a secretKeyRef.
package volumeset

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Names shared by the webhook, the sidecar and the CSI node (see DESIGN.md).
const (
	DriverName         = "csi.podfs.io"
	ContainerName      = "podfs-sidecar"
	InjectionLabel     = "podfs.io/injection" // namespace label: enabled | serverless
	InjectLabel        = "podfs.io/inject"    // pod label; "false" opts out
	InjectedAnnotation = "podfs.io/injected"
	// AppsDoneAnnotation is set on a pod without native sidecars once all its
	// app containers have terminated; the sidecar sees it through a
	// downward API file and exits, so the pod can complete.
	AppsDoneAnnotation = "podfs.io/apps-done"

	// EnvVar carries the JSON VolumeSet.
	EnvVar = "PODFS_SIDECAR"
	// PodUIDEnv is filled from the downward API (metadata.uid).
	PodUIDEnv = "POD_UID"
	// PodUIDRef is what mount points may contain; the sidecar replaces it
	// with $POD_UID (the webhook runs before the API server assigns the UID).
	PodUIDRef = "$(POD_UID)"

	// PodsDir holds the per-pod directories on ordinary nodes:
	// PodsDir/<pod-uid>/<name>, where <name> is the PV name for a PVC volume
	// and the pod's volume name for an inline CSI volume (what the CSI node
	// publishes, see csinode.PodVolumeDir).
	PodsDir = "/var/lib/podfs/pods"
	// ServerlessDir is where the sidecar sees the emptyDir volumes that
	// replace podfs PVC volumes on serverless nodes.
	ServerlessDir = "/podfs"
	// ProbeSocket is the unix socket the sidecar answers readiness on.
	ProbeSocket = "/run/podfs/sidecar.sock"
	// PodInfoDir is where the sidecar sees its pod's annotations (downward
	// API volume) when it is not a native sidecar.
	PodInfoDir = "/etc/podfs/podinfo"
)

// Mode says how the pod's node serves the volumes.
type Mode string

const (
	// ModeNode: ordinary nodes; the CSI node publishes the per-pod
	// hostPath directory into the pod's volume.
	ModeNode Mode = "node"
	// ModeServerless: virtual-kubelet nodes; each podfs volume is an
	// emptyDir the sidecar mounts into.
	ModeServerless Mode = "serverless"
)

// VolumeSet is everything one sidecar serves.
type VolumeSet struct {
	Mode    Mode     `json:"mode"`
	Volumes []Volume `json:"volumes"`
	// Native is true when the sidecar runs as a native sidecar (an init
	// container with restartPolicy Always): the kubelet stops it after the
	// app containers. Otherwise it watches AppsDoneFile to exit.
	Native bool `json:"native"`
	// AppsDoneFile is the downward API file with the pod's annotations
	// (non-native sidecars only).
	AppsDoneFile string `json:"appsDoneFile,omitempty"`
}

// Volume is one podfs volume.
type Volume struct {
	// Name is the pod's volume name (spec.volumes[].name).
	Name string `json:"name"`
	// MountPoint is where the sidecar mounts FUSE, inside its container. It
	// may contain $(POD_UID).
	MountPoint    string   `json:"mountPoint"`
	MetaURL       string   `json:"metaURL,omitempty"`
	MetaURLEnv    string   `json:"metaURLEnv,omitempty"`
	StorageURL    string   `json:"storageURL,omitempty"`
	StorageURLEnv string   `json:"storageURLEnv,omitempty"`
	SubDir        string   `json:"subDir,omitempty"`
	ReadOnly      bool     `json:"readOnly,omitempty"`
	Options       []string `json:"options,omitempty"`
	Cache         Cache    `json:"cache,omitzero"`
}

// Cache tunes the data layer of one mount; zero values take pkg/data defaults.
type Cache struct {
	CacheSize    int64  `json:"cacheSize,omitempty"`
	CacheDir     string `json:"cacheDir,omitempty"`
	CacheDirSize int64  `json:"cacheDirSize,omitempty"`
	BufferSize   int64  `json:"bufferSize,omitempty"`
	Readahead    int64  `json:"readahead,omitempty"`
}

// Encode returns the JSON the webhook puts into EnvVar.
func (s *VolumeSet) Encode() (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode volume set: %w", err)
	}
	return string(b), nil
}

// Decode parses and validates the JSON in EnvVar.
func Decode(s string) (*VolumeSet, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%s is empty: the sidecar must be injected by the podfs webhook, which sets it", EnvVar)
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var vs VolumeSet
	if err := dec.Decode(&vs); err != nil {
		return nil, fmt.Errorf("%s is not a valid volume set: %w", EnvVar, err)
	}
	if err := vs.Validate(); err != nil {
		return nil, err
	}
	return &vs, nil
}

// isLabel reports whether s is a DNS-1123 label, what Kubernetes allows as
// a volume name. (Hand-written: the webhook validates every set it builds.)
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isEnvName reports whether s is a C identifier, what an environment
// variable name should be.
func isEnvName(s string) bool {
	if len(s) == 0 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Validate says what is wrong with the set, all problems at once.
func (s *VolumeSet) Validate() error {
	var errs []error
	switch s.Mode {
	case ModeNode, ModeServerless:
	default:
		errs = append(errs, fmt.Errorf("mode %q: want %q or %q", s.Mode, ModeNode, ModeServerless))
	}
	if len(s.Volumes) == 0 {
		errs = append(errs, errors.New("no volumes: a sidecar serves at least one podfs volume"))
	}
	if !s.Native && s.AppsDoneFile != "" && !path.IsAbs(s.AppsDoneFile) {
		errs = append(errs, fmt.Errorf("appsDoneFile %q must be an absolute path", s.AppsDoneFile))
	}
	names := map[string]bool{}
	mps := map[string]string{}
	for i, v := range s.Volumes {
		e := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("volume %d (%q): %s", i, v.Name, fmt.Sprintf(format, a...)))
		}
		if !isLabel(v.Name) {
			e("name must be a DNS-1123 label")
		}
		if names[v.Name] {
			e("name used twice")
		}
		names[v.Name] = true
		mp := strings.ReplaceAll(v.MountPoint, PodUIDRef, "uid")
		switch {
		case !path.IsAbs(mp) || path.Clean(mp) != mp || mp == "/":
			e("mountPoint %q must be a clean absolute path below /", v.MountPoint)
		case strings.Contains(mp, "$("):
			e("mountPoint %q may reference only %s", v.MountPoint, PodUIDRef)
		}
		if other, ok := mps[v.MountPoint]; ok {
			e("mountPoint %q is also volume %q's", v.MountPoint, other)
		}
		mps[v.MountPoint] = v.Name
		switch {
		case v.MetaURL == "" && v.MetaURLEnv == "":
			e("no metadata URL: set the PV's volumeAttributes metaURL or metaURLSecretKey")
		case v.MetaURL != "" && v.MetaURLEnv != "":
			e("both metaURL and metaURLEnv are set; use one")
		case v.MetaURLEnv != "" && !isEnvName(v.MetaURLEnv):
			e("metaURLEnv %q is not an environment variable name", v.MetaURLEnv)
		}
		switch {
		case v.StorageURL != "" && v.StorageURLEnv != "":
			e("both storageURL and storageURLEnv are set; use one")
		case v.StorageURLEnv != "" && !isEnvName(v.StorageURLEnv):
			e("storageURLEnv %q is not an environment variable name", v.StorageURLEnv)
		}
		if v.SubDir != "" && (path.IsAbs(v.SubDir) || path.Clean(v.SubDir) != v.SubDir || strings.HasPrefix(v.SubDir, "..")) {
			e("subDir %q must be a clean relative path inside the volume", v.SubDir)
		}
		for _, o := range v.Options {
			if o == "" || strings.ContainsAny(o, ", \t\n") {
				e("mount option %q: one option per entry, no commas or spaces", o)
			}
		}
		c := v.Cache
		if c.CacheSize < 0 || c.CacheDirSize < 0 || c.BufferSize < 0 || c.Readahead < 0 {
			e("cache sizes must not be negative")
		}
		if c.CacheDir != "" && !path.IsAbs(c.CacheDir) {
			e("cacheDir %q must be an absolute path", c.CacheDir)
		}
	}
	return errors.Join(errs...)
}

// ExpandMountPoint replaces $(POD_UID) in mp with podUID; it fails when the
// mount point needs a UID and none is given.
func ExpandMountPoint(mp, podUID string) (string, error) {
	if !strings.Contains(mp, PodUIDRef) {
		return mp, nil
	}
	if podUID == "" || strings.ContainsAny(podUID, "/") || podUID == "." || podUID == ".." {
		return "", fmt.Errorf("mount point %q needs %s, which is %q: the sidecar must get it from the downward API (fieldRef metadata.uid)", mp, PodUIDEnv, podUID)
	}
	return strings.ReplaceAll(mp, PodUIDRef, podUID), nil
}

// ParseOptions splits a comma-separated mount option list ("a,b=c") into
// entries, dropping empty ones and surrounding spaces.
func ParseOptions(s string) ([]string, error) {
	var out []string
	for o := range strings.SplitSeq(s, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if strings.ContainsAny(o, " \t\n") {
			return nil, fmt.Errorf("mount option %q contains a space", o)
		}
		out = append(out, o)
	}
	return out, nil
}
