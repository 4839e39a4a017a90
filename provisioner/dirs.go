package provisioner

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta"
)

// Names the controller keeps for itself in a volume.
const (
	// tmpPrefix names a claim's directory while it is being made: it gets
	// its owner mark and quota under this name and is renamed into place
	// only then, so a directory at the claim's path is always complete.
	tmpPrefix = ".podfs-provisioning-"
	// archiveDir holds the directories of deleted claims of classes with
	// onDelete: archive, as archiveDir/<path>-<UTC time>.
	archiveDir = ".podfs-archive"
	// ownerXattr marks a claim's directory with the claim's uid, so the
	// controller reuses only its own directory and deletes only that.
	// trusted.* keeps it away from unprivileged users inside pods.
	ownerXattr = "trusted.podfs.claim"

	parentMode = 0o755 // directories on the way to a claim's
	claimMode  = 0o777 // a claim's: pods run as any user (fsGroupPolicy None)
)

// Quotas sets a directory's limits: maxBytes of space and maxInodes inodes
// for the tree below it, 0 meaning unlimited. pkg/meta's client implements
// it with exactly this method.
type Quotas interface {
	SetQuota(ctx context.Context, dir meta.Ino, maxBytes, maxInodes uint64) error
}

// errCollision says a claim's path is taken by something that is not the
// claim's directory.
var errCollision = errors.New("path collision")

// lookupPath resolves a relative path; ENOENT (wrapped) when a component is missing.
func lookupPath(ctx context.Context, m meta.Meta, p string) (meta.Ino, error) {
	ino := meta.RootIno
	for _, name := range strings.Split(p, "/") {
		next, a, err := m.Lookup(ctx, ino, name)
		if err != nil {
			return 0, fmt.Errorf("look up %q of %q: %w", name, p, err)
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return 0, fmt.Errorf("%q of %q is not a directory: %w", name, p, syscall.ENOTDIR)
		}
		ino = next
	}
	return ino, nil
}

// mkdirAll makes the directories of p that are missing (mode parentMode)
// and returns the last one. It refuses to go through another claim's
// directory: a class whose pattern nests inside another's would otherwise
// hand one claim's files to another.
func mkdirAll(ctx context.Context, m meta.Meta, p string) (meta.Ino, error) {
	ino := meta.RootIno
	if p == "" || p == "." {
		return ino, nil
	}
	walked := ""
	for _, name := range strings.Split(p, "/") {
		walked = path.Join(walked, name)
		next, a, err := m.Lookup(ctx, ino, name)
		if errors.Is(err, syscall.ENOENT) {
			next, a, err = m.Mkdir(ctx, ino, name, parentMode, 0, 0)
			if errors.Is(err, syscall.EEXIST) { // made meanwhile by another worker
				next, a, err = m.Lookup(ctx, ino, name)
			}
		}
		if err != nil {
			return 0, fmt.Errorf("make directory %q: %w", walked, err)
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return 0, fmt.Errorf("%w: %q is not a directory", errCollision, walked)
		}
		if owner, err := ownerOf(ctx, m, next); err != nil {
			return 0, err
		} else if owner != "" {
			return 0, fmt.Errorf("%w: %q is the directory of claim %s, and this path would lie inside it", errCollision, walked, owner)
		}
		ino = next
	}
	return ino, nil
}

// ownerOf returns the claim uid a directory is marked with, or "".
func ownerOf(ctx context.Context, m meta.Meta, ino meta.Ino) (string, error) {
	v, err := m.GetXattr(ctx, ino, ownerXattr)
	if errors.Is(err, syscall.ENODATA) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the owner mark of inode %d: %w", ino, err)
	}
	return string(v), nil
}

// claimDir is a claim's directory as ensureClaimDir left it.
type claimDir struct {
	ino     meta.Ino
	created bool // by this call (so a failure later may take it back)
}

// ensureClaimDir makes the claim's directory at p with its owner mark and
// quota, or finds the one an earlier attempt for the same claim made. A
// directory at p that is not the claim's is a collision. Nothing is left
// half-made: the directory appears at p only once marked and limited.
func ensureClaimDir(ctx context.Context, m meta.Meta, q Quotas, p, uid string, maxBytes uint64) (claimDir, error) {
	parentPath, name := path.Split(p)
	parent, err := mkdirAll(ctx, m, strings.TrimSuffix(parentPath, "/"))
	if err != nil {
		return claimDir{}, err
	}
	ino, a, err := m.Lookup(ctx, parent, name)
	switch {
	case err == nil:
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return claimDir{}, fmt.Errorf("%w: %q exists and is not a directory", errCollision, p)
		}
		owner, err := ownerOf(ctx, m, ino)
		if err != nil {
			return claimDir{}, err
		}
		if owner != uid {
			if owner == "" {
				return claimDir{}, fmt.Errorf("%w: directory %q already exists and was not made for this claim", errCollision, p)
			}
			return claimDir{}, fmt.Errorf("%w: directory %q belongs to claim %s", errCollision, p, owner)
		}
		// Made by an earlier attempt: the request may have changed since.
		if err := q.SetQuota(ctx, ino, maxBytes, 0); err != nil {
			return claimDir{}, fmt.Errorf("set the quota of %q to %d bytes: %w", p, maxBytes, err)
		}
		return claimDir{ino: ino}, nil
	case !errors.Is(err, syscall.ENOENT):
		return claimDir{}, fmt.Errorf("look up %q: %w", p, err)
	}

	// Build it under a temporary name (reused after a crash), then rename.
	tmp := tmpPrefix + uid
	made := false
	ino, _, err = m.Lookup(ctx, parent, tmp)
	if errors.Is(err, syscall.ENOENT) {
		ino, _, err = m.Mkdir(ctx, parent, tmp, claimMode, 0, 0)
		made = err == nil
	}
	if err != nil {
		return claimDir{}, fmt.Errorf("make directory %q: %w", path.Join(parentPath, tmp), err)
	}
	fail := func(err error) (claimDir, error) {
		if made { // this call's own, still empty: take it back
			_ = m.Rmdir(ctx, parent, tmp)
		}
		return claimDir{}, err
	}
	if err := m.SetXattr(ctx, ino, ownerXattr, []byte(uid), 0); err != nil {
		return fail(fmt.Errorf("mark directory %q as the claim's: %w", path.Join(parentPath, tmp), err))
	}
	if err := q.SetQuota(ctx, ino, maxBytes, 0); err != nil {
		return fail(fmt.Errorf("set the quota of %q to %d bytes: %w", p, maxBytes, err))
	}
	if err := m.Rename(ctx, parent, tmp, parent, name, meta.RenameNoReplace); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return fail(fmt.Errorf("%w: %q appeared while the claim's directory was being made", errCollision, p))
		}
		return fail(fmt.Errorf("move the claim's directory into place at %q: %w", p, err))
	}
	return claimDir{ino: ino, created: true}, nil
}

