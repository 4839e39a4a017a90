// Package volumeset is the contract between the admission webhook, the
// sidecar runtime and the CSI node: the set of podfs volumes one sidecar
// serves, passed to the sidecar container as JSON in the environment
// variable EnvVar, and the paths they share. The webhook builds the set, the
// sidecar decodes and validates it at start. It lives apart from the sidecar
// runtime so the webhook and the CSI node need not import the runtime.
//
// # Ordinary nodes (ModeNode): the descriptor handoff
//
// The CSI node mounts FUSE itself at kubelet's target path in
// NodePublishVolume and hands a copy of the /dev/fuse descriptor to the
// pod's sidecar, which only serves it:
//
//   - The webhook gives the sidecar one emptyDir volume mounted writable at
//     RunDir (its name is "podfs-run", or "podfs-run-N" when the pod already
//     has a volume so named). It holds the sidecar's readiness socket
//     ProbeSocket and the directory HandoffDir.
//   - The CSI node finds that emptyDir on the host at
//     <kubelet-dir>/pods/<pod-uid>/volumes/kubernetes.io~empty-dir/<name>/:
//     it reads the pod (pod info on mount gives its name, namespace and UID),
//     takes the ContainerName container (an init container when it is a
//     native sidecar, else an ordinary one) and the name of its volumeMount
//     whose mountPath is RunDir. A pod without that container is refused.
//   - For each volume it listens on a socket under HandoffDir named by
//     pkg/fuseconn's SocketName(v.Handoff) (short and fixed-length: kubelet
//     paths and PV names are too long for a unix socket's 108 bytes) and
//     passes the descriptor with SCM_RIGHTS to the sidecar that connects. Volume.Handoff is kubelet's
//     name for the volume: the PV name for a PVC volume, the pod's volume
//     name for an inline CSI ephemeral volume.
//   - The sidecar runs as SidecarUID:SidecarGID, unprivileged, with a
//     read-only root file system: HandoffDir and its sockets must be
//     usable by that user.
//
// In ModeNode Volume.MountPoint is empty (the sidecar mounts nothing) and
// Volume.Handoff is required. In ModeServerless (no CSI node) the sidecar
// is privileged and mounts FUSE at Volume.MountPoint itself.
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
	"slices"
	"strings"
)

// Names shared by the webhook, the sidecar and the CSI node (see docs/architecture.md).
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

	// RunDir is where the sidecar sees its writable run-time emptyDir (in
	// both modes): the probe socket and, on ordinary nodes, the handoff
	// sockets the CSI node creates. The CSI node finds the emptyDir by this
	// mount path.
	RunDir = "/run/podfs"
	// ProbeSocket is the unix socket the sidecar answers readiness on.
	ProbeSocket = RunDir + "/sidecar.sock"
	// HandoffDir holds one unix socket per volume (fuseconn.SocketName),
	// on which the CSI node hands the volume's /dev/fuse descriptor to the
	// sidecar (ModeNode only). The CSI node creates it.
	HandoffDir = RunDir + "/handoff"
	// ClaimsDir holds a file per pod volume admitted with a Claim (no PV
	// known yet), named after the pod's volume and holding the PV name the
	// CSI node published it as (ModeNode only).
	ClaimsDir = HandoffDir + "/claims"
	// SecretsDir holds a directory per volume with its Secret's keys as
	// files: on serverless nodes the Secret volumes the webhook mounts
	// (Volume.SecretDir); on ordinary nodes an in-memory emptyDir where the
	// sidecar writes the files the CSI node sends with the connection.
	// (Not RunDir: the CSI node writes into that emptyDir from the host,
	// which a tmpfs mounted by the kubelet could hide.)
	SecretsDir = "/run/podfs-secrets"
	// ServerlessDir is where the sidecar sees the emptyDir volumes that
	// replace podfs PVC volumes on serverless nodes.
	ServerlessDir = "/podfs"

	// SidecarUID and SidecarGID are the user and group the sidecar runs as
	// on ordinary nodes (the distroless "nonroot" ids): the CSI node makes
	// the handoff sockets usable by them.
	SidecarUID = 65532
	SidecarGID = 65532
	// PodInfoDir is where the sidecar sees its pod's annotations (downward
	// API volume) when it is not a native sidecar.
	PodInfoDir = "/etc/podfs/podinfo"
)

// Keys of a podfs volume's attributes (a PV's spec.csi.volumeAttributes or
// an inline CSI volume's volumeAttributes): the webhook checks them at
// admission, the CSI node resolves them (with the nodePublishSecretRef
// Secret) when it publishes the volume.
const (
	AttrMetaURL          = "metaURL"
	AttrMetaURLSecretKey = "metaURLSecretKey"
	AttrStorageURL       = "storageURL"
	AttrStorageURLSecret = "storageURLSecretKey"
	AttrSubDir           = "subDir"
	AttrMountOptions     = "mountOptions"
)

// Mode says how the pod's node serves the volumes.
type Mode string

