package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/healthz"

	"podfs.io/podfs/pkg/unixsock"
)

// Health probes on a unix socket. With replicas sharing a host port
// (SO_REUSEPORT) a kubelet HTTP probe on a TCP port could be answered by
// another replica; a socket in the pod's own emptyDir, probed by an exec
// probe (`podfs probe`), always reaches this replica.

// listenHealthSocket opens the socket at path, replacing a stale one a
// previous process of the pod left behind.
func listenHealthSocket(path string) (net.Listener, error) {
	ln, err := unixsock.Listen(path, 0o700, 0)
	if err != nil {
		return nil, fmt.Errorf("health socket: %w", err)
	}
	return ln, nil
}

// healthHandler serves /healthz and /readyz (and /readyz/NAME for one
// check) as controller-runtime's probe server does.
func healthHandler(live, ready map[string]healthz.Checker) http.Handler {
	mux := http.NewServeMux()
	for path, checks := range map[string]map[string]healthz.Checker{"/healthz": live, "/readyz": ready} {
		h := http.StripPrefix(path, &healthz.Handler{Checks: checks})
		mux.Handle(path, h)
		mux.Handle(path+"/", h)
	}
	return mux
}

// ProbeSocket asks the health server on the unix socket for path (/healthz
// or /readyz) and returns an error saying what failed unless it answers 200.
func ProbeSocket(ctx context.Context, socket, path string, timeout time.Duration) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("probe path %q: want an absolute path such as /readyz or /healthz", path)
	}
	c := unixsock.HTTPClient(socket, timeout)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://podfs-webhook"+path+"?verbose", nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("probe %s: no health socket at %s (is the webhook running with --health-socket %s?)", path, socket, socket)
		}
		return fmt.Errorf("probe %s on %s: %w", path, socket, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s on %s: %s: %s", path, socket, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
