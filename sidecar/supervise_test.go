package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// planChild is a serving process for the supervisor tests: its n-th start
// (counted in $STARTS) does the n-th step of $PLAN: "kill" (SIGKILL
// itself), "fail" (exit 1), "ok" (exit 0) or "serve" (wait for SIGTERM,
// then exit 0).
func planChild() int {
	// The handler first: a start is recorded only once SIGTERM would be
	// caught.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	f, err := os.OpenFile(os.Getenv("STARTS"), os.O_APPEND|os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return 3
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	f.Close()
	b, _ := os.ReadFile(os.Getenv("STARTS"))
	n := strings.Count(string(b), "\n")
	plan := strings.Split(os.Getenv("PLAN"), ",")
	step := plan[min(n, len(plan))-1]
	switch step {
	case "kill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	case "fail":
		return 1
	case "serve":
		<-ctx.Done()
		if err := os.WriteFile(os.Getenv("STARTS")+".stopped", nil, 0o644); err != nil {
			return 4
		}
	}
	return 0
}

// supervise runs Supervise over planChild; with stopAt > 0 it stops the
// supervision (as SIGTERM would) once the stopAt-th process has started.
func supervise(t *testing.T, plan string, maxRapid, stopAt int) (starts []string, err error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "starts")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if stopAt > 0 {
		go func() {
			for ctx.Err() == nil {
				if b, _ := os.ReadFile(file); strings.Count(string(b), "\n") >= stopAt {
					cancel()
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	err = Supervise(ctx, SuperviseConfig{
		Command: func() *exec.Cmd {
			c := exec.Command(self)
			c.Env = append(os.Environ(), childEnv+"=plan", "PLAN="+plan, "STARTS="+file, SupervisedEnv+"=1")
			c.Stderr = os.Stderr
			return c
		},
		MaxRapid: maxRapid, Backoff: time.Millisecond,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	b, _ := os.ReadFile(file)
	for _, l := range strings.Fields(string(b)) {
		var pid int
		fmt.Sscan(l, &pid)
		pids = append(pids, pid)
	}
	// Every process this test started must be gone.
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("process %d outlived Supervise", pid)
		}
	}
	if _, serr := os.Stat(file + ".stopped"); serr == nil {
		starts = append(starts, "stopped")
	}
	return append(strings.Fields(string(b)), starts...), err
}

// TestSupervise restarts a serving process that is killed, at once, and
// passes SIGTERM on to the one that serves; a process exiting 0 ends the
// supervision; one that keeps dying is left to the kubelet.
func TestSupervise(t *testing.T) {
	t.Run("killed twice, then serves until stopped", func(t *testing.T) {
		starts, err := supervise(t, "kill,kill,serve", 5, 3)
		if err != nil {
			t.Fatalf("Supervise: %v", err)
		}
		if len(starts) != 4 || starts[3] != "stopped" {
			t.Fatalf("starts %v: want 3 starts and a clean stop of the last", starts)
		}
	})
	t.Run("clean exit ends it", func(t *testing.T) {
		starts, err := supervise(t, "ok", 5, 0)
		if err != nil || len(starts) != 1 {
			t.Fatalf("Supervise: %v after %d starts; want nil after 1", err, len(starts))
		}
	})
	t.Run("keeps dying", func(t *testing.T) {
		starts, err := supervise(t, "fail", 2, 0)
		if err == nil || !strings.Contains(err.Error(), "died 3 times in a row") || !strings.Contains(err.Error(), "exit status 1") {
			t.Fatalf("Supervise: %v; want it to give up after 3 deaths", err)
		}
		if len(starts) != 3 {
			t.Fatalf("%d starts, want 3", len(starts))
		}
	})
}
