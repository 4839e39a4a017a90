package unixsock

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "a.sock")

	// A socket left by a process that died is replaced.
	stale, err := Listen(sock, 0o750, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err := Listen(sock, 0o750, 0o600)
	if err != nil {
		t.Fatalf("replace a stale socket: %v", err)
	}
	defer l.Close()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode %v, want 0600", got)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	c.Close()

	// Anything else at the path is left alone.
	file := filepath.Join(dir, "data")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, 0o750, 0); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen on a regular file: %v, want a 'not a socket' error", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the regular file was touched: %q, %v", b, err)
	}
}

func TestHTTPClient(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "h.sock")
	l, err := Listen(sock, 0o700, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()

	resp, err := HTTPClient(sock, 5*time.Second).Get("http://any-host/ready")
	if err != nil {
		t.Fatalf("GET over the socket: %v", err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "/ready" {
		t.Errorf("answer %q, want the path /ready", b)
	}
	if _, err := HTTPClient(sock+".missing", time.Second).Get("http://any-host/"); err == nil {
		t.Error("GET on a missing socket succeeded")
	}
}
