package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/provisioner"
)

// TestControllerCommand runs `podfs controller` against a real API server
// through a kubeconfig file, with leader election, and has it provision a
// claim on a bolt volume it formats on first use.
func TestControllerCommand(t *testing.T) {
	k := testenv.StartKube(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, k.Env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(k.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := runController(ctx, slog.New(slog.DiscardHandler), []string{"--kubeconfig", kubeconfig, "extra"}); err == nil {
		t.Error("an argument was accepted")
	}
	if err := runController(ctx, slog.New(slog.DiscardHandler), []string{"--kubeconfig", kubeconfig, "--namespace", ""}); err == nil {
		t.Error("leader election without a namespace was accepted")
	}

	dir := t.TempDir()
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "podfs-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "podfs"}, StringData: map[string]string{
			"metaURL": "bolt://" + dir + "/meta.db", "format": "true", "name": "vol"}},
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "podfs"}, Provisioner: provisioner.DriverName,
			Parameters: map[string]string{provisioner.ParamSecretName: "podfs", provisioner.ParamSecretNamespace: "${pvc.namespace}"}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	health := testenv.Addr(testenv.FreePort(t))
	metrics := testenv.Addr(testenv.FreePort(t))
	logs := &testenv.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", logs.String())
		}
	})
	done := make(chan error, 1)
	go func() {
		done <- runController(ctx, slog.New(slog.NewTextHandler(logs, nil)), []string{"--kubeconfig", kubeconfig, "--namespace", "podfs-system",
			"--metrics-addr", metrics, "--health-addr", health})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("podfs controller: %v", err)
		}
	}()
	class := "podfs"
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if err := c.Create(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	var pv corev1.PersistentVolume
	for c.Get(ctx, types.NamespacedName{Name: provisioner.PVName(pvc)}, &pv) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no PV after 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.VolumeAttributes[provisioner.AttrSubDir] != "apps/data" {
		t.Errorf("PV csi %+v", pv.Spec.CSI)
	}
	resp, err := http.Get("http://" + health + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("readyz: %s", resp.Status)
	}
	resp, err = http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `controller_runtime_reconcile_total{controller="podfs-claims"`) {
		t.Errorf("/metrics lacks the claim controller's reconcile counts")
	}
	var lease coordinationv1.Lease
	if err := c.Get(ctx, types.NamespacedName{Namespace: "podfs-system", Name: "podfs-controller"}, &lease); err != nil {
		t.Errorf("no leader election Lease: %v", err)
	}
}
