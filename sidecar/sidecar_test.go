package sidecar

import (
	"context"
	"errors"
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

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// tmpfsMounter mounts a real tmpfs per volume: the runtime's logic is tested
// on real mounts before pkg/fs serves FUSE ones. failOn names a volume whose
// mount fails, after the file gate exists when gate is set.
type tmpfsMounter struct {
	failOn, gate string
}

type tmpfsMount struct{ mp string }

func (m tmpfsMounter) Mount(ctx context.Context, v Volume) (Mount, error) {
	if v.Name == m.failOn {
		for m.gate != "" {
			if _, err := os.Stat(m.gate); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil, errors.New("metadata engine tikv://pd:2379 unreachable")
	}
	if err := unix.Mount("tmpfs", v.MountPoint, "tmpfs", 0, "size=16m"); err != nil {
		return nil, err
	}
	return tmpfsMount{v.MountPoint}, nil
}

func (m tmpfsMount) Unmount(context.Context) error { return Unmount(m.mp) }

// Wait polls: a tmpfs has no server to tell us.
func (m tmpfsMount) Wait() error {
	for {
		ok, err := mountinfo.Mounted(m.mp)
		if err != nil || !ok {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mounted(t testing.TB, mp string) bool {
	t.Helper()
	ok, err := mountinfo.Mounted(mp)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// testSet returns a volume set with n volumes under a fresh directory and
// makes sure nothing stays mounted there when the test ends.
func testSet(t *testing.T, native bool, names ...string) (*volumeset.VolumeSet, string) {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	set := &volumeset.VolumeSet{Mode: volumeset.ModeServerless, Native: native}
	for _, n := range names {
		set.Volumes = append(set.Volumes, volumeset.Volume{Name: n, MountPoint: dir + "/pods/" + volumeset.PodUIDRef + "/" + n, MetaURL: "bolt:///x.db"})
	}
	if !native {
		set.AppsDoneFile = dir + "/podinfo/annotations"
		if err := os.MkdirAll(dir+"/podinfo", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range names {
			mp := dir + "/pods/uid-1/" + n
			for i := 0; i < 4 && mounted(t, mp); i++ {
				_ = unix.Unmount(mp, unix.MNT_DETACH)
			}
		}
	})
	return set, dir
}

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func waitReady(t *testing.T, socket string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := Probe(context.Background(), socket, 0)
		if err == nil {
			return
		}
		select {
		case e := <-done:
			t.Fatalf("sidecar stopped before ready: %v", e)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunServesAndStops(t *testing.T) {
	set, dir := testSet(t, true, "data", "models")
	socket := dir + "/probe.sock"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Set: set, Mounter: tmpfsMounter{}, ProbeSocket: socket, Getenv: getenv(map[string]string{"POD_UID": "uid-1"})})
	}()
	waitReady(t, socket, done)
	for _, n := range []string{"data", "models"} {
		if !mounted(t, dir+"/pods/uid-1/"+n) {
			t.Fatalf("%s not mounted while ready", n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("clean stop returned %v", err)
	}
	for _, n := range []string{"data", "models"} {
		if mounted(t, dir+"/pods/uid-1/"+n) {
			t.Fatalf("%s still mounted after stop", n)
		}
	}
}

func TestRunAppsDone(t *testing.T) {
	set, dir := testSet(t, false, "data")
	socket := dir + "/probe.sock"
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{Set: set, Mounter: tmpfsMounter{}, ProbeSocket: socket, Poll: 20 * time.Millisecond,
			Getenv: getenv(map[string]string{"POD_UID": "uid-1"})})
	}()
	waitReady(t, socket, done)
	// What the kubelet writes once the apps-done controller annotated the pod.
	if err := os.WriteFile(set.AppsDoneFile, []byte("podfs.io/injected=\"container\"\npodfs.io/apps-done=\"true\""), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("apps done: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not stop when the apps were done")
	}
	if mounted(t, dir+"/pods/uid-1/data") {
		t.Fatal("still mounted")
	}
}

func TestRunMountDies(t *testing.T) {
	set, dir := testSet(t, true, "data", "models")
	socket := dir + "/probe.sock"
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{Set: set, Mounter: tmpfsMounter{}, ProbeSocket: socket, Getenv: getenv(map[string]string{"POD_UID": "uid-1"})})
	}()
	waitReady(t, socket, done)
	if err := unix.Unmount(dir+"/pods/uid-1/models", 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), `the mount of volume "models"`) {
			t.Fatalf("want the dead mount named, got %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not notice its mount ended")
	}
	if mounted(t, dir+"/pods/uid-1/data") {
		t.Fatal("the other volume stayed mounted after the fatal error")
	}
}

func TestResolveErrors(t *testing.T) {
	set := &volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: true, Volumes: []volumeset.Volume{
		{Name: "data", MountPoint: "/p/$(POD_UID)/d", MetaURLEnv: "PODFS_VOL0_META_URL"}}}
	_, err := Resolve(set, getenv(nil))
	if err == nil || !strings.Contains(err.Error(), "POD_UID") || !strings.Contains(err.Error(), "$PODFS_VOL0_META_URL, which is empty") {
		t.Fatalf("got %v", err)
	}
	vols, err := Resolve(set, getenv(map[string]string{"POD_UID": "u", "PODFS_VOL0_META_URL": "tikv://pd/v"}))
	if err != nil || vols[0].MountPoint != "/p/u/d" || vols[0].MetaURL != "tikv://pd/v" {
		t.Fatalf("got %+v, %v", vols, err)
	}
}

func TestAppsDoneFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "annotations")
	for content, want := range map[string]bool{
		"":                                         false,
		`podfs.io/injected="container"`:            false,
		`podfs.io/apps-done="false"`:               false,
		"a=\"b\"\npodfs.io/apps-done=\"true\"\n":   true,
		`x.podfs.io/apps-done="true"`:              false,
		"podfs.io/apps-done=\"true\"\nz=\"multi\"": true,
	} {
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := AppsDone(f); got != want {
			t.Errorf("AppsDone(%q) = %v", content, got)
		}
	}
	if AppsDone(f + ".missing") {
		t.Error("a missing file means not done")
	}
}

