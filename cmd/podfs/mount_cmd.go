package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/redact"
	"podfs.io/podfs/pkg/unixsock"
)

// readyFDEnv names the file descriptor a detached mount reports on: "ok"
// once the mount is served, or the error that stopped it.
const readyFDEnv = "PODFS_READY_FD"

// runDir holds one pid file per mount served on this machine, so umount can
// ask the right process to stop.
const runDir = "/run/podfs"

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runMount(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("mount", "META-URL MOUNTPOINT [-d] [-o OPTIONS] [options]", `
Mount the volume whose metadata is at META-URL on MOUNTPOINT and serve it until
unmounted (podfs umount MOUNTPOINT, umount, SIGTERM or SIGINT: buffered data is
flushed, the session closed and the mount point released, then podfs exits 0).
With -d podfs runs in the background and returns once the mount is served.
A dead mount left at MOUNTPOINT by a crashed podfs is cleared first.

Mount options (-o, comma separated, repeatable): allow_other,
default_permissions (always on: the kernel checks permissions and POSIX ACLs;
no_default_permissions is refused), ro, attr_timeout=1s, entry_timeout=1s,
fsname=NAME, debug, nodev, nosuid, noexec. POSIX ACLs (setfacl, getfacl,
default ACLs inherited by new files) are supported.

A create, unlink, rename or link in a directory updates the directory's mtime
and ctime only when they are older than --dir-mtime-skip (default 100ms), so a
burst of creates in one directory does not rewrite its attributes each time;
the directory's times may then lag its last change by that much. Use
--dir-mtime-skip 0 for exact directory times.

With bolt:// metadata, a change is written to the page cache when its call
returns (a crash of podfs loses nothing) and made durable on disk within
--sync-delay (default 20ms), or at once by fsync: like a local file system,
a power loss may lose the last moments of changes that nobody fsync'd. File
data in file:// storage is made durable with it (one syncfs for all files
written meanwhile), never after the metadata that refers to it. Use
--sync-delay 0 to make every change durable before its call returns.
etcd:// and tikv:// changes are always durable when their call returns.`)
	daemon := f.Bool("d", false, "run in the background; return once the mount is served")
	var opts multiFlag
	f.Var(&opts, "o", "mount options, comma separated (repeatable)")
	storageURL := f.String("storage", "", "storage URL overriding the one recorded in the volume")
	subdir := f.String("subdir", "", "serve only this directory of the volume")
	cacheDir := f.String("cache-dir", "", "local directory for a disk block cache (default: memory only)")
	cacheSize := &sizeFlag{}
	f.Var(cacheSize, "cache-size", "memory block cache size (default 256M)")
	bufferSize := &sizeFlag{}
	f.Var(bufferSize, "buffer-size", "memory for write buffers (default 300M)")
	metricsAddr := f.String("metrics", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9567")
	dirMtimeSkip := f.Duration("dir-mtime-skip", 100*time.Millisecond,
		"leave a directory's mtime/ctime unchanged by a create, unlink, rename or link in it while they are younger than this (0: always update)")
	syncDelay := f.Duration("sync-delay", meta.DefaultSyncDelay,
		"bolt:// metadata: make changes durable at most this long after their call returned, or at fsync (0: before it returns)")
	logFile := f.String("log", "", "with -d: log file (default /var/log/podfs/<mountpoint>.log)")
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("mount takes META-URL and MOUNTPOINT, got %d arguments (see podfs mount --help)", len(pos))
	}
	metaURL, mp := pos[0], pos[1]
	if *dirMtimeSkip < 0 {
		return usagef("--dir-mtime-skip %s: must not be negative (0 updates directory times on every change)", *dirMtimeSkip)
	}
	skip := *dirMtimeSkip
	if skip == 0 {
		skip = -1 // fs.Config: negative = always update; 0 = the default
	}
	if *syncDelay < 0 {
		return usagef("--sync-delay %s: must not be negative (0 makes every change durable before its call returns)", *syncDelay)
	}
	delay := *syncDelay
	if delay == 0 {
		delay = -1 // fs.Config: negative = durable at once; 0 = the default
	}
	abs, err := filepath.Abs(mp)
	if err != nil {
		return fmt.Errorf("mount point %s: %w", mp, err)
	}
	if *daemon {
		return daemonize(ctx, args, abs, *logFile)
	}

	cfg := fs.Config{
		MetaURL:      metaURL,
		StorageURL:   *storageURL,
		MountPoint:   abs,
		SubDir:       *subdir,
		Options:      opts,
		MetricsAddr:  *metricsAddr,
		Logger:       log,
		DirMtimeSkip: skip,
		SyncDelay:    delay,
		Data: data.Config{
			CacheDir:   *cacheDir,
			CacheSize:  cacheSize.v,
			BufferSize: bufferSize.v,
		},
	}
	mnt, err := fs.New(ctx, cfg)
	if err != nil {
		reportReady(err)
		return err
	}
	pidFile := writePidFile(abs, log)
	defer os.Remove(pidFile)
	if stop := serveStatus(mnt, abs, log); stop != nil {
		defer stop()
	}
	reportReady(nil)

	ended := make(chan error, 1)
	go func() { ended <- mnt.Wait() }()
	select {
	case err := <-ended:
		// Unmounted from outside (umount, fusermount -u): already cleaned up.
		return err
	case <-ctx.Done():
		log.Info("signal received: unmounting", "mountpoint", abs)
		uctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return mnt.Unmount(uctx)
	}
}

