package fuseconn

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The tests re-execute their own binary as the serving process (the
// sidecar's role): with childEnv set it dials the holder's socket and
// serves the received connection with go-fuse's loopback file system over
// a directory, until SIGTERM (a detach) or its connection ends.
const (
	childEnv    = "PODFS_FUSECONN_CHILD" // "dir|volume|loopback dir"
	childSignal = "serving"              // printed once serving
)

func TestMain(m *testing.M) {
	if arg := os.Getenv(childEnv); arg != "" {
		if err := runChild(arg); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(arg string) error {
	var dir, volume, root string
	parts := bytes.Split([]byte(arg), []byte("|"))
	if len(parts) != 3 {
		return fmt.Errorf("bad %s %q", childEnv, arg)
	}
	dir, volume, root = string(parts[0]), string(parts[1]), string(parts[2])
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := Dial(ctx, dir, volume, log)
	if err != nil {
		return err
	}
	defer h.Close()
	node, err := gofs.NewLoopbackRoot(root)
	if err != nil {
		return err
	}
	zero := time.Duration(0)
	// No caching of names or attributes: a later server's loopback has
	// other node ids, and the kernel must look everything up again.
	raw := gofs.NewNodeFS(node, &gofs.Options{EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero})
	a, err := Attach(ctx, AttachConfig{
		Conn:     h.Conn,
		Init:     h.Init,
		SaveInit: func(b []byte) error { return h.SaveInit(ctx, b) },
		NewServer: func(mp string) (*fuse.Server, error) {
			return fuse.NewServer(raw, mp, &fuse.MountOptions{MaxWrite: 1 << 20})
		},
		Log: log,
	})
	if err != nil {
		_ = h.Report(ctx, Status{Error: err.Error()})
		return err
	}
	served := make(chan struct{})
	go func() {
		a.Server.Serve()
		close(served)
	}()
	h.ServeStats(func(context.Context) (Stats, error) { return Stats{TotalBytes: 42, FreeInodes: 7}, nil })
	if err := h.Report(ctx, Status{Served: true}); err != nil {
		return err
	}
	fmt.Println(childSignal, a.Continued)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case <-term:
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := a.StopReading(sctx, served); err != nil {
			return err
		}
		return h.Report(sctx, Status{Detached: true})
	case <-served:
		return nil
	}
}

// child is a serving process, killed by PID when the test ends.
type child struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startChild(t *testing.T, dir, volume, root string) *child {
	t.Helper()
	c := &child{done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run", "^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+dir+"|"+volume+"|"+root)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.kill(t)
		if t.Failed() {
			t.Logf("child %d output:\n%s", c.cmd.Process.Pid, c.out.String())
		}
	})
	return c
}

func (c *child) kill(t *testing.T) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = syscall.Kill(c.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Errorf("child %d did not exit after SIGKILL", c.cmd.Process.Pid)
	}
}

// waitServing waits until the child says it serves, or fails the test.
func (c *child) waitServing(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains([]byte(c.out.String()), []byte(childSignal)) {
		select {
		case <-c.done:
			t.Fatalf("child exited before serving: %v\n%s", c.err, c.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("child not serving after 30 s:\n%s", c.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *child) wait(t *testing.T, why string) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not exit within 30 s of %s\n%s", why, c.out.String())
		return nil
	}
}
