package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/meta/kv"
)

// mountProc is a `podfs mount` child process, killed by PID and its mount
// detached when the test ends, whatever happened.
type mountProc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
	err  error
	// The mount's point and FUSE connection, once waitMounted saw it served.
	mp      string
	conn    int
	hasConn bool
}

func startMount(t *testing.T, args ...string) *mountProc {
	t.Helper()
	p := &mountProc{done: make(chan struct{})}
	p.cmd = exec.Command(podfsBinary(t), append([]string{"mount"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = &lockedWriter{p: p}, &lockedWriter{p: p}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
			p.awaitExit(t, "SIGKILL")
		}
		if t.Failed() {
			t.Logf("podfs mount output:\n%s", p.output())
		}
	})
	return p
}

// awaitExit waits for the process to exit, as it was made to (why: "SIGKILL",
// "podfs umount"...), and reports whether it did. Past unmountWait it fails
// the test and kills the process; a thread of it waiting on its own hung
// mount still keeps it from exiting, and its /dev/fuse descriptor open, the
// connection alive: past another unmountWait that connection (still the
// process's own) is aborted.
func (p *mountProc) awaitExit(t *testing.T, why string) bool {
	t.Helper()
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
		return true
	case <-time.After(unmountWait):
	}
	t.Errorf("podfs mount (pid %d) still running %s after %s: killing it", pid, unmountWait, why)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return true
	case <-time.After(unmountWait):
	}
	if !p.hasConn {
		t.Errorf("podfs mount (pid %d) did not exit after SIGKILL, and its FUSE connection is unknown", pid)
		return false
	}
	t.Errorf("podfs mount (pid %d) did not exit after SIGKILL: aborting its FUSE connection %d", pid, p.conn)
	abortAndDetach(t, p.conn, p.mp)
	select {
	case <-p.done:
		return true
	case <-time.After(unmountWait):
		t.Errorf("podfs mount (pid %d) still running after its FUSE connection was aborted", pid)
		return false
	}
}

type lockedWriter struct{ p *mountProc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func (p *mountProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *mountProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitMounted waits until mp is served (or the process died).
func (p *mountProc) waitMounted(t *testing.T, mp string) {
	t.Helper()
	waitFor(t, "the mount at "+mp, 60*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("podfs mount exited before mounting: %v\n%s", p.err, p.output())
		}
		// The statfs must answer from a FUSE file system: between a new
		// podfs clearing a dead mount and mounting, mp is a plain directory
		// (IsMounted, read before the clearing, would not tell).
		var sfs syscall.Statfs_t
		return syscall.Statfs(mp, &sfs) == nil && sfs.Type == fuseSuperMagic && IsMounted(mp)
	})
	p.mp = mp
	p.conn, p.hasConn = fuseConn(mp)
}

// fuseSuperMagic is statfs's f_type of a FUSE mount.
const fuseSuperMagic = 0x65735546

func newMountPoint(t *testing.T) string {
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	ensureUnmounted(t, mp)
	return mp
}

