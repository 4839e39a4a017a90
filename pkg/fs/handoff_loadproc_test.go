package fs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The load runs in a process of its own, as an application would: the
// test process forks each new server, and a fork of a process with files
// open on the mount closes them at execve, a FUSE FLUSH each, which would
// wait for the very server being started.
//
// handoffLoadEnv makes the test binary that process: "mount point|lossOK".
// It takes commands on stdin and answers each with one line on stdout:
//
//	settle NANOS -> "settled WORST_NANOS ALL(0|1) ERRORS"
//	stop         -> "done FILES LOSSY ERRORS", then one "err TEXT" line per error
const handoffLoadEnv = "PODFS_TEST_HANDOFF_LOAD"

func handoffLoadMain(arg string) error {
	mp, lossOK, ok := strings.Cut(arg, "|")
	if !ok {
		return fmt.Errorf("bad %s %q", handoffLoadEnv, arg)
	}
	l := startHandoffLoad(mp, 3, 2, lossOK == "1")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, val, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "settle":
			ns, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return err
			}
			worst, all := l.settle(time.Unix(0, ns), unmountWait)
			fmt.Printf("settled %d %d %d\n", worst.Nanoseconds(), btoi(all), len(l.errors()))
		case "stop":
			l.halt()
			l.mu.Lock()
			files, lossy := l.files, l.lossy
			l.mu.Unlock()
			// Every file whose fsync succeeded, read back once more.
			for name, sum := range files {
				if err := checkSum(filepath.Join(mp, name), sum); err != nil {
					l.fail(fmt.Errorf("final check of %s: %w", name, err))
				}
			}
			errs := l.errors()
			fmt.Printf("done %d %d %d\n", len(files), lossy, len(errs))
			for _, e := range errs {
				fmt.Printf("err %s\n", strings.ReplaceAll(e.Error(), "\n", " "))
			}
			return nil
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
	l.halt()
	return in.Err()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// loadProc is the parent's handle on the load process.
type loadProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	errb lockedBuffer
	done chan struct{}
}

func startLoadProc(t *testing.T, mp string, lossOK bool) *loadProc {
	t.Helper()
	p := &loadProc{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run", "^$")
	p.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d", handoffLoadEnv, mp, btoi(lossOK)))
	p.cmd.Stderr = &p.errb
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(unmountWait):
			t.Errorf("load process %d did not exit after SIGKILL", p.cmd.Process.Pid)
		}
	})
	return p
}

func (p *loadProc) ask(t *testing.T, cmd string) []string {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		t.Fatalf("load process: %v\n%s", err, p.errb.String())
	}
	if !p.out.Scan() {
		t.Fatalf("load process ended without answering %q: %v\n%s", cmd, p.out.Err(), p.errb.String())
	}
	return strings.Fields(p.out.Text())
}

// settle waits for every load worker to complete an operation started
// after t, and returns the longest operation since the last settle and
// the number of errors so far.
func (p *loadProc) settle(t *testing.T, after time.Time) (time.Duration, int) {
	t.Helper()
	f := p.ask(t, fmt.Sprintf("settle %d", after.UnixNano()))
	if len(f) != 4 || f[0] != "settled" {
		t.Fatalf("load process answered %q", f)
	}
	worst, _ := strconv.ParseInt(f[1], 10, 64)
	nerr, _ := strconv.Atoi(f[3])
	if f[2] != "1" && nerr == 0 {
		t.Fatalf("load workers still held up %s after the server was replaced", unmountWait)
	}
	return time.Duration(worst), nerr
}

// finish stops the load, which checks every fsync'd file once more.
func (p *loadProc) finish(t *testing.T) (files, lossy int, errs []string) {
	t.Helper()
	f := p.ask(t, "stop")
	if len(f) != 4 || f[0] != "done" {
		t.Fatalf("load process answered %q", f)
	}
	files, _ = strconv.Atoi(f[1])
	lossy, _ = strconv.Atoi(f[2])
	n, _ := strconv.Atoi(f[3])
	for range n {
		if !p.out.Scan() {
			break
		}
		errs = append(errs, strings.TrimPrefix(p.out.Text(), "err "))
	}
	select {
	case <-p.done:
	case <-time.After(unmountWait):
		t.Fatal("load process did not exit after stop")
	}
	return files, lossy, errs
}
