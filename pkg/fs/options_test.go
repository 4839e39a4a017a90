package fs

import (
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/meta"
)

func TestResolveOptions(t *testing.T) {
	for _, tc := range []struct {
		opts    []string
		check   func(*mountOptions) bool
		wantErr string
	}{
		{nil, func(m *mountOptions) bool {
			return m.attrTimeout == DefaultTimeout && m.fuse.MaxWrite == 1<<20 && m.fuse.MaxReadAhead == 1<<20 &&
				m.fuse.EnableLocks && strings.Contains(strings.Join(m.fuse.Options, ","), "default_permissions") &&
				m.fuse.EnableAcl && m.fuse.ExtraCapabilities&fuse.CAP_DONT_MASK != 0
		}, ""},
		{[]string{"allow_other,ro", "attr_timeout=0.5"}, func(m *mountOptions) bool {
			return m.fuse.AllowOther && m.readOnly && m.attrTimeout == 500*time.Millisecond
		}, ""},
		{[]string{"entry_timeout=0"}, func(m *mountOptions) bool { return m.entryTimeout == 0 }, ""},
		{[]string{"no_default_permissions"}, nil, "no_default_permissions is not supported"},
		{[]string{"bogus"}, nil, `unknown mount option "bogus"`},
		{[]string{"attr_timeout"}, nil, "needs a value"},
		{[]string{"attr_timeout=-1"}, nil, "want a duration"},
		{[]string{"fsname="}, nil, "needs a value"},
	} {
		mo, err := resolveOptions(&Config{Options: tc.opts})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: error %v, want %q", tc.opts, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !tc.check(mo) {
			t.Errorf("%v: %+v, %v", tc.opts, mo, err)
		}
	}
}

func TestSubdirSwap(t *testing.T) {
	fs := &fileSystem{root: 42}
	for kernel, ino := range map[uint64]meta.Ino{1: 42, 42: 1, 7: 7} {
		if got := fs.toMeta(kernel); got != ino {
			t.Errorf("toMeta(%d) = %d, want %d", kernel, got, ino)
		}
		if got := fs.toKernel(ino); got != kernel {
			t.Errorf("toKernel(%d) = %d, want %d", ino, got, kernel)
		}
	}
	plain := &fileSystem{root: meta.RootIno}
	if plain.toMeta(1) != 1 || plain.toKernel(9) != 9 {
		t.Error("without a subdir, node ids are inode numbers")
	}
}

func TestAccessOK(t *testing.T) {
	a := &meta.Attr{Mode: 0o100640, Uid: 10, Gid: 20}
	for _, tc := range []struct {
		uid, gid, mask uint32
		ok             bool
	}{
		{10, 0, 6, true}, {10, 0, 1, false}, {11, 20, 4, true}, {11, 20, 2, false},
		{11, 21, 4, false}, {0, 0, 6, true}, {0, 0, 1, false},
	} {
		if got := accessOK(a, tc.uid, tc.gid, tc.mask).Ok(); got != tc.ok {
			t.Errorf("uid %d gid %d mask %o: %v, want %v", tc.uid, tc.gid, tc.mask, got, tc.ok)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/mnt/a\040b\011c`); got != "/mnt/a b\tc" {
		t.Errorf("got %q", got)
	}
	if got := unescapeMountinfo(`/plain`); got != "/plain" {
		t.Errorf("got %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	if got := redactURL("etcd://user:secret@10.0.0.1:2379/vol"); strings.Contains(got, "secret") {
		t.Errorf("credentials leak: %s", got)
	}
	if got := redactURL("bolt:///var/lib/podfs/meta.db"); got != "bolt:///var/lib/podfs/meta.db" {
		t.Errorf("got %s", got)
	}
}