func TestSignalUnmountsCleanly(t *testing.T) {
	testenv.RequireRoot(t)
	v := newBoltVolume(t)
	mp := newMountPoint(t)
	p := startMount(t, v.metaURL, mp)
	p.waitMounted(t, mp)
	data := randBytes(3*testBlockSize + 1)
	// left open while the signal arrives: its data is only buffered
	f, err := os.Create(filepath.Join(mp, "open-at-signal"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("podfs mount did not exit within 60 s of SIGTERM")
	}
	f.Close()
	if p.err != nil {
		t.Fatalf("podfs mount exited with %v after SIGTERM, want 0\n%s", p.err, p.output())
	}
	if IsMounted(mp) {
		t.Fatal("mount left behind after SIGTERM")
	}
	_, mp2 := mountVolume(t, v)
	if got := mustRead(t, filepath.Join(mp2, "open-at-signal")); !bytes.Equal(got, data) {
		t.Fatalf("data written before SIGTERM: %d bytes back, want %d", len(got), len(data))
	}
}

func TestDetachedMountAndUmount(t *testing.T) {
	testenv.RequireRoot(t)
	v := newBoltVolume(t)
	mp := newMountPoint(t)
	logFile := filepath.Join(t.TempDir(), "mount.log")
	code, out := runPodfs(t, "mount", v.metaURL, mp, "-d", "--log", logFile)
	t.Cleanup(func() {
		if pid := readPid(mp); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if code != 0 {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("podfs mount -d: exit %d\n%s\nlog:\n%s", code, out, log)
	}
	// -d returns only once the mount is served
	if !IsMounted(mp) {
		t.Fatal("podfs mount -d returned before the mount was served")
	}
	mustWrite(t, filepath.Join(mp, "hello"), []byte("world"))
	pid := readPid(mp)
	if pid <= 0 {
		t.Fatal("no pid file for the detached mount")
	}
	if code, out := runPodfs(t, "umount", mp); code != 0 {
		t.Fatalf("podfs umount: exit %d\n%s", code, out)
	}
	if IsMounted(mp) {
		t.Fatal("still mounted after podfs umount")
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("podfs umount returned before the serving process exited")
	}
	_, mp2 := mountVolume(t, v)
	if got := string(mustRead(t, filepath.Join(mp2, "hello"))); got != "world" {
		t.Fatalf("after remount: %q", got)
	}
}

func readPid(mp string) int {
	b, err := os.ReadFile(filepath.Join("/run/podfs", strings.NewReplacer("/", "_", " ", "_").Replace(strings.Trim(mp, "/"))+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	return pid
}

// TestCrashAndRecover kills the mount process during a write storm and
// checks that every fsync'd file is intact after a remount, with the file
// store's small-object journal on and off.
func TestCrashAndRecover(t *testing.T) {
	testenv.RequireRoot(t)
	for _, journal := range []bool{true, false} {
		t.Run(fmt.Sprintf("journal=%v", journal), func(t *testing.T) {
			crashAndRecover(t, newBoltVolumeQuery(t, fmt.Sprintf("journal=%v", journal)))
		})
	}
}

func crashAndRecover(t *testing.T, v *volume) {
	mp := newMountPoint(t)
	p := startMount(t, v.metaURL, mp)
	p.waitMounted(t, mp)

	// Writers create files; each file that fsync returned for is recorded
	// with its content and must survive the crash.
	type synced struct {
		name string
		data []byte
	}
	var mu sync.Mutex
	var durable []synced
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%04d", w, i)
				data := randBytes(50_000 + (i%7)*400_000)
				f, err := os.Create(filepath.Join(mp, name))
				if err != nil {
					return
				}
				_, err = f.Write(data)
				if err == nil && i%2 == 0 {
					err = f.Sync()
					if err == nil {
						mu.Lock()
						durable = append(durable, synced{name, data})
						mu.Unlock()
					}
				}
				f.Close()
				if err != nil {
					return
				}
			}
		}()
	}
	waitFor(t, "some fsync'd files", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(durable) >= 20
	})
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !p.awaitExit(t, "SIGKILL") {
		t.FailNow()
	}
	close(stop)
	wg.Wait()
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mp, &sfs); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("statfs of the mount point after its server was killed: %v, want ENOTCONN (a dead mount)", err)
	}

	// The next mount clears the dead mount and serves the volume again.
	p2 := startMount(t, v.metaURL, mp)
	p2.waitMounted(t, mp)
	mu.Lock()
	files := durable
	mu.Unlock()
	// Check them all and say how each one is wrong: the pattern (which
	// files, which bytes) is what tells one cause from another.
	bad := 0
	for _, s := range files {
		got, err := os.ReadFile(filepath.Join(mp, s.name))
		if err != nil {
			t.Errorf("fsync'd file %s after the crash: %v", s.name, err)
			bad++
			continue
		}
		if !bytes.Equal(got, s.data) {
			t.Errorf("fsync'd file %s after the crash: %s", s.name, describeDiff(got, s.data, testBlockSize))
			bad++
		}
	}
	if bad > 0 {
		// Go on to fsck: its report helps tell where the file went.
		ents, err := os.ReadDir(mp)
		t.Errorf("%d of %d fsync'd files wrong after kill -9 (the mount lists %d entries, %v)", bad, len(files), len(ents), err)
	} else {
		t.Logf("%d fsync'd files intact after kill -9", len(files))
	}
	if err := syscall.Kill(p2.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !p2.awaitExit(t, "SIGTERM") {
		t.FailNow()
	}
	code, out := runPodfs(t, "fsck", v.metaURL)
	if code != 0 {
		t.Fatalf("fsck after the crash: exit %d\n%s", code, out)
	}
	if t.Failed() {
		t.Logf("fsck after the crash:\n%s", out)
	}
}

