package fuseconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// HolderConfig says what a Holder holds and where it offers it.
type HolderConfig struct {
	// Dir is the directory of the socket; its path may be of any length.
	Dir    string
	Volume Volume
	// Conn is the connection to hold; the holder keeps a copy of its own
	// (the caller still owns Conn). Nil when adopting after a restart of
	// the holder's process: the first server that connects gives its copy
	// (and the INIT exchange) back.
	Conn *os.File
	// Init is the connection's saved INIT exchange, if known.
	Init []byte
	// OnStatus is called with each status a server reports (on the
	// connection's reader: it must not block for long).
	OnStatus func(Status)
	// OnDisconnect is called when the server goes away and no other has
	// replaced it (a restart, an upgrade, or the pod stopping).
	OnDisconnect func()
	Log          *slog.Logger
}

// Holder keeps a FUSE connection alive and hands copies of it to the
// server that connects to its socket, one server at a time.
type Holder struct {
	cfg   HolderConfig
	log   *slog.Logger
	ln    *net.UnixListener
	dirfd int
	name  string
	wg    sync.WaitGroup

	mu     sync.Mutex
	conn   *os.File
	init   []byte
	clean  bool // no server served yet, or the last one detached cleanly
	cur    *session
	closed bool
}

// Hold starts offering cfg.Conn on the socket SocketName(cfg.Volume.Name)
// in cfg.Dir (mode 0666: the server runs as another, unprivileged user),
// replacing a socket file left there by a previous holder. ctx bounds the
// setting up; Close ends the holder.
func Hold(ctx context.Context, cfg HolderConfig) (*Holder, error) {
	if cfg.Volume.Name == "" {
		return nil, errors.New("hold a FUSE connection: no volume name")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	h := &Holder{cfg: cfg, log: log.With("volume", cfg.Volume.Name), name: SocketName(cfg.Volume.Name),
		init: cfg.Init, clean: cfg.Init == nil}
	if cfg.Conn != nil {
		if err := isFUSE(cfg.Conn); err != nil {
			return nil, err
		}
		fd, err := unix.FcntlInt(cfg.Conn.Fd(), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return nil, fmt.Errorf("copy the FUSE descriptor: %w", err)
		}
		h.conn = os.NewFile(uintptr(fd), "/dev/fuse")
	}
	dfd, err := openDir(cfg.Dir)
	if err != nil {
		h.closeConn()
		return nil, err
	}
	h.dirfd = dfd
	ln, err := h.listen()
	if err != nil {
		unix.Close(dfd)
		h.closeConn()
		return nil, err
	}
	h.ln = ln
	h.wg.Add(1)
	go h.accept()
	h.log.Info("holding FUSE connection", "socket", cfg.Dir+"/"+h.name, "adopting", h.conn == nil)
	return h, nil
}

func (h *Holder) listen() (*net.UnixListener, error) {
	path := dirPath(h.dirfd, h.name)
	if err := unix.Unlinkat(h.dirfd, h.name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("remove old socket %s/%s: %w", h.cfg.Dir, h.name, err)
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(s), h.cfg.Dir+"/"+h.name)
	defer f.Close() // FileListener made its own copy
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("bind %s/%s: %w", h.cfg.Dir, h.name, err)
	}
	if err := unix.Fchmodat(h.dirfd, h.name, 0o666, 0); err != nil {
		_ = unix.Unlinkat(h.dirfd, h.name, 0)
		return nil, fmt.Errorf("chmod %s/%s: %w", h.cfg.Dir, h.name, err)
	}
	if err := unix.Listen(s, 4); err != nil {
		_ = unix.Unlinkat(h.dirfd, h.name, 0)
		return nil, fmt.Errorf("listen on %s/%s: %w", h.cfg.Dir, h.name, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		_ = unix.Unlinkat(h.dirfd, h.name, 0)
		return nil, fmt.Errorf("listen on %s/%s: %w", h.cfg.Dir, h.name, err)
	}
	return ln.(*net.UnixListener), nil
}

func (h *Holder) accept() {
	defer h.wg.Done()
	for {
		c, err := h.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				h.log.Error("accept on the FUSE connection socket", "err", err)
			}
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.serve(&peer{c: c})
		}()
	}
}

