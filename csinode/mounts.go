package csinode

import (
	"fmt"
	"slices"

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

// within reports whether path is dir or lies below it.
func within(path, dir string) bool {
	return path == dir || mount.PathWithinBase(path, dir)
}
