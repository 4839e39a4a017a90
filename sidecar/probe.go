package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"podfs.io/podfs/pkg/unixsock"
)

// serveProbe answers GET /ready on a unix socket: 200 once every volume is
// mounted, 503 with the phase (and reason) otherwise.
func serveProbe(socket string, st *state) (io.Closer, error) {
	l, err := unixsock.Listen(socket, 0o755, 0)
	if err != nil {
		return nil, fmt.Errorf("probe socket: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		phase, reason := st.get()
		if phase == "ready" {
			_, _ = io.WriteString(w, "ready\n")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		if reason != "" {
			phase += ": " + reason
		}
		_, _ = io.WriteString(w, phase+"\n")
	})}
	go func() { _ = srv.Serve(l) }()
	return closerFunc(func() error {
		err := srv.Close()
		_ = os.Remove(socket)
		return err
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// ErrNotReady is returned by Probe while the sidecar is still mounting.
var ErrNotReady = errors.New("not ready")

// Probe asks the sidecar on socket whether every volume is served. With
// wait > 0 it retries until ready, until the sidecar reports a failure, or
// until wait passes (the postStart hook of non-native sidecars).
func Probe(ctx context.Context, socket string, wait time.Duration) error {
	c := unixsock.HTTPClient(socket, 3*time.Second)
	deadline := time.Now().Add(wait)
	for {
		err := probeOnce(ctx, c)
		if err == nil || !errors.Is(err, ErrNotReady) || wait <= 0 || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond): // a postStart hook waits on this: keep pod start-up tight
		}
	}
}

func probeOnce(ctx context.Context, c *http.Client) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://sidecar/ready", nil)
	r, err := c.Do(req)
	if err != nil {
		// Not listening yet (starting) counts as not ready.
		return fmt.Errorf("%w: sidecar not answering: %v", ErrNotReady, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	msg := strings.TrimSpace(string(b))
	switch {
	case r.StatusCode == http.StatusOK:
		return nil
	case strings.HasPrefix(msg, "failed"):
		return errors.New(msg)
	default:
		return fmt.Errorf("%w: %s", ErrNotReady, msg)
	}
}
