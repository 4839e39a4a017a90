package fs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/fuseconn"
)

// handoffChildEnv makes the test binary a sidecar-like serving process:
// "socket dir|volume|metadata URL|journal dir". It dials the holder, serves the
// connection it gets with a podfs Mount, and on SIGTERM detaches cleanly
// and reports it, as the sidecar does.
const handoffChildEnv = "PODFS_TEST_HANDOFF_CHILD"

// handoffServing is the line the child prints once it serves.
const handoffServing = "handoff child serving"

func handoffChild(arg string) error {
	parts := strings.Split(arg, "|")
	if len(parts) != 4 {
		return fmt.Errorf("bad %s %q", handoffChildEnv, arg)
	}
	dir, volume, metaURL, journal := parts[0], parts[1], parts[2], parts[3]
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := fuseconn.Dial(ctx, dir, volume, log)
	if err != nil {
		return err
	}
	defer h.Close()
	m, err := New(ctx, Config{MetaURL: metaURL, Logger: log, Data: data.Config{JournalDir: journal}, Conn: &Conn{
		File:        h.Conn,
		Init:        h.Init,
		SaveInit:    func(b []byte) error { return h.SaveInit(ctx, b) },
		PrevCrashed: !h.Clean,
	}})
	if err != nil {
		_ = h.Report(ctx, fuseconn.Status{Error: err.Error()})
		return err
	}
	h.ServeStats(m.StatFS)
	if err := h.Report(ctx, fuseconn.Status{Served: true}); err != nil {
		log.Warn("report", "err", err)
	}
	fmt.Println(handoffServing)
	ended := make(chan error, 1)
	go func() { ended <- m.Wait() }()
	select {
	case <-term:
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if err := m.Unmount(dctx); err != nil {
			_ = h.Report(dctx, fuseconn.Status{Error: err.Error()})
			return fmt.Errorf("detach: %w", err)
		}
		return h.Report(dctx, fuseconn.Status{Detached: true})
	case err := <-ended:
		return err
	}
}

// handoffProc is a serving child, killed by PID when the test ends.
type handoffProc struct {
	cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startHandoffChild starts a serving child; journal is its write journal
// directory ("" = none).
func startHandoffChild(t *testing.T, dir, volume, metaURL, journal string) *handoffProc {
	t.Helper()
	p := &handoffProc{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run", "^$")
	p.cmd.Env = append(os.Environ(), handoffChildEnv+"="+dir+"|"+volume+"|"+metaURL+"|"+journal)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(unmountWait):
				t.Errorf("serving child %d did not exit after SIGKILL", p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("serving child %d output:\n%s", p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// waitServing waits for the child to serve (or fails the test).
func (p *handoffProc) waitServing(t *testing.T) {
	t.Helper()
	waitFor(t, "the serving child", 60*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("serving child exited before serving: %v\n%s", p.err, p.out.String())
		default:
		}
		return strings.Contains(p.out.String(), handoffServing)
	})
}

// stop signals the child and waits for it to exit.
func (p *handoffProc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(unmountWait):
		t.Fatalf("serving child %d still running %s after %v\n%s", p.cmd.Process.Pid, unmountWait, sig, p.out.String())
		return nil
	}
}
