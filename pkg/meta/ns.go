package meta

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// MaxName is the longest name a directory entry may have, as NAME_MAX.
const MaxName = 255

// MaxSymlink is the longest symlink target, as PATH_MAX.
const MaxSymlink = 4096

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q is reserved: %w", name, syscall.EINVAL)
	case len(name) > MaxName:
		return fmt.Errorf("name of %d bytes is longer than %d: %w", len(name), MaxName, syscall.ENAMETOOLONG)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL: %w", name, syscall.EINVAL)
	}
	return nil
}

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }
func isReg(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFREG }

// getAttr reads ino's attributes in tx; ENOENT when it does not exist.
func getAttr(tx kv.Tx, ino Ino) (Attr, error) {
	var a Attr
	b, err := tx.Get(attrKey(ino))
	if err != nil {
		return a, err
	}
	if b == nil {
		return a, fmt.Errorf("inode %d: %w", ino, syscall.ENOENT)
	}
	if err := decodeAttr(b, &a); err != nil {
		return a, fmt.Errorf("inode %d: %v: %w", ino, err, syscall.EIO)
	}
	return a, nil
}

func putAttr(tx kv.Tx, ino Ino, a *Attr) { tx.Set(attrKey(ino), encodeAttr(a)) }

// touchDir records a change of directory ino's entries at time t: it sets
// the directory's mtime and ctime and writes its attributes, unless its link
// count is unchanged (nlinkChanged false) and both times are already within
// DirMtimeSkip of t; it reports that skip. Skipping keeps the directory's
// attributes out of the transaction's writes, the one key every create in
// a directory would share (a conflict between any two creates there, and on
// tikv a version per create).
//
// An entry added without that write shares no written key with a concurrent
// rmdir, which reads the directory empty and writes only its attributes:
// under snapshot isolation (tikv) both could commit, orphaning the entry.
// Links and renames into the directory therefore lock its attributes when
// skipped; creates, which are many, check after committing instead
// (finishCreate), and rmdir removes any entry that raced it
// (sweepRemovedDir). Serializable engines (bolt, etcd) need neither: the
// rmdir's scan conflicts with the insert. Removing an entry cannot race an
// rmdir into an orphan.
func (c *Client) touchDir(tx kv.Tx, ino Ino, a *Attr, t int64, nlinkChanged bool) (skipped bool) {
	if !nlinkChanged && c.recentDirTimes(a, t) {
		return true
	}
	a.Mtime, a.Ctime = t, t
	putAttr(tx, ino, a)
	return false
}

func (c *Client) recentDirTimes(a *Attr, t int64) bool {
	w := int64(c.opt.DirMtimeSkip)
	return w > 0 && a.Mtime <= t && t-a.Mtime < w && a.Ctime <= t && t-a.Ctime < w
}

// getDir reads a directory that can take entries.
func getDir(tx kv.Tx, ino Ino) (Attr, error) {
	a, err := getAttr(tx, ino)
	if err != nil {
		return a, err
	}
	if !isDir(a.Mode) {
		return a, fmt.Errorf("inode %d is not a directory: %w", ino, syscall.ENOTDIR)
	}
	if a.Nlink == 0 {
		return a, fmt.Errorf("directory %d was removed: %w", ino, syscall.ENOENT)
	}
	return a, nil
}

// getEntry returns the child name points at in parent (0 when none).
func getEntry(tx kv.Tx, parent Ino, name string) (Ino, uint32, error) {
	b, err := tx.Get(entryKey(parent, name))
	if err != nil || b == nil {
		return 0, 0, err
	}
	ino, typ, err := decodeEntry(b)
	if err != nil {
		return 0, 0, fmt.Errorf("entry %q in %d: %v: %w", name, parent, err, syscall.EIO)
	}
	return ino, typ, nil
}

