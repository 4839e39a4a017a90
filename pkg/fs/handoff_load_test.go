package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/fuseconn"
)

// handoffLoad is a reader-writer load on a mount: writers create files
// (write, fsync, close) and record the checksum of each whose fsync
// succeeded; readers read recorded files back and compare. Every error is
// kept, except an fsync's EIO when lossOK: that is how a server continuing
// after its predecessor was killed reports writes that may be lost, and
// the file is then left out of the checks.
type handoffLoad struct {
	mp     string
	lossOK bool
	stop   chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	files  map[string][32]byte
	errs   []error
	lossy  int
	worst  time.Duration // the longest operation since the last reset
	ops    atomic.Int64
	lastOK []atomic.Int64 // per worker: start time (ns) of its last completed operation
}

func startHandoffLoad(mp string, writers, readers int, lossOK bool) *handoffLoad {
	l := &handoffLoad{mp: mp, lossOK: lossOK, stop: make(chan struct{}), files: map[string][32]byte{},
		lastOK: make([]atomic.Int64, writers+readers)}
	for w := range writers {
		l.wg.Add(1)
		go l.writer(w)
	}
	for r := range readers {
		l.wg.Add(1)
		go l.reader(writers + r)
	}
	return l
}

func (l *handoffLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *handoffLoad) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// timed runs one operation, keeping its latency and error.
func (l *handoffLoad) timed(worker int, what string, op func() error) error {
	start := time.Now()
	err := op()
	d := time.Since(start)
	l.mu.Lock()
	l.worst = max(l.worst, d)
	l.mu.Unlock()
	l.ops.Add(1)
	if err == nil {
		l.lastOK[worker].Store(start.UnixNano())
	}
	return err
}

func (l *handoffLoad) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

func (l *handoffLoad) writer(w int) {
	defer l.wg.Done()
	for i := 0; !l.stopped(); i++ {
		name := fmt.Sprintf("w%d/f%05d", w, i)
		path := filepath.Join(l.mp, name)
		if i == 0 {
			if err := l.timed(w, "mkdir", func() error { return os.MkdirAll(filepath.Dir(path), 0o755) }); err != nil {
				l.fail(fmt.Errorf("mkdir %s: %w", filepath.Dir(name), err))
				return
			}
		}
		data := randBytes(4<<10 + rand.IntN(300<<10))
		var f *os.File
		if err := l.timed(w, "create", func() (err error) { f, err = os.Create(path); return err }); err != nil {
			l.fail(fmt.Errorf("create %s: %w", name, err))
			continue
		}
		ok := true
		for off := 0; off < len(data) && ok; off += 64 << 10 {
			chunk := data[off:min(off+64<<10, len(data))]
			if err := l.timed(w, "write", func() error { _, err := f.Write(chunk); return err }); err != nil {
				l.fail(fmt.Errorf("write %s at %d: %w", name, off, err))
				ok = false
			}
		}
		if ok {
			err := l.timed(w, "fsync", f.Sync)
			switch {
			case err == nil:
			case l.lossOK && errors.Is(err, syscall.EIO):
				l.mu.Lock()
				l.lossy++
				l.mu.Unlock()
				ok = false
			default:
				l.fail(fmt.Errorf("fsync %s: %w", name, err))
				ok = false
			}
		}
		if err := l.timed(w, "close", f.Close); err != nil {
			l.fail(fmt.Errorf("close %s: %w", name, err))
			ok = false
		}
		if ok {
			l.mu.Lock()
			l.files[name] = sha256.Sum256(data)
			l.mu.Unlock()
		}
	}
}

func (l *handoffLoad) reader(r int) {
	defer l.wg.Done()
	for !l.stopped() {
		l.mu.Lock()
		var name string
		var want [32]byte
		n := rand.IntN(len(l.files) + 1)
		for k, v := range l.files {
			if n--; n <= 0 {
				name, want = k, v
				break
			}
		}
		l.mu.Unlock()
		if name == "" {
			if err := l.timed(r, "statfs", func() error { var s syscall.Statfs_t; return syscall.Statfs(l.mp, &s) }); err != nil {
				l.fail(fmt.Errorf("statfs: %w", err))
			}
			continue
		}
		if err := l.timed(r, "read", func() error { return checkSum(filepath.Join(l.mp, name), want) }); err != nil {
			l.fail(fmt.Errorf("read %s: %w", name, err))
		}
		if err := l.timed(r, "readdir", func() error {
			_, err := os.ReadDir(filepath.Dir(filepath.Join(l.mp, name)))
			return err
		}); err != nil {
			l.fail(fmt.Errorf("readdir %s: %w", filepath.Dir(name), err))
		}
	}
}

func checkSum(path string, want [32]byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		return errors.New("content differs from what was written and fsync'd")
	}
	return nil
}