// The SIGTERM and failure tests run the runtime in a child process (this
// test binary, re-executed) so that a real signal and a real exit status
// are what is checked.
const childEnv = "PODFS_SIDECAR_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

func child(mode string) int {
	switch mode {
	case "fuse":
		return fuseChild(os.Getenv("FUSE_DIR"))
	case "plan":
		return planChild()
	}
	if mode == "app" {
		return appChild(os.Getenv("APP_FILE"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	set, err := volumeset.Decode(os.Getenv(volumeset.EnvVar))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mounter Mounter = tmpfsMounter{}
	switch mode {
	case "fail":
		mounter = tmpfsMounter{failOn: "models", gate: os.Getenv("GATE")}
	case "fs":
		idle, _ := time.ParseDuration(os.Getenv("IDLE"))
		fsm := &FSMounter{Log: slog.New(slog.NewTextHandler(os.Stderr, nil)), JournalDir: os.Getenv("JOURNAL"), IdleRelease: idle}
		if addr := os.Getenv("METRICS"); addr != "" {
			fsm.Metrics = NewMetrics()
			stopMetrics, err := fsm.Metrics.Serve(addr, fsm.Log)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer stopMetrics()
		}
		mounter = fsm
	}
	err = Run(ctx, Config{Set: set, Mounter: mounter, ProbeSocket: os.Getenv("SOCKET"), TerminationLog: os.Getenv("TERMLOG"),
		StopGrace: time.Second, HandoffDir: os.Getenv("HANDOFF"), Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "podfs sidecar:", err)
		return 1
	}
	return 0
}

// startChild runs the runtime in a child process; it is killed by PID at
// the end of the test whatever happens.
func startChild(t *testing.T, mode string, set *volumeset.VolumeSet, env ...string) (*exec.Cmd, *testenv.SyncBuffer, <-chan error) {
	t.Helper()
	js, err := set.Encode()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+mode, volumeset.EnvVar+"="+js, "POD_UID=uid-1")...)
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID; harmless once it exited
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	})
	return cmd, out, done
}

func TestSIGTERMBusyMountStillUnmounts(t *testing.T) {
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			set, dir := testSet(t, native, "data")
			socket := dir + "/probe.sock"
			cmd, _, done := startChild(t, "tmpfs", set, "SOCKET="+socket)
			waitReady(t, socket, done)
			mp := dir + "/pods/uid-1/data"
			// An app holding a file open and its working directory inside
			// the mount: a plain umount would fail with EBUSY.
			f, err := os.Create(mp + "/busy")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Unmount(mp, 0); !errors.Is(err, unix.EBUSY) {
				t.Fatalf("the mount is not busy (umount: %v)", err)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after SIGTERM: %v, want status 0", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no exit after SIGTERM")
			}
			if mounted(t, mp) {
				t.Fatal("busy mount still mounted after SIGTERM")
			}
			// The open file still works: a lazy unmount detached the mount.
			if _, err := f.WriteString("x"); err != nil {
				t.Fatalf("open file broken by the lazy unmount: %v", err)
			}
		})
	}
}

func TestFailingMountNotReadyAndExitsWithReason(t *testing.T) {
	set, dir := testSet(t, true, "data", "models")
	socket, gate, termlog := dir+"/probe.sock", dir+"/gate", dir+"/termination-log"
	if err := os.WriteFile(termlog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, out, done := startChild(t, "fail", set, "SOCKET="+socket, "GATE="+gate, "TERMLOG="+termlog)
	// While the second volume is still mounting, the probe says not ready.
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := Probe(context.Background(), socket, 0)
		if err == nil {
			t.Fatal("ready although a volume is not mounted")
		}
		if strings.Contains(err.Error(), "mounting") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !mounted(t, dir+"/pods/uid-1/data") {
		t.Fatal("the first volume is not mounted while the second one mounts")
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("exit %v, want non-zero", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after the mount failed")
	}
	reason := `mount volume "models"`
	if !strings.Contains(out.String(), reason) || !strings.Contains(out.String(), "unreachable") {
		t.Fatalf("output does not give the reason:\n%s", out)
	}
	if b, _ := os.ReadFile(termlog); !strings.Contains(string(b), reason) {
		t.Fatalf("termination log %q lacks the reason", b)
	}
	if mounted(t, dir+"/pods/uid-1/data") {
		t.Fatal("the mounted volume was left behind by the failed start")
	}
}

// TestStopWhileMounting: SIGTERM (ctx) while a volume is still mounting is
// a clean stop: what was mounted is unmounted, no error.
func TestStopWhileMounting(t *testing.T) {
	set, dir := testSet(t, true, "data", "models")
	socket := dir + "/probe.sock"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Set: set, Mounter: tmpfsMounter{failOn: "models", gate: dir + "/never"}, ProbeSocket: socket,
			Getenv: getenv(map[string]string{"POD_UID": "uid-1"})})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !mounted(t, dir+"/pods/uid-1/data") {
		if time.Now().After(deadline) {
			t.Fatal("first volume never mounted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := Probe(context.Background(), socket, 0); !errors.Is(err, ErrNotReady) {
		t.Fatalf("probe while mounting: %v, want not ready", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stop while mounting: %v, want a clean stop", err)
	}
	if mounted(t, dir+"/pods/uid-1/data") {
		t.Fatal("still mounted")
	}
}
