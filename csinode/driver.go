// Package csinode is podfs's CSI node plugin. It runs no file system itself:
// NodePublishVolume prepares a per-pod directory as a shared mount and binds it
// onto kubelet's target path, so the FUSE mount the pod's podfs sidecar makes
// on that directory later shows up in the pod's volume through mount
// propagation. The plugin registers itself with kubelet through the plugin
// registration socket, so no node-driver-registrar is needed.
package csinode

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"k8s.io/mount-utils"
)

// DriverName is the CSI driver name of podfs (the CSIDriver object, the PVs'
// spec.csi.driver and the kubelet registration all use it).
const DriverName = "csi.podfs.io"

// Default locations on a node.
const (
	DefaultKubeletDir = "/var/lib/kubelet"
	DefaultPodsDir    = "/var/lib/podfs/pods"
)

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
	// PodsDir holds the per-pod directories the sidecars mount FUSE on.
	PodsDir string
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
	cfg     Config
	log     *slog.Logger
	mounter mount.Interface
	busy    *keyLocks
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
	for _, d := range []struct{ name, path string }{
		{"kubelet directory", cfg.KubeletDir},
		{"pods directory", cfg.PodsDir},
	} {
		if !filepath.IsAbs(d.path) || hasDotDot(d.path) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path without ..", d.name, d.path))
		}
	}
	if cfg.RegistrationDir != "" && !filepath.IsAbs(cfg.RegistrationDir) {
		errs = append(errs, fmt.Errorf("registration directory %q must be an absolute path", cfg.RegistrationDir))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("csi node config: %w", err)
	}
	cfg.Endpoint = filepath.Clean(cfg.Endpoint)
	cfg.KubeletDir = filepath.Clean(cfg.KubeletDir)
	cfg.PodsDir = filepath.Clean(cfg.PodsDir)
	if cfg.RegistrationDir != "" {
		cfg.RegistrationDir = filepath.Clean(cfg.RegistrationDir)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{
		cfg: cfg,
		log: log,
		// systemd-run scopes only matter for FUSE daemons that mount(8)
		// forks; podfs only binds, so mount(8) runs directly.
		mounter: mount.NewWithoutSystemd(""),
		busy:    newKeyLocks(),
	}, nil
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
