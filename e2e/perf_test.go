//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"podfs.io/podfs/webhook"
)

// testStartupLatency measures, and reports without asserting, the time
// from pod creation to the app container running for a pod with one podfs
// volume and for the same pod with an emptyDir (5 runs each, alternating so
// both see the same machine load). Target: podfs adds < 1 s.
func (e *env) testStartupLatency(t *testing.T) {
	const runs = 5
	ns := e.newNamespace(t, "perf", "enabled")
	v := e.formatVolume(t, "perf-"+strings.TrimPrefix(ns, "e2e-perf-"))
	_, claim := e.createVolume(t, ns, v, nil)

	// podfs twice: with the default native sidecar, and with the sidecar as
	// an ordinary container (podfs.io/sidecar-placement: container), which
	// the kubelet starts in the same sync as the app instead of one PLEG
	// relist (1 s period) earlier.
	var native, container, empty []time.Duration
	for i := 0; i < runs; i++ {
		p := withClaim(e.appPod(fmt.Sprintf("podfs-%d", i), "sleep 3600"), claim, "/data")
		native = append(native, e.timeToRunning(t, ns, p))
		c := withClaim(e.appPod(fmt.Sprintf("podfs-container-%d", i), "sleep 3600"), claim, "/data")
		c.Annotations = map[string]string{webhook.AnnPlacement: webhook.PlacementContainer}
		container = append(container, e.timeToRunning(t, ns, c))
		q := e.appPod(fmt.Sprintf("emptydir-%d", i), "sleep 3600")
		q.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		q.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		empty = append(empty, e.timeToRunning(t, ns, q))
	}
	mn, mc, me := median(native), median(container), median(empty)
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("pod creation -> app running, median of %d: emptyDir %s; podfs native sidecar %s (adds %s), podfs container sidecar %s (adds %s); target: adds < 1s\n  native:    %v\n  container: %v\n  emptyDir:  %v",
		runs, ms(me), ms(mn), ms(mn-me), ms(mc), ms(mc-me), round(native), round(container), round(empty))
	fmt.Printf("E2E-STARTUP emptydir_median=%s native_median=%s native_added=%s container_median=%s container_added=%s runs=%d\n",
		ms(me), ms(mn), ms(mn-me), ms(mc), ms(mc-me), runs)
}

// timeToRunning creates the pod and watches it until its app container runs,
// then deletes it (waiting until it is gone, outside the measurement).
func (e *env) timeToRunning(t *testing.T, ns string, p *corev1.Pod) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := e.kc.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", p.Name).String()})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer w.Stop()
	start := time.Now()
	e.createPod(t, ns, p)
	var took time.Duration
	for took == 0 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch of %s ended before it ran", p.Name)
			}
			if ev.Type == watch.Error {
				t.Fatalf("watch of %s: %v", p.Name, ev.Object)
			}
			if q, ok := ev.Object.(*corev1.Pod); ok && appRunning(q) {
				took = time.Since(start)
			}
		case <-ctx.Done():
			e.dumpNamespace(t, ns)
			t.Fatalf("pod %s not running after 2 minutes", p.Name)
		}
	}
	e.deletePod(t, ns, p.Name)
	return took
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func round(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, x := range d {
		out[i] = x.Round(time.Millisecond)
	}
	return out
}
