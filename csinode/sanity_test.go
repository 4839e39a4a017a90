package csinode

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"

	"podfs.io/podfs/pkg/fuseconn"
)

// sanitySkips lists the specs that do not apply to podfs, with the reason.
// Any other skipped spec fails the test.
var sanitySkips = []struct{ spec, reason string }{
	{`\[Controller Server\]`, "podfs has no controller service: volumes are static PVs or inline volumes"},
	{`GroupController`, "podfs has no group controller service"},
	{`^Node Service Node(Stage|Unstage|Expand)Volume `, "podfs neither stages nor expands volumes, and does not advertise either capability"},
}

// sanityMustPass are specs that must have run, so a change in the suite or in
// the setup cannot quietly turn them into skips.
var sanityMustPass = []string{
	"Node Service NodePublishVolume should fail when no volume capability is provided",
	"Node Service NodeUnpublishVolume should remove target path",
	"Node Service NodeGetVolumeStats should fail when volume does not exist on the specified path",
	"Node Service NodeGetInfo should return appropriate values",
	"Identity Service GetPluginInfo should return appropriate information",
	"Identity Service Probe should return appropriate information",
	"Node Service should work",
	"Node Service should be idempotent",
}

// TestSanity runs the CSI sanity suite's identity and node specs against the
// real server, with real mounts. Sanity creates its volumes through a
// controller service; podfs has none (an administrator writes the PVs), so a
// test-only controller stands in for that administrator (startSanityFront).
func TestSanity(t *testing.T) {
	root := os.Getenv(sanityChildEnv)
	if root == "" {
		runSanityChild(t)
		return
	}
	e := newTestEnvAt(t, root)
	pod := createPod(t, true, nil)
	uid := string(pod.UID)
	volumes := filepath.Join(e.kubeletDir, "pods", uid, "volumes", "kubernetes.io~csi")
	if err := os.MkdirAll(volumes, 0o750); err != nil {
		t.Fatal(err)
	}

	cfg := sanity.NewTestConfig()
	// csi-test v5.4.0's utils.Connect dials without blocking, then waits for a
	// change from the state it reads next; a unix-socket connection that is
	// already Ready by then never changes, and the first spec fails after a
	// minute ("Connection timed out"; seen under CI load). A "passthrough"
	// address keeps Connect from installing its own dialer, and ours holds the
	// dial back long enough for Connect to read the connecting state first.
	socket := startSanityFront(t, e)
	cfg.Address = "passthrough:///" + socket
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}))
	// Sanity creates TargetPath, publishes at TargetPath/target and removes
	// TargetPath after each spec, which fails if unpublish left anything.
	cfg.TargetPath = filepath.Join(volumes, "sanity-pv")
	cfg.StagingPath = filepath.Join(e.root, "staging")
	cfg.TestVolumeParameters = map[string]string{
		ContextPodUID:       uid,
		ContextPodName:      pod.Name,
		ContextPodNamespace: pod.Namespace,
		AttrMetaURL:         "bolt:///var/lib/podfs-test/never-opened.db",
	}

	// Sanity stats the target after publishing; a mount nobody serves
	// would keep it waiting. Serve every volume published for the pod, as
	// its sidecar would.
	stop := serveAll(t, e.handoffDir(pod), "sanity-pv")
	defer stop()

	var report types.Report
	ginkgo.ReportAfterSuite("collect", func(r ginkgo.Report) { report = r })
	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suiteCfg, reporterCfg := ginkgo.GinkgoConfiguration()
	for _, s := range sanitySkips[:2] {
		suiteCfg.SkipStrings = append(suiteCfg.SkipStrings, s.spec)
	}
	ginkgo.RunSpecs(t, "podfs CSI node sanity", suiteCfg, reporterCfg)
	sc.Finalize()

	passed := map[string]bool{}
	for _, r := range report.SpecReports {
		if r.LeafNodeType != types.NodeTypeIt {
			continue
		}
		name := r.FullText()
		switch r.State {
		case types.SpecStatePassed:
			passed[name] = true
			t.Logf("passed: %s", name)
		case types.SpecStateSkipped, types.SpecStatePending:
			reason := skipReason(name)
			if reason == "" {
				t.Errorf("spec skipped without a stated reason: %s (%s)", name, r.Failure.Message)
			}
			t.Logf("skipped: %s: %s", name, reason)
		default:
			t.Errorf("spec %s: %s", name, r.State)
		}
	}
	for _, name := range sanityMustPass {
		if !passed[name] {
			t.Errorf("spec did not pass: %s", name)
		}
	}
	t.Logf("%d sanity specs passed", len(passed))
	e.assertNothingMounted(t)
}

