package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// TestKubeCABundleRepaired: a MutatingWebhookConfiguration re-applied
// without its caBundle (helm template | kubectl apply, a GitOps sync) while
// the webhook runs is patched again at once, not at the next hourly check.
func TestKubeCABundleRepaired(t *testing.T) {
	w := startWorld(t, "image: podfs:x\n", nil)
	ctx, c := w.ctx, w.c
	for round := range 2 {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		must(t, c.Get(ctx, types.NamespacedName{Name: whMWC}, &mwc))
		mwc.Webhooks[0].ClientConfig.CABundle = nil
		must(t, c.Update(ctx, &mwc))
		testenv.Poll(t, fmt.Sprintf("caBundle patched again (round %d)", round), 30*time.Second, func() error {
			must(t, c.Get(ctx, types.NamespacedName{Name: whMWC}, &mwc))
			if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, w.srv.Certs.CABundle()) {
				return errors.New("caBundle differs from the webhook's CA")
			}
			return nil
		})
	}
	p := podIn(pod(nil), "inj", "after-repair")
	must(t, c.Create(ctx, p))
	if _, ok := p.Annotations[volumeset.InjectedAnnotation]; !ok {
		t.Fatal("pod not injected after the caBundle was repaired")
	}
}

// replica is one more webhook process on the world's API server.
type replica struct {
	srv    *Server
	cancel context.CancelFunc
	done   chan error
}

func startReplica(t *testing.T, k *testenv.Kube, name string) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	health := testenv.Addr(testenv.FreePort(t))
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", name)
	srv, err := NewServer(ctx, Options{
		RestConfig: k.Config, Namespace: whNamespace, ConfigMapName: whConfigMap, DefaultImage: "podfs:default",
		Host: "127.0.0.1", Port: testenv.FreePort(t), CASecretName: whCASecret, WebhookConfig: whMWC,
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, NativeSidecar: "auto",
		MetricsAddr: "0", HealthAddr: health, AppsDone: true, Log: log,
		LeaderElection: true, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 250 * time.Millisecond,
	})
	must(t, err)
	r := &replica{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("replica %s: %v", name, err)
		}
	})
	testenv.Poll(t, name+" ready", 30*time.Second, func() error {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	return r
}

func elected(r *replica) bool {
	select {
	case <-r.srv.Elected():
		return true
	default:
		return false
	}
}

// TestKubeLeaderElection: of two webhook replicas exactly one leads (holds
// the Lease, runs apps-done and the CA rotation); when it stops, the other
// takes over. Both serve admissions all along.
func TestKubeLeaderElection(t *testing.T) {
	k := testenv.StartKube(t)
	// The world's own webhook stays out of the election.
	w := startWorldOn(t, k, "image: podfs:x\n", nil, nil, func(_ *testenv.Kube, _ client.Client, o *Options) { o.LeaderElection = false })
	a, b := startReplica(t, k, "a"), startReplica(t, k, "b")
	var leader, other *replica
	select {
	case <-a.srv.Elected():
		leader, other = a, b
	case <-b.srv.Elected():
		leader, other = b, a
	case <-time.After(60 * time.Second):
		t.Fatal("no replica elected in a minute")
	}
	if elected(other) {
		t.Fatal("both replicas lead")
	}
	var lease coordinationv1.Lease
	must(t, w.c.Get(w.ctx, types.NamespacedName{Namespace: whNamespace, Name: "podfs-webhook"}, &lease))
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Fatalf("lease %s/podfs-webhook has no holder", whNamespace)
	}
	holder := *lease.Spec.HolderIdentity

	leader.cancel() // a drain: it releases the Lease on the way out
	if err := <-leader.done; err != nil {
		t.Fatalf("leader stopped with %v", err)
	}
	leader.done <- nil // for its cleanup
	select {
	case <-other.srv.Elected():
	case <-time.After(60 * time.Second):
		t.Fatal("the other replica did not take over in a minute")
	}
	must(t, w.c.Get(w.ctx, types.NamespacedName{Namespace: whNamespace, Name: "podfs-webhook"}, &lease))
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == holder {
		t.Fatalf("lease holder %v after the hand-over, was %s", lease.Spec.HolderIdentity, holder)
	}
}
