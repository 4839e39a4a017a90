package meta

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// POSIX ACLs are stored as the xattrs the kernel reads and writes,
// system.posix_acl_access and system.posix_acl_default, in the kernel's
// xattr format (a little-endian version 2 header, then tag, permissions and
// id per entry). With FUSE's POSIX ACL support the kernel enforces them and
// leaves it to the file system to keep them and the mode in step: setting
// an access ACL sets the mode's permission bits, chmod rewrites the ACL's
// owner, mask (or group) and other entries, and an access ACL that says no
// more than the mode is not stored at all. Those rules live here, applied
// in the transaction that changes the xattr or the mode.
const (
	ACLAccess  = "system.posix_acl_access"
	ACLDefault = "system.posix_acl_default"

	// XattrACLKillSgid (a SetXattr flag) clears the set-group-ID bit while
	// setting an access ACL: the kernel asks for it when the caller is not
	// in the file's group (FUSE_SETXATTR_ACL_KILL_SGID).
	XattrACLKillSgid uint32 = 1 << 8
)

// ACL entry tags, as <linux/posix_acl.h>.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	aclVersion = 2
	aclUndefID = 0xffffffff
)

// ACLEntry is one entry of an ACL.
type ACLEntry struct {
	Tag  uint16
	Perm uint16 // rwx bits
	ID   uint32 // uid or gid for named entries, else aclUndefID
}

// ACL is a parsed POSIX ACL.
type ACL []ACLEntry

// ParseACL decodes an ACL in the kernel's xattr format and checks that it
// is well formed: one owner, group and other entry each, a mask when there
// are named entries, named entries unique.
func ParseACL(b []byte) (ACL, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 {
		return nil, fmt.Errorf("ACL of %d bytes: %w", len(b), syscall.EINVAL)
	}
	if v := binary.LittleEndian.Uint32(b); v != aclVersion {
		return nil, fmt.Errorf("ACL version %d, want %d: %w", v, aclVersion, syscall.EOPNOTSUPP)
	}
	acl := make(ACL, 0, (len(b)-4)/8)
	for p := 4; p < len(b); p += 8 {
		acl = append(acl, ACLEntry{
			Tag:  binary.LittleEndian.Uint16(b[p:]),
			Perm: binary.LittleEndian.Uint16(b[p+2:]),
			ID:   binary.LittleEndian.Uint32(b[p+4:]),
		})
	}
	return acl, acl.check()
}

func (acl ACL) check() error {
	var objs, masks, named int
	seen := map[[2]uint32]bool{}
	for _, e := range acl {
		if e.Perm&^7 != 0 {
			return fmt.Errorf("ACL entry permissions %#o: %w", e.Perm, syscall.EINVAL)
		}
		switch e.Tag {
		case aclUserObj, aclGroupObj, aclOther:
			objs++
		case aclMask:
			masks++
		case aclUser, aclGroup:
			k := [2]uint32{uint32(e.Tag), e.ID}
			if seen[k] {
				return fmt.Errorf("ACL names id %d twice: %w", e.ID, syscall.EINVAL)
			}
			seen[k] = true
			named++
		default:
			return fmt.Errorf("ACL entry tag %#x: %w", e.Tag, syscall.EINVAL)
		}
	}
	if len(acl) == 0 {
		return nil // an empty default ACL: none
	}
	if objs != 3 || masks > 1 || named > 0 && masks == 0 {
		return fmt.Errorf("ACL needs exactly one owner, group and other entry and a mask with named entries: %w", syscall.EINVAL)
	}
	return nil
}

// Encode returns the ACL in the kernel's xattr format.
func (acl ACL) Encode() []byte {
	b := make([]byte, 4, 4+8*len(acl))
	binary.LittleEndian.PutUint32(b, aclVersion)
	for _, e := range acl {
		b = binary.LittleEndian.AppendUint16(b, e.Tag)
		b = binary.LittleEndian.AppendUint16(b, e.Perm)
		b = binary.LittleEndian.AppendUint32(b, e.ID)
	}
	return b
}

// Minimal reports whether the ACL says no more than permission bits do.
func (acl ACL) Minimal() bool { return len(acl) <= 3 }