// Lookup implements Meta.
func (c *Client) Lookup(ctx context.Context, parent Ino, name string) (Ino, Attr, error) {
	var ino Ino
	var a Attr
	err := c.view(ctx, func(tx kv.Tx) error {
		var err error
		switch name {
		case ".":
			ino = parent
			a, err = getDir(tx, parent)
			return err
		case "..":
			pa, err := getDir(tx, parent)
			if err != nil {
				return err
			}
			ino = pa.Parent
			a, err = getAttr(tx, ino)
			return err
		}
		if err := checkName(name); err != nil {
			return err
		}
		ino, _, err = getEntry(tx, parent, name)
		if err != nil {
			return err
		}
		if ino == 0 {
			if _, err := getDir(tx, parent); err != nil {
				return err
			}
			return syscall.ENOENT
		}
		a, err = getAttr(tx, ino)
		return err
	})
	if err != nil {
		return 0, Attr{}, fmt.Errorf("lookup %q in %d: %w", name, parent, err)
	}
	return ino, a, nil
}

// GetAttr implements Meta.
func (c *Client) GetAttr(ctx context.Context, ino Ino) (Attr, error) {
	var a Attr
	err := c.view(ctx, func(tx kv.Tx) error {
		var err error
		a, err = getAttr(tx, ino)
		return err
	})
	if err != nil {
		return Attr{}, fmt.Errorf("getattr: %w", err)
	}
	return a, nil
}

// SetAttr implements Meta.
func (c *Client) SetAttr(ctx context.Context, ino Ino, set uint32, in Attr) (Attr, error) {
	var a Attr
	err := c.txnOn(ctx, []Ino{ino}, func(tx kv.Tx) error {
		var err error
		if a, err = getAttr(tx, ino); err != nil {
			return err
		}
		t := now()
		if set&SetSize != 0 && in.Size != a.Size {
			if isDir(a.Mode) {
				return fmt.Errorf("truncate directory %d: %w", ino, syscall.EISDIR)
			}
			if !isReg(a.Mode) {
				return fmt.Errorf("truncate non-regular file %d: %w", ino, syscall.EINVAL)
			}
			old := a.Size
			if err := truncate(tx, ino, &a, in.Size); err != nil {
				return err
			}
			if err := c.chargeFileTx(tx, &a, align4k(a.Size)-align4k(old), 0); err != nil {
				return err
			}
			a.Mtime = t
		}
		if set&SetMode != 0 {
			a.Mode = a.Mode&syscall.S_IFMT | in.Mode&0o7777
			if err := chmodACL(tx, ino, a.Mode); err != nil {
				return err
			}
		}
		if set&SetUid != 0 {
			a.Uid = in.Uid
		}
		if set&SetGid != 0 {
			a.Gid = in.Gid
		}
		switch {
		case set&SetAtimeNow != 0:
			a.Atime = t
		case set&SetAtime != 0:
			a.Atime = in.Atime
		}
		switch {
		case set&SetMtimeNow != 0:
			a.Mtime = t
		case set&SetMtime != 0:
			a.Mtime = in.Mtime
		}
		if set&SetCtime != 0 {
			a.Ctime = in.Ctime
		} else {
			a.Ctime = t
		}
		putAttr(tx, ino, &a)
		return nil
	})
	if err != nil {
		return Attr{}, fmt.Errorf("setattr %d: %w", ino, err)
	}
	return a, nil
}

// Mknod implements Meta (Create is Mknod of a regular file).
func (c *Client) Mknod(ctx context.Context, parent Ino, name string, mode, rdev, uid, gid uint32) (Ino, Attr, error) {
	switch mode & syscall.S_IFMT {
	case 0:
		mode |= syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
	default:
		return 0, Attr{}, fmt.Errorf("mknod %q in %d: mode %o is not a file, device, fifo or socket (use Mkdir/Symlink): %w", name, parent, mode, syscall.EINVAL)
	}
	return c.create(ctx, "mknod", parent, name, Attr{Mode: mode, Rdev: rdev, Uid: uid, Gid: gid, Nlink: 1}, "", 0)
}

