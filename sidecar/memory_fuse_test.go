package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"podfs.io/podfs/pkg/fuseconn"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// TestSidecarMemoryAfterIdle runs a sidecar on an ordinary node with a
// 1 GiB memory limit, writes 1 GiB through its FUSE mount and reads it
// back (through the block cache: the store is remote=true), then lets it
// idle: it must report giving its cache back (nothing cached, no write
// buffer held). The sidecar's resident memory at each step is logged: it
// is what the webhook's default memory request is chosen from.
func TestSidecarMemoryAfterIdle(t *testing.T) {
	testenv.RequireRoot(t)
	total := int64(1 << 30)
	if testing.Short() {
		total = 128 << 20
	}
	dir := t.TempDir()
	handoff := filepath.Join(dir, "run", "handoff")
	metaURL := formatRemote(t, dir, "mem", "00000000-0000-4000-8000-0000000000d1", filepath.Join(dir, "objects"))
	target := publishFor(t, dir, handoff, "pv-mem", &fuseconn.Source{MetaURL: metaURL}).target
	set := &volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: true, Volumes: []volumeset.Volume{
		{Name: "mem", Handoff: "pv-mem"}}}
	socket := filepath.Join(dir, "probe.sock")
	cmd, out, done := startChild(t, "fs", set, "SOCKET="+socket, "HANDOFF="+handoff,
		"JOURNAL="+filepath.Join(dir, "run", "journal"), "IDLE=3s", MemoryLimitEnv+"=1Gi")
	waitReady(t, socket, done)
	pid := cmd.Process.Pid
	rssIdle := procRSS(t, pid)

	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if r := procRSS(t, pid); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 31)
	}
	f, err := os.Create(filepath.Join(target, "big"))
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < total; off += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writePeak := peak.Swap(0)
	rssWritten := procRSS(t, pid)
	rf, err := os.Open(filepath.Join(target, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(rf.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	n, err := io.CopyBuffer(io.Discard, rf, make([]byte, 1<<20))
	rf.Close()
	if err != nil || n != total {
		t.Fatalf("read back %d bytes, %v; want %d", n, err, total)
	}
	readEnd := time.Now()
	rssRead := procRSS(t, pid)
	close(stop)
	wg.Wait()
	readPeak := peak.Load()

	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "idle: gave memory back") {
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar did not give memory back after idling:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	line := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "idle: gave memory back") {
			line = l
		}
	}
	if !strings.Contains(line, "cache_now=0 ") || !strings.Contains(line, "write_buffers_now=0") {
		t.Fatalf("after the idle release the sidecar still holds memory: %s", line)
	}
	rssAfter := procRSS(t, pid)
	t.Logf("sidecar RSS with a 1 GiB limit: idle %d MiB; writing %d MiB peak %d MiB, after %d MiB; reading it back peak %d MiB, after %d MiB; after the idle release %d MiB",
		rssIdle>>20, total>>20, writePeak>>20, rssWritten>>20, readPeak>>20, rssRead>>20, rssAfter>>20)
	t.Logf("read back by %s; %s", readEnd.UTC().Format(time.RFC3339Nano), line)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(done, 60*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// procRSS is the resident set size of process pid.
func procRSS(t *testing.T, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0 // exited; the caller notices otherwise
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
