package fs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// mpState is what is at a mount point before we mount there.
type mpState int

const (
	mpDir     mpState = iota // a directory, ready
	mpMissing                // nothing: created at mount
	mpStale                  // a FUSE mount whose server is gone
)

// checkMountPoint looks at mp without changing anything, so a bad request
// fails before any state is touched.
func checkMountPoint(mp string) (mpState, error) {
	st, err := os.Stat(mp)
	switch {
	case errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED):
		return mpStale, nil
	case errors.Is(err, os.ErrNotExist):
		if _, perr := os.Stat(parentDir(mp)); perr != nil {
			return 0, fmt.Errorf("mount point %s does not exist and neither does its parent: create it with mkdir -p", mp)
		}
		return mpMissing, nil
	case err != nil:
		return 0, fmt.Errorf("mount point %s: %w", mp, err)
	case !st.IsDir():
		return 0, fmt.Errorf("mount point %s is not a directory but %s: mount on a directory", mp, describeType(st.Mode()))
	}
	if fstype, ok := mountedFS(mp); ok && strings.HasPrefix(fstype, "fuse") {
		// stat may be answered from the kernel's attribute cache for a
		// moment after the server died; statfs always asks the server.
		var sfs syscall.Statfs_t
		if err := syscall.Statfs(mp, &sfs); errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
			return mpStale, nil
		}
		return 0, fmt.Errorf("%s is already a mounted FUSE file system (%s): unmount it first (podfs umount %s)", mp, fstype, mp)
	}
	return mpDir, nil
}

func describeType(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeDevice != 0:
		return "a device"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "not a directory (" + m.Type().String() + ")"
}

func parentDir(p string) string {
	i := strings.LastIndexByte(strings.TrimRight(p, "/"), '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// prepareMountPoint clears a dead mount (lazily: processes may still hold
// it) or creates a missing directory.
func prepareMountPoint(mp string, state mpState) error {
	switch state {
	case mpStale:
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("clear the dead mount at %s: %w (try: umount -l %s)", mp, err, mp)
		}
		st, err := os.Stat(mp)
		if err != nil {
			return fmt.Errorf("mount point %s after clearing its dead mount: %w", mp, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("mount point %s is not a directory: mount on a directory", mp)
		}
	case mpMissing:
		if err := os.Mkdir(mp, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create mount point %s: %w", mp, err)
		}
	}
	return nil
}

// mountEntry is one mount at a path, from /proc/self/mountinfo.
type mountEntry struct {
	fstype string
	minor  int // the device's minor number: a FUSE mount's connection
}

// mountsAt lists the mounts stacked exactly at mp, lowest first, read from
// /proc/self/mountinfo (never by a stat, which a hung mount would block).
func mountsAt(mp string) []mountEntry {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || unescapeMountinfo(fields[4]) != mp {
			continue
		}
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				e := mountEntry{fstype: fields[i+1], minor: -1}
				if _, minor, ok := strings.Cut(fields[2], ":"); ok {
					if n, err := strconv.Atoi(minor); err == nil {
						e.minor = n
					}
				}
				mounts = append(mounts, e)
				break
			}
		}
	}
	return mounts
}

// mountedFS reports the file system type mounted exactly at mp (the last
// mount stacked there wins).
func mountedFS(mp string) (string, bool) {
	m := mountsAt(mp)
	if len(m) == 0 {
		return "", false
	}
	return m[len(m)-1].fstype, true
}

// IsMounted reports whether a FUSE file system is mounted at mp.
func IsMounted(mp string) bool {
	fstype, ok := mountedFS(mp)
	return ok && strings.HasPrefix(fstype, "fuse")
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Unmount unmounts whatever FUSE file system is at mp: normally, or lazily
// (detached now, gone when the last user leaves) when busy or when lazy is
// set. A dead mount is cleared the same way.
func Unmount(mp string, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err := syscall.Unmount(mp, flags)
	if errors.Is(err, syscall.EBUSY) && !lazy {
		err = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("%s is not a mount point", mp)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	return nil
}