// Create implements Meta: the open marker rides in the create's transaction.
func (c *Client) Create(ctx context.Context, parent Ino, name string, mode, uid, gid, flags uint32) (Ino, Attr, error) {
	sid, err := c.ensureSession(ctx)
	if err != nil {
		return 0, Attr{}, fmt.Errorf("create %q in %d: %w", name, parent, err)
	}
	ino, a, err := c.create(ctx, "create", parent, name, Attr{Mode: syscall.S_IFREG | mode&0o7777, Uid: uid, Gid: gid, Nlink: 1}, "", sid)
	if err != nil {
		return 0, Attr{}, err
	}
	// Nobody else knows ino yet, so this is its first open in this client.
	of := c.holdOpen(ino)
	of.mu.Lock()
	of.add(1)
	of.mu.Unlock()
	c.unholdOpen(ino, of)
	return ino, a, nil
}

// Mkdir implements Meta.
func (c *Client) Mkdir(ctx context.Context, parent Ino, name string, mode, uid, gid uint32) (Ino, Attr, error) {
	return c.create(ctx, "mkdir", parent, name, Attr{Mode: syscall.S_IFDIR | mode&0o7777, Uid: uid, Gid: gid, Nlink: 2, Size: 4096, Parent: parent}, "", 0)
}

// Symlink implements Meta.
func (c *Client) Symlink(ctx context.Context, parent Ino, name, target string, uid, gid uint32) (Ino, Attr, error) {
	if target == "" || len(target) >= MaxSymlink || strings.IndexByte(target, 0) >= 0 {
		return 0, Attr{}, fmt.Errorf("symlink %q in %d: target must be 1-%d bytes without NUL: %w", name, parent, MaxSymlink-1, syscall.EINVAL)
	}
	return c.create(ctx, "symlink", parent, name, Attr{Mode: syscall.S_IFLNK | 0o777, Uid: uid, Gid: gid, Nlink: 1, Size: uint64(len(target))}, target, 0)
}

// create makes a node; with openBy (a session id) it also records that
// session's open marker of the new node.
func (c *Client) create(ctx context.Context, op string, parent Ino, name string, a Attr, target string, openBy uint64) (Ino, Attr, error) {
	if err := checkName(name); err != nil {
		return 0, Attr{}, fmt.Errorf("%s %q in %d: %w", op, name, parent, err)
	}
	if err := c.checkInodeQuota(ctx); err != nil {
		return 0, Attr{}, fmt.Errorf("%s %q in %d: %w", op, name, parent, err)
	}
	chain, err := c.quotaChain(ctx, parent)
	if err == nil {
		err = c.precheck(ctx, chain, 0, 1)
	}
	if err != nil {
		return 0, Attr{}, fmt.Errorf("%s %q in %d: %w", op, name, parent, err)
	}
	ino, err := c.newIno(ctx)
	if err != nil {
		return 0, Attr{}, fmt.Errorf("%s %q in %d: %w", op, name, parent, err)
	}
	if !isDir(a.Mode) {
		a.Parent = parent // the directory its usage is charged by (quota.go)
	}
	o := &createOp{parent: parent, name: name, base: a, target: target, openBy: openBy, ino: ino, chain: chain}
	if err := c.runCreate(ctx, o); err != nil {
		return 0, Attr{}, fmt.Errorf("%s %q in %d: %w", op, name, parent, err)
	}
	if openBy != 0 {
		c.knownChain(ino, chain) // its writes reserve without reading it
	}
	return ino, o.a, nil
}

// checkInodeQuota refuses creation when the volume's inode quota is used up.
func (c *Client) checkInodeQuota(ctx context.Context) error {
	f, err := c.settings(ctx)
	if err != nil {
		return err
	}
	if f.Inodes == 0 {
		return nil
	}
	st, err := c.cachedStatFS(ctx)
	if err != nil {
		return err
	}
	if st.AvailInodes == 0 {
		return fmt.Errorf("inode quota of %d reached: %w", f.Inodes, syscall.ENOSPC)
	}
	return nil
}

// Readlink implements Meta.
func (c *Client) Readlink(ctx context.Context, ino Ino) (string, error) {
	var target []byte
	err := c.view(ctx, func(tx kv.Tx) error {
		var err error
		target, err = tx.Get(symlinkKey(ino))
		if err != nil || target != nil {
			return err
		}
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			return fmt.Errorf("inode %d is not a symlink: %w", ino, syscall.EINVAL)
		}
		return fmt.Errorf("symlink %d has no target: %w", ino, syscall.EIO)
	})
	if err != nil {
		return "", fmt.Errorf("readlink: %w", err)
	}
	return string(target), nil
}

