package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
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

// buildPodfs builds the podfs binary into a temporary directory.
func buildPodfs(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "podfs")
	out, err := exec.Command("go", "build", "-tags", "norados", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build podfs: %v\n%s", err, out)
	}
	return bin
}

// TestSidecarCommand runs `podfs sidecar` as the webhook configures it:
// volume set in $PODFS_SIDECAR, POD_UID in the environment; the probe
// command waits for it, SIGTERM stops it with status 0 and no mount left.
// A missing volume set is a clear error.
func TestSidecarCommand(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildPodfs(t)
	dir := t.TempDir()
	metaURL := "bolt://" + dir + "/meta.db"
	if out, err := exec.Command(bin, "format", metaURL, "vol", "--storage", "file://"+dir+"/data").CombinedOutput(); err != nil {
		t.Fatalf("podfs format: %v\n%s", err, out)
	}
	set := volumeset.VolumeSet{Mode: volumeset.ModeServerless, Native: true, Volumes: []volumeset.Volume{
		{Name: "data", MountPoint: dir + "/pods/" + volumeset.PodUIDRef + "/pv-1", MetaURLEnv: "PODFS_VOL0_META_URL"}}}
	js, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	mp := dir + "/pods/uid-7/pv-1"
	t.Cleanup(func() {
		for i := 0; i < 4; i++ {
			if ok, _ := mountinfo.Mounted(mp); !ok {
				break
			}
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
	socket := dir + "/sidecar.sock"

	// No volume set: a clear error, status 1.
	out, err := exec.Command(bin, "sidecar", "--socket", socket).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), volumeset.EnvVar+" is empty") {
		t.Fatalf("without a volume set: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "sidecar", "--socket", socket, "--termination-log", "")
	cmd.Env = append(os.Environ(), volumeset.EnvVar+"="+string(js), "POD_UID=uid-7", "PODFS_VOL0_META_URL="+metaURL)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("podfs sidecar output:\n%s", log.String())
		}
	})
	if out, err := exec.Command(bin, "sidecar", "--probe", "--wait=60s", "--socket", socket).CombinedOutput(); err != nil {
		t.Fatalf("podfs sidecar --probe --wait: %v\n%s", err, out)
	}
	if err := os.WriteFile(mp+"/hello", []byte("world"), 0o644); err != nil {
		t.Fatalf("write through the sidecar's mount: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("podfs sidecar after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("podfs sidecar did not stop on SIGTERM")
	}
	if ok, _ := mountinfo.Mounted(mp); ok {
		t.Fatal("mount left behind")
	}
	// Not running any more: the probe fails.
	if err := exec.Command(bin, "sidecar", "--probe", "--socket", socket).Run(); err == nil {
		t.Fatal("probe passed with no sidecar running")
	}
}
