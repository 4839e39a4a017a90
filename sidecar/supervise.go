package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SuperviseConfig configures Supervise.
type SuperviseConfig struct {
	// Command makes the serving process's command; it is called for every
	// start. Its Stdout/Stderr should be set by the caller.
	Command func() *exec.Cmd
	// MaxRapid is how many times in a row the process may die within
	// Healthy of its start before Supervise gives up (and the kubelet,
	// which restarts the container, takes over with its back-off);
	// default 5.
	MaxRapid int
	// Healthy is how long a process must live for its death to count as
	// a fresh failure; default 1m.
	Healthy time.Duration
	// Backoff is the wait before the second restart in a row (the first
	// is immediate), doubled for each further one up to 5s; default 250ms.
	Backoff time.Duration
	Log     *slog.Logger
}

// Supervise runs the serving process of an ordinary node's sidecar and
// starts it again at once when it dies (a crash, an OOM kill of that
// process, a kill -9): the CSI node holds the FUSE connections, so a new
// process continues them, and restarting here is faster than the kubelet's
// container restart, which backs off up to minutes for a container that
// keeps dying. SIGTERM and SIGINT are passed to the process; when it exits
// after one of them, or by itself with status 0 (the apps are done),
// Supervise returns its outcome. Serverless sidecars are not supervised:
// their mount dies with the process.
func Supervise(ctx context.Context, cfg SuperviseConfig) error {
	if cfg.MaxRapid == 0 {
		cfg.MaxRapid = 5
	}
	if cfg.Healthy == 0 {
		cfg.Healthy = time.Minute
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 250 * time.Millisecond
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	rapid := 0
	for {
		cmd := cfg.Command()
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start the serving process: %w", err)
		}
		log.Info("serving process started", "pid", cmd.Process.Pid)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		stopping := false
		select {
		case err = <-done:
		case <-ctx.Done():
			stopping = true
			// Pass the stop on and wait: the process detaches cleanly.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			err = <-done
		}
		if stopping {
			return err
		}
		if err == nil {
			log.Info("serving process exited cleanly")
			return nil
		}
		if time.Since(start) >= cfg.Healthy {
			rapid = 0
		}
		rapid++
		if rapid > cfg.MaxRapid {
			return fmt.Errorf("the serving process died %d times in a row within %s of its start, the last time: %w; leaving the restarts to the kubelet", rapid, cfg.Healthy, err)
		}
		wait := time.Duration(0)
		if rapid > 1 {
			wait = min(cfg.Backoff<<(rapid-2), 5*time.Second)
		}
		log.Warn("serving process died; starting a new one, which continues the FUSE connections", "err", describeExit(err), "restart", rapid, "after", wait)
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// describeExit says how a process ended ("killed by SIGKILL", "exit 1").
func describeExit(err error) string {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err.Error()
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("exit %d", ee.ExitCode())
}

// SupervisedEnv marks the serving process a supervisor started: it serves
// instead of supervising.
const SupervisedEnv = "PODFS_SIDECAR_SUPERVISED"

// Supervised reports whether this process is a supervised serving process.
func Supervised() bool { return os.Getenv(SupervisedEnv) == "1" }
