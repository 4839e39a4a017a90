package meta

import (
	"context"
	"fmt"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// Rename implements Meta: plain (replacing a compatible target),
// RenameNoReplace and RenameExchange, refusing to move a directory into its
// own subtree.
func (c *Client) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) error {
	wrap := func(err error) error {
		return fmt.Errorf("rename %q in %d to %q in %d: %w", oldName, oldParent, newName, newParent, err)
	}
	if err := checkName(oldName); err != nil {
		return wrap(err)
	}
	if err := checkName(newName); err != nil {
		return wrap(err)
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return wrap(fmt.Errorf("flags %#x: %w", flags, syscall.EINVAL))
	}
	var (
		removed Ino
		u       unlinked
	)
	// The quotas above both directories, for the transaction (chainTx).
	for _, d := range []Ino{oldParent, newParent} {
		if _, err := c.quotaChain(ctx, d); err != nil {
			return wrap(err)
		}
	}
	err := c.txnOn(ctx, []Ino{oldParent, newParent}, func(tx kv.Tx) error {
		removed, u = 0, unlinked{}
		if err := prefetch(tx, attrKey(oldParent), attrKey(newParent), entryKey(oldParent, oldName), entryKey(newParent, newName)); err != nil {
			return err
		}
		opa, err := getDir(tx, oldParent)
		if err != nil {
			return err
		}
		npa := &opa
		if newParent != oldParent {
			a, err := getDir(tx, newParent)
			if err != nil {
				return err
			}
			npa = &a
		}
		ino, typ, err := getEntry(tx, oldParent, oldName)
		if err != nil {
			return err
		}
		if ino == 0 {
			return syscall.ENOENT
		}
		dino, dtyp, err := getEntry(tx, newParent, newName)
		if err != nil {
			return err
		}
		exchange := flags&RenameExchange != 0
		switch {
		case exchange && dino == 0:
			return syscall.ENOENT
		case flags&RenameNoReplace != 0 && dino != 0:
			return syscall.EEXIST
		case dino == ino:
			return nil // both names are links of one file: nothing to do
		}
		if newParent != oldParent {
			if isDir(typ) {
				if err := checkNotUnder(tx, ino, newParent); err != nil {
					return err
				}
			}
			if exchange && isDir(dtyp) {
				if err := checkNotUnder(tx, dino, oldParent); err != nil {
					return err
				}
			}
		}
		if dino != 0 && !exchange {
			switch {
			case isDir(dtyp) && !isDir(typ):
				return syscall.EISDIR
			case !isDir(dtyp) && isDir(typ):
				return syscall.ENOTDIR
			case isDir(dtyp):
				if empty, err := dirEmpty(tx, dino); err != nil {
					return err
				} else if !empty {
					return syscall.ENOTEMPTY
				}
			}
		}
		t := now()
		oldNlink, newNlink := opa.Nlink, npa.Nlink
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		a.Ctime = t
		if newParent != oldParent {
			if err := c.moveChargeTx(tx, &a, newParent); err != nil {
				return err
			}
		}
		if exchange {
			da, err := getAttr(tx, dino)
			if err != nil {
				return err
			}
			da.Ctime = t
			if newParent != oldParent {
				if err := c.moveChargeTx(tx, &da, oldParent); err != nil {
					return err
				}
			}
			tx.Set(entryKey(oldParent, oldName), encodeEntry(dino, da.Mode))
			tx.Set(entryKey(newParent, newName), encodeEntry(ino, a.Mode))
			if newParent != oldParent {
				if isDir(a.Mode) {
					a.Parent = newParent
					opa.Nlink--
					npa.Nlink++
				}
				if isDir(da.Mode) {
					da.Parent = oldParent
					npa.Nlink--
					opa.Nlink++
				}
			}
			putAttr(tx, dino, &da)
		} else {
			tx.Delete(entryKey(oldParent, oldName))
			tx.Set(entryKey(newParent, newName), encodeEntry(ino, a.Mode))
			if dino != 0 {
				if isDir(dtyp) {
					da, err := getAttr(tx, dino)
					if err != nil {
						return err
					}
					npa.Nlink--
					if _, err := c.removeInode(tx, dino, &da); err != nil {
						return err
					}
				} else {
					removed = dino
					if u, err = c.dropLink(tx, dino, t); err != nil {
						return err
					}
				}
			}
			if isDir(a.Mode) && newParent != oldParent {
				a.Parent = newParent
				opa.Nlink--
				npa.Nlink++
			}
		}
		putAttr(tx, ino, &a)
		c.touchDir(tx, oldParent, &opa, t, opa.Nlink != oldNlink)
		if newParent != oldParent && c.touchDir(tx, newParent, npa, t, npa.Nlink != newNlink) {
			return tx.Lock(attrKey(newParent))
		}
		return nil
	})
	if err != nil {
		return wrap(err)
	}
	c.afterUnlink(ctx, removed, u)
	return nil
}

// checkNotUnder refuses (EINVAL) when dir is dest or one of dest's
// ancestors: moving dir there would cut a loop off the tree. The ancestors
// read join the conflict set, so a concurrent rename that changes the chain
// retries one of the two.
func checkNotUnder(tx kv.Tx, dir, dest Ino) error {
	for p, n := dest, 0; ; n++ {
		if p == dir {
			return fmt.Errorf("directory %d would move into its own subtree: %w", dir, syscall.EINVAL)
		}
		if p == RootIno {
			return nil
		}
		if n > 1<<16 {
			return fmt.Errorf("parent chain of %d does not reach the root: %w", dest, syscall.EIO)
		}
		a, err := getAttr(tx, p)
		if err != nil {
			return err
		}
		if err := tx.Lock(attrKey(p)); err != nil {
			return err
		}
		p = a.Parent
	}
}
