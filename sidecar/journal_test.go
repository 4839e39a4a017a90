package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"podfs.io/podfs/pkg/fuseconn"
	"strings"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// journalPayload is what the app child writes: 3 MB, so blocks of 1 MiB
// upload while the slice stays uncommitted.
var journalPayload = bytes.Repeat([]byte("journaled "), 300_000)

// appChild plays the application: it writes journalPayload to file
// without fsync or close, says "written", then on each stdin line
// "sync" or "close" does that and answers "ok" or "err TEXT". The file is
// held by this process, not the test's: a test process that forks a new
// sidecar while it holds a file on the mount would close it in the fork's
// execve, a FUSE FLUSH that waits for the very sidecar being started.
func appChild(file string) int {
	f, err := os.Create(file)
	if err == nil {
		_, err = f.Write(journalPayload)
	}
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	fmt.Println("written")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "sync":
			err = f.Sync()
		case "close":
			err = f.Close()
		}
		if err != nil {
			fmt.Println("err", err)
		} else {
			fmt.Println("ok")
		}
	}
	return 0
}

// TestNodeKillKeepsAcknowledgedWrites kills a sidecar on an ordinary node
// while a file holds acknowledged writes it has not committed (written,
// neither fsync'd nor closed): the next sidecar replays them from the write
// journal, so the app's later fsync succeeds and the data reads back.
func TestNodeKillKeepsAcknowledgedWrites(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	handoff := filepath.Join(dir, "run", "handoff")
	target := publishFor(t, dir, handoff, "pv-data", &fuseconn.Source{MetaURL: formatBolt(t, dir, "data")}).target
	set := &volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: true, Volumes: []volumeset.Volume{
		{Name: "data", Handoff: "pv-data"}}}
	socket := filepath.Join(dir, "probe.sock")
	env := []string{"SOCKET=" + socket, "HANDOFF=" + handoff, "JOURNAL=" + filepath.Join(dir, "run", "journal")}

	cmd, _, done := startChild(t, "fs", set, env...)
	waitReady(t, socket, done)
	app := startApp(t, filepath.Join(target, "f"))
	if got := app.line(t); got != "written" {
		t.Fatalf("app: %q", got)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(done, 30*time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the killed sidecar: %v", err)
	}

	cmd, out, done := startChild(t, "fs", set, env...)
	waitReady(t, socket, done)
	for _, op := range []string{"sync", "close"} {
		if got := app.ask(t, op); got != "ok" {
			t.Fatalf("the app's %s after the sidecar was killed: %s (its journal should have kept the write)\n%s", op, got, out.String())
		}
	}
	if got := readUncached(t, filepath.Join(target, "f")); !bytes.Equal(got, journalPayload) {
		t.Fatalf("read %d bytes after the kill, want the %d written (first difference at %d)", len(got), len(journalPayload), diffAt(got, journalPayload))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(done, 60*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

type appProc struct {
	in  io.WriteCloser
	out *bufio.Scanner
}

// startApp runs appChild on file; it is killed by PID when the test ends.
func startApp(t *testing.T, file string) *appProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=app", "APP_FILE="+file)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Process.Kill()
		// Bounded: an app killed with a file open on a mount nobody serves
		// any more ends only once the holder's cleanup ends the connection.
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	})
	return &appProc{in: in, out: bufio.NewScanner(stdout)}
}

func (a *appProc) line(t *testing.T) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if a.out.Scan() {
			got <- a.out.Text()
		} else {
			got <- "app ended: " + fmt.Sprint(a.out.Err())
		}
	}()
	select {
	case l := <-got:
		return l
	case <-time.After(60 * time.Second):
		t.Fatal("the app did not answer within a minute")
		return ""
	}
}

func (a *appProc) ask(t *testing.T, op string) string {
	t.Helper()
	if _, err := fmt.Fprintln(a.in, op); err != nil {
		t.Fatal(err)
	}
	return a.line(t)
}
