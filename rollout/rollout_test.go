package rollout

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// kubelet stands in for the node on envtest's API server, which runs no
// kubelet: when a pod's sidecar spec names an image its status does not
// run yet, it reports the container restarted and started, unless the image
// is one that "fails".
func kubelet(ctx context.Context, t *testing.T, kc kubernetes.Interface, ns, failing string) {
	go func() {
		for ctx.Err() == nil {
			l, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return
			}
			for i := range l.Items {
				p := &l.Items[i]
				_, c := sidecarOf(p)
				s := status(p, volumeset.ContainerName)
				if c == nil || s == nil || s.Image == c.Image {
					continue
				}
				if c.Image == failing {
					s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "no such image"}}
				} else {
					s.Image, s.RestartCount, s.Started = c.Image, s.RestartCount+1, ptr(true)
					s.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
				}
				if _, err := kc.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
					t.Logf("fake kubelet: %v", err)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

func ptr[T any](v T) *T { return &v }

// pod creates an injected pod (or not) whose sidecar runs image, with a
// status saying so.
func pod(t *testing.T, kc kubernetes.Interface, ns, name, injected, image string, native bool) {
	t.Helper()
	ctx := context.Background()
	sc := corev1.Container{Name: volumeset.ContainerName, Image: image}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
	}}
	if injected != "" {
		p.Annotations = map[string]string{volumeset.InjectedAnnotation: injected}
	}
	if native {
		sc.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
		p.Spec.InitContainers = []corev1.Container{sc}
	} else {
		p.Spec.Containers = append([]corev1.Container{sc}, p.Spec.Containers...)
	}
	out, err := kc.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := corev1.ContainerStatus{Name: volumeset.ContainerName, Image: image, Started: ptr(true),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	out.Status.Phase = corev1.PodRunning
	if native {
		out.Status.InitContainerStatuses = []corev1.ContainerStatus{st}
	} else {
		out.Status.ContainerStatuses = []corev1.ContainerStatus{st}
	}
	if _, err := kc.CoreV1().Pods(ns).UpdateStatus(ctx, out, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func image(t *testing.T, kc kubernetes.Interface, ns, name string) string {
	t.Helper()
	p, err := kc.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, c := sidecarOf(p)
	return c.Image
}

// TestRun rolls a new image onto a namespace of pods through a real API
// server: node-mode pods (native or not) are patched one at a time and
// waited for; serverless pods, pods already current and pods without
// the injection annotation are left alone; a dry run changes nothing; an
// image whose sidecar does not start stops the rollout at that pod.
func TestRun(t *testing.T) {
	k := testenv.StartKube(t)
	kc, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "default"
	pod(t, kc, ns, "native", "native", "podfs:1", true)
	pod(t, kc, ns, "ordinary", "container", "podfs:1", false)
	pod(t, kc, ns, "serverless", "native,serverless", "podfs:1", true)
	pod(t, kc, ns, "current", "native", "podfs:2", true)
	pod(t, kc, ns, "not-injected", "", "podfs:1", true)
	kubelet(ctx, t, kc, ns, "podfs:broken")

	res, err := Run(ctx, kc, Options{Image: "podfs:2", Namespace: ns, DryRun: true, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Action{}
	for _, r := range res {
		got[r.Pod] = r.Action
	}
	want := map[string]Action{"native": WouldPatch, "ordinary": WouldPatch, "serverless": Recreate, "current": Current}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dry run: %v, want %v", got, want)
	}
	if image(t, kc, ns, "native") != "podfs:1" {
		t.Fatal("the dry run changed a pod")
	}

	res, err = Run(ctx, kc, Options{Image: "podfs:2", Namespace: ns, Poll: 50 * time.Millisecond, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("rollout: %v (%+v)", err, res)
	}
	for name, want := range map[string]string{"native": "podfs:2", "ordinary": "podfs:2", "serverless": "podfs:1", "not-injected": "podfs:1"} {
		if got := image(t, kc, ns, name); got != want {
			t.Errorf("pod %s runs %s after the rollout, want %s", name, got, want)
		}
	}

	// A broken image stops at the first pod it reaches and says why.
	res, err = Run(ctx, kc, Options{Image: "podfs:broken", Namespace: ns, Poll: 50 * time.Millisecond, Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "ImagePullBackOff") {
		t.Fatalf("rollout of a broken image: %v, want an error naming the container's state", err)
	}
	patched := 0
	for _, name := range []string{"native", "ordinary", "current"} {
		if image(t, kc, ns, name) == "podfs:broken" {
			patched++
		}
	}
	if patched != 1 || res[len(res)-1].Action != Failed {
		t.Errorf("a failing rollout patched %d pods (want 1) and ended with %+v", patched, res[len(res)-1])
	}

	if _, err := Run(ctx, kc, Options{Namespace: ns}); err == nil || !strings.Contains(err.Error(), "no image") {
		t.Errorf("rollout without an image: %v", err)
	}
}
