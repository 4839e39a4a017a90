package csinode

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// TestRegistration plays kubelet's plugin watcher: it finds the socket in the
// registration directory, asks for the plugin's info, calls the CSI endpoint
// it names, and reports the verdict.
func TestRegistration(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	regSocket := filepath.Join(e.regDir, DriverName+"-reg.sock")
	if fi, err := os.Stat(regSocket); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("no registration socket at %s: %v", regSocket, err)
	}
	reg := registerapi.NewRegistrationClient(dial(t, regSocket))
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != DriverName || info.Endpoint != e.endpoint ||
		!slices.Equal(info.SupportedVersions, []string{"1.0.0"}) {
		t.Errorf("GetInfo = %+v, want type %s, name %s, endpoint %s, versions [1.0.0]",
			info, registerapi.CSIPlugin, DriverName, e.endpoint)
	}

	// Kubelet's CSI handler then asks the endpoint for the node's ID.
	ni, err := csi.NewNodeClient(dial(t, info.Endpoint)).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || ni.NodeId != testNodeID {
		t.Fatalf("NodeGetInfo through the registered endpoint = %v, %v; want node %s", ni, err, testNodeID)
	}

	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.srv.Done():
		t.Fatalf("server stopped after a successful registration: %v", e.srv.Err())
	default:
	}

	// A refusal stops the server, so that a restart registers again.
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{Error: "no CSI 1.0.0 here"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.srv.Done():
		if err := e.srv.Err(); err == nil || !strings.Contains(err.Error(), "no CSI 1.0.0 here") {
			t.Errorf("server error after a refusal: %v", err)
		}
	default:
		t.Fatal("server keeps running after kubelet refused the registration")
	}

	// Stopping removes both sockets: kubelet deregisters the plugin when its
	// registration socket disappears.
	e.srv.Stop()
	assertGone(t, regSocket, e.endpoint)
}

// TestRun starts the plugin the way "podfs csi-node" does and stops it by
// cancelling the context, as SIGTERM does. A second start over the state the
// first left behind (stale sockets) works.
func TestRun(t *testing.T) {
	root := newTestRoot(t)
	endpoint := filepath.Join(root, "csi.sock")
	d, err := New(Config{
		Endpoint:   endpoint,
		NodeID:     testNodeID,
		KubeletDir: filepath.Join(root, "kubelet"),
		Pods:       testKube(t),
		Log:        slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		if round == 1 {
			// A socket file left by a killed process.
			l, err := net.Listen("unix", endpoint)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- d.Run(ctx) }()
		conn := dial(t, endpoint)
		probe, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{}, grpc.WaitForReady(true))
		if err != nil || !probe.GetReady().GetValue() {
			t.Fatalf("round %d: Probe = %v, %v", round, probe, err)
		}
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("round %d: Run after cancel: %v", round, err)
		}
		assertGone(t, endpoint)
		if mounts := mountsUnder(t, root); len(mounts) != 0 {
			t.Fatalf("round %d: mounts left: %+v", round, mounts)
		}
	}
}

// TestStaleSocket checks that a file at the endpoint that is not a socket is
// refused rather than deleted (TestRun replaces a stale socket).
func TestStaleSocket(t *testing.T) {
	root := newTestRoot(t)
	endpoint := filepath.Join(root, "csi.sock")
	if err := os.WriteFile(endpoint, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Endpoint: endpoint, NodeID: "n", KubeletDir: filepath.Join(root, "kubelet"), Pods: noPods{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Start over a regular file: %v, want an error saying it is not a socket", err)
	}
	if b, err := os.ReadFile(endpoint); err != nil || string(b) != "not a socket" {
		t.Fatalf("the regular file was touched: %q, %v", b, err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Endpoint: "/e.sock", KubeletDir: "/k", Pods: noPods{}}, "node id is empty"},
		{Config{Endpoint: "e.sock", NodeID: "n", KubeletDir: "/k", Pods: noPods{}}, "endpoint"},
		{Config{Endpoint: "/e.sock", NodeID: "n", KubeletDir: "k", Pods: noPods{}}, "kubelet directory"},
		{Config{Endpoint: "/e.sock", NodeID: "n", KubeletDir: "/k/../q", Pods: noPods{}}, "kubelet directory"},
		{Config{Endpoint: "/e.sock", NodeID: "n", KubeletDir: "/k"}, "no pod source"},
		{Config{Endpoint: "/e.sock", NodeID: "n", KubeletDir: "/k", Pods: noPods{}, RegistrationDir: "r"}, "registration directory"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error about %q", tc.cfg, err, tc.want)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///csi/csi.sock":  "/csi/csi.sock",
		"unix:/csi/csi.sock":    "/csi/csi.sock",
		"/csi//csi.sock":        "/csi/csi.sock",
		"tcp://127.0.0.1:10000": "",
		"unix://csi.sock":       "",
		"csi.sock":              "",
	} {
		got, err := ParseEndpoint(in)
		if (want == "") != (err != nil) || got != want {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestLogRedactsSecrets checks that request logging names the volume but never
// prints the secrets kubelet passes from nodePublishSecretRef.
func TestLogRedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pod := &corev1.Pod{}
	pod.Name, pod.Namespace, pod.UID = "app", "default", "uid-1"
	req := publishRequest(pod, "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/pv/mount", false)
	req.Secrets = map[string]string{"metaurl": "tikv://admin:hunter2@pd:2379/vol"}
	_, err := logCalls(log)(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodePublishVolume"},
		func(context.Context, any) (any, error) { return &csi.NodePublishVolumeResponse{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "hunter2") || strings.Contains(out, "metaurl") {
		t.Errorf("secret leaked into the log:\n%s", out)
	}
	for _, want := range []string{"method=NodePublishVolume", "code=OK", "volume_id=vol-pv", "pod_uid=uid-1", "level=INFO"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if req.Secrets["metaurl"] == "" {
		t.Error("redaction modified the request itself")
	}
}

// TestIdentity checks what the real server says about itself (sanity sees it
// through a front that adds the test controller's capability).
func TestIdentity(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	info, err := e.ident.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || info.Name != DriverName || info.VendorVersion != "test" {
		t.Errorf("GetPluginInfo = %v, %v; want %s version test", info, err, DriverName)
	}
	caps, err := e.ident.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 0 {
		t.Errorf("GetPluginCapabilities = %v, %v; want none (no controller, no topology)", caps, err)
	}
	probe, err := e.ident.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want ready", probe, err)
	}
	nc, err := e.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []csi.NodeServiceCapability_RPC_Type
	for _, c := range nc.GetCapabilities() {
		got = append(got, c.GetRpc().GetType())
	}
	want := []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_VOLUME_CONDITION,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	if !slices.Equal(got, want) {
		t.Errorf("NodeGetCapabilities = %v, want %v", got, want)
	}
}

// noPods is a PodSource for tests that publish nothing.
type noPods struct{}

func (noPods) GetPod(context.Context, string, string) (*corev1.Pod, error) {
	return nil, errors.New("no pods in this test")
}

func (noPods) GetPVC(context.Context, string, string) (*corev1.PersistentVolumeClaim, error) {
	return nil, errors.New("no claims in this test")
}
