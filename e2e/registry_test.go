//go:build e2e

package e2e

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// warnings keeps the admission warnings the API server sends back.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.msgs, "\n")
}

// Scenario "registry pull": hack/e2e.sh pushed the podfs image to an
// authenticated TLS registry on 127.0.0.1 and the chart's pods pulled it
// through the pull secret PODFS_PULL_SECRET (nothing imported it). Here an
// injected pod in a namespace of its own pulls the image again (policy
// Always) with the Secret the webhook added to it — the pod spec as written
// names none — and a pod in a namespace without that Secret is admitted
// with a warning naming it. Wire it into TestE2E with
// t.Run("17-registry-pull", e.testRegistryPull).
func (e *env) testRegistryPull(t *testing.T) {
	secret := mustEnv(t, "PODFS_PULL_SECRET", "the image pull Secret in the release namespace (hack/e2e.sh sets it when the image goes through hack/registry.sh)")
	warn := &warnings{}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.WarningHandler = warn
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := e.kc.CoreV1().Secrets(e.releaseNS).Get(ctxT(t, 30*time.Second), secret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pull secret %s/%s: %v", e.releaseNS, secret, err)
	}

	ns := e.newNamespace(t, "reg", "enabled")
	copySecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: ns}, Type: src.Type, Data: src.Data}
	if _, err := e.kc.CoreV1().Secrets(ns).Create(ctxT(t, 30*time.Second), copySecret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v := e.formatVolume(t, "reg-"+strings.TrimPrefix(ns, "e2e-reg-"))
	_, claim := e.createVolume(t, ns, v, nil)
	p := withClaim(e.appPod("puller", "echo pulled > /data/p.txt && sleep 3600"), claim, "/data")
	p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways // a real pull, with the webhook's Secret
	got, err := kc.CoreV1().Pods(ns).Create(ctxT(t, 30*time.Second), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	if !slices.ContainsFunc(got.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) bool { return r.Name == secret }) {
		t.Fatalf("the injected pod's imagePullSecrets %v lack %s", got.Spec.ImagePullSecrets, secret)
	}
	if w := warn.all(); strings.Contains(w, secret) {
		t.Errorf("a warning about %s although it exists in %s: %s", secret, ns, w)
	}
	e.waitRunning(t, ns, "puller")
	poll(t, 30*time.Second, "the puller's file", func() (bool, error) {
		out, err := e.exec(ns, "puller", "app", "cat", "/data/p.txt")
		return err == nil && out == "pulled", nil
	})

	// Without the Secret: admitted, with a warning naming it.
	bare := e.newNamespace(t, "regb", "enabled")
	_, claim = e.createVolume(t, bare, v, nil)
	if _, err := kc.CoreV1().Pods(bare).Create(ctxT(t, 30*time.Second), withClaim(e.appPod("nosecret", "sleep 3600"), claim, "/data"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod without the pull secret in its namespace: %v", err)
	}
	if w := warn.all(); !strings.Contains(w, `imagePullSecret "`+secret+`"`) || !strings.Contains(w, `namespace "`+bare+`"`) {
		t.Errorf("warnings %q: want %s named as missing in %s", w, secret, bare)
	}
}
