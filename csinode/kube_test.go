package csinode

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// One real kube-apiserver for the package's tests, started by the first test
// that needs it and stopped by TestMain.
var sharedKube struct {
	once   sync.Once
	env    *envtest.Environment
	kube   *Kube
	client kubernetes.Interface
	err    error
}

func testKube(t testing.TB) *Kube {
	t.Helper()
	assets := testenv.KubeAssets(t)
	sharedKube.once.Do(func() {
		env := &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStopTimeout: 20 * time.Second}
		cfg, err := env.Start()
		if err != nil {
			sharedKube.err = fmt.Errorf("start kube-apiserver and etcd (envtest): %w", err)
			return
		}
		sharedKube.env = env
		if sharedKube.kube, err = NewKube(cfg, testNodeID); err != nil {
			sharedKube.err = err
			return
		}
		sharedKube.client, sharedKube.err = kubernetes.NewForConfig(cfg)
	})
	if sharedKube.err != nil {
		t.Fatal(sharedKube.err)
	}
	return sharedKube.kube
}

func stopSharedKube() {
	if sharedKube.kube != nil {
		sharedKube.kube.Stop()
	}
	if sharedKube.env != nil {
		_ = sharedKube.env.Stop()
	}
}

var podSeq atomic.Int64

// createPod creates a pod in the API server, with a podfs sidecar as the
// webhook injects it on ordinary nodes when sidecar is true, and returns it
// with its UID.
func createPod(t testing.TB, sidecar bool, labels map[string]string) *corev1.Pod {
	t.Helper()
	return createPodWith(t, sidecar, labels, nil)
}

// createPodWith is createPod with the pod changed by edit before it is created.
func createPodWith(t testing.TB, sidecar bool, labels map[string]string, edit func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	testKube(t)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", podSeq.Add(1)), Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
		},
	}
	if sidecar {
		always := corev1.ContainerRestartPolicyAlways
		p.Spec.InitContainers = []corev1.Container{{
			Name: volumeset.ContainerName, Image: "podfs", RestartPolicy: &always,
			VolumeMounts: []corev1.VolumeMount{{Name: "podfs-run", MountPath: volumeset.RunDir}},
		}}
		p.Spec.Volumes = []corev1.Volume{{Name: "podfs-run", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	}
	if edit != nil {
		edit(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := sharedKube.client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	return out
}

// podEvents lists the messages of the Events recorded on pod.
func podEvents(t testing.TB, pod *corev1.Pod) []string {
	t.Helper()
	l, err := sharedKube.client.CoreV1().Events(pod.Namespace).List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.uid=" + string(pod.UID)})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range l.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}
