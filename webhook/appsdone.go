package webhook

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podfs.io/podfs/sidecar/volumeset"
)

// AppsDone lets pods without native sidecars complete. Their podfs sidecar
// is an ordinary container that would keep a Job's pod running forever once
// the app has finished; this reconciler watches such pods (label
// podfs.io/sidecar=container) and, once every app container has terminated
// for good, sets the annotation podfs.io/apps-done=true. The kubelet writes
// the pod's annotations into the sidecar's downward API file, where the
// sidecar sees it, unmounts and exits 0.
type AppsDone struct {
	Client client.Client
	Log    *slog.Logger
}

// Reconcile checks one pod.
func (r *AppsDone) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pod corev1.Pod
	if err := r.Client.Get(ctx, req.NamespacedName, &pod); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pod.Annotations[volumeset.AppsDoneAnnotation] == "true" || !AppsFinished(&pod) {
		return reconcile.Result{}, nil
	}
	patch := client.MergeFrom(pod.DeepCopy())
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[volumeset.AppsDoneAnnotation] = "true"
	if err := r.Client.Patch(ctx, &pod, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("annotate pod %s %s: %w", req.NamespacedName, volumeset.AppsDoneAnnotation, err)
	}
	if r.Log != nil {
		r.Log.Info("app containers done; told the sidecar to stop", "pod", req.NamespacedName.String())
	}
	return reconcile.Result{}, nil
}

// AppsFinished reports whether every app container of pod has terminated
// and will not be restarted (restartPolicy Never, or OnFailure with exit
// code 0). Sidecar-like containers (podfs-sidecar, istio-proxy) are not apps.
func AppsFinished(pod *corev1.Pod) bool {
	if pod.Spec.RestartPolicy == corev1.RestartPolicyAlways || pod.Spec.RestartPolicy == "" {
		return false
	}
	apps := 0
	for _, c := range pod.Spec.Containers {
		if c.Name == volumeset.ContainerName || c.Name == istioProxy {
			continue
		}
		apps++
		done := false
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name != c.Name || s.State.Terminated == nil {
				continue
			}
			done = pod.Spec.RestartPolicy == corev1.RestartPolicyNever || s.State.Terminated.ExitCode == 0
		}
		if !done {
			return false
		}
	}
	return apps > 0
}
