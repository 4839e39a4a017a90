package meta

import (
	"context"
	"fmt"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// Check implements Meta. It reads the whole namespace page by page, so run
// it on a quiet volume: changes made meanwhile can show up as problems.
// With repair it fixes what it can, each fix in its own transaction that
// re-checks the condition first.
func (c *Client) Check(ctx context.Context, repair bool) (*CheckReport, error) {
	r := &CheckReport{}
	problem := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	fix := func(what string, fn func(kv.Tx) error) {
		if !repair {
			return
		}
		if err := c.txn(ctx, fn); err != nil {
			problem("repair failed: %s: %v", what, err)
			return
		}
		r.Repaired++
	}

	attrs := map[Ino]Attr{}
	if err := c.scanAll(ctx, []byte{pAttr}, func(k, v []byte) error {
		var a Attr
		if len(k) != 9 || decodeAttr(v, &a) != nil {
			problem("corrupt attribute key %x", k)
			return nil
		}
		attrs[Ino(u64(k[1:]))] = a
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if _, ok := attrs[RootIno]; !ok {
		return nil, fmt.Errorf("check: the root inode is missing (is the volume formatted?): %w", syscall.EIO)
	}

	links := map[Ino]uint32{}   // entries naming each inode
	subdirs := map[Ino]uint32{} // subdirectory entries in each directory
	dirParent := map[Ino]Ino{}  // the directory holding each directory's entry
	if err := c.scanAll(ctx, []byte{pEntry}, func(k, v []byte) error {
		parent, name := Ino(u64(k[1:9])), string(k[9:])
		ino, typ, err := decodeEntry(v)
		if err != nil {
			problem("corrupt entry %q in %d", name, parent)
			return nil
		}
		pa, pok := attrs[parent]
		a, ok := attrs[ino]
		switch {
		case !pok || !isDir(pa.Mode):
			problem("entry %q in %d: the parent is not a live directory", name, parent)
		case !ok:
			problem("entry %q in %d names missing inode %d", name, parent, ino)
		case a.Mode&syscall.S_IFMT != typ:
			problem("entry %q in %d: type %o, inode %d has %o", name, parent, typ, ino, a.Mode&syscall.S_IFMT)
		default:
			links[ino]++
			if isDir(a.Mode) {
				subdirs[parent]++
				if _, dup := dirParent[ino]; dup {
					problem("directory %d has more than one entry", ino)
				}
				dirParent[ino] = parent
			}
			return nil
		}
		ek := entryKey(parent, name)
		fix(fmt.Sprintf("remove dangling entry %q in %d", name, parent), func(tx kv.Tx) error {
			tx.Delete(ek)
			return nil
		})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}

	sessions := map[uint64]bool{}
	if err := c.scanAll(ctx, []byte{pSession}, func(k, _ []byte) error {
		sessions[u64(k[1:])] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	openBy := map[Ino]bool{}
	if err := c.scanAll(ctx, []byte{pOpen}, func(k, _ []byte) error {
		ino, sid := Ino(u64(k[1:9])), u64(k[9:])
		if !sessions[sid] {
			problem("inode %d is held open by session %d, which does not exist", ino, sid)
			fix(fmt.Sprintf("drop open marker of %d by %d", ino, sid), func(tx kv.Tx) error {
				tx.Delete(openKey(ino, sid))
				tx.Delete(sessOpenKey(sid, ino))
				return nil
			})
			return nil
		}
		openBy[ino] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}

	var space, inodes int64
	for ino, a := range attrs {
		if ino != RootIno {
			inodes++
		}
		if isReg(a.Mode) {
			space += align4k(a.Size)
		}
		if isDir(a.Mode) {
			want := 2 + subdirs[ino]
			if ino != RootIno {
				if p, ok := dirParent[ino]; !ok {
					problem("directory %d has no entry (orphan)", ino)
					continue
				} else if p != a.Parent {
					problem("directory %d: parent field %d, its entry is in %d", ino, a.Parent, p)
					c.fixAttr(fix, ino, func(a *Attr) { a.Parent = p })
				}
			}
			if a.Nlink != want {
				problem("directory %d: nlink %d, want %d", ino, a.Nlink, want)
				c.fixAttr(fix, ino, func(a *Attr) { a.Nlink = want })
			}
			continue
		}
		n := links[ino]
		if n == 0 {
			if a.Nlink == 0 && openBy[ino] {
				continue // open, unlinked: removed at its last close
			}
			problem("inode %d has no entry and is not open (orphan, nlink %d)", ino, a.Nlink)
			if repair {
				ino, a := ino, a
				fix(fmt.Sprintf("remove orphan %d", ino), func(tx kv.Tx) error {
					_, err := c.removeInode(tx, ino, &a) // chunks left: PendingDeletes sweeps them
					return err
				})
			}
			continue
		}
		if a.Nlink != n {
			problem("inode %d: nlink %d, but %d entries", ino, a.Nlink, n)
			c.fixAttr(fix, ino, func(a *Attr) { a.Nlink = n })
		}
		if a.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			var t []byte
			if err := c.view(ctx, func(tx kv.Tx) error {
				var err error
				t, err = tx.Get(symlinkKey(ino))
				return err
			}); err != nil {
				return nil, fmt.Errorf("check: %w", err)
			}
			if t == nil {
				problem("symlink %d has no target", ino)
			}
		}
	}

	removed := map[Ino]bool{}
	if err := c.scanAll(ctx, []byte{pRemoved}, func(k, _ []byte) error {
		removed[Ino(u64(k[1:]))] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	used := map[uint64]bool{}
	if err := c.scanAll(ctx, []byte{pChunk}, func(k, v []byte) error {
		ino := Ino(u64(k[1:9]))
		if _, ok := attrs[ino]; !ok && !removed[ino] {
			problem("chunk key %x belongs to no inode", k)
			fix(fmt.Sprintf("release chunks of missing inode %d", ino), func(tx kv.Tx) error {
				tx.Set(removedKey(ino), be64(nil, 0))
				return nil
			})
			removed[ino] = true
		}
		ss, err := decodeSlices(v)
		if err != nil {
			problem("chunk key %x: %v", k, err)
			return nil
		}
		for _, s := range ss {
			used[s.ID] = true
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if err := c.scanAll(ctx, []byte{pPending}, func(k, _ []byte) error {
		if id := u64(k[1:]); used[id] {
			problem("slice %d is pending deletion but still referenced", id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if err := c.scanAll(ctx, []byte{pXattr}, func(k, v []byte) error {
		ino := Ino(u64(k[1:9]))
		a, ok := attrs[ino]
		if !ok {
			problem("xattr key %x belongs to no inode", k)
			fix("remove stray xattr", func(tx kv.Tx) error {
				tx.Delete(k)
				return nil
			})
			return nil
		}
		checkACL(ino, a, string(k[9:]), v, problem, func(what string, fn func(kv.Tx) error) { fix(what, fn) })
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}

	if r.Repaired > 0 {
		// Repairs (orphan removal) moved the counters: count again.
		space, inodes = 0, 0
		if err := c.scanAll(ctx, []byte{pAttr}, func(k, v []byte) error {
			var a Attr
			if decodeAttr(v, &a) == nil && Ino(u64(k[1:])) != RootIno {
				inodes++
				if isReg(a.Mode) {
					space += align4k(a.Size)
				}
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
	}
	if r.Repaired > 0 {
		clear(attrs)
		if err := c.scanAll(ctx, []byte{pAttr}, func(k, v []byte) error {
			var a Attr
			if len(k) == 9 && decodeAttr(v, &a) == nil {
				attrs[Ino(u64(k[1:]))] = a
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
	}
	if err := c.checkQuotas(ctx, attrs, problem, fix); err != nil {
		return nil, fmt.Errorf("check quotas: %w", err)
	}
	var cs, ci int64
	if err := c.view(ctx, func(tx kv.Tx) error {
		var err error
		cs, ci, err = usage(tx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if cs != space || ci != inodes {
		problem("usage counters say %d bytes and %d inodes, the inodes add up to %d and %d", cs, ci, space, inodes)
		fix("correct usage counters", func(tx kv.Tx) error {
			s, i, err := usage(tx)
			if err != nil {
				return err
			}
			return addUsage(tx, space-s, inodes-i)
		})
	}
	return r, nil
}

// fixAttr queues a repair that edits one inode's attributes.
func (c *Client) fixAttr(fix func(string, func(kv.Tx) error), ino Ino, edit func(*Attr)) {
	fix(fmt.Sprintf("fix attributes of %d", ino), func(tx kv.Tx) error {
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		edit(&a)
		putAttr(tx, ino, &a)
		return nil
	})
}