const (
	// ModeNode: ordinary nodes; the CSI node mounts FUSE at kubelet's
	// target path and hands the descriptor to the unprivileged sidecar
	// (see the package documentation).
	ModeNode Mode = "node"
	// ModeServerless: virtual-kubelet nodes (no CSI node); each podfs volume
	// is an emptyDir the privileged sidecar mounts FUSE into.
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
	// MountPoint is where the sidecar mounts FUSE, inside its container
	// (ModeServerless only; empty in ModeNode). It may contain $(POD_UID).
	MountPoint string `json:"mountPoint,omitempty"`
	// Handoff is kubelet's name for the volume: the PV name for a PVC
	// volume, the pod's volume name for an inline CSI ephemeral volume. In
	// ModeNode (required there) the sidecar receives the volume's FUSE
	// descriptor on its socket in HandoffDir; empty in ModeServerless.
	Handoff string `json:"handoff,omitempty"`
	// Claim is the PersistentVolumeClaim of a volume whose PV was not known
	// when the pod was admitted (the claim was not bound yet, or did not
	// exist); ModeNode only, instead of Handoff. The CSI node writes the PV
	// name to ClaimsDir/<Name> when it publishes the volume; no such file
	// when the sidecar starts means the claim is not podfs's (the kubelet
	// publishes every volume before it starts any container).
	Claim string `json:"claim,omitempty"`
	// The URLs and SubDir are for ModeServerless. In ModeNode the CSI node
	// sends them with the connection (from the PV and its Secret), so
	// neither the pod spec nor the sidecar's environment carries them.
	MetaURL       string   `json:"metaURL,omitempty"`
	MetaURLEnv    string   `json:"metaURLEnv,omitempty"`
	StorageURL    string   `json:"storageURL,omitempty"`
	StorageURLEnv string   `json:"storageURLEnv,omitempty"`
	SubDir        string   `json:"subDir,omitempty"`
	ReadOnly      bool     `json:"readOnly,omitempty"`
	Options       []string `json:"options,omitempty"`
	Cache         Cache    `json:"cache,omitzero"`
	// SecretDir is where the volume's nodePublishSecretRef Secret is
	// mounted as files, below SecretsDir (ModeServerless only; in ModeNode
	// the CSI node sends the files with the connection).
	SecretDir string `json:"secretDir,omitempty"`
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

// isHandoffName reports whether s is a DNS-1123 subdomain, what
// Kubernetes allows as a PV name (and, being a label, a volume name): safe
// as one file name.
func isHandoffName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isLabel(l) {
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
	handoffs := map[string]string{}
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
		switch s.Mode {
		case ModeNode:
			if v.MountPoint != "" {
				e("mountPoint %q: in mode %q the CSI node mounts, the sidecar only serves the descriptor it receives; leave mountPoint empty", v.MountPoint, ModeNode)
			}
			switch {
			case v.Handoff == "" && v.Claim == "":
				e("neither handoff nor claim: in mode %q the sidecar receives the volume from the CSI node on a socket in %s named after the PV (handoff), or found through the claim's file in %s", ModeNode, HandoffDir, ClaimsDir)
			case v.Handoff != "" && v.Claim != "":
				e("both handoff %q and claim %q: a volume whose PV is known needs no claim", v.Handoff, v.Claim)
			case v.Handoff != "" && !isHandoffName(v.Handoff):
				e("handoff %q is not a PV or volume name (lower-case letters, digits, '-' and '.', at most 253)", v.Handoff)
			case v.Claim != "" && !isHandoffName(v.Claim):
				e("claim %q is not a PersistentVolumeClaim name", v.Claim)
			}
			if other, ok := handoffs[v.Handoff]; ok && v.Handoff != "" {
				e("handoff %q is also volume %q's", v.Handoff, other)
			}
			handoffs[v.Handoff] = v.Name
			if v.MetaURL != "" || v.MetaURLEnv != "" || v.StorageURL != "" || v.StorageURLEnv != "" || v.SubDir != "" || v.SecretDir != "" {
				e("in mode %q the metadata and storage URLs and the sub-directory come from the CSI node with the connection; leave them out of the volume set", ModeNode)
			}
		case ModeServerless:
			if v.Handoff != "" || v.Claim != "" {
				e("handoff %q, claim %q: mode %q has no CSI node to hand a descriptor over; leave them empty", v.Handoff, v.Claim, ModeServerless)
			}
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
		}
		switch {
		case s.Mode == ModeNode:
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
		if v.SecretDir != "" && (!strings.HasPrefix(v.SecretDir, SecretsDir+"/") || path.Clean(v.SecretDir) != v.SecretDir) {
			e("secretDir %q must be a clean path below %s", v.SecretDir, SecretsDir)
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

// MergeOptions returns dst with each of src appended, replacing an entry of
// dst with the same key (the part before "="): later options win.
func MergeOptions(dst []string, src ...string) []string {
	for _, o := range src {
		k, _, _ := strings.Cut(o, "=")
		dst = slices.DeleteFunc(dst, func(d string) bool {
			dk, _, _ := strings.Cut(d, "=")
			return dk == k
		})
		dst = append(dst, o)
	}
	return dst
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
