package meta

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

func init() {
	conformance = append(conformance, []struct {
		name string
		fn   func(t *testing.T, c *Client)
	}{
		{"xattr", testXattr},
		{"fallocate", testFallocate},
		{"copy-file-range", testCopyFileRange},
		{"locks-one-client", testLocksOneClient},
		{"check-repair", testCheckRepair},
	}...)
}

func testXattr(t *testing.T, c *Client) {
	ctx := context.Background()
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	_, err = c.GetXattr(ctx, f, "user.a")
	wantErrno(t, err, syscall.ENODATA)
	ok(t, c.SetXattr(ctx, f, "user.a", []byte("1"), 0))
	ok(t, c.SetXattr(ctx, f, "user.empty", nil, XattrCreate))
	wantErrno(t, c.SetXattr(ctx, f, "user.a", []byte("2"), XattrCreate), syscall.EEXIST)
	wantErrno(t, c.SetXattr(ctx, f, "user.b", []byte("2"), XattrReplace), syscall.ENODATA)
	ok(t, c.SetXattr(ctx, f, "user.a", []byte("22"), XattrReplace))
	if v := must[[]byte](t)(c.GetXattr(ctx, f, "user.a")); string(v) != "22" {
		t.Fatalf("user.a = %q", v)
	}
	if v := must[[]byte](t)(c.GetXattr(ctx, f, "user.empty")); len(v) != 0 {
		t.Fatalf("user.empty = %q", v)
	}
	if names := must[[]string](t)(c.ListXattr(ctx, f)); !slices.Equal(names, []string{"user.a", "user.empty"}) {
		t.Fatalf("list %q", names)
	}
	ok(t, c.RemoveXattr(ctx, f, "user.a"))
	wantErrno(t, c.RemoveXattr(ctx, f, "user.a"), syscall.ENODATA)
	wantErrno(t, c.SetXattr(ctx, f, "user.big", make([]byte, MaxXattrValue+1), 0), syscall.E2BIG)
	wantErrno(t, c.SetXattr(ctx, 9999, "user.a", nil, 0), syscall.ENOENT)
	// Removing the file removes its xattrs (the checker finds no strays).
	ok(t, c.Unlink(ctx, RootIno, "f"))
}

func testFallocate(t *testing.T, c *Client) {
	ctx := context.Background()
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, c.Fallocate(ctx, f, 0, 0, 10000))
	if a := must[Attr](t)(c.GetAttr(ctx, f)); a.Size != 10000 {
		t.Fatalf("size %d", a.Size)
	}
	ok(t, c.Fallocate(ctx, f, FallocKeepSize, 0, 1<<20))
	if a := must[Attr](t)(c.GetAttr(ctx, f)); a.Size != 10000 {
		t.Fatalf("keep-size changed the size to %d", a.Size)
	}
	id := must[uint64](t)(c.NewSliceID(ctx))
	ok(t, c.WriteChunk(ctx, f, 0, Slice{ID: id, Size: 10000, Len: 10000}, time.Now()))
	ok(t, c.Fallocate(ctx, f, FallocPunchHole|FallocKeepSize, 100, 200))
	ss := must[[]Slice](t)(c.ReadChunk(ctx, f, 0))
	if len(ss) != 2 || ss[1] != (Slice{Pos: 100, Len: 200}) {
		t.Fatalf("after punch %+v", ss)
	}
	wantErrno(t, c.Fallocate(ctx, f, FallocPunchHole, 0, 10), syscall.EOPNOTSUPP)
	wantErrno(t, c.Fallocate(ctx, f, 0x8, 0, 10), syscall.EOPNOTSUPP)
	wantErrno(t, c.Fallocate(ctx, f, 0, 0, 0), syscall.EINVAL)
	wantErrno(t, c.Fallocate(ctx, RootIno, 0, 0, 10), syscall.EISDIR)
	ok(t, c.Fallocate(ctx, f, FallocZeroRange, 9000, 2000))
	if a := must[Attr](t)(c.GetAttr(ctx, f)); a.Size != 11000 {
		t.Fatalf("zero-range size %d", a.Size)
	}
}

