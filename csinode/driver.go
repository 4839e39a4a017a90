// Package csinode is podfs's CSI node plugin. NodePublishVolume checks that
// the pod has a podfs sidecar, opens /dev/fuse, mounts FUSE at kubelet's
// target path itself and offers the connection to the pod's unprivileged
// sidecar over a unix socket in the sidecar's run emptyDir (pkg/fuseconn).
// The plugin keeps its copy of every connection while the volume is
// published, so the mount outlives a sidecar crash or upgrade. It runs no
// file system itself, and registers with kubelet through the plugin
// registration socket, so no node-driver-registrar is needed.
package csinode

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"podfs.io/podfs/sidecar/volumeset"
)

// DriverName is the CSI driver name of podfs (the CSIDriver object, the PVs'
// spec.csi.driver and the kubelet registration all use it).
const DriverName = "csi.podfs.io"

// DefaultKubeletDir is kubelet's default root directory.
const DefaultKubeletDir = "/var/lib/kubelet"

// AttrMountOptions is the volume attribute with mount options (as the
// webhook reads it too); the kernel's ones (ro, no_default_permissions)
// apply to the mount this plugin makes.
const AttrMountOptions = volumeset.AttrMountOptions

// AttrMetaURL is the volume attribute with the metadata URL (see volumeset).
const AttrMetaURL = volumeset.AttrMetaURL

// Keys kubelet puts into the volume context when the CSIDriver object has
// podInfoOnMount: true (and, for inline volumes, the ephemeral flag).
const (
	ContextPodUID       = "csi.storage.k8s.io/pod.uid"
	ContextPodName      = "csi.storage.k8s.io/pod.name"
	ContextPodNamespace = "csi.storage.k8s.io/pod.namespace"
	ContextEphemeral    = "csi.storage.k8s.io/ephemeral"
)

// Config says where the plugin listens and which node directories it manages.
type Config struct {
	// Endpoint is the path of the unix socket the CSI services listen on.
	Endpoint string
	// NodeID is what NodeGetInfo reports (kubelet expects the node name).
	NodeID string
	// KubeletDir is kubelet's root directory; target paths must lie below it.
	KubeletDir string
	// Pods reads the pod a publish is for; required.
	Pods PodSource
	// Events records refusals and volume failures on pods; nil = none.
	Events EventSink
	// StateDir keeps a record of each publication, so that a restarted
	// plugin offers the mounts again; "" = <KubeletDir>/plugins/<driver>/state.
	StateDir string
	// RegistrationDir is kubelet's plugins_registry directory. Empty means
	// do not register (an upstream node-driver-registrar does it instead).
	RegistrationDir string
	// Version is reported by GetPluginInfo.
	Version string
	// Log receives request and mount logs; nil discards them.
	Log *slog.Logger
}

// Driver implements the CSI Identity and Node services.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	busy *keyLocks

	mu   sync.Mutex
	vols map[string]*published // by target path
}

// New checks cfg and returns a driver. Start prepares the node and serves.
func New(cfg Config) (*Driver, error) {
	var errs []error
	if cfg.NodeID == "" {
		errs = append(errs, errors.New("node id is empty: set it to the node's name"))
	}
	if !filepath.IsAbs(cfg.Endpoint) {
		errs = append(errs, fmt.Errorf("endpoint %q is not an absolute unix socket path", cfg.Endpoint))
	}
	if !filepath.IsAbs(cfg.KubeletDir) || hasDotDot(cfg.KubeletDir) {
		errs = append(errs, fmt.Errorf("kubelet directory %q must be an absolute path without ..", cfg.KubeletDir))
	}
	if cfg.Pods == nil {
		errs = append(errs, errors.New("no pod source: the plugin must read pods to find their podfs sidecars"))
	}
	if cfg.RegistrationDir != "" && !filepath.IsAbs(cfg.RegistrationDir) {
		errs = append(errs, fmt.Errorf("registration directory %q must be an absolute path", cfg.RegistrationDir))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("csi node config: %w", err)
	}
	cfg.Endpoint = filepath.Clean(cfg.Endpoint)
	cfg.KubeletDir = filepath.Clean(cfg.KubeletDir)
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(cfg.KubeletDir, "plugins", DriverName, "state")
	}
	if real, err := filepath.EvalSymlinks(cfg.KubeletDir); err == nil {
		cfg.KubeletDir = real // the mount table lists resolved paths
	}
	if cfg.RegistrationDir != "" {
		cfg.RegistrationDir = filepath.Clean(cfg.RegistrationDir)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{
		cfg:  cfg,
		log:  log,
		busy: newKeyLocks(),
		vols: make(map[string]*published),
	}, nil
}

func (d *Driver) lookup(target string) *published {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vols[target]
}

func (d *Driver) store(v *published) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.vols[v.target] = v
}

func (d *Driver) forget(target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.vols, target)
}

// closeAll stops offering every held connection (the plugin stops). The
// mounts stay: the sidecars hold their own copies and keep serving.
func (d *Driver) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for t, v := range d.vols {
		if err := v.holder.Close(); err != nil {
			d.log.Warn("close a held FUSE connection", "target", t, "err", err)
		}
		delete(d.vols, t)
	}
}

// ParseEndpoint turns a CSI endpoint ("unix:///csi/csi.sock", "unix:/csi/csi.sock"
// or "/csi/csi.sock") into the socket's path.
func ParseEndpoint(endpoint string) (string, error) {
	path := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = rest
	} else if rest, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		path = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("endpoint %q: only unix sockets are supported (unix:///path/csi.sock)", endpoint)
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("endpoint %q: the socket path must be absolute", endpoint)
	}
	return filepath.Clean(path), nil
}

// hasDotDot reports whether p has a ".." element.
func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}
