package fuseconn

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// StopReading makes the server stop taking requests, so that its Serve
// returns once the requests it has read are answered, while the kernel
// connection lives on for the next server. served is closed when Serve
// has returned. StopReading returns when it has, or with ctx's error:
// requests the server is still working on are then answered by no one
// until the next server's resend.
//
// How: go-fuse's readers block in read(2) on the connection, and no close
// or unmount may end those reads (the holder keeps the connection). The
// connection's file description is made non-blocking, so a read finding
// no request fails with EAGAIN (go-fuse's reader then exits), and every
// thread of the process is sent SIGURG, which the Go runtime ignores when
// unasked: a read blocked in the kernel is restarted (SA_RESTART), sees
// the flag and returns. Readers that find a request pending take it and
// answer it as usual; the next server makes the description blocking again.
func (a *Attached) StopReading(ctx context.Context, served <-chan struct{}) error {
	if err := unix.SetNonblock(int(a.conn.Fd()), true); err != nil {
		return fmt.Errorf("make the FUSE descriptor non-blocking: %w", err)
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		// Again on every tick: a reader may have been between its check
		// of the flag and going to sleep when the first signal came...
		// which the pending signal covers, but a thread created since
		// (the runtime starts them freely) got none.
		if err := signalThreads(); err != nil {
			return err
		}
		select {
		case <-served:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stop reading FUSE requests: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// signalThreads sends SIGURG to every thread of this process.
func signalThreads() error {
	pid := os.Getpid()
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list threads: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list threads: %w", err)
	}
	for _, n := range names {
		tid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		// ESRCH: the thread exited meanwhile.
		_ = unix.Tgkill(pid, tid, unix.SIGURG)
	}
	return nil
}