// removeTree removes dir (an entry of parent) and everything below it.
func removeTree(ctx context.Context, m meta.Meta, parent meta.Ino, name string) error {
	ino, a, err := m.Lookup(ctx, parent, name)
	if err != nil {
		return err
	}
	if a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		for {
			// Each pass removes what it read, so the cursor starts over.
			ents, err := m.Readdir(ctx, ino, "", 1024)
			if err != nil {
				return fmt.Errorf("list directory %q: %w", name, err)
			}
			if len(ents) == 0 {
				break
			}
			for _, e := range ents {
				if err := removeTree(ctx, m, ino, e.Name); err != nil && !errors.Is(err, syscall.ENOENT) {
					return fmt.Errorf("%s/%w", name, err)
				}
			}
		}
		if err := m.Rmdir(ctx, parent, name); err != nil {
			return fmt.Errorf("remove directory %q: %w", name, err)
		}
		return nil
	}
	if err := m.Unlink(ctx, parent, name); err != nil {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	return nil
}

// claimedDir finds a claim's directory at p and checks its owner mark;
// found is false when nothing is there.
func claimedDir(ctx context.Context, m meta.Meta, p, uid string) (parent meta.Ino, found bool, err error) {
	dir, name := path.Split(p)
	parent = meta.RootIno
	if dir != "" {
		parent, err = lookupPath(ctx, m, strings.TrimSuffix(dir, "/"))
		if errors.Is(err, syscall.ENOENT) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
	}
	ino, _, err := m.Lookup(ctx, parent, name)
	if errors.Is(err, syscall.ENOENT) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up %q: %w", p, err)
	}
	owner, err := ownerOf(ctx, m, ino)
	if err != nil {
		return 0, false, err
	}
	if owner != uid {
		return 0, false, fmt.Errorf("%w: directory %q is marked for claim %q, not %q: it was left alone", errCollision, p, owner, uid)
	}
	return parent, true, nil
}

// deleteClaimDir removes the claim's directory at p with everything in it;
// a directory already gone is fine (an earlier attempt finished).
func deleteClaimDir(ctx context.Context, m meta.Meta, p, uid string) error {
	parent, found, err := claimedDir(ctx, m, p, uid)
	if err != nil || !found {
		return err
	}
	if err := removeTree(ctx, m, parent, path.Base(p)); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("remove %q: %w", p, err)
	}
	return nil
}

// archiveClaimDir moves the claim's directory at p to
// archiveDir/<p>-<UTC time> and returns where it went ("" if it was gone).
func archiveClaimDir(ctx context.Context, m meta.Meta, p, uid string, now time.Time) (string, error) {
	parent, found, err := claimedDir(ctx, m, p, uid)
	if err != nil || !found {
		return "", err
	}
	to := path.Join(archiveDir, p) + "-" + now.UTC().Format("20060102T150405Z")
	toDir, toName := path.Split(to)
	np, err := mkdirAllPlain(ctx, m, strings.TrimSuffix(toDir, "/"))
	if err != nil {
		return "", fmt.Errorf("make the archive directory %q: %w", toDir, err)
	}
	if err := m.Rename(ctx, parent, path.Base(p), np, toName, meta.RenameNoReplace); err != nil {
		return "", fmt.Errorf("move %q to %q: %w", p, to, err)
	}
	return to, nil
}

// mkdirAllPlain is mkdir -p without mkdirAll's owner checks (the archive
// holds claims' directories by design).
func mkdirAllPlain(ctx context.Context, m meta.Meta, p string) (meta.Ino, error) {
	ino := meta.RootIno
	for _, name := range strings.Split(p, "/") {
		next, _, err := m.Lookup(ctx, ino, name)
		if errors.Is(err, syscall.ENOENT) {
			next, _, err = m.Mkdir(ctx, ino, name, 0o700, 0, 0)
			if errors.Is(err, syscall.EEXIST) {
				next, _, err = m.Lookup(ctx, ino, name)
			}
		}
		if err != nil {
			return 0, err
		}
		ino = next
	}
	return ino, nil
}