// Link implements Meta.
func (c *Client) Link(ctx context.Context, ino, newParent Ino, newName string) (Attr, error) {
	if err := checkName(newName); err != nil {
		return Attr{}, fmt.Errorf("link %d as %q in %d: %w", ino, newName, newParent, err)
	}
	var a Attr
	err := c.txnOn(ctx, []Ino{newParent, ino}, func(tx kv.Tx) error {
		pa, err := getDir(tx, newParent)
		if err != nil {
			return err
		}
		if a, err = getAttr(tx, ino); err != nil {
			return err
		}
		if isDir(a.Mode) {
			return fmt.Errorf("hard link to a directory: %w", syscall.EPERM)
		}
		if a.Nlink == 0 {
			return fmt.Errorf("inode %d was unlinked: %w", ino, syscall.ENOENT)
		}
		if err := c.linkFitsTx(&a, newParent); err != nil {
			return err
		}
		old, _, err := getEntry(tx, newParent, newName)
		if err != nil {
			return err
		}
		if old != 0 {
			return syscall.EEXIST
		}
		t := now()
		a.Nlink++
		a.Ctime = t
		putAttr(tx, ino, &a)
		tx.Set(entryKey(newParent, newName), encodeEntry(ino, a.Mode))
		if c.touchDir(tx, newParent, &pa, t, false) {
			return tx.Lock(attrKey(newParent))
		}
		return nil
	})
	if err != nil {
		return Attr{}, fmt.Errorf("link %d as %q in %d: %w", ino, newName, newParent, err)
	}
	return a, nil
}

// Unlink implements Meta.
func (c *Client) Unlink(ctx context.Context, parent Ino, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("unlink %q in %d: %w", name, parent, err)
	}
	var (
		removed Ino
		u       unlinked
	)
	err := c.txnOn(ctx, []Ino{parent}, func(tx kv.Tx) error {
		removed, u = 0, unlinked{}
		if err := prefetch(tx, attrKey(parent), entryKey(parent, name)); err != nil {
			return err
		}
		pa, err := getDir(tx, parent)
		if err != nil {
			return err
		}
		ino, typ, err := getEntry(tx, parent, name)
		if err != nil {
			return err
		}
		if ino == 0 {
			return syscall.ENOENT
		}
		if isDir(typ) {
			return syscall.EISDIR
		}
		t := now()
		tx.Delete(entryKey(parent, name))
		c.touchDir(tx, parent, &pa, t, false)
		removed = ino
		u, err = c.dropLink(tx, ino, t)
		return err
	})
	if err != nil {
		return fmt.Errorf("unlink %q in %d: %w", name, parent, err)
	}
	c.afterUnlink(ctx, removed, u)
	return nil
}

// unlinked is what dropLink did to an inode, for after the commit.
type unlinked struct {
	reap   bool // removed, its chunks left for the reaper
	stored bool // kept for this client's open, whose marker it stored
}

// dropLink takes one link from a non-directory inode; the last link removes
// it unless some session has it open.
func (c *Client) dropLink(tx kv.Tx, ino Ino, t int64) (unlinked, error) {
	a, err := getAttr(tx, ino)
	if err != nil {
		return unlinked{}, err
	}
	if a.Nlink > 0 {
		a.Nlink--
	}
	a.Ctime = t
	if a.Nlink > 0 {
		putAttr(tx, ino, &a)
		return unlinked{}, nil
	}
	open := false
	if err := tx.Scan(inoKey(pOpen, ino), kv.PrefixEnd(inoKey(pOpen, ino)), 1, func(_, _ []byte) bool {
		open = true
		return false
	}); err != nil {
		return unlinked{}, err
	}
	var u unlinked
	if !open && c.localOpens && c.openHere(ino) {
		// The marker an exclusive engine kept in memory is needed now:
		// the file must outlive its last name, also across a crash.
		sid := c.SessionID()
		tx.Set(openKey(ino, sid), present)
		tx.Set(sessOpenKey(sid, ino), present)
		open, u.stored = true, true
	}
	if open {
		if err := c.keepChargeTx(&a); err != nil {
			return unlinked{}, err
		}
		putAttr(tx, ino, &a) // kept until the last Release
		return u, nil
	}
	u.reap, err = c.removeInode(tx, ino, &a)
	return u, err
}

