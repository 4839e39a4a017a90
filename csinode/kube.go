package csinode

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
)

// Kube is the plugin's API access: it reads pods and records Events on them.
type Kube struct {
	client      kubernetes.Interface
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
}

// NewKube connects to the API server with cfg; node names the Events'
// source. Stop it to flush the Events.
func NewKube(cfg *rest.Config, node string) (*Kube, error) {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.CoreV1().Events("")})
	return &Kube{
		client:      c,
		broadcaster: b,
		recorder:    b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "podfs-csi-node", Host: node}),
	}, nil
}

// GetPod reads a pod straight from the API server: a publish happens once
// per pod and volume, so a cache would cost more than it saves.
func (k *Kube) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return k.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
}

// GetPVC reads a claim straight from the API server (rarely needed: see
// PodSource).
func (k *Kube) GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error) {
	return k.client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
}

// PodEvent records an Event on pod.
func (k *Kube) PodEvent(pod *corev1.Pod, eventType, reason, message string) {
	k.recorder.Event(pod, eventType, reason, message)
}

// Stop flushes pending Events and stops recording.
func (k *Kube) Stop() { k.broadcaster.Shutdown() }
