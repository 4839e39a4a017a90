package fuseconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// go-fuse reads the kernel's INIT request itself, synchronously, inside
// fuse.NewServer, and has no way to start on a connection whose INIT was
// answered already. Attach therefore gives NewServer a socket instead of
// the connection ("/dev/fd/N" of one end of a socketpair), writes the INIT
// request into the other end, and takes go-fuse's reply from it. Then it
// puts the real connection in place of the socket with dup3, under the
// same descriptor number, before the server reads anything else.

// Wire layout of the FUSE messages Attach reads and writes (little-endian
// on every architecture we build for; the kernel uses native order).
const (
	inHeaderSize  = 40
	outHeaderSize = 16
	opInit        = 26
	// notifyResend is FUSE_NOTIFY_RESEND (Linux 6.9): the kernel queues
	// again every request a server read and did not answer.
	notifyResend = 7
	// capHasResend is FUSE_HAS_RESEND in INIT's flags: the kernel knows
	// notifyResend.
	capHasResend = 1 << 39
	// initReadSize is enough for any first request: the kernel refuses
	// reads into buffers smaller than a maximal write request.
	initReadSize = 1<<20 + 64<<10
)

// AttachConfig says what Attach serves and how.
type AttachConfig struct {
	// Conn is the connection. It must stay open while the server runs
	// (StopReading works through it); the server serves its own copy.
	Conn *os.File
	// Init is the connection's saved INIT exchange; nil for the first
	// server, which reads the kernel's INIT request itself.
	Init []byte
	// SaveInit keeps the INIT exchange for later servers (Handoff.SaveInit).
	// It runs before the kernel gets the INIT reply, so that no server can
	// have served the connection without it being saved; if it fails the
	// server still serves (a Handoff sends it again when it reconnects).
	SaveInit func([]byte) error
	// NewServer creates the go-fuse server on mountPoint: fuse.NewServer
	// with the server's options.
	NewServer func(mountPoint string) (*fuse.Server, error)
	Log       *slog.Logger
}

// Attached is a go-fuse server, ready to Serve a handed-off connection.
type Attached struct {
	Server *fuse.Server
	// Init is the connection's INIT exchange.
	Init []byte
	// Continued: a previous server initialized the connection; this one
	// replayed INIT and asked the kernel to resend unanswered requests.
	Continued bool
	conn      *os.File
	log       *slog.Logger
}

// Attach starts a go-fuse server on a connection mounted elsewhere (Mount),
// for the first time or continuing where a previous server stopped.
func Attach(ctx context.Context, cfg AttachConfig) (*Attached, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if err := isFUSE(cfg.Conn); err != nil {
		return nil, err
	}
	fd := int(cfg.Conn.Fd())
	// A server that detached (StopReading) left the shared file description
	// non-blocking; go-fuse's readers need it blocking.
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("make the FUSE descriptor blocking: %w", err)
	}
	a := &Attached{conn: cfg.Conn, log: log, Continued: cfg.Init != nil}
	var req, oldReply []byte
	var err error
	if cfg.Init == nil {
		if req, err = readInit(ctx, fd, log); err != nil {
			return nil, err
		}
	} else if req, oldReply, err = decodeExchange(cfg.Init); err != nil {
		return nil, err
	}
	reply, sock, err := initServer(cfg.NewServer, req, a)
	if err != nil {
		return nil, err
	}
	if a.Continued {
		if err := sameNegotiation(oldReply, reply); err != nil {
			// go-fuse's copy of sock stays with the unused server, whose
			// file finalizer closes it.
			return nil, err
		}
		a.Init = cfg.Init
	} else {
		a.Init = encodeExchange(req, reply)
		if cfg.SaveInit != nil {
			if err := cfg.SaveInit(a.Init); err != nil {
				log.Warn("could not save the FUSE INIT exchange; a restarted server cannot continue this connection unless it is saved later", "err", err)
			}
		}
		if _, err := unix.Write(fd, reply); err != nil {
			return nil, fmt.Errorf("write the INIT reply to the kernel: %w", err)
		}
	}
	// Atomically replace the socket under go-fuse's descriptor number with
	// the connection; go-fuse has not read from it since INIT.
	if err := unix.Dup3(fd, sock, unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("put the FUSE connection in place of the INIT socket: %w", err)
	}
	if a.Continued {
		resend(fd, req, log)
	}
	return a, nil
}

