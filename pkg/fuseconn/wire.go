package fuseconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// protoVersion is the version of the messages below; a peer speaking
	// another one is refused.
	protoVersion = 1
	// maxMessage bounds one packet: the largest message (an INIT exchange
	// of a few hundred bytes, base64) is far below it.
	maxMessage = 64 << 10
	// opTimeout bounds every socket operation and every wait for a reply.
	opTimeout = 5 * time.Second
)

// Errors a caller may test for.
var (
	// ErrNotConnected: no server (holder side) or holder (server side) is
	// connected right now.
	ErrNotConnected = errors.New("not connected")
	// ErrProtocol: the peer sent something this side does not understand.
	ErrProtocol = errors.New("protocol error")
)

// message is one packet. Only the fields its type needs are set.
type message struct {
	V        int     `json:"v"`
	Type     string  `json:"type"`
	Volume   string  `json:"volume"`
	ID       uint64  `json:"id,omitempty"`
	HaveConn bool    `json:"have_conn,omitempty"`
	Init     []byte  `json:"init,omitempty"`
	Clean    bool    `json:"clean,omitempty"`
	Info     *Volume `json:"info,omitempty"`
	Status   *Status `json:"status,omitempty"`
	Stats    *Stats  `json:"stats,omitempty"`
	Error    string  `json:"error,omitempty"`
}

// Message types (see the package documentation).
const (
	msgHello    = "hello"
	msgConn     = "conn"
	msgAdopt    = "adopt"
	msgGive     = "give"
	msgInit     = "init"
	msgStatus   = "status"
	msgStats    = "stats"
	msgStatsRe  = "statsr"
	msgOK       = "ok"
	msgError    = "error"
	msgReplaced = "replaced"
)

// peer is one end of a connection: whole packets, descriptors alongside,
// a deadline on each send and on each receive that waits for an answer.
type peer struct {
	c   *net.UnixConn
	wmu sync.Mutex
}

// send writes m, with f's descriptor when f is not nil.
func (p *peer) send(m *message, f *os.File) error {
	m.V = protoVersion
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s message: %w", m.Type, err)
	}
	if len(b) > maxMessage {
		return fmt.Errorf("%s message of %d bytes exceeds the %d-byte limit", m.Type, len(b), maxMessage)
	}
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.c.SetWriteDeadline(time.Now().Add(opTimeout)); err != nil {
		return fmt.Errorf("send %s: %w", m.Type, err)
	}
	_, _, err = p.c.WriteMsgUnix(b, oob, nil)
	runtime.KeepAlive(f)
	if err != nil {
		return fmt.Errorf("send %s: %w", m.Type, err)
	}
	return nil
}

// recv reads one packet, waiting until deadline (zero: no limit). A packet
// may carry at most one descriptor; it is returned as a file that the
// caller owns. io.EOF means the peer closed the connection.
func (p *peer) recv(deadline time.Time) (*message, *os.File, error) {
	if err := p.c.SetReadDeadline(deadline); err != nil {
		return nil, nil, err
	}
	buf := make([]byte, maxMessage+1)
	oob := make([]byte, unix.CmsgSpace(4*4)) // room to notice extra descriptors
	n, oobn, flags, _, err := p.c.ReadMsgUnix(buf, oob)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil, fmt.Errorf("peer sent nothing within its deadline: %w", os.ErrDeadlineExceeded)
		}
		if errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("peer closed the connection: %w", io.EOF)
		}
		return nil, nil, err
	}
	files, ferr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	switch {
	case ferr != nil:
		closeAll()
		return nil, nil, fmt.Errorf("%w: bad control message: %v", ErrProtocol, ferr)
	case flags&unix.MSG_CTRUNC != 0 || len(files) > 1:
		closeAll()
		return nil, nil, fmt.Errorf("%w: peer sent more than one descriptor", ErrProtocol)
	case flags&unix.MSG_TRUNC != 0 || n > maxMessage:
		closeAll()
		return nil, nil, fmt.Errorf("%w: message longer than %d bytes", ErrProtocol, maxMessage)
	case n == 0 && len(files) == 0:
		return nil, nil, io.EOF
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("%w: undecodable message (%d bytes): %v", ErrProtocol, n, err)
	}
	if m.V != protoVersion {
		closeAll()
		return nil, nil, fmt.Errorf("%w: peer speaks protocol version %d, this side %d (run matching podfs versions)", ErrProtocol, m.V, protoVersion)
	}
	var f *os.File
	if len(files) == 1 {
		f = files[0]
	}
	return &m, f, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue // not SCM_RIGHTS (credentials): nothing to close
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	return files, nil
}

