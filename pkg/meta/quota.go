package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// Directory quotas.
//
// A quota limits a directory tree's bytes and inodes. Every inode is charged
// to the quotas at or above its parent directory, which its Attr.Parent
// names (directories always kept it; other inodes keep it since quotas
// came, see below): one inode, and for a regular file its length rounded up
// to 4 KiB (align4k, the volume counters' rule); directories and symlinks
// are charged no bytes. The quota's own directory is not charged to itself.
// A file's charge moves when its length or its parent changes, in the
// same transaction as the change.
//
// Keys (see doc.go):
//
//	Y dir(8)            maxBytes(8) maxInodes(8)    the quota of directory dir; 0 = unlimited
//	y dir(8) shard(1)   space(8) inodes(8), signed  usage of dir's tree: the sum of its shards
//
// A transaction charging a quota adds to one of its 256 shards, chosen at
// random, read-modify-write, in the transaction that makes the change it
// accounts for, so usage is exact whatever commits or fails. There is no
// hot key: concurrent charges, of one client or several, meet on a shard
// seldom (a conflict, retried), and as the shards are bounded nothing
// needs folding. Reading the usage sums at most 256 small keys.
//
// Clients cache which directories carry quotas (refreshed every
// quotaRefresh; SetQuota and DeleteQuota refresh the caller's at once) and,
// per directory, the quotas above it. With no quota on the volume a change
// costs one map lookup. A directory's quotas change only when quotas are
// set or deleted: a directory renamed across a quota boundary is refused
// with EXDEV (as XFS project quotas do; mv then copies and deletes, which
// is accounted), a file renamed across one moves its charge, and a hard
// link across one is refused with EXDEV (a file is charged once, to the
// quotas of the directory in Attr.Parent). So a cached chain stays right;
// a quota set by another client is charged by this one within
// quotaRefresh, and SetQuota's count of a tree that changes meanwhile may
// miss those changes: `podfs quota check --repair` (fsck) recounts.
//
// Limits are checked before a change, against the cached usage (at most
// quotaUsageAge old, plus this client's charges since and its reserved
// writes, ReserveSpace); a change whose estimate comes within 1/16 of a
// limit re-reads the exact usage in its transaction and locks the quota's
// key, so changes near a limit serialize and the limit holds exactly
// against this client and approximately (by what others committed within
// quotaUsageAge) against others. Only growth is refused (EDQUOT); shrinking
// is always allowed.
//
// Files created before quotas existed have Attr.Parent 0 and are charged
// nowhere until SetQuota's walk over their tree (or a rename) sets it.

// Quota limits a directory tree; a zero limit means unlimited.
type Quota struct {
	MaxBytes, MaxInodes   uint64 // limits
	UsedBytes, UsedInodes uint64 // usage of the tree, read-only for callers
}

const (
	pQuota      = 'Y'
	pQuotaUsage = 'y'
	quotaShards = 256
)

func quotaKey(dir Ino) []byte { return inoKey(pQuota, dir) }
func quotaUsageKey(dir Ino, shard uint8) []byte {
	return append(inoKey(pQuotaUsage, dir), shard)
}

func encodeLimits(maxBytes, maxInodes uint64) []byte {
	return be64(be64(make([]byte, 0, 16), maxBytes), maxInodes)
}

func decodeLimits(b []byte) (quotaLimits, error) {
	if len(b) != 16 {
		return quotaLimits{}, fmt.Errorf("corrupt quota record: %d bytes, want 16", len(b))
	}
	return quotaLimits{bytes: u64(b), inodes: u64(b[8:])}, nil
}

type quotaLimits struct{ bytes, inodes uint64 }

// quotaUsageTx sums dir's usage shards in tx.
func quotaUsageTx(tx kv.Tx, dir Ino) (space, inodes int64, err error) {
	p := inoKey(pQuotaUsage, dir)
	err = tx.Scan(p, kv.PrefixEnd(p), 0, func(_, v []byte) bool {
		s, i := decodeUsage(v)
		space, inodes = space+s, inodes+i
		return true
	})
	return
}

// setQuotaUsageTx replaces dir's usage shards by one holding the given usage.
func setQuotaUsageTx(tx kv.Tx, dir Ino, space, inodes int64) error {
	if err := deleteQuotaUsageTx(tx, dir); err != nil {
		return err
	}
	tx.Set(quotaUsageKey(dir, 0), encodeUsage(space, inodes))
	return nil
}

func deleteQuotaUsageTx(tx kv.Tx, dir Ino) error {
	return deletePrefixTx(tx, inoKey(pQuotaUsage, dir))
}

func toQuota(l quotaLimits, space, inodes int64) Quota {
	return Quota{MaxBytes: l.bytes, MaxInodes: l.inodes, UsedBytes: uint64(max(space, 0)), UsedInodes: uint64(max(inodes, 0))}
}