// serve runs one server's connection: the hello exchange, then its
// requests until it goes away or a newer server replaces it.
func (h *Holder) serve(p *peer) {
	s, err := h.greet(p)
	if err != nil {
		h.log.Warn("refused a server", "err", err)
		_ = p.send(&message{Type: msgError, Volume: h.cfg.Volume.Name, Error: err.Error()}, nil)
		p.close()
		return
	}
	err = s.readLoop(func(m *message, f *os.File) { h.handle(s, m, f) })
	h.mu.Lock()
	gone := h.cur == s && !h.closed
	if h.cur == s {
		h.cur = nil
	}
	h.mu.Unlock()
	p.close()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		h.log.Info("server disconnected")
	} else {
		h.log.Warn("server disconnected", "err", err)
	}
	if gone && h.cfg.OnDisconnect != nil {
		h.cfg.OnDisconnect()
	}
}

// greet reads the server's hello, hands it the connection (or adopts the
// server's) and makes it the current server.
func (h *Holder) greet(p *peer) (*session, error) {
	m, f, err := p.recv(time.Now().Add(opTimeout))
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	if f != nil {
		f.Close()
		return nil, fmt.Errorf("%w: hello carried a descriptor", ErrProtocol)
	}
	if m.Type != msgHello {
		return nil, fmt.Errorf("%w: first message is %q, want hello", ErrProtocol, m.Type)
	}
	if m.Volume != h.cfg.Volume.Name {
		return nil, fmt.Errorf("this socket offers volume %q, the server asked for %q", h.cfg.Volume.Name, m.Volume)
	}
	h.mu.Lock()
	conn, init, clean, vol := h.conn, h.init, h.clean, h.cfg.Volume
	h.mu.Unlock()
	switch {
	case conn != nil:
		if init == nil && m.Init != nil {
			init = m.Init // a reconnecting server knows it; we never did
		}
		err = p.send(&message{Type: msgConn, Volume: vol.Name, Info: &vol, Init: init, Clean: clean}, conn)
		if err != nil {
			return nil, err
		}
	case m.HaveConn:
		if init, err = h.adopt(p); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("no FUSE connection to hand out: this holder restarted and no server has given the connection back; the volume must be mounted again")
	}
	s := newSession(p, h.cfg.Volume.Name)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errors.New("holder closed")
	}
	old := h.cur
	h.cur = s
	if h.init == nil {
		h.init = init
	}
	// The new server serves from now on: until it reports a clean detach,
	// its successor must assume it died with writes uncommitted.
	h.clean = false
	h.mu.Unlock()
	if old != nil {
		// The old server is gone or going (a restarted sidecar): tell it
		// not to reconnect, so the two do not replace each other in turn.
		_ = old.p.send(&message{Type: msgReplaced, Volume: h.cfg.Volume.Name}, nil)
		old.p.close()
	}
	if m.Status != nil && h.cfg.OnStatus != nil {
		h.cfg.OnStatus(*m.Status)
	}
	h.log.Info("server connected", "adopted", conn == nil)
	return s, nil
}