// initServer runs NewServer on a socketpair carrying req, and returns
// go-fuse's INIT reply and the descriptor number go-fuse serves.
func initServer(newServer func(string) (*fuse.Server, error), req []byte, a *Attached) ([]byte, int, error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("socketpair for the INIT exchange: %w", err)
	}
	defer unix.Close(sp[1])
	if _, err := unix.Write(sp[1], req); err != nil {
		unix.Close(sp[0])
		return nil, -1, fmt.Errorf("queue the INIT request: %w", err)
	}
	// From here go-fuse owns sp[0], error or not.
	srv, err := newServer("/dev/fd/" + strconv.Itoa(sp[0]))
	if err != nil {
		return nil, -1, fmt.Errorf("start the FUSE server on the INIT request: %w", err)
	}
	a.Server = srv
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(sp[1], buf, unix.MSG_DONTWAIT)
	if err != nil {
		return nil, -1, fmt.Errorf("read the FUSE server's INIT reply: %w", err)
	}
	reply := buf[:n]
	if err := checkReply(req, reply); err != nil {
		return nil, -1, err
	}
	return reply, sp[0], nil
}

// readInit reads the kernel's INIT request from a connection no server
// has served. If none is pending, a server may have read it and died
// before saving it: a resend puts it back in the queue (Linux 6.9).
func readInit(ctx context.Context, fd int, log *slog.Logger) ([]byte, error) {
	wait := func(d time.Duration) (bool, error) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(pfd, int(d/time.Millisecond))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return n > 0, err
		}
	}
	ready, err := wait(0)
	if err != nil {
		return nil, fmt.Errorf("poll the FUSE connection: %w", err)
	}
	if !ready {
		log.Warn("no INIT request pending on a FUSE connection said to be new: asking the kernel to resend what a previous server may have read")
		if err := writeResend(fd); err != nil {
			log.Warn("resend", "err", err)
		}
		d := 10 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			d = time.Until(dl)
		}
		if ready, err = wait(max(d, 0)); err != nil {
			return nil, fmt.Errorf("poll the FUSE connection: %w", err)
		}
		if !ready {
			return nil, errors.New("no INIT request on the FUSE connection: a server initialized it without saving its INIT exchange; the volume must be mounted again")
		}
	}
	buf := make([]byte, initReadSize)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return nil, fmt.Errorf("read the INIT request: %w", err)
	}
	req := buf[:n]
	if n < inHeaderSize+20 || binary.LittleEndian.Uint32(req[4:]) != opInit {
		// The request read stays unanswered: a resend can requeue it.
		return nil, fmt.Errorf("the first request on the FUSE connection is not INIT (%d bytes, opcode %d): a server initialized it without saving its INIT exchange; the volume must be mounted again",
			n, binary.LittleEndian.Uint32(req[4:]))
	}
	return append([]byte(nil), req...), nil
}

func checkReply(req, reply []byte) error {
	if len(reply) < outHeaderSize+40 {
		return fmt.Errorf("FUSE server's INIT reply is %d bytes, too short", len(reply))
	}
	if errno := int32(binary.LittleEndian.Uint32(reply[4:])); errno != 0 {
		return fmt.Errorf("the FUSE server refused INIT: %w", unix.Errno(-errno))
	}
	if binary.LittleEndian.Uint64(reply[8:]) != binary.LittleEndian.Uint64(req[8:]) {
		return errors.New("the FUSE server's INIT reply answers another request")
	}
	return nil
}

// initParams are the parts of an INIT reply a continuing server must agree
// on with the kernel: they were fixed when the first server answered.
type initParams struct {
	minor, maxWrite, timeGran uint32
	maxPages                  uint16
	flags                     uint64
}