func (p *peer) close() error { return p.c.Close() }

// session is a connection over which both sides send requests: replies are
// matched to their waiting callers by id by the connection's reader, which
// hands every other message to handle.
type session struct {
	p      *peer
	volume string
	done   chan struct{} // closed when the reader stops

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]chan *message
}

func newSession(p *peer, volume string) *session {
	return &session{p: p, volume: volume, done: make(chan struct{}), waiting: map[uint64]chan *message{}}
}

// call sends a request and waits for its reply, for at most opTimeout.
func (s *session) call(ctx context.Context, m *message) (*message, error) {
	ch := make(chan *message, 1)
	s.mu.Lock()
	s.nextID++
	m.ID = s.nextID
	s.waiting[m.ID] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiting, m.ID)
		s.mu.Unlock()
	}()
	m.Volume = s.volume
	if err := s.p.send(m, nil); err != nil {
		return nil, err
	}
	t := time.NewTimer(opTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.Type == msgError {
			return nil, fmt.Errorf("peer refused %s: %s", m.Type, r.Error)
		}
		return r, nil
	case <-s.done:
		return nil, fmt.Errorf("%s: connection closed before the answer: %w", m.Type, ErrNotConnected)
	case <-t.C:
		return nil, fmt.Errorf("%s: no answer within %s: %w", m.Type, opTimeout, os.ErrDeadlineExceeded)
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", m.Type, ctx.Err())
	}
}

// reply answers request req.
func (s *session) reply(req *message, m *message) error {
	m.ID, m.Volume = req.ID, s.volume
	return s.p.send(m, nil)
}

// readLoop reads until the connection ends, giving replies to their
// callers and other messages to handle (which owns any descriptor).
// handle runs on the reader: it must not wait on the peer.
func (s *session) readLoop(handle func(*message, *os.File)) error {
	defer close(s.done)
	for {
		m, f, err := s.p.recv(time.Time{})
		if err != nil {
			return err
		}
		if m.Volume != s.volume {
			if f != nil {
				f.Close()
			}
			_ = s.p.send(&message{Type: msgError, ID: m.ID, Volume: s.volume,
				Error: fmt.Sprintf("message for volume %q on the socket of volume %q", m.Volume, s.volume)}, nil)
			continue
		}
		switch m.Type {
		case msgOK, msgStatsRe, msgError:
			if f != nil {
				f.Close()
			}
			s.mu.Lock()
			ch := s.waiting[m.ID]
			s.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		default:
			handle(m, f)
		}
	}
}

// dirPath names name inside the directory open as dirfd, through /proc, so
// a socket's address stays short however long the directory's path is
// (sun_path holds 108 bytes; kubelet's pod directories are longer).
func dirPath(dirfd int, name string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
}

func openDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open socket directory %s: %w", dir, err)
	}
	return fd, nil
}

// dialIn connects to the SOCK_SEQPACKET socket name in dir.
func dialIn(dir, name string) (*peer, error) {
	dfd, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(s, &unix.SockaddrUnix{Name: dirPath(dfd, name)}); err != nil {
		unix.Close(s)
		return nil, fmt.Errorf("connect to %s: %w", dir+"/"+name, err)
	}
	return fileConn(s, dir+"/"+name)
}

func fileConn(fd int, name string) (*peer, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close() // FileConn made its own copy
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%s: not a unix socket", name)
	}
	return &peer{c: uc}, nil
}