// groupClass is the entry that the mode's group bits stand for: the mask,
// or the owning group's entry when there is no mask.
func (acl ACL) groupClass() int {
	g := -1
	for i, e := range acl {
		switch e.Tag {
		case aclMask:
			return i
		case aclGroupObj:
			g = i
		}
	}
	return g
}

// Mode is the permission bits the ACL implies (owner, group class, other).
func (acl ACL) Mode() uint32 {
	var m uint32
	for i, e := range acl {
		switch {
		case e.Tag == aclUserObj:
			m |= uint32(e.Perm) << 6
		case i == acl.groupClass():
			m |= uint32(e.Perm) << 3
		case e.Tag == aclOther:
			m |= uint32(e.Perm)
		}
	}
	return m
}

// Chmod sets the owner, group-class and other entries from mode, as chmod(2)
// does to a file with an ACL.
func (acl ACL) Chmod(mode uint32) {
	gc := acl.groupClass()
	for i := range acl {
		switch {
		case acl[i].Tag == aclUserObj:
			acl[i].Perm = uint16(mode>>6) & 7
		case i == gc:
			acl[i].Perm = uint16(mode>>3) & 7
		case acl[i].Tag == aclOther:
			acl[i].Perm = uint16(mode) & 7
		}
	}
}

// Inherit computes what a node created with mode (permission bits as the
// caller asked, before any umask) in a directory with default ACL def gets:
// its permission bits, its access ACL (nil when the bits say it all) and,
// for a directory, its default ACL (def again). As the kernel's
// posix_acl_create: the owner, group-class and other entries are limited by
// mode, and the umask does not apply.
func Inherit(def ACL, mode uint32, dir bool) (perm uint32, access, dflt []byte) {
	acl := make(ACL, len(def))
	copy(acl, def)
	gc := acl.groupClass()
	for i := range acl {
		switch {
		case acl[i].Tag == aclUserObj:
			acl[i].Perm &= uint16(mode>>6) & 7
		case i == gc:
			acl[i].Perm &= uint16(mode>>3) & 7
		case acl[i].Tag == aclOther:
			acl[i].Perm &= uint16(mode) & 7
		}
	}
	perm = mode&^0o777 | acl.Mode()
	if !acl.Minimal() {
		access = acl.Encode()
	}
	if dir {
		dflt = def.Encode()
	}
	return perm, access, dflt
}

// chmodACL brings ino's access ACL, if it has one, in step with its new mode.
func chmodACL(tx kv.Tx, ino Ino, mode uint32) error {
	k := xattrKey(ino, ACLAccess)
	v, err := tx.Get(k)
	if err != nil || v == nil {
		return err
	}
	acl, err := ParseACL(v[1:])
	if err != nil {
		return fmt.Errorf("inode %d's stored access ACL: %w", ino, err)
	}
	acl.Chmod(mode)
	tx.Set(k, append([]byte{0}, acl.Encode()...))
	return nil
}

// checkACL is Check's look at one xattr: a stored ACL must parse, a default
// ACL belongs to a directory, and an access ACL's owner, group-class and
// other entries must be the mode's bits (the kernel checks the ACL, stat
// shows the mode: they must agree). Repairs trust the mode, which is what
// users see and set.
func checkACL(ino Ino, a Attr, name string, v []byte, problem func(string, ...any), fix func(string, func(kv.Tx) error)) {
	if name != ACLAccess && name != ACLDefault {
		return
	}
	k := xattrKey(ino, name)
	drop := func(tx kv.Tx) error { tx.Delete(k); return nil }
	if len(v) == 0 {
		problem("inode %d: %s has no value tag", ino, name)
		return
	}
	acl, err := ParseACL(v[1:])
	switch {
	case err != nil:
		problem("inode %d: %s is not a valid ACL: %v", ino, name, err)
		fix("remove invalid ACL", drop)
	case name == ACLDefault && !isDir(a.Mode):
		problem("inode %d is not a directory but has a default ACL", ino)
		fix("remove default ACL of a non-directory", drop)
	case name == ACLAccess && acl.Mode() != a.Mode&0o777:
		problem("inode %d: access ACL implies mode %#o, the inode says %#o", ino, acl.Mode(), a.Mode&0o777)
		fix("bring the access ACL in step with the mode", func(tx kv.Tx) error { return chmodACL(tx, ino, a.Mode) })
	}
}
