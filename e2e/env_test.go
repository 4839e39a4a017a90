//go:build e2e

// Package e2e proves podfs's promises on a real single-node Kubernetes that
// hack/cluster.sh brings up on this machine, with the chart installed by
// hack/e2e.sh. Run it with `make e2e` (or hack/e2e.sh), which sets:
//
//	KUBECONFIG      the cluster's admin kubeconfig
//	KUBECTL         kubectl of the cluster's version (exec, logs)
//	PODFS_BIN       the podfs binary on the host (formats volumes)
//	PODFS_IMAGE     the podfs image the cluster has (apps use its busybox)
//	PODFS_RELEASE   the Helm release and its namespace, "NAME/NAMESPACE"
//	PODFS_KUBELET_DIR  kubelet's root directory
//	PODFS_IMAGE_UPGRADE  a second tag of the podfs image (in-place upgrade)
//	PODFS_PODNET_*  the backends on the pod network (hack/backends.sh env)
//
// A missing setting or component fails the run; nothing is skipped.
package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"podfs.io/podfs/internal/testenv"
)

// TestMain stops the shared Ceph after the run.
func TestMain(m *testing.M) { os.Exit(testenv.CephMain(m)) }

// env is what every scenario needs: the cluster and the backends on the host.
type env struct {
	kc         kubernetes.Interface
	kubeconfig string
	kubectl    string
	podfsBin   string
	image      string
	releaseNS  string
	release    string
	kubeletDir string

	// podfs metadata: an etcd on the host, started by TestE2E.
	etcdAddr string // 127.0.0.1:PORT
}

func mustEnv(t *testing.T, name, hint string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: %s (hack/e2e.sh sets it)", name, hint)
	}
	return v
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{
		kubeconfig: mustEnv(t, "KUBECONFIG", "the e2e cluster's admin kubeconfig"),
		kubectl:    mustEnv(t, "KUBECTL", "path of kubectl"),
		podfsBin:   mustEnv(t, "PODFS_BIN", "path of the podfs binary"),
		image:      mustEnv(t, "PODFS_IMAGE", "the podfs image imported into the cluster"),
		kubeletDir: mustEnv(t, "PODFS_KUBELET_DIR", "kubelet's --root-dir"),
	}
	rel := mustEnv(t, "PODFS_RELEASE", "NAME/NAMESPACE of the Helm release")
	var ok bool
	e.release, e.releaseNS, ok = strings.Cut(rel, "/")
	if !ok {
		t.Fatalf("PODFS_RELEASE=%q: want NAME/NAMESPACE", rel)
	}
	for _, p := range []string{e.kubectl, e.podfsBin} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v", err)
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		t.Fatalf("load %s: %v", e.kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	e.kc, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	cfg.Timeout = 30 * time.Second
	if _, err := e.kc.Discovery().ServerVersion(); err != nil {
		t.Fatalf("the cluster does not answer (hack/cluster.sh up): %v", err)
	}
	e.kubeletDir = filepath.Clean(e.kubeletDir)
	return e
}

// TestE2E runs the scenarios in order against one cluster, one etcd and
// one Ceph, so the backends start once. Run one with -run 'TestE2E/<name>'.
func TestE2E(t *testing.T) {
	start := time.Now()
	e := newEnv(t)
	e.etcdAddr = testenv.StartEtcd(t)
	t.Cleanup(func() { t.Logf("e2e scenarios took %s", time.Since(start).Round(time.Second)) })

	t.Run("5-untouched", e.testUntouched)
	t.Run("6-webhook-down", e.testWebhookDown)
	t.Run("1-sidecar-write-read", e.testWriteRead)
	t.Run("2-two-pods-share", e.testTwoPodsShare)
	t.Run("3-job-completes", e.testJob)
	t.Run("4-serverless", e.testServerless)
	t.Run("7-sidecar-kill", e.testSidecarKill)
	t.Run("8-subpath-readonly", e.testSubPathReadOnly)
	t.Run("9-hardened-pod", e.testHardened)
	t.Run("10-restricted-namespace", e.testRestricted)
	t.Run("11-read-only-modes", e.testReadOnlyModes)
	t.Run("12-one-volume-fails", e.testOneVolumeFails)
	t.Run("13-sidecar-replaced", e.testSidecarReplaced)
	t.Run("14-dynamic-provisioning", e.testDynamicProvisioning)
	t.Run("16-sidecar-metrics", e.testSidecarMetrics)
	t.Run("17-registry-pull", e.testRegistryPull)
	t.Run("18-credentials-from-secret", e.testCredentials)
	t.Run("19-webhook-ha", e.testWebhookHA)
	t.Run("perf-startup", e.testStartupLatency)
	t.Run("perf-provision", e.testProvisionLatency)
}
