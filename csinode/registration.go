package csinode

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// RegistrationSocketName is the socket kubelet's plugin watcher finds in its
// plugins_registry directory.
const RegistrationSocketName = DriverName + "-reg.sock"

// RegistrationSocket returns the path of the registration socket in dir.
func RegistrationSocket(dir string) string {
	return filepath.Join(dir, RegistrationSocketName)
}

// registrationServer answers kubelet's plugin watcher: GetInfo tells it the
// driver's name and CSI endpoint, NotifyRegistrationStatus its verdict.
type registrationServer struct {
	endpoint string
	log      *slog.Logger
	// refused is called when kubelet rejects the plugin; the server then
	// stops, as node-driver-registrar does, so that a restart retries.
	refused func(error)
}

func (r *registrationServer) GetInfo(ctx context.Context, _ *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	r.log.Info("kubelet asked for plugin info", "endpoint", r.endpoint)
	return &registerapi.PluginInfo{
		Type:     registerapi.CSIPlugin,
		Name:     DriverName,
		Endpoint: r.endpoint,
		// The CSI versions kubelet may speak to the plugin.
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrationServer) NotifyRegistrationStatus(ctx context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.PluginRegistered {
		r.log.Info("registered with kubelet", "driver", DriverName)
		return &registerapi.RegistrationStatusResponse{}, nil
	}
	err := fmt.Errorf("kubelet refused to register %s: %s", DriverName, st.Error)
	r.log.Error("registration failed", "err", err)
	r.refused(err)
	return &registerapi.RegistrationStatusResponse{}, nil
}