// openHere reports whether this client has ino open; unlike of.n it may be
// read inside a transaction.
func (c *Client) openHere(ino Ino) bool {
	c.opensMu.Lock()
	defer c.opensMu.Unlock()
	of := c.opens[ino]
	return of != nil && of.live.Load() > 0
}

// afterUnlink finishes what dropLink began, once its transaction committed.
// The unlink itself has happened: a failure here leaves a marker that
// session reclaim drops, so it is logged, not returned.
func (c *Client) afterUnlink(ctx context.Context, ino Ino, u unlinked) {
	if u.reap {
		c.reapLater(ino)
	}
	if !u.stored {
		return
	}
	of := c.holdOpen(ino)
	defer c.unholdOpen(ino, of)
	of.mu.Lock()
	defer of.mu.Unlock()
	if of.n > 0 {
		of.stored = true // the last Release drops it
		return
	}
	// Released while the unlink committed: nothing holds the file now.
	if err := c.closeFile(ctx, c.SessionID(), ino); err != nil {
		c.log.Warn("drop the open marker of an unlinked file", "ino", ino, "err", err)
	}
}

// Chunks of a removed file are released in the removing transaction when
// there are at most this many chunk keys and slices; bigger files go to the
// reaper, a few chunks per transaction (etcd caps operations per txn).
const (
	inlineChunks = 4
	inlineSlices = 16
)

// removeInode deletes an inode without links or openers. It reports whether
// the inode's chunks were left for the reaper (see reapLater); small files'
// chunks are released at once, which saves the reaper's transaction.
func (c *Client) removeInode(tx kv.Tx, ino Ino, a *Attr) (bool, error) {
	if err := c.unchargeInodeTx(tx, ino, a); err != nil {
		return false, err
	}
	tx.Delete(attrKey(ino))
	if a.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		tx.Delete(symlinkKey(ino))
	}
	if err := deletePrefixTx(tx, inoKey(pXattr, ino)); err != nil {
		return false, err
	}
	var space int64
	reap := false
	if isReg(a.Mode) {
		space = align4k(a.Size)
		var err error
		if reap, err = releaseSmallFile(tx, ino); err != nil {
			return false, err
		}
		if reap {
			tx.Set(removedKey(ino), be64(nil, a.Size))
		}
	}
	return reap, addUsage(tx, -space, -1)
}

// releaseSmallFile drops the chunks of a removed file when they are few,
// and reports whether there were too many (left for the reaper).
func releaseSmallFile(tx kv.Tx, ino Ino) (bool, error) {
	p := inoKey(pChunk, ino)
	chunks, err := scanChunks(tx, p, kv.PrefixEnd(p), inlineChunks+1)
	if err != nil {
		return false, err
	}
	if len(chunks) > inlineChunks {
		return true, nil
	}
	n := 0
	for _, c := range chunks {
		if n += len(c.slices); n > inlineSlices {
			return true, nil
		}
	}
	return false, dropChunks(tx, chunks)
}

// Rmdir implements Meta.
func (c *Client) Rmdir(ctx context.Context, parent Ino, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("rmdir %q in %d: %w", name, parent, err)
	}
	var removed Ino
	err := c.txnOn(ctx, []Ino{parent}, func(tx kv.Tx) error {
		removed = 0
		pa, err := getDir(tx, parent)
		if err != nil {
			return err
		}
		ino, typ, err := getEntry(tx, parent, name)
		if err != nil {
			return err
		}
		if ino == 0 {
			return syscall.ENOENT
		}
		if !isDir(typ) {
			return syscall.ENOTDIR
		}
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		if empty, err := dirEmpty(tx, ino); err != nil {
			return err
		} else if !empty {
			return syscall.ENOTEMPTY
		}
		t := now()
		tx.Delete(entryKey(parent, name))
		pa.Nlink--
		c.touchDir(tx, parent, &pa, t, true)
		removed = ino
		_, err = c.removeInode(tx, ino, &a)
		return err
	})
	if err != nil {
		return fmt.Errorf("rmdir %q in %d: %w", name, parent, err)
	}
	if !c.serializable {
		if err := c.sweepRemovedDir(ctx, removed); err != nil {
			return fmt.Errorf("rmdir %q in %d: %w", name, parent, err)
		}
	}
	return nil
}