// SetQuota creates or changes the quota of directory dir. Creating one
// counts the tree's usage first (a walk of the tree, which also records
// the parent of files made before quotas existed).
func (c *Client) SetQuota(ctx context.Context, dir Ino, maxBytes, maxInodes uint64) error {
	wrap := func(err error) error { return fmt.Errorf("set quota of %d: %w", dir, err) }
	a, err := c.GetAttr(ctx, dir)
	if err != nil {
		return wrap(err)
	}
	if !isDir(a.Mode) {
		return wrap(fmt.Errorf("inode %d is not a directory: %w", dir, syscall.ENOTDIR))
	}
	exists := false
	if err := c.txn(ctx, func(tx kv.Tx) error {
		b, err := tx.Get(quotaKey(dir))
		if err != nil || b == nil {
			exists = false
			return err
		}
		exists = true
		tx.Set(quotaKey(dir), encodeLimits(maxBytes, maxInodes))
		return nil
	}); err != nil {
		return wrap(err)
	}
	if !exists {
		space, inodes, err := c.countTree(ctx, dir)
		if err != nil {
			return wrap(err)
		}
		if err := c.txn(ctx, func(tx kv.Tx) error {
			if _, err := getDir(tx, dir); err != nil {
				return err
			}
			b, err := tx.Get(quotaKey(dir))
			if err != nil {
				return err
			}
			tx.Set(quotaKey(dir), encodeLimits(maxBytes, maxInodes))
			if b != nil {
				return nil // set meanwhile by another caller, who counted
			}
			return setQuotaUsageTx(tx, dir, space, inodes)
		}); err != nil {
			return wrap(err)
		}
	}
	c.quotas.invalidate()
	return nil
}

// countTree walks dir's tree and returns its usage by the charging rule;
// it records dir as the parent of files that have none (made before
// quotas existed), so later changes to them are charged.
func (c *Client) countTree(ctx context.Context, dir Ino) (space, inodes int64, err error) {
	seen := map[Ino]bool{}
	queue := []Ino{dir}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		for cursor := ""; ; {
			ents, err := c.Readdir(ctx, d, cursor, 1000)
			if err != nil {
				if errors.Is(err, syscall.ENOENT) && d != dir {
					break // removed meanwhile
				}
				return 0, 0, fmt.Errorf("count usage of %d: %w", dir, err)
			}
			var orphans []Ino
			for _, e := range ents {
				if seen[e.Ino] {
					continue
				}
				seen[e.Ino] = true
				inodes++
				switch {
				case isDir(e.Attr.Mode):
					queue = append(queue, e.Ino)
				case isReg(e.Attr.Mode):
					space += align4k(e.Attr.Size)
				}
				if !isDir(e.Attr.Mode) && e.Attr.Parent == 0 {
					orphans = append(orphans, e.Ino)
				}
			}
			if err := c.adoptFiles(ctx, d, orphans); err != nil {
				return 0, 0, err
			}
			if len(ents) < 1000 {
				break
			}
			cursor = ents[len(ents)-1].Name
		}
	}
	return space, inodes, nil
}

