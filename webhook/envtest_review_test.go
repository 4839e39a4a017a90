package webhook

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	poll(t, "the webhook sees the old kubelet", 30*time.Second, func() error {
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