// sanityChildEnv names the directory a child process runs the suite in.
const sanityChildEnv = "PODFS_CSINODE_SANITY_IN"

// runSanityChild runs TestSanity in a fresh process: Ginkgo runs a suite once
// per process, and "go test -count=N" runs a test N times. The parent watches
// the child's directory, so mounts a crashed child leaves are still removed.
func runSanityChild(t *testing.T) {
	root := newTestRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSanity$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), sanityChildEnv+"="+root)
	out, err := cmd.CombinedOutput()
	t.Logf("sanity suite in a child process:\n%s", out)
	if err != nil {
		t.Fatalf("sanity suite: %v", err)
	}
}

func skipReason(spec string) string {
	for _, s := range sanitySkips {
		if regexp.MustCompile(s.spec).MatchString(spec) {
			return s.reason
		}
	}
	return ""
}

// startSanityFront serves what sanity dials: the plugin's identity and node
// services, forwarded unchanged to the real server's socket, plus a test-only
// controller that stands in for the administrator who writes podfs PVs. The
// identity therefore adds CONTROLLER_SERVICE to the plugin's capabilities:
// without it sanity skips its end-to-end node specs.
func startSanityFront(t *testing.T, e *testEnv) string {
	t.Helper()
	socket := filepath.Join(e.root, "sanity.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, frontIdentity{c: e.ident})
	csi.RegisterNodeServer(srv, frontNode{c: e.node})
	csi.RegisterControllerServer(srv, staticController{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return socket
}

type frontIdentity struct {
	csi.UnimplementedIdentityServer
	c csi.IdentityClient
}

func (f frontIdentity) GetPluginInfo(ctx context.Context, req *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return f.c.GetPluginInfo(ctx, req)
}

func (f frontIdentity) GetPluginCapabilities(ctx context.Context, req *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	resp, err := f.c.GetPluginCapabilities(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.Capabilities = append(resp.Capabilities, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{
		Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE},
	}})
	return resp, nil
}

func (f frontIdentity) Probe(ctx context.Context, req *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return f.c.Probe(ctx, req)
}

// frontNode forwards the node calls; the ones podfs does not implement
// (stage, unstage, expand) answer Unimplemented here as they do there.
type frontNode struct {
	csi.UnimplementedNodeServer
	c csi.NodeClient
}

func (f frontNode) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	return f.c.NodePublishVolume(ctx, req)
}

func (f frontNode) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	return f.c.NodeUnpublishVolume(ctx, req)
}

func (f frontNode) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	return f.c.NodeGetVolumeStats(ctx, req)
}

func (f frontNode) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return f.c.NodeGetCapabilities(ctx, req)
}

func (f frontNode) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return f.c.NodeGetInfo(ctx, req)
}

// staticController creates volumes the way an administrator writes a static
// PV: nothing is provisioned, and the volume context is what kubelet will pass
// (here the parameters, which carry the podInfoOnMount keys).
type staticController struct {
	csi.UnimplementedControllerServer
}

func (staticController) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      "static-" + req.GetName(),
		CapacityBytes: req.GetCapacityRange().GetRequiredBytes(),
		VolumeContext: req.GetParameters(),
	}}, nil
}

func (staticController) DeleteVolume(context.Context, *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	return &csi.DeleteVolumeResponse{}, nil
}

func (staticController) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{
			Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		}},
	}}}, nil
}

// serveAll serves, in this process, every connection the plugin offers for
// the volume called name in dir, one after the other, until stop is
// called.
func serveAll(t *testing.T, dir, name string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			h, err := fuseconn.Dial(ctx, dir, name, slog.New(slog.DiscardHandler))
			if err != nil {
				if ctx.Err() == nil {
					t.Logf("take a sanity volume's connection: %v", err)
				}
				return // Dial retries until ctx ends: any other error is final
			}
			a, err := attachTestFS(ctx, h, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Logf("serve a sanity volume: %v", err)
				h.Close()
				continue
			}
			a.Server.Serve() // until unpublish unmounts
			h.Close()
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