func parseReply(r []byte) initParams {
	b := r[outHeaderSize:]
	le := binary.LittleEndian
	return initParams{
		minor:    le.Uint32(b[4:]),
		flags:    uint64(le.Uint32(b[12:])) | uint64(le.Uint32(b[32:]))<<32,
		maxWrite: le.Uint32(b[20:]),
		timeGran: le.Uint32(b[24:]),
		maxPages: le.Uint16(b[28:]),
	}
}

func sameNegotiation(oldReply, newReply []byte) error {
	o, n := parseReply(oldReply), parseReply(newReply)
	var diffs []string
	if o.minor != n.minor {
		diffs = append(diffs, fmt.Sprintf("protocol minor %d, now %d", o.minor, n.minor))
	}
	if o.maxWrite != n.maxWrite || o.maxPages != n.maxPages {
		diffs = append(diffs, fmt.Sprintf("max_write %d (%d pages), now %d (%d pages)", o.maxWrite, o.maxPages, n.maxWrite, n.maxPages))
	}
	if o.timeGran != n.timeGran {
		diffs = append(diffs, fmt.Sprintf("time_gran %d, now %d", o.timeGran, n.timeGran))
	}
	if o.flags != n.flags {
		diffs = append(diffs, fmt.Sprintf("flags %#x, now %#x (differing: %#x)", o.flags, n.flags, o.flags^n.flags))
	}
	if diffs == nil {
		return nil
	}
	return fmt.Errorf("this server would negotiate other FUSE parameters than the kernel agreed to with the connection's first server: %v; the kernel keeps the old ones, so it cannot continue the connection: mount the volume again", diffs)
}

// resend asks the kernel to queue again the requests a previous server
// read and never answered.
func resend(fd int, req []byte, log *slog.Logger) {
	flags := uint64(binary.LittleEndian.Uint32(req[inHeaderSize+12:])) | uint64(binary.LittleEndian.Uint32(req[inHeaderSize+16:]))<<32
	if flags&capHasResend == 0 {
		log.Warn("this kernel cannot resend FUSE requests (FUSE_NOTIFY_RESEND needs Linux 6.9): requests the previous server read but did not answer stay unanswered, and the processes waiting on them hang until they are killed or the mount is aborted")
		return
	}
	if err := writeResend(fd); err != nil {
		log.Error("resend of unanswered FUSE requests failed: processes waiting on them hang until killed", "err", err)
	}
}

func writeResend(fd int) error {
	var h [outHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], outHeaderSize)
	binary.LittleEndian.PutUint32(h[4:], notifyResend)
	// unique 0: a notification.
	if _, err := unix.Write(fd, h[:]); err != nil {
		return fmt.Errorf("write FUSE_NOTIFY_RESEND: %w", err)
	}
	return nil
}

// The INIT exchange is saved as: magic, request length, request, reply.
var exchangeMagic = [4]byte{'P', 'F', 'I', '1'}

func encodeExchange(req, reply []byte) []byte {
	b := make([]byte, 0, 8+len(req)+len(reply))
	b = append(b, exchangeMagic[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(req)))
	b = append(b, req...)
	return append(b, reply...)
}

func decodeExchange(b []byte) (req, reply []byte, err error) {
	if len(b) < 8 || [4]byte(b[:4]) != exchangeMagic {
		return nil, nil, errors.New("the saved INIT exchange is not one (bad magic)")
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if uint64(n) > uint64(len(b)-8) || n < inHeaderSize+20 {
		return nil, nil, errors.New("the saved INIT exchange is truncated")
	}
	req, reply = b[8:8+n], b[8+n:]
	if binary.LittleEndian.Uint32(req[4:]) != opInit {
		return nil, nil, errors.New("the saved INIT exchange does not hold an INIT request")
	}
	if err := checkReply(req, reply); err != nil {
		return nil, nil, fmt.Errorf("the saved INIT exchange: %w", err)
	}
	return req, reply, nil
}