// adopt asks the server for its copy of the connection.
func (h *Holder) adopt(p *peer) ([]byte, error) {
	if err := p.send(&message{Type: msgAdopt, Volume: h.cfg.Volume.Name}, nil); err != nil {
		return nil, err
	}
	m, f, err := p.recv(time.Now().Add(opTimeout))
	if err != nil {
		return nil, fmt.Errorf("read the adopted connection: %w", err)
	}
	if m.Type != msgGive {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("%w: answer to adopt is %q, want give", ErrProtocol, m.Type)
	}
	if f == nil {
		return nil, fmt.Errorf("%w: give message without the FUSE descriptor", ErrProtocol)
	}
	if err := isFUSE(f); err != nil {
		f.Close()
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cfg.Volume.Source == nil && m.Info != nil && m.Info.Source != nil && m.Info.Name == h.cfg.Volume.Name {
		// A restarted holder never stores the source (it may carry
		// credentials); the server that served it gives it back.
		h.cfg.Volume.Source = m.Info.Source
	}
	if h.conn != nil {
		f.Close() // another server gave it first
		return m.Init, nil
	}
	h.conn = f
	h.log.Info("adopted the FUSE connection from its server")
	return m.Init, nil
}

// handle answers a request of the current server.
func (h *Holder) handle(s *session, m *message, f *os.File) {
	if f != nil {
		f.Close()
		_ = s.reply(m, &message{Type: msgError, Error: "unexpected descriptor"})
		return
	}
	switch m.Type {
	case msgInit:
		if len(m.Init) == 0 {
			_ = s.reply(m, &message{Type: msgError, Error: "empty INIT exchange"})
			return
		}
		h.mu.Lock()
		h.init = m.Init
		h.mu.Unlock()
		_ = s.reply(m, &message{Type: msgOK})
	case msgStatus:
		if m.Status == nil {
			_ = s.reply(m, &message{Type: msgError, Error: "status message without a status"})
			return
		}
		h.mu.Lock()
		h.clean = m.Status.Detached
		h.mu.Unlock()
		_ = s.reply(m, &message{Type: msgOK})
		if h.cfg.OnStatus != nil {
			h.cfg.OnStatus(*m.Status)
		}
	default:
		_ = s.reply(m, &message{Type: msgError, Error: fmt.Sprintf("unexpected message %q", m.Type)})
	}
}

// Stats asks the connected server for the volume's usage. It fails at once
// when no server is connected: it never touches the mount itself.
func (h *Holder) Stats(ctx context.Context) (Stats, error) {
	h.mu.Lock()
	s := h.cur
	h.mu.Unlock()
	if s == nil {
		return Stats{}, fmt.Errorf("stats of volume %q: no server connected: %w", h.cfg.Volume.Name, ErrNotConnected)
	}
	r, err := s.call(ctx, &message{Type: msgStats})
	if err != nil {
		return Stats{}, fmt.Errorf("stats of volume %q: %w", h.cfg.Volume.Name, err)
	}
	if r.Stats == nil {
		return Stats{}, fmt.Errorf("stats of volume %q: %w: answer without figures", h.cfg.Volume.Name, ErrProtocol)
	}
	return *r.Stats, nil
}

// Connected reports whether a server is connected now.
func (h *Holder) Connected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur != nil
}

// HasConn reports whether the holder has the connection (false while it
// waits to adopt it).
func (h *Holder) HasConn() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conn != nil
}

// Init returns the saved INIT exchange (nil if none yet), to keep across
// a restart of the holder's process.
func (h *Holder) Init() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.init
}

// Close stops listening, removes the socket file, disconnects the server
// and closes the holder's copy of the connection (the mount lives on while
// another copy is open).
func (h *Holder) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	cur := h.cur
	h.mu.Unlock()
	err := h.ln.Close()
	if uerr := unix.Unlinkat(h.dirfd, h.name, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
		err = errors.Join(err, fmt.Errorf("remove socket %s/%s: %w", h.cfg.Dir, h.name, uerr))
	}
	if cur != nil {
		cur.p.close()
	}
	h.wg.Wait()
	unix.Close(h.dirfd)
	h.closeConn()
	return err
}

// Release closes the holder's copy of the connection but keeps listening:
// once no server holds a copy either, the kernel aborts the connection and
// calls on the mount fail at once (ENOTCONN) instead of waiting for a
// server. For a pod that is going away, whose volume teardown stats it.
func (h *Holder) Release() { h.closeConn() }

func (h *Holder) closeConn() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
}
