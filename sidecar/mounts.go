package sidecar

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// ClearDeadMount detaches a FUSE mount left at mp by a previous run of the
// sidecar (its server died with the old container, so every access fails
// with ENOTCONN). Only FUSE mounts are touched: on ordinary nodes mp itself
// is the CSI node's shared bind mount, which must stay.
func ClearDeadMount(mp string) error {
	mp = filepath.Clean(mp)
	for range 8 { // stacked dead mounts, one per crash
		infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
		if err != nil {
			return fmt.Errorf("read mounts at %s: %w", mp, err)
		}
		var top *mountinfo.Info // the last one listed is on top
		if len(infos) > 0 {
			top = infos[len(infos)-1]
		}
		_, statErr := os.Stat(mp)
		dead := errors.Is(statErr, syscall.ENOTCONN)
		if top == nil || !(strings.HasPrefix(top.FSType, "fuse") || dead) {
			return nil
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("clear the mount left at %s by a previous run (%s): %w", mp, top.FSType, err)
		}
	}
	return fmt.Errorf("%s: more than 8 stacked FUSE mounts; unmount them by hand", mp)
}

// Unmount unmounts mp, lazily (MNT_DETACH) when it is busy, so a file an
// app still holds open cannot keep the pod Terminating.
func Unmount(mp string) error {
	err := unix.Unmount(mp, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(mp, unix.MNT_DETACH)
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil // not mounted (any more)
	}
	return err
}