// reportReady tells the parent of a detached mount how mounting went.
func reportReady(err error) {
	fd, convErr := strconv.Atoi(os.Getenv(readyFDEnv))
	if convErr != nil {
		return
	}
	os.Unsetenv(readyFDEnv)
	w := os.NewFile(uintptr(fd), "ready")
	if w == nil {
		return
	}
	defer w.Close()
	if err != nil {
		fmt.Fprint(w, err.Error())
		return
	}
	fmt.Fprint(w, "ok")
}

// daemonize re-runs this mount command in the background, in a session of its
// own, and returns once it serves the mount or has failed.
func daemonize(ctx context.Context, args []string, mp, logFile string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the podfs binary to run in the background: %w", err)
	}
	var child []string
	for _, a := range args {
		switch a {
		case "-d", "--d", "-d=true", "--d=true":
			continue
		}
		child = append(child, a)
	}
	if logFile == "" {
		logFile = filepath.Join("/var/log/podfs", mountName(mp)+".log")
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return fmt.Errorf("create the log directory: %w (choose another with --log)", err)
	}
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w (choose another with --log)", err)
	}
	defer lf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(exe, append([]string{"mount"}, child...)...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start podfs in the background: %w", err)
	}
	w.Close()
	msg := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		msg <- strings.TrimSpace(string(b))
	}()
	select {
	case m := <-msg:
		if m == "ok" {
			fmt.Printf("podfs serves %s (pid %d, log %s); unmount with: podfs umount %s\n", mp, cmd.Process.Pid, logFile, mp)
			_ = cmd.Process.Release()
			return nil
		}
		_ = cmd.Wait()
		if m == "" {
			m = "the background podfs exited before mounting"
		}
		return fmt.Errorf("%s (log: %s)", m, logFile)
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		return ctx.Err()
	}
}

// mountName turns a mount point into a file name: /mnt/a b -> mnt_a_b.
func mountName(mp string) string {
	s := strings.Trim(filepath.Clean(mp), "/")
	if s == "" {
		return "root"
	}
	return strings.NewReplacer("/", "_", " ", "_").Replace(s)
}

func pidFilePath(mp string) string { return filepath.Join(runDir, mountName(mp)+".pid") }

func writePidFile(mp string, log *slog.Logger) string {
	p := pidFilePath(mp)
	if err := os.MkdirAll(runDir, 0o755); err == nil {
		err = os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"+mp+"\n"), 0o644)
		if err == nil {
			return p
		}
		log.Debug("no pid file; podfs umount will unmount directly", "err", err)
	}
	return p
}

// servingPid returns the pid of the live podfs process serving mp, or 0.
func servingPid(mp string) int {
	b, err := os.ReadFile(pidFilePath(mp))
	if err != nil {
		return 0
	}
	lines := strings.Split(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 || len(lines) < 2 || strings.TrimSpace(lines[1]) != mp {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "mount") {
		return 0 // gone, or the pid was reused
	}
	return pid
}

func umount(ctx context.Context, log *slog.Logger, mp string, lazy bool, timeout time.Duration) error {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return err
	}
	if pid := servingPid(abs); pid > 0 && !lazy {
		if err := syscall.Kill(pid, syscall.SIGTERM); err == nil {
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) {
				if syscall.Kill(pid, 0) != nil {
					if fs.IsMounted(abs) {
						break // it exited but the mount stayed (lazy): fall through
					}
					fmt.Printf("unmounted %s\n", abs)
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(50 * time.Millisecond):
				}
			}
			log.Warn("the serving podfs did not exit in time; unmounting directly", "pid", pid, "timeout", timeout)
		}
	}
	if err := fs.Unmount(abs, lazy); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("%w: run as root, or use fusermount3 -u %s", err, abs)
		}
		return err
	}
	fmt.Printf("unmounted %s\n", abs)
	return nil
}

func statusSocketPath(mp string) string { return filepath.Join(runDir, mountName(mp)+".sock") }

// serveStatus answers podfs status for this mount on a unix socket: an
// embedded (bolt) volume can only be read through the process holding it.
func serveStatus(mnt *fs.Mount, mp string, log *slog.Logger) func() {
	p := statusSocketPath(mp)
	l, err := unixsock.Listen(p, 0o755, 0)
	if err != nil {
		log.Debug("no status socket; podfs status needs the metadata directly", "err", err)
		return nil
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				st, err := mnt.Status(ctx)
				if err != nil {
					_ = json.NewEncoder(c).Encode(map[string]string{"error": err.Error()})
					return
				}
				_ = json.NewEncoder(c).Encode(st)
			}()
		}
	}()
	return func() { l.Close(); os.Remove(p) }
}

// statusFromMounts asks the podfs processes serving mounts on this machine
// for the volume at metaURL.
func statusFromMounts(metaURL string) (*fs.Status, error) {
	socks, _ := filepath.Glob(filepath.Join(runDir, "*.sock"))
	for _, p := range socks {
		c, err := net.DialTimeout("unix", p, time.Second)
		if err != nil {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		var st fs.Status
		err = json.NewDecoder(c).Decode(&st)
		c.Close()
		// Mounts report their URL redacted (fs.Mount.Status).
		if err == nil && (st.MetaURL == metaURL || st.MetaURL == redact.URL(metaURL)) {
			return &st, nil
		}
	}
	return nil, errors.New("no podfs process on this machine serves it")
}
