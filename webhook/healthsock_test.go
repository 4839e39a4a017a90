package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
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

	// A socket left by a previous process is replaced; another file is not.
	stale := filepath.Join(dir, "stale.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	ln2, err := listenHealthSocket(stale)
	if err != nil {
		t.Fatalf("replace a stale socket: %v", err)
	}
	ln2.Close()
	plain := filepath.Join(dir, "file")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenHealthSocket(plain); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("health socket over a regular file: %v", err)
	}
}