// adoptFiles records dir as the parent of files that have none.
func (c *Client) adoptFiles(ctx context.Context, dir Ino, inos []Ino) error {
	for len(inos) > 0 {
		batch := inos[:min(len(inos), 100)]
		inos = inos[len(batch):]
		if err := c.txn(ctx, func(tx kv.Tx) error {
			for _, ino := range batch {
				a, err := getAttr(tx, ino)
				if errors.Is(err, syscall.ENOENT) {
					continue
				}
				if err != nil {
					return err
				}
				if a.Parent == 0 && !isDir(a.Mode) {
					a.Parent = dir
					putAttr(tx, ino, &a)
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("record the parent of files in %d: %w", dir, err)
		}
	}
	return nil
}

// GetQuota returns dir's quota and its usage; ENOENT when dir has none.
func (c *Client) GetQuota(ctx context.Context, dir Ino) (Quota, error) {
	var q Quota
	err := c.view(ctx, func(tx kv.Tx) error {
		b, err := tx.Get(quotaKey(dir))
		if err != nil {
			return err
		}
		if b == nil {
			return fmt.Errorf("directory %d has no quota: %w", dir, syscall.ENOENT)
		}
		l, err := decodeLimits(b)
		if err != nil {
			return fmt.Errorf("%v: %w", err, syscall.EIO)
		}
		s, i, err := quotaUsageTx(tx, dir)
		q = toQuota(l, s, i)
		return err
	})
	if err != nil {
		return Quota{}, fmt.Errorf("get quota of %d: %w", dir, err)
	}
	return q, nil
}

// ListQuotas returns every quota of the volume with its usage.
func (c *Client) ListQuotas(ctx context.Context) (map[Ino]Quota, error) {
	out := map[Ino]Quota{}
	err := c.view(ctx, func(tx kv.Tx) error {
		clear(out)
		lim := map[Ino]quotaLimits{}
		var bad error
		if err := tx.Scan([]byte{pQuota}, []byte{pQuota + 1}, 0, func(k, v []byte) bool {
			l, err := decodeLimits(v)
			if err != nil || len(k) != 9 {
				bad = fmt.Errorf("quota key %x: %v: %w", k, err, syscall.EIO)
				return false
			}
			lim[Ino(u64(k[1:]))] = l
			return true
		}); err != nil {
			return err
		}
		if bad != nil {
			return bad
		}
		used := map[Ino][2]int64{}
		if err := tx.Scan([]byte{pQuotaUsage}, []byte{pQuotaUsage + 1}, 0, func(k, v []byte) bool {
			if len(k) == 10 {
				d := Ino(u64(k[1:9]))
				s, i := decodeUsage(v)
				u := used[d]
				used[d] = [2]int64{u[0] + s, u[1] + i}
			}
			return true
		}); err != nil {
			return err
		}
		for d, l := range lim {
			out[d] = toQuota(l, used[d][0], used[d][1])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list quotas: %w", err)
	}
	return out, nil
}

// DeleteQuota removes dir's quota; ENOENT when it has none.
func (c *Client) DeleteQuota(ctx context.Context, dir Ino) error {
	err := c.txn(ctx, func(tx kv.Tx) error {
		b, err := tx.Get(quotaKey(dir))
		if err != nil {
			return err
		}
		if b == nil {
			return fmt.Errorf("directory %d has no quota: %w", dir, syscall.ENOENT)
		}
		tx.Delete(quotaKey(dir))
		return deleteQuotaUsageTx(tx, dir)
	})
	if err != nil {
		return fmt.Errorf("delete quota of %d: %w", dir, err)
	}
	c.quotas.invalidate()
	return nil
}

// StatFSDir is StatFS as seen from dir: the nearest quota at or above dir
// gives the total and used bytes and inodes (a zero limit: the volume's
// figure), else the volume's figures.
func (c *Client) StatFSDir(ctx context.Context, dir Ino) (StatFS, error) {
	vol, err := c.StatFS(ctx)
	if err != nil {
		return vol, err
	}
	chain, err := c.quotaChain(ctx, dir)
	if err != nil || len(chain) == 0 {
		return vol, err
	}
	q, err := c.GetQuota(ctx, chain[0])
	if errors.Is(err, syscall.ENOENT) {
		return vol, nil // deleted meanwhile
	}
	if err != nil {
		return StatFS{}, fmt.Errorf("statfs of %d: %w", dir, err)
	}
	st := vol
	if q.MaxBytes > 0 {
		st.TotalSpace = q.MaxBytes
		st.AvailSpace = 0
		if q.UsedBytes < q.MaxBytes {
			st.AvailSpace = min(q.MaxBytes-q.UsedBytes, vol.AvailSpace)
		}
	}
	if q.MaxInodes > 0 {
		st.UsedInodes = q.UsedInodes
		st.AvailInodes = 0
		if q.UsedInodes < q.MaxInodes {
			st.AvailInodes = min(q.MaxInodes-q.UsedInodes, vol.AvailInodes)
		}
	}
	return st, nil
}

// LookupPath resolves a slash-separated path from the volume's root ("/"
// and "" are the root; "." and empty components are skipped).
func LookupPath(ctx context.Context, m Meta, path string) (Ino, error) {
	ino := RootIno
	walked := ""
	for _, name := range strings.Split(path, "/") {
		if name == "" || name == "." {
			continue
		}
		next, _, err := m.Lookup(ctx, ino, name)
		if err != nil {
			return 0, fmt.Errorf("resolve %q: %s/%s: %w", path, walked, name, err)
		}
		ino, walked = next, walked+"/"+name
	}
	return ino, nil
}

// MkdirAll resolves path like LookupPath, making the directories missing
// (mode perm, owned by uid and gid), and returns the last one.
func MkdirAll(ctx context.Context, m Meta, path string, perm, uid, gid uint32) (Ino, error) {
	ino := RootIno
	walked := ""
	for _, name := range strings.Split(path, "/") {
		if name == "" || name == "." {
			continue
		}
		walked += "/" + name
		next, a, err := m.Lookup(ctx, ino, name)
		if errors.Is(err, syscall.ENOENT) {
			next, a, err = m.Mkdir(ctx, ino, name, perm, uid, gid)
			if errors.Is(err, syscall.EEXIST) { // made meanwhile
				next, a, err = m.Lookup(ctx, ino, name)
			}
		}
		if err != nil {
			return 0, fmt.Errorf("make %q: %s: %w", path, walked, err)
		}
		if !isDir(a.Mode) {
			return 0, fmt.Errorf("make %q: %s is not a directory: %w", path, walked, syscall.ENOTDIR)
		}
		ino = next
	}
	return ino, nil
}
