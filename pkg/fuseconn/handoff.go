package fuseconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Handoff is a server's side of a holder's socket: the connection it was
// given, and a link to the holder that reconnects (and gives the
// connection back to a restarted holder) until Close.
type Handoff struct {
	Volume Volume
	// Conn is this process's copy of the FUSE connection; Close closes it.
	Conn *os.File
	// Init is the connection's saved INIT exchange; nil when the kernel's
	// INIT request has not been read yet (the first server).
	Init []byte
	// Clean is false when a previous server served the connection and did
	// not report a clean detach: it may have died with acknowledged writes
	// uncommitted.
	Clean bool

	dir, name string
	log       *slog.Logger

	mu       sync.Mutex
	sess     *session
	status   *Status
	stats    func(context.Context) (Stats, error)
	replaced bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// Dial connects to the socket of the volume called name in dir, retrying
// while it is missing or refuses until ctx ends, and receives the
// connection. log may be nil (slog.Default).
func Dial(ctx context.Context, dir, name string, log *slog.Logger) (*Handoff, error) {
	if log == nil {
		log = slog.Default()
	}
	h := &Handoff{dir: dir, name: name, log: log.With("volume", name), stop: make(chan struct{})}
	s, err := h.connect(ctx)
	if err != nil {
		return nil, err
	}
	h.sess = s
	h.wg.Add(1)
	go h.run(s)
	return h, nil
}

// connect dials until ctx ends and runs the hello exchange.
func (h *Handoff) connect(ctx context.Context) (*session, error) {
	delay := 50 * time.Millisecond
	for {
		s, err := h.greet()
		if err == nil {
			return s, nil
		}
		if !retryable(err) {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connect to the holder of volume %q in %s: %w (last error: %v)", h.name, h.dir, ctx.Err(), err)
		case <-h.stop:
			t.Stop()
			return nil, fmt.Errorf("connect to the holder of volume %q: closed", h.name)
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// retryable errors mean the holder is not listening (yet, or again).
func retryable(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EAGAIN)
}

func (h *Handoff) greet() (*session, error) {
	p, err := dialIn(h.dir, SocketName(h.name))
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	hello := &message{Type: msgHello, Volume: h.name, HaveConn: h.Conn != nil, Init: h.Init, Status: h.status}
	h.mu.Unlock()
	s, err := h.exchange(p, hello)
	if err != nil {
		p.close()
		return nil, err
	}
	return s, nil
}

func (h *Handoff) exchange(p *peer, hello *message) (*session, error) {
	if err := p.send(hello, nil); err != nil {
		return nil, err
	}
	m, f, err := p.recv(time.Now().Add(opTimeout))
	if err != nil {
		return nil, fmt.Errorf("hello to the holder of volume %q: %w", h.name, err)
	}
	if m.Volume != h.name {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("%w: the holder answered for volume %q, want %q", ErrProtocol, m.Volume, h.name)
	}
	switch m.Type {
	case msgConn:
		if f == nil {
			return nil, fmt.Errorf("%w: the holder's conn message carries no descriptor", ErrProtocol)
		}
		if err := isFUSE(f); err != nil {
			f.Close()
			return nil, err
		}
		if m.Info == nil {
			f.Close()
			return nil, fmt.Errorf("%w: the holder's conn message names no volume", ErrProtocol)
		}
		h.mu.Lock()
		if h.Conn == nil {
			h.Volume, h.Conn, h.Init, h.Clean = *m.Info, f, m.Init, m.Clean
		} else {
			f.Close() // the same connection again (a transient break): keep ours
			if h.Init == nil {
				h.Init = m.Init
			}
		}
		h.mu.Unlock()
	case msgAdopt:
		if f != nil {
			f.Close()
		}
		h.mu.Lock()
		conn, init, vol := h.Conn, h.Init, h.Volume
		h.mu.Unlock()
		if conn == nil {
			return nil, errors.New("the holder has no FUSE connection and asks for ours, but we have none: the volume must be mounted again")
		}
		if err := p.send(&message{Type: msgGive, Volume: h.name, Info: &vol, Init: init}, conn); err != nil {
			return nil, err
		}
		h.log.Info("gave the FUSE connection back to a restarted holder")
	case msgError:
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("the holder of volume %q refused: %s", h.name, m.Error)
	default:
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("%w: the holder answered hello with %q", ErrProtocol, m.Type)
	}
	return newSession(p, h.name), nil
}

// run serves the holder's requests and reconnects when the link breaks,
// until Close or until a newer server replaces this one.
func (h *Handoff) run(s *session) {
	defer h.wg.Done()
	for {
		err := s.readLoop(func(m *message, f *os.File) { h.handle(s, m, f) })
		s.p.close()
		h.mu.Lock()
		if h.sess == s {
			h.sess = nil
		}
		replaced := h.replaced
		h.mu.Unlock()
		select {
		case <-h.stop:
			return
		default:
		}
		if replaced {
			h.log.Warn("a newer server took over the FUSE connection; not reconnecting")
			return
		}
		if !errors.Is(err, io.EOF) {
			h.log.Warn("link to the FUSE connection holder broke", "err", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-h.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		next, err := h.connect(ctx)
		cancel()
		if err != nil {
			h.log.Error("reconnect to the FUSE connection holder", "err", err)
			return
		}
		h.mu.Lock()
		select {
		case <-h.stop:
			// Close ran while we reconnected; it could not see next.
			h.mu.Unlock()
			next.p.close()
			return
		default:
		}
		h.sess = next
		h.mu.Unlock()
		h.log.Info("reconnected to the FUSE connection holder")
		s = next
	}
}

func (h *Handoff) handle(s *session, m *message, f *os.File) {
	if f != nil {
		f.Close()
	}
	switch m.Type {
	case msgReplaced:
		h.mu.Lock()
		h.replaced = true
		h.mu.Unlock()
	case msgStats:
		h.mu.Lock()
		fn := h.stats
		h.mu.Unlock()
		if fn == nil {
			_ = s.reply(m, &message{Type: msgError, Error: "the server does not serve stats yet"})
			return
		}
		// Answer off the reader, which must keep reading replies.
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			st, err := fn(ctx)
			if err != nil {
				_ = s.reply(m, &message{Type: msgError, Error: err.Error()})
				return
			}
			_ = s.reply(m, &message{Type: msgStatsRe, Stats: &st})
		}()
	default:
		_ = s.reply(m, &message{Type: msgError, Error: fmt.Sprintf("unexpected message %q", m.Type)})
	}
}

// call sends a request over the current link.
func (h *Handoff) call(ctx context.Context, m *message) error {
	h.mu.Lock()
	s := h.sess
	h.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%s to the holder of volume %q: %w (kept for the next connection)", m.Type, h.name, ErrNotConnected)
	}
	_, err := s.call(ctx, m)
	return err
}

// SaveInit gives the holder the connection's INIT exchange. It is also
// kept here, and given to a restarted holder.
func (h *Handoff) SaveInit(ctx context.Context, init []byte) error {
	h.mu.Lock()
	h.Init = init
	h.mu.Unlock()
	return h.call(ctx, &message{Type: msgInit, Init: init})
}

// Report tells the holder how serving goes. The last status is also sent
// again after a reconnect.
func (h *Handoff) Report(ctx context.Context, s Status) error {
	h.mu.Lock()
	h.status = &s
	h.mu.Unlock()
	return h.call(ctx, &message{Type: msgStatus, Status: &s})
}

// ServeStats makes the holder's stats requests answered by stats, in the
// background, until Close.
func (h *Handoff) ServeStats(stats func(context.Context) (Stats, error)) {
	h.mu.Lock()
	h.stats = stats
	h.mu.Unlock()
}

// Close ends the link to the holder and closes this process's copy of
// the connection (the holder's copy keeps the mount alive).
func (h *Handoff) Close() error {
	select {
	case <-h.stop:
		return nil
	default:
	}
	close(h.stop)
	h.mu.Lock()
	if h.sess != nil {
		h.sess.p.close()
	}
	h.mu.Unlock()
	h.wg.Wait()
	var err error
	if h.Conn != nil {
		err = h.Conn.Close()
	}
	return err
}
