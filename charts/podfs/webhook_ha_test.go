package chart_test

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// TestSingleNodeSharedPort: the single-node values run two webhook
// replicas on one node's host network sharing the port (--reuse-port):
// no containerPorts (hostPorts that would keep the second replica
// Pending), exec probes through a unix socket in the pod, no metrics port,
// a PodDisruptionBudget, preferred (not required) anti-affinity, and a
// rollout that may surge.
func TestSingleNodeSharedPort(t *testing.T) {
	r := render(t, "-f", "values-single-node.yaml")
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	spec := dep.Spec.Template.Spec
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", dep.Spec.Replicas)
	}
	if !spec.HostNetwork {
		t.Error("single-node values: the webhook should use hostNetwork")
	}
	c := spec.Containers[0]
	for _, want := range []string{"--reuse-port", "--health-socket=/run/podfs-webhook/health.sock", "--health-addr=0", "--metrics-addr=0", "--host=127.0.0.1", "--port=9443"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("webhook args %v lack %s", c.Args, want)
		}
	}
	if len(c.Ports) != 0 {
		t.Errorf("containerPorts %+v on the host network: each is a hostPort, the second replica would stay Pending", c.Ports)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if p == nil || p.Exec == nil || p.HTTPGet != nil {
			t.Errorf("%s probe %+v: want an exec probe (an HTTP probe could reach the other replica)", name, p)
			continue
		}
		got := strings.Join(p.Exec.Command, " ")
		if got != "podfs probe --socket=/run/podfs-webhook/health.sock --path="+want {
			t.Errorf("%s probe runs %q", name, got)
		}
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/run/podfs-webhook" && m.Name == "health" }) ||
		!slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "health" && v.EmptyDir != nil }) {
		t.Errorf("no emptyDir for the health socket at /run/podfs-webhook: mounts %+v", c.VolumeMounts)
	}
	if a := spec.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 ||
		len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("affinity %+v: want preferred anti-affinity only, so both replicas fit on one node", a)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil && ru.MaxSurge.IntValue() == 0 {
		t.Errorf("rolling update %+v: with a shared port a new replica can start beside the old ones", ru)
	}
	var pdb policyv1.PodDisruptionBudget
	r.get(t, "PodDisruptionBudget/podfs-webhook", &pdb)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB %+v, want minAvailable 1", pdb.Spec)
	}
}

// TestSharedPortNeedsNoMetricsPort: with hostNetwork, a metrics port next
// to a shared webhook port is refused with what to set; without reusePort,
// a host-network webhook keeps its TCP probes and ports.
func TestSharedPortNeedsNoMetricsPort(t *testing.T) {
	out, err := helm(t, "template", "podfs", ".", "-n", "podfs-system", "--kube-version", kubeVersion,
		"-f", "values-single-node.yaml", "--set", "webhook.metricsPort=9445")
	if err == nil || !strings.Contains(out, "set webhook.metricsPort to 0") {
		t.Errorf("reusePort + hostNetwork + metricsPort rendered (err %v):\n%s", err, out)
	}
	r := render(t, "-f", "values-single-node.yaml", "--set", "webhook.reusePort=false", "--set", "webhook.replicas=1",
		"--set", "webhook.healthPort=9444")
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	c := dep.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Port.IntValue() != 9444 {
		t.Errorf("readiness probe %+v, want HTTP on the health port", c.ReadinessProbe)
	}
	if slices.ContainsFunc(c.Args, func(a string) bool {
		return strings.HasPrefix(a, "--reuse-port") || strings.HasPrefix(a, "--health-socket")
	}) {
		t.Errorf("args %v: reuse-port flags without reusePort", c.Args)
	}
	if len(c.Ports) == 0 {
		t.Error("a webhook alone on its port declares it")
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
		t.Errorf("rolling update %+v: a host-network replica without reusePort cannot start beside the old one", dep.Spec.Strategy)
	}
}

// TestReusePortOnPodNetwork: off the host network a containerPort is no
// hostPort, so the webhook port stays declared; the health port does not
// (probes use the socket).
func TestReusePortOnPodNetwork(t *testing.T) {
	r := render(t, "--set", "webhook.reusePort=true")
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	c := dep.Spec.Template.Spec.Containers[0]
	var ports []string
	for _, p := range c.Ports {
		ports = append(ports, p.Name)
	}
	if strings.Join(ports, ",") != "https,metrics" {
		t.Errorf("ports %v, want https and metrics (no health port: probes use the socket)", ports)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.Exec == nil || !slices.Contains(c.Args, "--reuse-port") {
		t.Errorf("reusePort on the pod network: probe %+v, args %v", c.ReadinessProbe, c.Args)
	}
}
