package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// PortServer is a controller-runtime webhook server (crwebhook.Server)
// whose listener can be opened with SO_REUSEPORT, so that several replicas
// on one node's host network share the port and the kernel spreads
// connections among them. controller-runtime's DefaultServer opens its
// listener itself, with no hook for socket options.
//
// Unlike DefaultServer's, its StartedChecker does not dial the port: with a
// shared port the dial could reach another replica. It reports this
// server's own state: serving, not shutting down, a certificate loaded.
//
// When its context ends it stops accepting (the listener leaves the
// reuseport group, so new connections go to the other replicas), tells
// HTTP/2 clients to go away (GOAWAY) and waits for the reviews in flight.
type PortServer struct {
	Host      string
	Port      int // 0 = any free port (tests; see Addr)
	ReusePort bool
	// TLSOpts edit the TLS configuration; one of them may set
	// GetCertificate. Without it the certificate is CertDir's tls.crt and
	// tls.key, reloaded when they change.
	TLSOpts []func(*tls.Config)
	CertDir string
	// ShutdownTimeout bounds the wait for reviews in flight; default 1m.
	ShutdownTimeout time.Duration
	Log             *slog.Logger

	mu       sync.Mutex
	mux      *http.ServeMux
	paths    map[string]bool
	addr     net.Addr
	getCert  func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	serving  bool
	stopping bool
	bound    chan struct{}
}

var _ crwebhook.Server = (*PortServer)(nil)

func (s *PortServer) init() {
	if s.mux == nil {
		s.mux = http.NewServeMux()
		s.paths = map[string]bool{}
		s.bound = make(chan struct{})
	}
}

// NeedLeaderElection is false: every replica serves admissions.
func (*PortServer) NeedLeaderElection() bool { return false }

// Register serves hook at path. It panics on a path registered twice, as
// DefaultServer does (a programming error).
func (s *PortServer) Register(path string, hook http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if s.paths[path] {
		panic(fmt.Sprintf("webhook path %s registered twice", path))
	}
	s.paths[path] = true
	s.mux.Handle(path, hook)
}

// WebhookMux is the mux the hooks are registered on.
func (s *PortServer) WebhookMux() *http.ServeMux {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	return s.mux
}

// Addr is the bound address once Start has opened the listener.
func (s *PortServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Bound is closed once the listener is open.
func (s *PortServer) Bound() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	return s.bound
}

// Start serves until ctx ends, then drains (see PortServer).
func (s *PortServer) Start(ctx context.Context) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.mu.Lock()
	s.init()
	mux := s.mux
	s.mu.Unlock()

	cfg := &tls.Config{NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	for _, op := range s.TLSOpts {
		op(cfg)
	}
	if cfg.GetCertificate == nil {
		if s.CertDir == "" {
			return errors.New("webhook server: no certificate (give a cert dir or a GetCertificate)")
		}
		cw, err := certwatcher.New(filepath.Join(s.CertDir, "tls.crt"), filepath.Join(s.CertDir, "tls.key"))
		if err != nil {
			return fmt.Errorf("webhook server certificate in %s: %w", s.CertDir, err)
		}
		cfg.GetCertificate = cw.GetCertificate
		go func() {
			if err := cw.Start(ctx); err != nil {
				log.Error("certificate watcher stopped", "dir", s.CertDir, "err", err)
			}
		}()
	}

	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	lc := net.ListenConfig{}
	if s.ReusePort {
		lc.Control = reusePortControl
	}
	ln, err := lc.Listen(context.WithoutCancel(ctx), "tcp", addr)
	if err != nil {
		if s.ReusePort {
			return fmt.Errorf("listen on %s with SO_REUSEPORT (another process on the port that did not set it, or runs as another user?): %w", addr, err)
		}
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         cfg,
		ReadHeaderTimeout: 32 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.addr, s.getCert, s.serving = ln.Addr(), cfg.GetCertificate, true
	close(s.bound)
	s.mu.Unlock()
	log.Info("serving webhook", "addr", ln.Addr().String(), "reuse_port", s.ReusePort)

	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		timeout := s.ShutdownTimeout
		if timeout <= 0 {
			timeout = time.Minute
		}
		start := time.Now()
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		// Closes the listener first, then sends GOAWAY on HTTP/2
		// connections and waits for the requests in flight.
		if err := srv.Shutdown(sctx); err != nil {
			log.Error("webhook server did not drain", "timeout", timeout, "err", err)
			return
		}
		log.Info("webhook server drained", "took", time.Since(start).Round(time.Millisecond))
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve webhook on %s: %w", addr, err)
	}
	<-drained
	return nil
}

// StartedChecker is healthy while the server accepts connections with a
// certificate loaded.
func (s *PortServer) StartedChecker() healthz.Checker {
	return func(*http.Request) error {
		s.mu.Lock()
		serving, stopping, getCert := s.serving, s.stopping, s.getCert
		s.mu.Unlock()
		switch {
		case !serving:
			return errors.New("the webhook server has not started yet")
		case stopping:
			return errors.New("the webhook server is shutting down")
		}
		c, err := getCert(&tls.ClientHelloInfo{})
		if err != nil {
			return fmt.Errorf("no serving certificate: %w", err)
		}
		if c == nil {
			return errors.New("no serving certificate loaded")
		}
		return nil
	}
}
