package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
)

// testCert is a certificate for 127.0.0.1 and a client that trusts it
// (httptest's), speaking HTTP/2 like the API server's webhook client.
func testCert(t *testing.T) (tls.Certificate, func(keepAlive bool) *http.Client) {
	t.Helper()
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	cert := ts.TLS.Certificates[0]
	roots := ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()
	return cert, func(keepAlive bool) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: keepAlive, DisableKeepAlives: !keepAlive}
		if !keepAlive {
			// A new TCP connection per request, HTTP/1.1.
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
}

// sharedServer is one PortServer on a shared port; its handler answers
// its name after delay.
type sharedServer struct {
	name   string
	srv    *PortServer
	cancel context.CancelFunc
	done   chan error
	served atomic.Int64
}

func startShared(t *testing.T, name string, port int, cert tls.Certificate, delay time.Duration) *sharedServer {
	t.Helper()
	s := &sharedServer{name: name, done: make(chan error, 1), srv: &PortServer{
		Host: "127.0.0.1", Port: port, ReusePort: true,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
		}},
	}}
	s.srv.Register("/review", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		time.Sleep(delay)
		s.served.Add(1)
		fmt.Fprint(w, name)
	}))
	if err := s.srv.StartedChecker()(nil); err == nil {
		t.Errorf("server %s ready before it started", name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- s.srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-s.done; err != nil {
			t.Errorf("server %s: %v", name, err)
		}
		s.done <- nil
	})
	select {
	case <-s.srv.Bound():
	case err := <-s.done:
		t.Fatalf("server %s did not start: %v", name, err)
	}
	if err := s.srv.StartedChecker()(nil); err != nil {
		t.Errorf("server %s bound but not ready: %v", name, err)
	}
	return s
}

// stop cancels the server and waits until it has drained.
func (s *sharedServer) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	if err := <-s.done; err != nil {
		t.Errorf("server %s stopped with %v", s.name, err)
	}
	s.done <- nil // for the cleanup
}

func review(c *http.Client, url string) (string, int, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(`{"kind":"AdmissionReview"}`))
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), resp.ProtoMajor, nil
}

// TestReusePortSharedPort: two servers with ReusePort bind the same
// 127.0.0.1 port and both answer (the kernel spreads new connections);
// a server without it cannot join them and says why.
func TestReusePortSharedPort(t *testing.T) {
	cert, client := testCert(t)
	port := testenv.FreePort(t)
	a := startShared(t, "a", port, cert, 0)
	b := startShared(t, "b", port, cert, 0)
	if a.srv.Addr().String() != b.srv.Addr().String() {
		t.Fatalf("servers bound %s and %s, want one address", a.srv.Addr(), b.srv.Addr())
	}
	url := "https://" + testenv.Addr(port) + "/review"
	c := client(false) // a new connection per request
	seen := map[string]int{}
	for i := 0; i < 500 && (seen["a"] == 0 || seen["b"] == 0); i++ {
		name, _, err := review(c, url)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		seen[name]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Fatalf("answers per server %v: want both to answer on the shared port", seen)
	}
	t.Logf("answers per server until both answered: %v", seen)

	lone := &PortServer{Host: "127.0.0.1", Port: port, TLSOpts: []func(*tls.Config){func(c *tls.Config) {
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	}}}
	err := lone.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "listen on 127.0.0.1:"+strconv.Itoa(port)) {
		t.Fatalf("a server without SO_REUSEPORT on the shared port: %v, want a listen error", err)
	}
}

// TestReusePortDrainLosesNone: 200 reviews from 10 workers through one
// HTTP/2 client (as the API server sends them); after 50 the server that
// holds the client's connection is shut down. Its reviews in flight
// finish, the client moves to the other server on GOAWAY, and not one
// request fails.
func TestReusePortDrainLosesNone(t *testing.T) {
	cert, client := testCert(t)
	port := testenv.FreePort(t)
	servers := map[string]*sharedServer{
		"a": startShared(t, "a", port, cert, 20*time.Millisecond),
		"b": startShared(t, "b", port, cert, 20*time.Millisecond),
	}
	c := client(true)
	url := "https://" + testenv.Addr(port) + "/review"
	first, proto, err := review(c, url)
	if err != nil {
		t.Fatal(err)
	}
	if proto != 2 {
		t.Fatalf("the server speaks HTTP/%d, want HTTP/2 (GOAWAY on shutdown)", proto)
	}
	victim := servers[first]

	const total, workers, stopAfter = 200, 10, 50
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		failures   []error
		answered   = map[string]int{}
		stopped    = make(chan struct{})
		wg         sync.WaitGroup
	)
	go func() {
		defer close(stopped)
		for done.Load() < stopAfter {
			time.Sleep(time.Millisecond)
		}
		victim.stop(t)
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				name, _, err := review(c, url)
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					answered[name]++
				}
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	<-stopped
	t.Logf("answers per server: %v; server %s shut down after %d", answered, first, stopAfter)
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across the shutdown, first: %v", len(failures), total, failures[0])
	}
	if answered["a"]+answered["b"] != total {
		t.Fatalf("answers %v, want %d", answered, total)
	}
	other := "a"
	if first == "a" {
		other = "b"
	}
	if answered[other] == 0 {
		t.Fatalf("server %s answered nothing after %s stopped: answers %v", other, first, answered)
	}
	if err := victim.srv.StartedChecker()(nil); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("a stopped server's readiness: %v, want shutting down", err)
	}
	// Nothing answers on the stopped server's behalf any more.
	for range 20 {
		if name, _, err := review(client(false), url); err != nil || name != other {
			t.Fatalf("after the drain: %q, %v; want every answer from %s", name, err, other)
		}
	}
}

// TestPortServerNoCertificate: without GetCertificate or a cert dir the
// server refuses to start, saying so.
func TestPortServerNoCertificate(t *testing.T) {
	err := (&PortServer{Host: "127.0.0.1", Port: testenv.FreePort(t)}).Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Fatalf("Start without a certificate: %v", err)
	}
	err = (&PortServer{Host: "127.0.0.1", Port: testenv.FreePort(t), CertDir: t.TempDir()}).Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "certificate in") {
		t.Fatalf("Start with an empty cert dir: %v", err)
	}
}
