// Package rollout changes the image of the podfs sidecar of running pods in
// place, one pod at a time: the kubelet restarts the changed container, the
// new sidecar takes the FUSE connections over from the CSI node, and the
// app keeps its open files (see pkg/fuseconn). It is what `podfs
// rollout-sidecars` runs after the chart has been upgraded, so that pods
// created before the upgrade run the new sidecar too.
//
// Only pods on ordinary nodes can be changed this way. A serverless sidecar
// mounts FUSE itself, so its restart ends the mount: those pods are
// listed, never touched, and must be recreated.
package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"podfs.io/podfs/sidecar/volumeset"
)

// Options say which pods get which image.
type Options struct {
	// Image is the sidecar image to run.
	Image string
	// Namespace limits the rollout to one namespace; "" = all.
	Namespace string
	// Selector is a label selector the pods must match; "" = all.
	Selector string
	// Timeout bounds the wait for one pod's new sidecar to be started;
	// default 3m. A pod that does not get there stops the rollout.
	Timeout time.Duration
	// DryRun lists what would change and changes nothing.
	DryRun bool
	// Poll is how often a pod's status is read while waiting; default 1s.
	Poll time.Duration
	Log  *slog.Logger
}

// Action is what the rollout did, or would do, with one pod.
type Action string

const (
	Updated    Action = "updated"     // the sidecar now runs Image
	WouldPatch Action = "would-patch" // dry run
	Current    Action = "current"     // already runs Image
	Recreate   Action = "recreate"    // serverless: the pod must be recreated to change
	Failed     Action = "failed"      // patched, but the new sidecar did not start
)

// Result is one pod's outcome.
type Result struct {
	Namespace, Pod string
	From, To       string
	Action         Action
	Took           time.Duration
	Err            error
}

// Run changes the sidecar image of every matching injected pod, one pod at
// a time, and returns what it did with each. It stops at the first pod
// whose new sidecar does not start within the timeout, so a bad image
// breaks at most one pod's serving (whose app keeps waiting, not failing,
// while the CSI node holds its connections).
func Run(ctx context.Context, kc kubernetes.Interface, opt Options) ([]Result, error) {
	if opt.Image == "" {
		return nil, errors.New("no image: say which sidecar image to roll out (--image)")
	}
	if opt.Timeout == 0 {
		opt.Timeout = 3 * time.Minute
	}
	if opt.Poll == 0 {
		opt.Poll = time.Second
	}
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	pods, err := kc.CoreV1().Pods(opt.Namespace).List(ctx, metav1.ListOptions{LabelSelector: opt.Selector})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	var out []Result
	for i := range pods.Items {
		p := &pods.Items[i]
		inj, ok := p.Annotations[volumeset.InjectedAnnotation]
		if !ok || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		path, c := sidecarOf(p)
		if c == nil {
			continue
		}
		r := Result{Namespace: p.Namespace, Pod: p.Name, From: c.Image, To: opt.Image}
		switch {
		case c.Image == opt.Image:
			r.Action = Current
		case slices.Contains(strings.Split(inj, ","), "serverless"):
			r.Action = Recreate
		case opt.DryRun:
			r.Action = WouldPatch
		default:
			start := time.Now()
			r.Err = update(ctx, kc, p, path, c, opt)
			r.Took = time.Since(start)
			r.Action = Updated
			if r.Err != nil {
				r.Action = Failed
				log.Error("sidecar rollout stopped", "pod", p.Namespace+"/"+p.Name, "err", r.Err)
				return append(out, r), fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, r.Err)
			}
			log.Info("sidecar updated", "pod", p.Namespace+"/"+p.Name, "image", opt.Image, "took", r.Took.Round(time.Millisecond))
		}
		out = append(out, r)
	}
	return out, nil
}

// sidecarOf finds the podfs sidecar and its JSON pointer in the pod spec.
func sidecarOf(p *corev1.Pod) (string, *corev1.Container) {
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == volumeset.ContainerName {
			return fmt.Sprintf("/spec/initContainers/%d", i), &p.Spec.InitContainers[i]
		}
	}
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == volumeset.ContainerName {
			return fmt.Sprintf("/spec/containers/%d", i), &p.Spec.Containers[i]
		}
	}
	return "", nil
}

// update patches the image (guarded by a test of the container's name and
// old image, so a pod changed meanwhile is left alone) and waits until the
// kubelet runs the new sidecar and its startup probe passed.
func update(ctx context.Context, kc kubernetes.Interface, p *corev1.Pod, path string, c *corev1.Container, opt Options) error {
	before := restarts(p, c.Name)
	ops := []map[string]any{
		{"op": "test", "path": path + "/name", "value": c.Name},
		{"op": "test", "path": path + "/image", "value": c.Image},
		{"op": "replace", "path": path + "/image", "value": opt.Image},
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if _, err := kc.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.JSONPatchType, body, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch the sidecar image: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, opt.Timeout)
	defer cancel()
	t := time.NewTicker(opt.Poll)
	defer t.Stop()
	var last *corev1.Pod
	for {
		q, err := kc.CoreV1().Pods(p.Namespace).Get(wctx, p.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return errors.New("the pod was deleted during the rollout")
		case err == nil:
			last = q
			if s := status(q, c.Name); s != nil && s.RestartCount > before && s.State.Running != nil && s.Started != nil && *s.Started {
				return nil
			}
		}
		select {
		case <-wctx.Done():
			s := status(last, c.Name)
			why := "no status"
			if s != nil {
				why = describe(s)
			}
			return fmt.Errorf("the new sidecar (%s) did not start within %s: %s; the app's I/O waits meanwhile: fix the image or patch it back", opt.Image, opt.Timeout, why)
		case <-t.C:
		}
	}
}

func status(p *corev1.Pod, name string) *corev1.ContainerStatus {
	if p == nil {
		return nil
	}
	for _, l := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for i := range l {
			if l[i].Name == name {
				return &l[i]
			}
		}
	}
	return nil
}

func restarts(p *corev1.Pod, name string) int32 {
	if s := status(p, name); s != nil {
		return s.RestartCount
	}
	return 0
}

func describe(s *corev1.ContainerStatus) string {
	switch {
	case s.State.Waiting != nil:
		return "waiting: " + s.State.Waiting.Reason + " " + s.State.Waiting.Message
	case s.State.Terminated != nil:
		return fmt.Sprintf("terminated: %s (exit %d) %s", s.State.Terminated.Reason, s.State.Terminated.ExitCode, s.State.Terminated.Message)
	case s.Started == nil || !*s.Started:
		return "running, startup probe not passed yet"
	}
	return "running"
}
