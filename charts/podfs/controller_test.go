package chart_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"

	"podfs.io/podfs/provisioner"
)

// TestController: the provisioning controller runs unprivileged with no
// host paths, elects a leader, and may do what provisioning needs and no
// more (Secrets: get only).
func TestController(t *testing.T) {
	r := render(t)
	var dep appsv1.Deployment
	r.get(t, "Deployment/podfs-controller", &dep)
	spec := dep.Spec.Template.Spec
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1", dep.Spec.Replicas)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot || spec.HostNetwork {
		t.Errorf("pod security context %+v hostNetwork %v: want non-root, no host network", spec.SecurityContext, spec.HostNetwork)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s is a hostPath", v.Name)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("container security context %+v: want read-only root, no escalation, drop ALL", sc)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"controller", "--leader-elect=true", "--leader-election-id=podfs-controller", "--health-addr=:8081"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Error("no probes")
	}
	for _, e := range c.Env {
		if strings.Contains(strings.ToLower(e.Name), "url") || e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("env %s: volume credentials come from the StorageClasses' Secrets, not the controller's environment", e.Name)
		}
	}

	var cr rbacv1.ClusterRole
	r.get(t, "ClusterRole/podfs-controller-podfs-system", &cr)
	want := map[string][]string{
		"/persistentvolumeclaims":        {"get", "list", "watch", "update"},
		"/persistentvolumeclaims/status": {"update", "patch"},
		"/persistentvolumes":             {"get", "list", "watch", "create", "update", "patch", "delete"},
		"storage.k8s.io/storageclasses":  {"get", "list", "watch"},
		"/secrets":                       {"get"},
		"/events":                        {"create", "patch"},
		"events.k8s.io/events":           {"create", "patch"},
	}
	if got := ruleVerbs(cr.Rules); !equalVerbs(got, want) {
		t.Errorf("ClusterRole grants %v, want exactly %v", got, want)
	}
	var role rbacv1.Role
	r.get(t, "Role/podfs-controller", &role)
	if got := ruleVerbs(role.Rules); !slices.Equal(got["coordination.k8s.io/leases"], []string{"get", "create", "update", "patch"}) {
		t.Errorf("Role grants %v: want leases for leader election", got)
	}
	var crb rbacv1.ClusterRoleBinding
	r.get(t, "ClusterRoleBinding/podfs-controller-podfs-system", &crb)
	if len(crb.Subjects) != 1 || crb.Subjects[0].Name != spec.ServiceAccountName || crb.RoleRef.Name != cr.Name {
		t.Errorf("binding %+v does not bind the controller's ServiceAccount %s to %s", crb, spec.ServiceAccountName, cr.Name)
	}
	if _, ok := r["StorageClass/podfs"]; ok {
		t.Error("a StorageClass is rendered by default")
	}

	if out, err := helm(t, "template", "podfs", ".", "--kube-version", kubeVersion, "--set", "controller.replicas=2",
		"--set", "controller.leaderElection=false"); err == nil || !strings.Contains(out, "controller.leaderElection") {
		t.Errorf("two replicas without leader election rendered, or the error does not say what to set: %v\n%s", err, out)
	}
	// Secrets in named namespaces only.
	r = render(t, "--set", "controller.secretNamespaces={podfs-system,storage}")
	r.get(t, "ClusterRole/podfs-controller-podfs-system", &cr)
	if _, ok := ruleVerbs(cr.Rules)["/secrets"]; ok {
		t.Error("secretNamespaces set, but the ClusterRole still reads Secrets everywhere")
	}
	// One Role per namespace (same name: the rendered map keeps the last).
	var secRole rbacv1.Role
	r.get(t, "Role/podfs-controller-secrets", &secRole)
	if got := ruleVerbs(secRole.Rules); len(got) != 1 || !slices.Equal(got["/secrets"], []string{"get"}) || secRole.Namespace != "storage" {
		t.Errorf("secrets Role in %s grants %v, want get on secrets", secRole.Namespace, got)
	}
	out, err := helm(t, "template", "podfs", ".", "-n", "podfs-system", "--kube-version", kubeVersion,
		"--set", "controller.secretNamespaces={podfs-system,storage}", "-s", "templates/controller-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "name: podfs-controller-secrets\n  namespace: "); n != 4 { // a Role and a RoleBinding each
		t.Errorf("%d secrets Roles and RoleBindings rendered, want 4:\n%s", n, out)
	}
	// Off: nothing of it.
	r = render(t, "--set", "controller.enabled=false")
	for k := range r {
		if strings.Contains(k, "podfs-controller") {
			t.Errorf("controller.enabled=false still renders %s", k)
		}
	}
	// On the single-node cluster: loopback ports of its own.
	r = render(t, "-f", "values-single-node.yaml")
	r.get(t, "Deployment/podfs-controller", &dep)
	args = strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " ")
	if !dep.Spec.Template.Spec.HostNetwork || !strings.Contains(args, "--health-addr=127.0.0.1:9446") {
		t.Errorf("single-node values: hostNetwork %v args %q", dep.Spec.Template.Spec.HostNetwork, args)
	}
}

