package webhook

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"podfs.io/podfs/sidecar/volumeset"
)

func TestAppsFinished(t *testing.T) {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	exit := func(code int32) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
	}
	mk := func(policy corev1.RestartPolicy, states map[string]corev1.ContainerState) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: policy, Containers: []corev1.Container{
			{Name: "istio-proxy"}, {Name: volumeset.ContainerName}, {Name: "app"}, {Name: "worker"}}}}
		for n, s := range states {
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: n, State: s})
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		finish bool
	}{
		{"never-all-done", mk(corev1.RestartPolicyNever, map[string]corev1.ContainerState{"app": exit(0), "worker": exit(3), volumeset.ContainerName: running, "istio-proxy": running}), true},
		{"never-one-running", mk(corev1.RestartPolicyNever, map[string]corev1.ContainerState{"app": exit(0), "worker": running}), false},
		{"never-no-status", mk(corev1.RestartPolicyNever, map[string]corev1.ContainerState{"app": exit(0)}), false},
		{"onfailure-success", mk(corev1.RestartPolicyOnFailure, map[string]corev1.ContainerState{"app": exit(0), "worker": exit(0)}), true},
		{"onfailure-will-restart", mk(corev1.RestartPolicyOnFailure, map[string]corev1.ContainerState{"app": exit(0), "worker": exit(1)}), false},
		{"always-never-done", mk(corev1.RestartPolicyAlways, map[string]corev1.ContainerState{"app": exit(0), "worker": exit(0)}), false},
		{"default-policy-is-always", mk("", map[string]corev1.ContainerState{"app": exit(0), "worker": exit(0)}), false},
		{"only-sidecars", &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: volumeset.ContainerName}}}}, false},
	} {
		if got := AppsFinished(tc.pod); got != tc.finish {
			t.Errorf("%s: AppsFinished = %v, want %v", tc.name, got, tc.finish)
		}
	}
}
