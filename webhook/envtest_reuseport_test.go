package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// TestKubeReusePortReplicas: two webhook processes with ReusePort serve
// one 127.0.0.1 port for the API server, each ready through its own health
// socket. One stops during a burst of pod creations: every creation is
// admitted with the sidecar, and the stopped one's socket no longer answers.
func TestKubeReusePortReplicas(t *testing.T) {
	k := testenv.StartKube(t)
	dir := t.TempDir()
	sockA, sockB := filepath.Join(dir, "a", "health.sock"), filepath.Join(dir, "b", "health.sock")
	var base Options
	w := startWorldOn(t, k, "image: podfs:x\n", nil, nil, func(_ *testenv.Kube, _ client.Client, o *Options) {
		o.ReusePort, o.HealthSocket = true, sockA
		base = *o
	})
	if _, ok := w.srv.mgr.GetWebhookServer().(*PortServer); !ok {
		t.Fatalf("ReusePort runs %T, want *PortServer", w.srv.mgr.GetWebhookServer())
	}

	o := base
	o.HealthSocket, o.HealthAddr, o.MetricsAddr, o.LeaderElection = sockB, "0", "0", false
	o.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", "b")
	ctxB, cancelB := context.WithCancel(context.Background())
	b, err := NewServer(ctxB, o)
	must(t, err)
	doneB := make(chan error, 1)
	go func() { doneB <- b.Run(ctxB) }()
	stopB := sync.OnceValue(func() error { cancelB(); return <-doneB })
	t.Cleanup(func() {
		if err := stopB(); err != nil {
			t.Errorf("replica b: %v", err)
		}
	})
	for _, s := range []string{sockA, sockB} {
		testenv.Poll(t, "replica ready through "+s, 30*time.Second, func() error { return ProbeSocket(w.ctx, s, "/readyz", 5*time.Second) })
		if err := ProbeSocket(w.ctx, s, "/healthz", 5*time.Second); err != nil {
			t.Fatalf("liveness through %s: %v", s, err)
		}
	}
	if a, bb := w.srv.mgr.GetWebhookServer().(*PortServer).Addr(), b.mgr.GetWebhookServer().(*PortServer).Addr(); a.String() != bb.String() ||
		a.(*net.TCPAddr).Port != base.Port {
		t.Fatalf("replicas bound %v and %v, want both on port %d", a, bb, base.Port)
	}

	const total, workers, stopAfter = 40, 8, 10
	var (
		mu      sync.Mutex
		errs    []string
		created int
		wg      sync.WaitGroup
		next    = make(chan int)
		stopped = make(chan error, 1)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p := podIn(pod(nil), "inj", fmt.Sprintf("burst-%02d", i))
				err := w.c.Create(w.ctx, p)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Sprintf("%s: %v", p.Name, err))
				case p.Annotations[volumeset.InjectedAnnotation] == "":
					errs = append(errs, p.Name+": not injected")
				}
				created++
				if created == stopAfter {
					go func() { stopped <- stopB() }()
				}
				mu.Unlock()
			}
		}()
	}
	for i := range total {
		next <- i
		time.Sleep(20 * time.Millisecond) // spread the burst over b's shutdown
	}
	close(next)
	wg.Wait()
	if err := <-stopped; err != nil {
		t.Errorf("replica b stopped with %v", err)
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d creations failed while a replica stopped:\n%s", len(errs), total, strings.Join(errs, "\n"))
	}
	if err := ProbeSocket(w.ctx, sockB, "/readyz", time.Second); err == nil {
		t.Error("the stopped replica's health socket still answers")
	}
	if err := ProbeSocket(w.ctx, sockA, "/readyz", 5*time.Second); err != nil {
		t.Errorf("the remaining replica: %v", err)
	}
}