func testCopyFileRange(t *testing.T, c *Client) {
	ctx := context.Background()
	src, _, err := c.Mknod(ctx, RootIno, "src", 0o644, 0, 0, 0)
	ok(t, err)
	dst, _, err := c.Mknod(ctx, RootIno, "dst", 0o644, 0, 0, 0)
	ok(t, err)
	id := must[uint64](t)(c.NewSliceID(ctx))
	// src: [0,1000) from id, a gap, then [2000,3000) from id (offset 1000).
	ok(t, c.WriteChunk(ctx, src, 0, Slice{ID: id, Size: 2000, Off: 0, Len: 1000, Pos: 0}, time.Now()))
	id2 := must[uint64](t)(c.NewSliceID(ctx))
	ok(t, c.WriteChunk(ctx, src, 0, Slice{ID: id2, Size: 1000, Off: 0, Len: 1000, Pos: 2000}, time.Now()))
	// Copy [500, 2500) of src to dst at ChunkSize-700: crosses dst's chunk boundary.
	n, err := c.CopyFileRange(ctx, src, 500, dst, ChunkSize-700, 2000)
	ok(t, err)
	if n != 2000 {
		t.Fatalf("copied %d", n)
	}
	c0 := must[[]Slice](t)(c.ReadChunk(ctx, dst, 0))
	c1 := must[[]Slice](t)(c.ReadChunk(ctx, dst, 1))
	want0 := []Slice{{ID: id, Size: 2000, Off: 500, Len: 500, Pos: ChunkSize - 700}, {Pos: ChunkSize - 200, Len: 200}}
	want1 := []Slice{{Pos: 0, Len: 800}, {ID: id2, Size: 1000, Off: 0, Len: 500, Pos: 800}}
	if !slices.Equal(c0, want0) || !slices.Equal(c1, want1) {
		t.Fatalf("dst chunks\n%+v\n%+v\nwant\n%+v\n%+v", c0, c1, want0, want1)
	}
	if a := must[Attr](t)(c.GetAttr(ctx, dst)); a.Size != ChunkSize+1300 {
		t.Fatalf("dst size %d", a.Size)
	}
	// Past the end: nothing.
	if n, err := c.CopyFileRange(ctx, src, 5000, dst, 0, 10); err != nil || n != 0 {
		t.Fatalf("copy past end: %d %v", n, err)
	}
	_, err = c.CopyFileRange(ctx, src, 0, src, 100, 1000)
	wantErrno(t, err, syscall.EINVAL)
	// Shared slices stay referenced until both files are gone.
	ok(t, c.Unlink(ctx, RootIno, "src"))
	if p := pendingIDs(t, c); p[id] || p[id2] {
		t.Fatalf("shared slices pending while dst uses them: %v", p)
	}
	ok(t, c.Unlink(ctx, RootIno, "dst"))
	if p := pendingIDs(t, c); !p[id] || !p[id2] {
		t.Fatalf("slices not pending after both files went: %v", p)
	}
}

