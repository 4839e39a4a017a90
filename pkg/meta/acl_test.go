package meta

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"podfs.io/podfs/pkg/meta/kv"
)

func aclOf(entries ...ACLEntry) ACL { return ACL(entries) }

func testACL(t *testing.T, c *Client) {
	ctx := context.Background()
	ino, _, err := c.Mknod(ctx, RootIno, "f", syscall.S_IFREG|0o640, 0, 1000, 1000)
	ok(t, err)
	u := func(tag, perm uint16, id uint32) ACLEntry { return ACLEntry{Tag: tag, Perm: perm, ID: id} }
	full := aclOf(u(aclUserObj, 6, aclUndefID), u(aclUser, 7, 2000), u(aclGroupObj, 4, aclUndefID),
		u(aclMask, 5, aclUndefID), u(aclOther, 1, aclUndefID))

	// Setting an access ACL sets the mode: owner rw-, group class = mask r-x, other --x.
	ok(t, c.SetXattr(ctx, ino, ACLAccess, full.Encode(), 0))
	a := must[Attr](t)(c.GetAttr(ctx, ino))
	if a.Mode&0o7777 != 0o651 {
		t.Fatalf("mode after setfacl %#o, want 0651", a.Mode&0o7777)
	}
	// chmod rewrites the owner, mask and other entries, and keeps the named one.
	must[Attr](t)(c.SetAttr(ctx, ino, SetMode, Attr{Mode: 0o704}))
	v := must[[]byte](t)(c.GetXattr(ctx, ino, ACLAccess))
	got, err := ParseACL(v)
	ok(t, err)
	want := aclOf(u(aclUserObj, 7, aclUndefID), u(aclUser, 7, 2000), u(aclGroupObj, 4, aclUndefID),
		u(aclMask, 0, aclUndefID), u(aclOther, 4, aclUndefID))
	if string(got.Encode()) != string(want.Encode()) {
		t.Fatalf("ACL after chmod 0704: %+v, want %+v", got, want)
	}
	// An ACL the mode can say alone is not stored; set-group-ID goes when asked.
	must[Attr](t)(c.SetAttr(ctx, ino, SetMode, Attr{Mode: syscall.S_ISGID | 0o777}))
	minimal := aclOf(u(aclUserObj, 6, aclUndefID), u(aclGroupObj, 4, aclUndefID), u(aclOther, 0, aclUndefID))
	ok(t, c.SetXattr(ctx, ino, ACLAccess, minimal.Encode(), XattrACLKillSgid))
	if _, err := c.GetXattr(ctx, ino, ACLAccess); err == nil {
		t.Fatal("a minimal access ACL was stored")
	} else {
		wantErrno(t, err, syscall.ENODATA)
	}
	if a := must[Attr](t)(c.GetAttr(ctx, ino)); a.Mode&0o7777 != 0o640 {
		t.Fatalf("mode after a minimal ACL with kill-sgid %#o, want 0640", a.Mode&0o7777)
	}
	// Malformed ACLs and default ACLs of files are refused.
	wantErrno(t, c.SetXattr(ctx, ino, ACLAccess, []byte{2, 0, 0, 0, 1}, 0), syscall.EINVAL)
	noMask := aclOf(u(aclUserObj, 6, aclUndefID), u(aclUser, 7, 2000), u(aclGroupObj, 4, aclUndefID), u(aclOther, 0, aclUndefID))
	wantErrno(t, c.SetXattr(ctx, ino, ACLAccess, noMask.Encode(), 0), syscall.EINVAL)
	wantErrno(t, c.SetXattr(ctx, ino, ACLDefault, full.Encode(), 0), syscall.EACCES)

	// The ACL stays with the inode through rename.
	ok(t, c.SetXattr(ctx, ino, ACLAccess, full.Encode(), 0))
	dir, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.SetXattr(ctx, dir, ACLDefault, full.Encode(), 0))
	ok(t, c.Rename(ctx, RootIno, "f", dir, "g", 0))
	if v, err := c.GetXattr(ctx, ino, ACLAccess); err != nil || string(v) != string(full.Encode()) {
		t.Fatalf("access ACL after rename: %v", err)
	}
	checkClean(t, c)

	// Check finds an access ACL out of step with the mode, and repairs it.
	ok(t, c.txn(ctx, func(tx kv.Tx) error {
		a, err := getAttr(tx, ino)
		if err != nil {
			return err
		}
		a.Mode = a.Mode&^0o777 | 0o600
		putAttr(tx, ino, &a)
		return nil
	}))
	r, err := c.Check(ctx, true)
	ok(t, err)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "access ACL implies") || r.Repaired != 1 {
		t.Fatalf("check: %+v, want the ACL/mode mismatch found and repaired", r)
	}
}

func TestInherit(t *testing.T) {
	u := func(tag, perm uint16) ACLEntry { return ACLEntry{Tag: tag, Perm: perm, ID: aclUndefID} }
	def := aclOf(u(aclUserObj, 7), ACLEntry{Tag: aclGroup, Perm: 7, ID: 50}, u(aclGroupObj, 5), u(aclMask, 7), u(aclOther, 5))
	perm, access, dflt := Inherit(def, 0o666, false)
	if perm != 0o664 || access == nil || dflt != nil {
		t.Fatalf("file: perm %#o access %v default %v; want 0664, an access ACL, no default", perm, access != nil, dflt != nil)
	}
	acl, err := ParseACL(access)
	if err != nil || acl.groupClass() < 0 || acl[acl.groupClass()].Perm != 6 {
		t.Fatalf("inherited ACL %+v (%v): want the mask limited to rw-", acl, err)
	}
	if _, _, dflt := Inherit(def, 0o777, true); dflt == nil {
		t.Fatal("a directory does not inherit the default ACL")
	}
}