func ruleVerbs(rules []rbacv1.PolicyRule) map[string][]string {
	out := map[string][]string{}
	for _, rule := range rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				out[g+"/"+res] = append(out[g+"/"+res], rule.Verbs...)
			}
		}
	}
	return out
}

func equalVerbs(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestStorageClass: the optional class names the controller's Secret and
// the pods' Secret in the claim's namespace, with parameters the
// controller accepts.
func TestStorageClass(t *testing.T) {
	if out, err := helm(t, "template", "podfs", ".", "--kube-version", kubeVersion, "--set", "storageClass.create=true"); err == nil ||
		!strings.Contains(out, "storageClass.provisionerSecret.name") {
		t.Errorf("a class without its Secret rendered or the error does not say what to set: %v\n%s", err, out)
	}
	r := render(t, "--set", "storageClass.create=true", "--set", "storageClass.provisionerSecret.name=podfs-volume",
		"--set", "storageClass.onDelete=archive", "--set", "storageClass.mountOptions={allow_other}")
	var sc storagev1.StorageClass
	r.get(t, "StorageClass/podfs", &sc)
	p := sc.Parameters
	switch {
	case sc.Provisioner != provisioner.DriverName:
		t.Errorf("provisioner %q", sc.Provisioner)
	case p[provisioner.ParamProvisionerSecretName] != "podfs-volume" || p[provisioner.ParamProvisionerSecretNamespace] != "podfs-system":
		t.Errorf("provisioner Secret %v", p)
	case p[provisioner.ParamNodePublishSecretName] != "podfs-volume" || p[provisioner.ParamNodePublishSecretNamespace] != "podfs-system":
		t.Errorf("node-publish Secret %v", p)
	case p[provisioner.ParamOnDelete] != "archive" || !slices.Equal(sc.MountOptions, []string{"allow_other"}):
		t.Errorf("onDelete %q mountOptions %v", p[provisioner.ParamOnDelete], sc.MountOptions)
	case sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion || sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete:
		t.Errorf("allowVolumeExpansion %v reclaimPolicy %v", sc.AllowVolumeExpansion, sc.ReclaimPolicy)
	}
	if err := provisioner.CheckClass(&sc); err != nil {
		t.Errorf("the controller refuses the chart's class: %v", err)
	}
	// Serverless pods: the Secret in the claim's namespace.
	r = render(t, "--set", "storageClass.create=true", "--set", "storageClass.provisionerSecret.name=podfs-volume",
		"--set", "storageClass.nodePublishSecret.namespace=${pvc.namespace}")
	r.get(t, "StorageClass/podfs", &sc)
	if got := sc.Parameters[provisioner.ParamNodePublishSecretNamespace]; got != "${pvc.namespace}" {
		t.Errorf("node-publish namespace %q, want ${pvc.namespace}", got)
	}
	if err := provisioner.CheckClass(&sc); err != nil {
		t.Errorf("the controller refuses the chart's serverless class: %v", err)
	}
	// The example's class too.
	b, err := os.ReadFile("examples/storageclass.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, doc := range strings.Split(string(b), "\n---") {
		var ex storagev1.StorageClass
		if err := yaml.Unmarshal([]byte(doc), &ex); err != nil || ex.Kind != "StorageClass" {
			continue
		}
		found = true
		if err := provisioner.CheckClass(&ex); err != nil {
			t.Errorf("examples/storageclass.yaml: %v", err)
		}
	}
	if !found {
		t.Error("examples/storageclass.yaml has no StorageClass")
	}
	if out, err := helm(t, "template", "podfs", ".", "--kube-version", kubeVersion, "--set", "storageClass.onDelete=shred"); err == nil || !strings.Contains(out, "onDelete") {
		t.Errorf("onDelete=shred: %v\n%s", err, out)
	}
}
