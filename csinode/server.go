package csinode

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"podfs.io/podfs/pkg/unixsock"
)

// stopTimeout bounds a graceful stop: a call stuck on a hung FUSE mount must
// not keep the plugin from exiting.
const stopTimeout = 10 * time.Second

// Server is a running plugin: the CSI services on the endpoint and, when
// configured, the registration service in kubelet's plugins_registry.
type Server struct {
	d        *Driver
	servers  []*grpc.Server // registration first: it goes away first on Stop
	sockets  []string
	done     chan struct{}
	failOnce sync.Once
	err      error
	stopOnce sync.Once
}

// Run serves until ctx ends or the server fails (kubelet refused the
// registration, a listener broke), then stops cleanly.
func (d *Driver) Run(ctx context.Context) error {
	s, err := d.Start()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		d.log.Info("stopping", "reason", context.Cause(ctx))
	case <-s.Done():
	}
	s.Stop()
	return s.Err()
}

// Start listens on the CSI endpoint (and on the registration socket) and serves in the background.
func (d *Driver) Start() (*Server, error) {
	if err := d.recover(context.Background()); err != nil {
		return nil, err
	}
	s := &Server{d: d, done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()

	lis, err := s.listen(d.cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(logCalls(d.log)))
	csi.RegisterIdentityServer(srv, &identityServer{d: d})
	csi.RegisterNodeServer(srv, &nodeServer{d: d})
	s.servers = append(s.servers, srv)
	s.serve(srv, lis)

	if dir := d.cfg.RegistrationDir; dir != "" {
		lis, err := s.listen(RegistrationSocket(dir))
		if err != nil {
			return nil, err
		}
		reg := grpc.NewServer()
		registerapi.RegisterRegistrationServer(reg, &registrationServer{
			endpoint: d.cfg.Endpoint,
			log:      d.log,
			refused:  s.fail,
		})
		s.servers = append([]*grpc.Server{reg}, s.servers...)
		s.serve(reg, lis)
	}
	ok = true
	d.log.Info("serving", "driver", DriverName, "endpoint", d.cfg.Endpoint, "node_id", d.cfg.NodeID,
		"kubelet_dir", d.cfg.KubeletDir, "registration_dir", d.cfg.RegistrationDir)
	return s, nil
}

// Done is closed when the server failed or was stopped.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err says why the server failed; nil after a plain Stop.
func (s *Server) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Stop deregisters from kubelet (the registration socket goes away), lets
// calls in flight finish for a while, and removes the sockets.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		for _, srv := range s.servers {
			stopGracefully(srv)
		}
		for _, p := range s.sockets {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.d.log.Warn("remove socket", "path", p, "err", err)
			}
		}
		s.d.closeAll()
		s.failOnce.Do(func() { close(s.done) })
	})
}

func (s *Server) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.done)
	})
}

func (s *Server) serve(srv *grpc.Server, lis net.Listener) {
	go func() {
		if err := srv.Serve(lis); err != nil {
			s.fail(fmt.Errorf("serve on %s: %w", lis.Addr(), err))
		}
	}()
}

// listen opens a unix socket at path, replacing a stale one a previous run
// left behind, and lets only root use it: whoever can call the plugin can
// have it mount as root.
func (s *Server) listen(path string) (net.Listener, error) {
	lis, err := unixsock.Listen(path, 0o750, 0o600)
	if err != nil {
		return nil, err
	}
	s.sockets = append(s.sockets, path)
	return lis, nil
}

func stopGracefully(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		srv.Stop()
		<-done
	}
}