func testLocksOneClient(t *testing.T, c *Client) {
	ctx := context.Background()
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, c.Flock(ctx, f, 1, syscall.F_RDLCK, false))
	ok(t, c.Flock(ctx, f, 2, syscall.F_RDLCK, false))
	wantErrno(t, c.Flock(ctx, f, 3, syscall.F_WRLCK, false), syscall.EAGAIN)
	ok(t, c.Flock(ctx, f, 1, syscall.F_UNLCK, false))
	ok(t, c.Flock(ctx, f, 2, syscall.F_WRLCK, false)) // upgrade of the only holder
	wantErrno(t, c.Flock(ctx, f, 1, syscall.F_RDLCK, false), syscall.EAGAIN)
	// A blocked waiter gives up when its context ends.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	wantErrno(t, c.Flock(cctx, f, 1, syscall.F_RDLCK, true), syscall.EINTR)
	cancel()
	ok(t, c.Flock(ctx, f, 2, syscall.F_UNLCK, false))

	ok(t, c.SetLk(ctx, f, 1, false, Plock{Type: syscall.F_WRLCK, Start: 0, End: 99, Pid: 10}))
	ok(t, c.SetLk(ctx, f, 2, false, Plock{Type: syscall.F_WRLCK, Start: 100, End: 199, Pid: 20}))
	wantErrno(t, c.SetLk(ctx, f, 2, false, Plock{Type: syscall.F_RDLCK, Start: 50, End: 60}), syscall.EAGAIN)
	lk := Plock{Type: syscall.F_RDLCK, Start: 150, End: 300}
	ok(t, c.GetLk(ctx, f, 1, &lk))
	if lk != (Plock{Type: syscall.F_WRLCK, Start: 100, End: 199, Pid: 20}) {
		t.Fatalf("getlk %+v", lk)
	}
	// Unlocking the middle of owner 1's range splits it.
	ok(t, c.SetLk(ctx, f, 1, false, Plock{Type: syscall.F_UNLCK, Start: 40, End: 59}))
	ok(t, c.SetLk(ctx, f, 2, false, Plock{Type: syscall.F_WRLCK, Start: 45, End: 55}))
	wantErrno(t, c.SetLk(ctx, f, 2, false, Plock{Type: syscall.F_WRLCK, Start: 39, End: 39}), syscall.EAGAIN)
	wantErrno(t, c.SetLk(ctx, f, 2, false, Plock{Type: syscall.F_WRLCK, Start: 60, End: 60}), syscall.EAGAIN)
	lk = Plock{Type: syscall.F_WRLCK, Start: 0, End: 1000}
	ok(t, c.GetLk(ctx, f, 3, &lk))
	if lk.Type == syscall.F_UNLCK {
		t.Fatalf("getlk saw no lock")
	}
	wantErrno(t, c.SetLk(ctx, f, 1, false, Plock{Type: syscall.F_WRLCK, Start: 10, End: 5}), syscall.EINVAL)
	// Closing the session drops every lock.
	ok(t, c.CloseSession(ctx))
	lk = Plock{Type: syscall.F_WRLCK, Start: 0, End: 1 << 62}
	ok(t, c.GetLk(ctx, f, 9, &lk))
	if lk.Type != syscall.F_UNLCK {
		t.Fatalf("lock survived the session: %+v", lk)
	}
	ok(t, c.Flock(ctx, f, 9, syscall.F_WRLCK, false))
}

func testCheckRepair(t *testing.T, c *Client) {
	ctx := context.Background()
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	// Break things behind the namespace's back.
	ok(t, kv.Txn(ctx, c.Engine(), func(tx kv.Tx) error {
		a, _ := getAttr(tx, f)
		a.Nlink = 5
		putAttr(tx, f, &a)
		da, _ := getAttr(tx, d)
		da.Parent = 77
		putAttr(tx, d, &da)
		tx.Set(entryKey(RootIno, "dangling"), encodeEntry(123456, syscall.S_IFREG))
		orphan := Attr{Mode: syscall.S_IFREG | 0o644, Nlink: 1}
		putAttr(tx, 654321, &orphan)
		return addUsage(tx, 4096, 0)
	}))
	r, err := c.Check(ctx, false)
	ok(t, err)
	if len(r.Problems) != 5 {
		t.Fatalf("check found %d problems, want 5:\n%q", len(r.Problems), r.Problems)
	}
	r, err = c.Check(ctx, true)
	ok(t, err)
	if r.Repaired != 5 {
		t.Fatalf("repaired %d of %q", r.Repaired, r.Problems)
	}
	// checkClean (run by the suite afterwards) must now pass.
}
