package webhook

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// warningCollector keeps the warnings the API server sends.
type warningCollector struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningCollector) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warningCollector) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// TestKubeReviewFindings: through a real API server, an unknown podfs.io/
// annotation reaches kubectl as a warning, an unknown mount option refuses
// the pod, and a node with an old kubelet turns native placement off.
func TestKubeReviewFindings(t *testing.T) {
	k := testenv.StartKube(t)
	w := startWorldOn(t, k, "image: podfs:x\n", nil, nil)
	ctx := w.ctx
	warns := &warningCollector{}
	cfg := rest.CopyConfig(k.Config)
	cfg.WarningHandler = warns
	c, err := client.New(cfg, client.Options{Scheme: w.c.Scheme()})
	must(t, err)

	p := podIn(pod(nil), "inj", "typo")
	p.Annotations = map[string]string{"podfs.io/mount-option": "ro"}
	must(t, c.Create(ctx, p))
	got := strings.Join(warns.take(), "\n")
	if !strings.Contains(got, "unknown annotation podfs.io/mount-option is ignored; known podfs.io annotations: podfs.io/apps-done, podfs.io/injected, podfs.io/mount-options") {
		t.Fatalf("warnings %q: want the unknown key named with the known ones", got)
	}
	if p.Annotations[volumeset.InjectedAnnotation] != "native" {
		t.Fatalf("pod with a typo annotation: injected %q, want native", p.Annotations[volumeset.InjectedAnnotation])
	}

	p = podIn(pod(nil), "inj", "bad-option")
	p.Annotations = map[string]string{AnnMountOptions: "allow_other,writeback_cache"}
	err = c.Create(ctx, p)
	if err == nil || !strings.Contains(err.Error(), `unknown mount option "writeback_cache"; known options: allow_other`) {
		t.Fatalf("pod with an unknown mount option: %v, want a refusal naming it", err)
	}

	// A node whose kubelet is 1.28: pods not bound to a node get an
	// ordinary-container sidecar; a pod bound to a 1.33 node stays native.
	for name, v := range map[string]string{"old": "v1.28.15", "new": "v1.33.1"} {
		n := node(name, "", nil)
		must(t, w.c.Create(ctx, n))
		n.Status.NodeInfo.KubeletVersion = v
		must(t, w.c.Status().Update(ctx, n))
	}
	i := 0
	testenv.Poll(t, "the webhook sees the old kubelet", 30*time.Second, func() error {
		i++
		p := podIn(pod(nil), "inj", fmt.Sprintf("unbound-%d", i))
		must(t, c.Create(ctx, p))
		if v := p.Annotations[volumeset.InjectedAnnotation]; v != "container" {
			return fmt.Errorf("injected %q", v)
		}
		return nil
	})
	p = podIn(pod(nil), "inj", "bound-new")
	p.Spec.NodeName = "new"
	must(t, c.Create(ctx, p))
	if v := p.Annotations[volumeset.InjectedAnnotation]; v != "native" {
		t.Fatalf("pod bound to a kubelet 1.33 node: injected %q, want native", v)
	}
}

// chartUser returns an asUser for startWorldAs: the webhook runs as a user
// with the permissions the Helm chart grants it (self-managed TLS without
// the Secret rules, apps-done off), plus get on the Secrets pullSecrets.
func chartUser(t *testing.T, pullSecrets ...string) func(k *testenv.Kube, c client.Client) *rest.Config {
	return func(k *testenv.Kube, c client.Client) *rest.Config {
		ctx := context.Background()
		rules := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "persistentvolumeclaims", "persistentvolumes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{whMWC}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
		}
		if len(pullSecrets) > 0 {
			rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: pullSecrets, Verbs: []string{"get"}})
		}
		must(t, c.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "podfs-webhook"}, Rules: rules}))
		must(t, c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "podfs-webhook"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "podfs-webhook"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "podfs-webhook"}}}))
		must(t, c.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: whNamespace, Name: "podfs-webhook"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		}}))
		must(t, c.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: whNamespace, Name: "podfs-webhook"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "podfs-webhook"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "podfs-webhook"}}}))
		u, err := k.Env.AddUser(envtest.User{Name: "podfs-webhook"}, nil)
		must(t, err)
		return u.Config()
	}
}

// TestKubePullSecrets: the configured imagePullSecrets reach the injected
// pod once each, and a pod in a namespace without one of them is admitted
// with a warning naming it, with the webhook allowed to get only those
// Secrets' names.
func TestKubePullSecrets(t *testing.T) {
	k := testenv.StartKube(t)
	w := startWorldOn(t, k, "image: podfs:x\nimagePullSecrets: [{name: regcred}, {name: mirror}]\n", nil, chartUser(t, "regcred", "mirror"))
	ctx := w.ctx
	warns := &warningCollector{}
	cfg := rest.CopyConfig(k.Config)
	cfg.WarningHandler = warns
	c, err := client.New(cfg, client.Options{Scheme: w.c.Scheme()})
	must(t, err)
	for _, ns := range []string{"inj", "sls"} {
		must(t, w.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "regcred"}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}}))
	}
	must(t, w.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "inj", Name: "mirror"}, StringData: map[string]string{"x": "y"}}))

	p := podIn(pod(nil), "inj", "has-both")
	p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "app-pull"}, {Name: "regcred"}}
	must(t, c.Create(ctx, p))
	if got := fmt.Sprint(p.Spec.ImagePullSecrets); got != "[{app-pull} {regcred} {mirror}]" {
		t.Fatalf("imagePullSecrets %s, want the pod's then the missing configured ones", got)
	}
	if ws := warns.take(); len(ws) != 0 {
		t.Fatalf("warnings %q with every Secret present", ws)
	}

	p = podIn(pod(nil), "sls", "lacks-mirror")
	must(t, c.Create(ctx, p))
	ws := strings.Join(warns.take(), "\n")
	if !strings.Contains(ws, `imagePullSecret "mirror", added for the podfs sidecar's image, does not exist in namespace "sls"`) || strings.Contains(ws, `"regcred"`) {
		t.Fatalf("warnings %q: want mirror named as missing in sls, regcred not", ws)
	}
	if got := fmt.Sprint(p.Spec.ImagePullSecrets); got != "[{regcred} {mirror}]" {
		t.Fatalf("imagePullSecrets %s", got)
	}
	// Created now, it counts at once (a miss is not remembered).
	must(t, w.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "sls", Name: "mirror"}, StringData: map[string]string{"x": "y"}}))
	must(t, c.Create(ctx, podIn(pod(nil), "sls", "after")))
	if ws := warns.take(); len(ws) != 0 {
		t.Fatalf("warnings %q after creating the Secret", ws)
	}
}
