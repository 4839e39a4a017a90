package csinode

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"k8s.io/mount-utils"
)

// mountTable is a snapshot of this process's mount table. Decisions are made
// on it rather than on stat(2), which fails (or hangs) on a dead or stuck
// FUSE mount.
type mountTable []*mountinfo.Info

func readMounts() (mountTable, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	return infos, nil
}

// at returns the mounts whose mount point is path, in table order.
func (t mountTable) at(path string) []*mountinfo.Info {
	var out []*mountinfo.Info
	for _, m := range t {
		if m.Mountpoint == path {
			out = append(out, m)
		}
	}
	return out
}

// base returns the lowest mount at path (the one not mounted on another mount
// at the same path), or nil when nothing is mounted there.
func (t mountTable) base(path string) *mountinfo.Info {
	stack := t.at(path)
	for _, m := range stack {
		if !slices.ContainsFunc(stack, func(o *mountinfo.Info) bool { return o.ID == m.Parent }) {
			return m
		}
	}
	return nil
}

// top returns the mount that is visible at path (no other mount at path sits
// on it), or nil when nothing is mounted there.
func (t mountTable) top(path string) *mountinfo.Info {
	stack := t.at(path)
	for _, m := range stack {
		if !slices.ContainsFunc(stack, func(o *mountinfo.Info) bool { return o.Parent == m.ID }) {
			return m
		}
	}
	return nil
}

// sameSource reports whether a and b show the same directory of the same
// file system, i.e. one is a bind mount of the other.
func sameSource(a, b *mountinfo.Info) bool {
	return a.Major == b.Major && a.Minor == b.Minor && a.Root == b.Root
}

// binds returns the other mounts that show the same directory as m.
func (t mountTable) binds(m *mountinfo.Info) []*mountinfo.Info {
	var out []*mountinfo.Info
	for _, o := range t {
		if o.ID != m.ID && sameSource(o, m) {
			out = append(out, o)
		}
	}
	return out
}

// isShared reports whether m propagates mount events to its peers.
func isShared(m *mountinfo.Info) bool {
	for _, f := range strings.Fields(m.Optional) {
		if strings.HasPrefix(f, "shared:") {
			return true
		}
	}
	return false
}

func isReadOnly(m *mountinfo.Info) bool {
	return slices.Contains(strings.Split(m.Options, ","), "ro")
}

// within reports whether path is dir or lies below it.
func within(path, dir string) bool {
	return path == dir || mount.PathWithinBase(path, dir)
}

// setPropagation changes the propagation type of the mount at path with
// mount(8), e.g. "--make-shared".
func (d *Driver) setPropagation(path, flag string) error {
	if err := d.mounter.MountSensitiveWithoutSystemdWithMountFlags("", path, "", nil, nil, []string{flag}); err != nil {
		return fmt.Errorf("mount %s %s: %w", flag, path, err)
	}
	return nil
}

// unmountAll removes every mount stacked at path and then path itself.
// mount-utils' CleanupMountPoint unmounts one layer (also a dead FUSE mount,
// whose stat fails with "transport endpoint is not connected") and removes the
// directory; the layers above it (a sidecar's FUSE mount propagated onto a
// bind) are unmounted first.
func (d *Driver) unmountAll(path string) error {
	t, err := readMounts()
	if err != nil {
		return err
	}
	if len(t.at(path)) == 0 {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	for i := 0; len(t.at(path)) > 1; i++ {
		// A bound loop: a mount that keeps reappearing must not spin forever.
		if i == 16 {
			return fmt.Errorf("mounts keep reappearing at %s", path)
		}
		if err := d.mounter.Unmount(path); err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
		if t, err = readMounts(); err != nil {
			return err
		}
	}
	if err := mount.CleanupMountPoint(path, d.mounter, true); err != nil {
		return fmt.Errorf("clean up mount point %s: %w", path, err)
	}
	if t, err = readMounts(); err != nil {
		return err
	}
	if n := len(t.at(path)); n > 0 {
		return fmt.Errorf("%d mounts are still at %s after unmounting", n, path)
	}
	return nil
}
