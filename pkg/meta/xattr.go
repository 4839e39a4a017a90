package meta

import (
	"context"
	"fmt"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// Xattr limits, as Linux's XATTR_NAME_MAX and XATTR_SIZE_MAX.
const (
	MaxXattrName  = 255
	MaxXattrValue = 64 << 10
)

func checkXattrName(name string) error {
	if name == "" {
		return fmt.Errorf("empty xattr name: %w", syscall.EINVAL)
	}
	if len(name) > MaxXattrName {
		return fmt.Errorf("xattr name of %d bytes is longer than %d: %w", len(name), MaxXattrName, syscall.ERANGE)
	}
	return nil
}

// GetXattr implements Meta. Stored values carry a one-byte tag so an empty
// value is still a stored one.
func (c *Client) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	if err := checkXattrName(name); err != nil {
		return nil, fmt.Errorf("getxattr %q of %d: %w", name, ino, err)
	}
	var v []byte
	err := c.view(ctx, func(tx kv.Tx) error {
		var err error
		if v, err = tx.Get(xattrKey(ino, name)); err != nil || v != nil {
			return err
		}
		if _, err := getAttr(tx, ino); err != nil {
			return err
		}
		return syscall.ENODATA
	})
	if err != nil {
		return nil, fmt.Errorf("getxattr %q of %d: %w", name, ino, err)
	}
	return v[1:], nil
}

// SetXattr implements Meta.
func (c *Client) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	wrap := func(err error) error { return fmt.Errorf("setxattr %q of %d: %w", name, ino, err) }
	if err := checkXattrName(name); err != nil {
		return wrap(err)
	}
	if len(value) > MaxXattrValue {
		return wrap(fmt.Errorf("value of %d bytes is larger than %d: %w", len(value), MaxXattrValue, syscall.E2BIG))
	}
	if flags&^(XattrCreate|XattrReplace|XattrACLKillSgid) != 0 || flags&(XattrCreate|XattrReplace) == XattrCreate|XattrReplace {
		return wrap(fmt.Errorf("flags %#x: %w", flags, syscall.EINVAL))
	}
	var acl ACL
	if name == ACLAccess || name == ACLDefault {
		var err error
		if acl, err = ParseACL(value); err != nil {
			return wrap(err)
		}
	}
	stored := append([]byte{0}, value...)
	return wrapErr(wrap, c.txn(ctx, func(tx kv.Tx) error {
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		k := xattrKey(ino, name)
		old, err := tx.Get(k)
		if err != nil {
			return err
		}
		switch {
		case flags&XattrCreate != 0 && old != nil:
			return syscall.EEXIST
		case flags&XattrReplace != 0 && old == nil:
			return syscall.ENODATA
		}
		a.Ctime = now()
		switch name {
		case ACLAccess:
			// The ACL's owner, group-class and other entries are the
			// mode's bits; one that says no more is kept as bits only.
			a.Mode = a.Mode&^0o777 | acl.Mode()
			if flags&XattrACLKillSgid != 0 {
				a.Mode &^= syscall.S_ISGID
			}
			if acl.Minimal() {
				tx.Delete(k)
				putAttr(tx, ino, &a)
				return nil
			}
		case ACLDefault:
			if !isDir(a.Mode) {
				return fmt.Errorf("a default ACL is for directories: %w", syscall.EACCES)
			}
			if len(acl) == 0 {
				tx.Delete(k)
				putAttr(tx, ino, &a)
				return nil
			}
		}
		tx.Set(k, stored)
		putAttr(tx, ino, &a)
		return nil
	}))
}

func wrapErr(wrap func(error) error, err error) error {
	if err == nil {
		return nil
	}
	return wrap(err)
}

// ListXattr implements Meta.
func (c *Client) ListXattr(ctx context.Context, ino Ino) ([]string, error) {
	var names []string
	err := c.view(ctx, func(tx kv.Tx) error {
		names = names[:0]
		if _, err := getAttr(tx, ino); err != nil {
			return err
		}
		p := inoKey(pXattr, ino)
		return tx.Scan(p, kv.PrefixEnd(p), 0, func(k, _ []byte) bool {
			names = append(names, string(k[len(p):]))
			return true
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listxattr of %d: %w", ino, err)
	}
	return names, nil
}

// RemoveXattr implements Meta.
func (c *Client) RemoveXattr(ctx context.Context, ino Ino, name string) error {
	wrap := func(err error) error { return fmt.Errorf("removexattr %q of %d: %w", name, ino, err) }
	if err := checkXattrName(name); err != nil {
		return wrap(err)
	}
	return wrapErr(wrap, c.txn(ctx, func(tx kv.Tx) error {
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		k := xattrKey(ino, name)
		old, err := tx.Get(k)
		if err != nil {
			return err
		}
		if old == nil {
			return syscall.ENODATA
		}
		tx.Delete(k)
		a.Ctime = now()
		putAttr(tx, ino, &a)
		return nil
	}))
}