// sweepRemovedDir unlinks the entries that creates committed in directory
// dir while its rmdir did (see touchDir): read after the rmdir committed, it
// sees every such create that has not yet seen the removal itself.
func (c *Client) sweepRemovedDir(ctx context.Context, dir Ino) error {
	p := inoKey(pEntry, dir)
	for {
		var names []string
		if err := c.view(ctx, func(tx kv.Tx) error {
			names = names[:0]
			return tx.Scan(p, kv.PrefixEnd(p), 100, func(k, _ []byte) bool {
				names = append(names, string(k[len(p):]))
				return true
			})
		}); err != nil {
			return fmt.Errorf("sweep removed directory %d: %w", dir, err)
		}
		for _, name := range names {
			if err := c.dropOrphan(ctx, dir, name, 0); err != nil {
				return fmt.Errorf("sweep removed directory %d: %w", dir, err)
			}
		}
		if len(names) < 100 {
			return nil
		}
	}
}

// dropOrphan unlinks entry name of the removed directory dir (if it still
// names ino; any inode for ino 0).
func (c *Client) dropOrphan(ctx context.Context, dir Ino, name string, ino Ino) error {
	var u unlinked
	var target Ino
	err := c.txn(ctx, func(tx kv.Tx) error {
		u, target = unlinked{}, 0
		cur, typ, err := getEntry(tx, dir, name)
		if err != nil || cur == 0 || (ino != 0 && cur != ino) {
			return err
		}
		tx.Delete(entryKey(dir, name))
		target = cur
		if isDir(typ) {
			return nil // creates here make no directories (mkdir writes the parent)
		}
		u, err = c.dropLink(tx, cur, now())
		return err
	})
	if err != nil {
		return fmt.Errorf("drop entry %q of removed directory %d: %w", name, dir, err)
	}
	c.afterUnlink(ctx, target, u)
	return nil
}

func dirEmpty(tx kv.Tx, ino Ino) (bool, error) {
	empty := true
	p := inoKey(pEntry, ino)
	err := tx.Scan(p, kv.PrefixEnd(p), 1, func(_, _ []byte) bool {
		empty = false
		return false
	})
	return empty, err
}

// Readdir implements Meta.
func (c *Client) Readdir(ctx context.Context, dir Ino, cursor string, limit int) ([]Entry, error) {
	var out []Entry
	err := c.view(ctx, func(tx kv.Tx) error {
		out = out[:0]
		a, err := getAttr(tx, dir)
		if err != nil {
			return err
		}
		if !isDir(a.Mode) {
			return syscall.ENOTDIR
		}
		p := inoKey(pEntry, dir)
		start := p
		if cursor != "" {
			start = append(append(append([]byte(nil), p...), cursor...), 0)
		}
		var keys [][]byte
		var scanErr error
		if err := tx.Scan(start, kv.PrefixEnd(p), limit, func(k, v []byte) bool {
			ino, typ, err := decodeEntry(v)
			if err != nil {
				scanErr = fmt.Errorf("entry %q: %v: %w", k[len(p):], err, syscall.EIO)
				return false
			}
			out = append(out, Entry{Name: string(k[len(p):]), Ino: ino, Attr: Attr{Mode: typ}})
			keys = append(keys, attrKey(ino))
			return true
		}); err != nil {
			return err
		}
		if scanErr != nil {
			return scanErr
		}
		vals, err := tx.BatchGet(keys)
		if err != nil {
			return err
		}
		for i, v := range vals {
			if v != nil {
				if err := decodeAttr(v, &out[i].Attr); err != nil {
					return fmt.Errorf("entry %q: %v: %w", out[i].Name, err, syscall.EIO)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("readdir %d after %q: %w", dir, cursor, err)
	}
	return out, nil
}
