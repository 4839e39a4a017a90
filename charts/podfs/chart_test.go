// Package chart_test checks the Helm chart with the real helm binary: lint,
// what it renders for the value combinations users pick, and the schema's
// refusals. The e2e suite installs it on a real cluster.
package chart_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"

	"podfs.io/podfs/webhook"
)

// kubeVersion is what helm renders for: the version the e2e cluster runs (a
// helm built with go install assumes 1.20, below the chart's kubeVersion).
const kubeVersion = "1.33.13"

// helmBin finds helm: $PODFS_HELM, else hack/helm.sh's cache. A missing helm
// fails the test: make test builds it (hack/helm.sh).
func helmBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PODFS_HELM"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	matches, _ := filepath.Glob(filepath.Join(home, ".cache/podfs/helm/*/helm"))
	if len(matches) == 0 {
		t.Fatal("helm not found: set PODFS_HELM or run hack/helm.sh (make test does)")
	}
	return matches[len(matches)-1]
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helmBin(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// No repositories or plugins of the machine's user.
	dir := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+dir, "HELM_CONFIG_HOME="+dir, "HELM_DATA_HOME="+dir)
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// rendered is one `helm template` output, split per object.
type rendered map[string][]byte // "Kind/name" -> YAML

func render(t *testing.T, args ...string) rendered {
	t.Helper()
	out, err := helm(t, append([]string{"template", "podfs", ".", "-n", "podfs-system", "--kube-version", kubeVersion}, args...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, out)
	}
	r := rendered{}
	for _, doc := range strings.Split(out, "\n---") {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("rendered document is not YAML: %v\n%s", err, doc)
		}
		if head.Kind == "" {
			continue
		}
		r[head.Kind+"/"+head.Metadata.Name] = []byte(doc)
	}
	return r
}

// get decodes the object kind/name strictly into obj.
func (r rendered) get(t *testing.T, key string, obj any) {
	t.Helper()
	doc, ok := r[key]
	if !ok {
		t.Fatalf("%s not rendered; have %v", key, r.keys())
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s does not decode strictly: %v", key, err)
	}
}

func (r rendered) keys() []string {
	var k []string
	for key := range r {
		k = append(k, key)
	}
	return k
}

func TestLint(t *testing.T) {
	for _, values := range [][]string{
		nil,
		{"-f", "values-single-node.yaml"},
		{"--set", "webhook.tls.mode=cert-manager"},
	} {
		if out, err := helm(t, append([]string{"lint", "--strict", "--kube-version", kubeVersion, "."}, values...)...); err != nil {
			t.Errorf("helm lint %v: %v\n%s", values, err, out)
		}
	}
}

func TestDefaults(t *testing.T) {
	r := render(t)
	var mwc admissionv1.MutatingWebhookConfiguration
	r.get(t, "MutatingWebhookConfiguration/podfs-webhook-podfs-system", &mwc)
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	switch {
	case w.FailurePolicy == nil || *w.FailurePolicy != admissionv1.Fail:
		t.Errorf("failurePolicy %v, want Fail", w.FailurePolicy)
	case w.SideEffects == nil || *w.SideEffects != admissionv1.SideEffectClassNone:
		t.Errorf("sideEffects %v, want None", w.SideEffects)
	case w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionv1.IfNeededReinvocationPolicy:
		t.Errorf("reinvocationPolicy %v, want IfNeeded", w.ReinvocationPolicy)
	case w.TimeoutSeconds == nil || *w.TimeoutSeconds > 10:
		t.Errorf("timeoutSeconds %v, want a short one", w.TimeoutSeconds)
	case w.ClientConfig.Service == nil || w.ClientConfig.Service.Namespace != "podfs-system":
		t.Errorf("clientConfig %+v, want the release's Service", w.ClientConfig)
	}
	ns := w.NamespaceSelector.MatchExpressions
	if len(ns) != 1 || ns[0].Key != "podfs.io/injection" || ns[0].Operator != "In" || strings.Join(ns[0].Values, ",") != "enabled,serverless" {
		t.Errorf("namespaceSelector %+v, want podfs.io/injection In [enabled serverless]", ns)
	}
	obj := w.ObjectSelector.MatchExpressions
	if len(obj) != 1 || obj[0].Key != "podfs.io/inject" || obj[0].Operator != "NotIn" || strings.Join(obj[0].Values, ",") != "false" {
		t.Errorf("objectSelector %+v, want podfs.io/inject NotIn [false]", obj)
	}

	var drv storagev1.CSIDriver
	r.get(t, "CSIDriver/csi.podfs.io", &drv)
	modes := map[storagev1.VolumeLifecycleMode]bool{}
	for _, m := range drv.Spec.VolumeLifecycleModes {
		modes[m] = true
	}
	if drv.Spec.AttachRequired == nil || *drv.Spec.AttachRequired || drv.Spec.PodInfoOnMount == nil || !*drv.Spec.PodInfoOnMount ||
		!modes[storagev1.VolumeLifecyclePersistent] || !modes[storagev1.VolumeLifecycleEphemeral] {
		t.Errorf("CSIDriver spec %+v: want attachRequired false, podInfoOnMount true, Persistent and Ephemeral", drv.Spec)
	}
	// The kubelet must not walk the FUSE mount before the sidecar serves it.
	if drv.Spec.FSGroupPolicy == nil || *drv.Spec.FSGroupPolicy != storagev1.NoneFSGroupPolicy {
		t.Errorf("CSIDriver fsGroupPolicy %v, want None", drv.Spec.FSGroupPolicy)
	}

	var ds appsv1.DaemonSet
	r.get(t, "DaemonSet/podfs-csi-node", &ds)
	privileged := false
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			privileged = true
		}
	}
	if !privileged {
		t.Error("csi-node DaemonSet has no privileged container: it must propagate mounts")
	}
	if !hasHostPath(ds.Spec.Template.Spec.Volumes, "/var/lib/kubelet") {
		t.Errorf("csi-node mounts no /var/lib/kubelet (the default kubeletDir)")
	}
	checkCSINode(t, r, &ds, "/var/lib/kubelet")

	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	if dep.Spec.Template.Spec.HostNetwork {
		t.Error("the webhook uses hostNetwork by default; only the single-node test values should")
	}

	// Least privilege: no wildcards, and nothing may write secrets cluster-wide.
	for key := range r {
		var rules []rbacv1.PolicyRule
		switch {
		case strings.HasPrefix(key, "ClusterRole/"):
			var cr rbacv1.ClusterRole
			r.get(t, key, &cr)
			rules = cr.Rules
			for _, rule := range rules {
				for _, res := range rule.Resources {
					if res == "secrets" && hasWrite(rule.Verbs) {
						t.Errorf("%s may write secrets in every namespace: %+v", key, rule)
					}
				}
			}
		case strings.HasPrefix(key, "Role/"):
			var role rbacv1.Role
			r.get(t, key, &role)
			rules = role.Rules
		}
		for _, rule := range rules {
			for _, s := range slices.Concat(rule.Verbs, rule.Resources, rule.APIGroups) {
				if s == "*" {
					t.Errorf("%s has a wildcard rule: %+v", key, rule)
				}
			}
		}
	}
}

func TestSingleNodeValues(t *testing.T) {
	r := render(t, "-f", "values-single-node.yaml", "--set", "kubeletDir=/var/lib/podfs-e2e/kubelet")
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	if !dep.Spec.Template.Spec.HostNetwork {
		t.Error("single-node values: the webhook should use hostNetwork")
	}
	var ds appsv1.DaemonSet
	r.get(t, "DaemonSet/podfs-csi-node", &ds)
	if !hasHostPath(ds.Spec.Template.Spec.Volumes, "/var/lib/podfs-e2e/kubelet") {
		t.Error("kubeletDir is not what the csi-node DaemonSet mounts")
	}
	checkCSINode(t, r, &ds, "/var/lib/podfs-e2e/kubelet")
}

func TestCertManager(t *testing.T) {
	r := render(t, "--set", "webhook.tls.mode=cert-manager")
	if _, ok := r["Issuer/podfs-webhook"]; !ok {
		t.Errorf("no self-signed Issuer rendered; have %v", r.keys())
	}
	var cert struct {
		Spec struct {
			SecretName string   `json:"secretName"`
			DNSNames   []string `json:"dnsNames"`
			IssuerRef  struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"issuerRef"`
		} `json:"spec"`
	}
	doc, ok := r["Certificate/podfs-webhook"]
	if !ok {
		t.Fatalf("no Certificate rendered; have %v", r.keys())
	}
	if err := yaml.Unmarshal(doc, &cert); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cert.Spec.DNSNames, "podfs-webhook.podfs-system.svc") || cert.Spec.IssuerRef.Name != "podfs-webhook" {
		t.Errorf("Certificate spec %+v: want the Service's DNS name and the chart's Issuer", cert.Spec)
	}
	var mwc admissionv1.MutatingWebhookConfiguration
	r.get(t, "MutatingWebhookConfiguration/podfs-webhook-podfs-system", &mwc)
	if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != "podfs-system/podfs-webhook" {
		t.Errorf("inject-ca-from annotation %q, want podfs-system/podfs-webhook", got)
	}
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	mountsSecret := false
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == cert.Spec.SecretName {
			mountsSecret = true
		}
	}
	if !mountsSecret || !strings.Contains(strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "), "--cert-dir=") {
		t.Errorf("the webhook does not serve the Certificate's secret %q: volumes %+v args %v",
			cert.Spec.SecretName, dep.Spec.Template.Spec.Volumes, dep.Spec.Template.Spec.Containers[0].Args)
	}

	// An existing issuer: no Issuer of our own.
	r = render(t, "--set", "webhook.tls.mode=cert-manager", "--set", "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
		"--set", "webhook.tls.certManager.issuerRef.name=corp-ca")
	if _, ok := r["Issuer/podfs-webhook"]; ok {
		t.Error("an Issuer was rendered although issuerRef names an existing one")
	}
	if !bytes.Contains(r["Certificate/podfs-webhook"], []byte("name: corp-ca")) {
		t.Errorf("Certificate does not use the given issuer:\n%s", r["Certificate/podfs-webhook"])
	}
}

// TestSchemaRefusesBadValues: the schema turns typos into errors that name
// the value, before anything reaches a cluster.
func TestSchemaRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"webhook.tls.mode=letsencrypt", "mode"},
		{"kubeletDir=var/lib/kubelet", "kubeletDir"},
		{"webhook.failurePolicy=fail", "failurePolicy"},
		{"webhook.timeoutSeconds=90", "timeoutSeconds"},
		{"webhook.nativeSidecar=maybe", "nativeSidecar"},
		{"webhok.enabled=true", "webhok"},
		// Gone with the descriptor handoff: the CSI node mounts at kubelet's
		// target path, no node-wide pods directory is shared.
		{"podsDir=/var/lib/podfs/pods", "podsDir"},
		{"csiNode.preparePodsDir=true", "preparePodsDir"},
		{"csiDriver.fsGroupPolicy=File", "fsGroupPolicy"},
		{"sidecar.cacheVolumeSizeLimit=lots", "cacheVolumeSizeLimit"},
	} {
		out, err := helm(t, "template", "podfs", ".", "--kube-version", kubeVersion, "--set", tc.set)
		if err == nil {
			t.Errorf("--set %s rendered; want a schema error", tc.set)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("--set %s: error does not name %q:\n%s", tc.set, tc.want, out)
		}
	}
}

// TestExamples: the example manifests decode strictly as what they claim to be.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			var head struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var obj any
			switch head.Kind {
			case "":
				continue
			case "PersistentVolume":
				obj = &corev1.PersistentVolume{}
			case "PersistentVolumeClaim":
				obj = &corev1.PersistentVolumeClaim{}
			case "Pod":
				obj = &corev1.Pod{}
			case "Namespace":
				obj = &corev1.Namespace{}
			case "Secret":
				obj = &corev1.Secret{}
			case "Deployment":
				obj = &appsv1.Deployment{}
			case "StorageClass":
				obj = &storagev1.StorageClass{}
			default:
				t.Errorf("%s: unexpected kind %q in an example", f, head.Kind)
				continue
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Errorf("%s: %s does not decode strictly: %v", f, head.Kind, err)
			}
		}
	}
}

// checkCSINode: the node plugin is the one privileged podfs container on
// ordinary nodes; it mounts only kubelet's directory (Bidirectional), is
// told nothing of a pods directory, has no init container or host PID
// namespace, and may get pods and write events — nothing else.
func checkCSINode(t *testing.T, r rendered, ds *appsv1.DaemonSet, kubeletDir string) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if len(spec.InitContainers) != 0 || spec.HostPID {
		t.Errorf("csi-node has init containers %v or hostPID %v: nothing needs preparing on the node", spec.InitContainers, spec.HostPID)
	}
	if len(spec.Volumes) != 1 || !hasHostPath(spec.Volumes, kubeletDir) {
		t.Errorf("csi-node volumes %+v, want only the kubelet dir %s", spec.Volumes, kubeletDir)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("csi-node containers %d, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("csi-node not privileged: it opens /dev/fuse and mounts FUSE")
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != kubeletDir || c.VolumeMounts[0].MountPropagation == nil ||
		*c.VolumeMounts[0].MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("csi-node mounts %+v, want %s Bidirectional only", c.VolumeMounts, kubeletDir)
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--pods-dir") {
			t.Errorf("csi-node args %v: --pods-dir is gone", c.Args)
		}
	}
	if spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken {
		t.Error("csi-node has no API token: it must read pods and write events")
	}
	var cr rbacv1.ClusterRole
	r.get(t, "ClusterRole/podfs-csi-node-podfs-system", &cr)
	verbs := map[string][]string{}
	for _, rule := range cr.Rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				verbs[g+"/"+res] = append(verbs[g+"/"+res], rule.Verbs...)
			}
		}
		if len(rule.ResourceNames) > 0 {
			t.Errorf("unexpected resourceNames in %+v", rule)
		}
	}
	want := map[string][]string{"/pods": {"get"}, "/persistentvolumeclaims": {"get"}, "/events": {"create", "patch"}, "events.k8s.io/events": {"create", "patch"}}
	if len(verbs) != len(want) {
		t.Errorf("csi-node ClusterRole grants %v, want %v", verbs, want)
	}
	for k, v := range want {
		if !slices.Equal(verbs[k], v) {
			t.Errorf("csi-node ClusterRole: %s verbs %v, want %v", k, verbs[k], v)
		}
	}
	var crb rbacv1.ClusterRoleBinding
	r.get(t, "ClusterRoleBinding/podfs-csi-node-podfs-system", &crb)
	if crb.RoleRef.Name != cr.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != spec.ServiceAccountName || crb.Subjects[0].Namespace != "podfs-system" {
		t.Errorf("ClusterRoleBinding %+v does not bind the csi-node's ServiceAccount %q", crb, spec.ServiceAccountName)
	}
}

// TestSidecarConfig: what the chart writes into the webhook's ConfigMap is
// a configuration the webhook accepts, cache volume size included.
func TestSidecarConfig(t *testing.T) {
	r := render(t, "--set", "sidecar.cache.cacheDir=/var/cache/podfs", "--set", "sidecar.cache.cacheDirSize=20Gi",
		"--set", "sidecar.cacheVolumeSizeLimit=30Gi")
	var cm corev1.ConfigMap
	r.get(t, "ConfigMap/podfs-webhook", &cm)
	cfg, err := webhook.ParseConfig([]byte(cm.Data[webhook.ConfigKey]), "unused")
	if err != nil {
		t.Fatalf("the webhook refuses the chart's configuration: %v\n%s", err, cm.Data[webhook.ConfigKey])
	}
	if cfg.CacheVolumeSizeLimit == nil || cfg.CacheVolumeSizeLimit.String() != "30Gi" || cfg.Cache.CacheDir != "/var/cache/podfs" {
		t.Errorf("cacheVolumeSizeLimit %v, cacheDir %q: want 30Gi and /var/cache/podfs", cfg.CacheVolumeSizeLimit, cfg.Cache.CacheDir)
	}
	r = render(t)
	r.get(t, "ConfigMap/podfs-webhook", &cm)
	if cfg, err = webhook.ParseConfig([]byte(cm.Data[webhook.ConfigKey]), "unused"); err != nil || cfg.CacheVolumeSizeLimit != nil {
		t.Errorf("default configuration: %v, cacheVolumeSizeLimit %v (want none)", err, cfg)
	}
}

func hasHostPath(vols []corev1.Volume, path string) bool {
	for _, v := range vols {
		if v.HostPath != nil && v.HostPath.Path == path {
			return true
		}
	}
	return false
}

func hasWrite(verbs []string) bool {
	for _, v := range verbs {
		switch v {
		case "create", "update", "patch", "delete", "deletecollection", "*":
			return true
		}
	}
	return false
}

func TestImagePullSecrets(t *testing.T) {
	r := render(t, "--set", "imagePullSecrets[0].name=regcred", "--set", "imagePullSecrets[1].name=mirror")
	var cm corev1.ConfigMap
	r.get(t, "ConfigMap/podfs-webhook", &cm)
	cfg, err := webhook.ParseConfig([]byte(cm.Data[webhook.ConfigKey]), "unused")
	if err != nil {
		t.Fatalf("the webhook refuses the chart's configuration: %v", err)
	}
	if len(cfg.ImagePullSecrets) != 2 || cfg.ImagePullSecrets[0].Name != "regcred" || cfg.ImagePullSecrets[1].Name != "mirror" {
		t.Errorf("sidecar imagePullSecrets %v, want regcred and mirror", cfg.ImagePullSecrets)
	}
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	var ds appsv1.DaemonSet
	r.get(t, "DaemonSet/podfs-csi-node", &ds)
	for what, got := range map[string][]corev1.LocalObjectReference{"webhook": dep.Spec.Template.Spec.ImagePullSecrets, "csi-node": ds.Spec.Template.Spec.ImagePullSecrets} {
		if len(got) != 2 || got[0].Name != "regcred" {
			t.Errorf("%s pods: imagePullSecrets %v", what, got)
		}
	}
	var cr rbacv1.ClusterRole
	r.get(t, "ClusterRole/podfs-webhook-podfs-system", &cr)
	found := false
	for _, rule := range cr.Rules {
		if slices.Contains(rule.Resources, "secrets") {
			found = true
			if strings.Join(rule.Verbs, ",") != "get" || strings.Join(rule.ResourceNames, ",") != "regcred,mirror" {
				t.Errorf("secrets rule %+v: want get on regcred and mirror only", rule)
			}
		}
	}
	if !found {
		t.Error("no rule to check the pull secrets")
	}
	r = render(t)
	r.get(t, "ClusterRole/podfs-webhook-podfs-system", &cr)
	for _, rule := range cr.Rules {
		if slices.Contains(rule.Resources, "secrets") {
			t.Errorf("secrets rule without pull secrets: %+v", rule)
		}
	}
}

// TestWebhookDrainable: two replicas spread over nodes, a
// PodDisruptionBudget keeping one, leader election on; no budget for one
// replica (it would block every drain).
func TestWebhookDrainable(t *testing.T) {
	r := render(t)
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("webhook replicas %v, want 2", dep.Spec.Replicas)
	}
	aff := dep.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("affinity %+v, want preferred anti-affinity per node", aff)
	} else if sel := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector; sel == nil ||
		sel.MatchLabels["app.kubernetes.io/component"] != "webhook" {
		t.Errorf("anti-affinity selector %+v does not select the webhook pods", sel)
	}
	if l := dep.Spec.Template.Spec.Containers[0].Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Exec == nil || strings.Join(l.PreStop.Exec.Command, " ") != "sleep 5" {
		t.Errorf("webhook lifecycle %+v: want a preStop sleep 5 so endpoints move before the port closes", l)
	}
	if !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--leader-elect=true") {
		t.Errorf("webhook args %v: no leader election", dep.Spec.Template.Spec.Containers[0].Args)
	}
	var pdb policyv1.PodDisruptionBudget
	r.get(t, "PodDisruptionBudget/podfs-webhook", &pdb)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/component"] != "webhook" {
		t.Errorf("PDB spec %+v, want minAvailable 1 over the webhook pods", pdb.Spec)
	}
	for k, v := range pdb.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("PDB selects %s=%s, which the webhook pods lack", k, v)
		}
	}
	var role rbacv1.Role
	r.get(t, "Role/podfs-webhook", &role)
	if !slices.ContainsFunc(role.Rules, func(rule rbacv1.PolicyRule) bool { return slices.Contains(rule.Resources, "leases") }) {
		t.Error("no RBAC for the leader election Lease")
	}

	r = render(t, "--set", "webhook.replicas=1")
	if _, ok := r["PodDisruptionBudget/podfs-webhook"]; ok {
		t.Error("a PodDisruptionBudget with one replica blocks every drain")
	}
	r = render(t, "--set", "webhook.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=a",
		"--set", "webhook.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists")
	var dep2 appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep2)
	if a := dep2.Spec.Template.Spec.Affinity; a == nil || a.NodeAffinity == nil || a.PodAntiAffinity != nil {
		t.Errorf("a given affinity must replace the default: %+v", a)
	}
}

// TestMonitors: PodMonitor and ServiceMonitor only when the operator's
// CRDs exist and the values ask for them; the sidecar's port reaches the
// webhook's configuration.
func TestMonitors(t *testing.T) {
	on := []string{"--set", "metrics.podMonitor.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"}
	for _, key := range []string{"PodMonitor/podfs-sidecars", "ServiceMonitor/podfs-webhook", "Service/podfs-webhook-metrics"} {
		if _, ok := render(t, on...)[key]; ok {
			t.Errorf("%s rendered without the monitoring.coreos.com/v1 API", key)
		}
		if _, ok := render(t, "--api-versions", "monitoring.coreos.com/v1")[key]; ok {
			t.Errorf("%s rendered while off (the default)", key)
		}
	}
	r := render(t, append(on, "--api-versions", "monitoring.coreos.com/v1")...)
	type endpoint struct {
		Port     string `json:"port"`
		Path     string `json:"path"`
		Interval string `json:"interval"`
	}
	var pm struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			NamespaceSelector struct {
				Any bool `json:"any"`
			} `json:"namespaceSelector"`
			Selector            map[string]any `json:"selector"`
			PodMetricsEndpoints []endpoint     `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	r.get(t, "PodMonitor/podfs-sidecars", &pm)
	if !pm.Spec.NamespaceSelector.Any || len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port != webhook.MetricsPortName {
		t.Errorf("PodMonitor spec %+v: want every namespace, port %s", pm.Spec, webhook.MetricsPortName)
	}
	var svc corev1.Service
	r.get(t, "Service/podfs-webhook-metrics", &svc)
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-webhook", &dep)
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("metrics Service selects %s=%s, which the webhook pods lack", k, v)
		}
	}
	if !slices.ContainsFunc(dep.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" }) {
		t.Error("the webhook container has no port named metrics")
	}
	var sm struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []endpoint `json:"endpoints"`
		} `json:"spec"`
	}
	r.get(t, "ServiceMonitor/podfs-webhook", &sm)
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, which the metrics Service lacks", k, v)
		}
	}
	// The CSI node: a headless Service over its pods' metrics port.
	var csvc corev1.Service
	r.get(t, "Service/podfs-csi-node-metrics", &csvc)
	var ds appsv1.DaemonSet
	r.get(t, "DaemonSet/podfs-csi-node", &ds)
	for k, v := range csvc.Spec.Selector {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("CSI node metrics Service selects %s=%s, which the CSI node pods lack", k, v)
		}
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--metrics-addr=:9568") || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == 9568 }) {
		t.Errorf("CSI node args %v ports %v: want metrics on 9568", c.Args, c.Ports)
	}
	if _, ok := r["ServiceMonitor/podfs-csi-node"]; !ok {
		t.Error("no ServiceMonitor for the CSI node")
	}
	var cm corev1.ConfigMap
	r = render(t, "--set", "sidecar.metricsPort=9999")
	r.get(t, "ConfigMap/podfs-webhook", &cm)
	cfg, err := webhook.ParseConfig([]byte(cm.Data[webhook.ConfigKey]), "unused")
	if err != nil || cfg.MetricsPort == nil || *cfg.MetricsPort != 9999 {
		t.Errorf("sidecar metricsPort: %v, %v", err, cfg)
	}
}