// settle waits until every worker has completed an operation started
// after t (so none is still held up by a replacement), or an error was
// seen, or timeout passed; then it returns and resets the longest
// operation time seen.
func (l *handoffLoad) settle(after time.Time, timeout time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for i := range l.lastOK {
			all = all && l.lastOK[i].Load() >= after.UnixNano()
		}
		l.mu.Lock()
		failed := len(l.errs) > 0
		l.mu.Unlock()
		if all || failed || time.Now().After(deadline) {
			l.mu.Lock()
			defer l.mu.Unlock()
			w := l.worst
			l.worst = 0
			return w, all
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *handoffLoad) errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// TestHandoffReplaceUnderLoad replaces the serving process of a handed-off
// connection 50 times while a reader-writer load runs on the mount:
// cleanly (SIGTERM: the server detaches, the next continues) and by
// kill -9. Each server keeps a write journal, as the sidecar on an
// ordinary node does, so a killed one loses no acknowledged write: the
// load must see no error at all (an fsync's EIO included), every file
// whose fsync succeeded must read back intact, and fsck must find the
// volume clean.
//
// PODFS_HANDOFF_ROUNDS sets the number of replacements per mode (default 50).
func TestHandoffReplaceUnderLoad(t *testing.T) {
	testenv.RequireRoot(t)
	rounds := 50
	if testing.Short() {
		rounds = 5
	}
	if s := os.Getenv("PODFS_HANDOFF_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("PODFS_HANDOFF_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	for _, mode := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGTERM", syscall.SIGTERM}, {"SIGKILL", syscall.SIGKILL}} {
		t.Run(mode.name, func(t *testing.T) { replaceUnderLoad(t, mode.sig, rounds) })
	}
}

func replaceUnderLoad(t *testing.T, sig syscall.Signal, rounds int) {
	v := newBoltVolume(t)
	mp, conn := mountConn(t, false)
	sock := t.TempDir()
	var statusMu sync.Mutex
	var failures []string
	h, err := fuseconn.Hold(t.Context(), fuseconn.HolderConfig{Dir: sock, Volume: fuseconn.Volume{Name: v.name}, Conn: conn,
		Log: testLogger(t), OnStatus: func(s fuseconn.Status) {
			if s.Error != "" {
				statusMu.Lock()
				failures = append(failures, s.Error)
				statusMu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close() // the holder keeps its own copy, as the CSI node does
	// Registered after the children's cleanups would be, so it runs first:
	// unmounting ends the last server's connection, then it is killed.
	t.Cleanup(func() {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		h.Close()
	})
	journal := t.TempDir()
	p := startHandoffChild(t, sock, v.name, v.metaURL, journal)
	p.waitServing(t)

	fc, hasConn := fuseConn(mp)
	load := startLoadProc(t, mp, false)
	// Runs before the load's cleanup: a load process blocked on a mount
	// with no server (a failed round) exits only once the connection is
	// aborted.
	t.Cleanup(func() {
		if c, ok := fuseConn(mp); ok && hasConn && c == fc {
			abortAndDetach(t, fc, mp)
		}
	})
	load.settle(t, time.Now())
	stalls := make([]time.Duration, 0, rounds)
	for round := range rounds {
		load.settle(t, time.Now()) // reset: the stall counted below is this round's
		signalled := time.Now()
		err := p.stop(t, sig)
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("round %d: the server exited with %v after SIGTERM\n%s", round, err, p.out.String())
		}
		p = startHandoffChild(t, sock, v.name, v.metaURL, journal)
		p.waitServing(t)
		served := time.Now()
		stall, nerr := load.settle(t, served)
		stalls = append(stalls, stall)
		t.Logf("round %d: server replaced in %s; the longest load operation took %s",
			round, served.Sub(signalled).Round(time.Millisecond), stall.Round(time.Millisecond))
		if nerr > 0 {
			_, _, errs := load.finish(t)
			t.Fatalf("round %d: the load saw %d errors: %q", round, len(errs), errs)
		}
	}
	files, lossy, errs := load.finish(t)
	if len(errs) > 0 {
		t.Fatalf("the load saw %d errors: %q", len(errs), errs)
	}
	if files == 0 {
		t.Fatal("the load completed no file")
	}
	sorted := slices.Clone(stalls)
	slices.Sort(sorted)
	t.Logf("%d replacements by %v under load: %d files verified, %d fsyncs reported possible loss (EIO); longest operation per replacement: median %s, max %s",
		rounds, sig, files, lossy, sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
	statusMu.Lock()
	if len(failures) > 0 {
		t.Errorf("servers reported failures: %v", failures)
	}
	statusMu.Unlock()

	// A clean end, then fsck.
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("last server after SIGTERM: %v\n%s", err, p.out.String())
	}
	if err := syscall.Unmount(mp, 0); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if code, out := runPodfs(t, "fsck", v.metaURL); code != 0 {
		t.Fatalf("fsck: exit %d\n%s", code, out)
	}
}
