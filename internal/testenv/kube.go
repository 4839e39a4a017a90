package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Kube is a real kube-apiserver with its etcd, started by controller-runtime
// envtest on 127.0.0.1.
type Kube struct {
	Env    *envtest.Environment
	Config *rest.Config
}

// KubeAssets returns the directory with kube-apiserver and etcd:
// $KUBEBUILDER_ASSETS, else what hack/kube-bins.sh prints (it builds and
// caches the binaries, ~10 minutes the first time). It fails the test when
// neither yields the binaries.
func KubeAssets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root := repoRoot(t)
		out, err := exec.Command(filepath.Join(root, "hack", "kube-bins.sh")).Output()
		if err != nil {
			t.Fatalf("no KUBEBUILDER_ASSETS and hack/kube-bins.sh failed: %v (run it by hand to see why)", err)
		}
		dir = strings.TrimSpace(string(out))
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s missing from %s: run hack/kube-bins.sh (it builds it) and set KUBEBUILDER_ASSETS to the directory it prints", b, dir)
		}
	}
	return dir
}

// StartKube starts a kube-apiserver and etcd, stopped when the test ends.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	env := &envtest.Environment{BinaryAssetsDirectory: KubeAssets(t), ControlPlaneStopTimeout: 20e9}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd (envtest): %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	// Admission-heavy tests create many objects; don't let client-side
	// throttling slow them down.
	cfg.QPS, cfg.Burst = 500, 1000
	return &Kube{Env: env, Config: cfg}
}

// repoRoot finds the module root (the directory with go.mod) above the
// test's working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory; cannot find hack/kube-bins.sh")
		}
		dir = parent
	}
}
