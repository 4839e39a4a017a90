package webhook

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// TestProbeSocket: `podfs probe` through the health socket passes on a
// healthy server and otherwise says what failed: the failing check and its
// reason, a missing socket and the flag to check, a bad path.
func TestProbeSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "health.sock")
	ctx := context.Background()
	err := ProbeSocket(ctx, sock, "/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "no health socket at "+sock) || !strings.Contains(err.Error(), "--health-socket") {
		t.Fatalf("probe without a server: %v", err)
	}

	certLoaded := errors.New("no serving certificate yet")
	ln, err := listenHealthSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: healthHandler(
		map[string]healthz.Checker{"ping": healthz.Ping},
		map[string]healthz.Checker{"webhook": func(*http.Request) error { return certLoaded }})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	if err := ProbeSocket(ctx, sock, "/healthz", time.Second); err != nil {
		t.Errorf("liveness of a live server: %v", err)
	}
	err = ProbeSocket(ctx, sock, "/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "webhook failed") {
		t.Errorf("readiness with a failing check: %v, want the check named", err)
	}
	certLoaded = nil
	if err := ProbeSocket(ctx, sock, "/readyz", time.Second); err != nil {
		t.Errorf("readiness once the check passes: %v", err)
	}
	if err := ProbeSocket(ctx, sock, "readyz", time.Second); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("relative path: %v", err)
	}
}