func TestBadInput(t *testing.T) {
	testenv.RequireRoot(t)

	t.Run("MountOverNonDirectory", func(t *testing.T) {
		v := newBoltVolume(t)
		file := filepath.Join(t.TempDir(), "a-file")
		mustWrite(t, file, []byte("keep me"))
		code, out := runPodfs(t, "mount", v.metaURL, file)
		if code == 0 || !strings.Contains(out, "not a directory") {
			t.Fatalf("mount over a file: exit %d, output %q; want an error saying it is not a directory", code, out)
		}
		if got := string(mustRead(t, file)); got != "keep me" || IsMounted(file) {
			t.Fatalf("the file changed (%q) or got mounted", got)
		}
		assertNoSessions(t, v)
	})

	t.Run("MissingVolume", func(t *testing.T) {
		dir := t.TempDir()
		mp := newMountPoint(t)
		code, out := runPodfs(t, "mount", "bolt://"+filepath.Join(dir, "meta.db"), mp)
		if code == 0 || !strings.Contains(out, "podfs format") {
			t.Fatalf("mount of a missing volume: exit %d, output %q; want an error pointing at podfs format", code, out)
		}
		if IsMounted(mp) {
			t.Fatal("mounted anyway")
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("mounting a missing volume left files behind: %v", ents)
		}
	})

	t.Run("NewerFormatVersion", func(t *testing.T) {
		dir := t.TempDir()
		metaURL := "bolt://" + filepath.Join(dir, "meta.db")
		formatVolume(t, metaURL, "file://"+filepath.Join(dir, "data"), "future", meta.FormatVersion)
		bumpFormatVersion(t, metaURL)
		mp := newMountPoint(t)
		code, out := runPodfs(t, "mount", metaURL, mp)
		if code == 0 || !strings.Contains(out, "upgrade podfs") && !strings.Contains(strings.ToLower(out), "newer") {
			t.Fatalf("mount of a newer-format volume: exit %d, output %q; want an error asking to upgrade", code, out)
		}
		if IsMounted(mp) {
			t.Fatal("mounted anyway")
		}
	})

	t.Run("SecondMountOfBoltVolume", func(t *testing.T) {
		v := newBoltVolume(t)
		_, mp1 := mountVolume(t, v)
		mustWrite(t, filepath.Join(mp1, "first"), []byte("1"))
		mp2 := newMountPoint(t)
		start := time.Now()
		code, out := runPodfs(t, "mount", v.metaURL, mp2)
		if code == 0 || IsMounted(mp2) {
			t.Fatalf("second mount of a bolt volume: exit %d, mounted %v, output %q; want a refusal", code, IsMounted(mp2), out)
		}
		if !strings.Contains(strings.ToLower(out), "in use") && !strings.Contains(strings.ToLower(out), "lock") {
			t.Errorf("second mount's error does not say the volume is in use: %q", out)
		}
		t.Logf("refused after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		if got := string(mustRead(t, filepath.Join(mp1, "first"))); got != "1" {
			t.Fatalf("first mount broken after the refused second one: %q", got)
		}
	})

	t.Run("UnknownOption", func(t *testing.T) {
		v := newBoltVolume(t)
		mp := newMountPoint(t)
		code, out := runPodfs(t, "mount", v.metaURL, mp, "-o", "allow_other,bogus_opt")
		if code == 0 || !strings.Contains(out, "bogus_opt") {
			t.Fatalf("unknown -o option: exit %d, output %q", code, out)
		}
		assertNoSessions(t, v)
	})
}

// bumpFormatVersion rewrites a volume's settings as a newer podfs would
// (Init always writes the current version).
func bumpFormatVersion(t *testing.T, metaURL string) {
	t.Helper()
	ctx := context.Background()
	m, err := meta.Open(ctx, metaURL, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	found := false
	err = m.(*meta.Client).Engine().Update(ctx, func(tx kv.Tx) error {
		var key, val []byte
		if err := tx.Scan(nil, nil, 0, func(k, v []byte) bool {
			var f meta.Format
			if json.Unmarshal(v, &f) == nil && f.Name == "future" && f.Version == meta.FormatVersion {
				key, val = k, v
				return false
			}
			return true
		}); err != nil {
			return err
		}
		if key == nil {
			return nil
		}
		var f map[string]any
		if err := json.Unmarshal(val, &f); err != nil {
			return err
		}
		f["Version"] = meta.FormatVersion + 1
		b, err := json.Marshal(f)
		if err != nil {
			return err
		}
		tx.Set(key, b)
		found = true
		return nil
	})
	if err != nil || !found {
		t.Fatalf("rewrite the format version: found %v, %v", found, err)
	}
}

func assertNoSessions(t *testing.T, v *volume) {
	t.Helper()
	ctx := context.Background()
	m, err := OpenMeta(ctx, v.metaURL, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	s, err := m.ListSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 0 {
		t.Fatalf("a refused mount left %d sessions behind", len(s))
	}
}

// describeDiff says how got differs from want: sizes, and each run of
// differing bytes (up to a few) with the block it falls in and whether got
// holds zeros there.
func describeDiff(got, want []byte, blockSize int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d bytes back, want %d", len(got), len(want))
	runs := 0
	for i := 0; i < min(len(got), len(want)); {
		if got[i] == want[i] {
			i++
			continue
		}
		// A run goes on across a few equal bytes (random data matches zeros
		// now and then).
		n := min(len(got), len(want))
		j, last, zeros := i, i, true
		for j < n && j-last <= 64 {
			if got[j] != want[j] {
				zeros = zeros && got[j] == 0
				last = j
			}
			j++
		}
		j = last + 1
		if runs++; runs > 8 {
			b.WriteString("; more differences")
			break
		}
		fmt.Fprintf(&b, "; bytes [%d, %d) differ (block %d, offset %d in it), zeros back: %v", i, j, i/blockSize, i%blockSize, zeros)
		i = j
	}
	return b.String()
}

func TestDescribeDiff(t *testing.T) {
	want := randBytes(3 * 4096)
	got := bytes.Clone(want)
	clear(got[:4096])
	if d := describeDiff(got, want, 4096); !strings.Contains(d, "bytes [0, ") || !strings.Contains(d, "block 0, offset 0 in it), zeros back: true") {
		t.Errorf("first block zeroed: %q", d)
	}
	if d := describeDiff(want[:100], want, 4096); d != fmt.Sprintf("100 bytes back, want %d", len(want)) {
		t.Errorf("short file: %q", d)
	}
}
