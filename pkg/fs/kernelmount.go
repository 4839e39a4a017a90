package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mountKernel opens /dev/fuse and mounts it at mp with mount(2), returning
// the connection's file descriptor for the server to read requests from
// (go-fuse's "/dev/fd/N" mount point).
//
// We do this ourselves rather than through go-fuse's DirectMount because
// that one stats the mount point first to learn the root's mode. On a dead
// FUSE mount (a restarted sidecar stacking on its previous run's mount) the
// stat fails with ENOTCONN as soon as the kernel's cached attributes expire,
// and go-fuse then falls back to fusermount, hiding the real error. The
// root we serve is always a directory, so there is nothing to stat.
func mountKernel(mp string, fo *fuse.MountOptions) (int, error) {
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/fuse: %w (load the fuse module, or give the container the /dev/fuse device)", err)
	}
	source := fo.FsName
	if source == "" {
		source = fo.Name
	}
	data, flags := kernelMountData(fd, fo)
	if err := syscall.Mount(source, mp, "fuse."+fo.Name, flags, data); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("mount(2) fuse.%s at %s with %q: %w", fo.Name, mp, data, err)
	}
	return fd, nil
}

// kernelMountData turns the FUSE options into mount(2)'s data string and
// flags: the kernel takes dev/suid/exec as flags, and rejects options it
// does not know.
func kernelMountData(fd int, fo *fuse.MountOptions) (string, uintptr) {
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	if fo.DirectMountFlags != 0 {
		flags = fo.DirectMountFlags
	}
	opts := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", syscall.S_IFDIR),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", fo.MaxWrite),
	}
	for _, o := range fo.Options {
		switch o {
		case "nodev":
			flags |= syscall.MS_NODEV
		case "dev":
			flags &^= syscall.MS_NODEV
		case "nosuid":
			flags |= syscall.MS_NOSUID
		case "suid":
			flags &^= syscall.MS_NOSUID
		case "noexec":
			flags |= syscall.MS_NOEXEC
		case "exec":
			flags &^= syscall.MS_NOEXEC
		default:
			opts = append(opts, o)
		}
	}
	if fo.AllowOther {
		opts = append(opts, "allow_other")
	}
	return strings.Join(opts, ","), flags
}

// disablePoll makes the kernel send its first POLL request now, while the
// server is idle, so the server can answer ENOSYS and the kernel stops
// asking (go-fuse's poll hack, which it skips for "/dev/fd/N" mounts). Left
// for later, the POLL of a file the Go runtime registers with epoll may wait
// for a server thread that is busy.
func disablePoll(mp string) error {
	fd, err := syscall.Open(filepath.Join(mp, ".go-fuse-epoll-hack"), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("poll hack at %s: %w", mp, err)
	}
	defer syscall.Close(fd)
	_, err = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	if err != nil && !errors.Is(err, syscall.EINTR) {
		return fmt.Errorf("poll hack at %s: %w", mp, err)
	}
	return nil
}

// newServer mounts fsys at mp and returns its server, not yet serving. As
// root it mounts with mountKernel; otherwise through fusermount.
func newServer(fsys fuse.RawFileSystem, mp string, fo *fuse.MountOptions) (*fuse.Server, error) {
	if !fo.DirectMount {
		srv, err := fuse.NewServer(fsys, mp, fo)
		if err != nil {
			return nil, fmt.Errorf("mount FUSE at %s: %w (not root: is fusermount3 installed, and /dev/fuse readable?)", mp, err)
		}
		return srv, nil
	}
	fd, err := mountKernel(mp, fo)
	if err != nil {
		return nil, err
	}
	o := *fo
	o.DirectMount, o.DirectMountStrict = false, false // never mount "/dev/fd/N" itself
	srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", fd), &o)
	if err != nil {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		syscall.Close(fd)
		return nil, fmt.Errorf("start serving the FUSE mount at %s: %w", mp, err)
	}
	return srv, nil
}
