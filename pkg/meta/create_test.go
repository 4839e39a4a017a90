package meta

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// testCreateOpenUnlinked checks Create: a regular file that is open in the
// same transaction, so unlinking it keeps it until its last Release.
func testCreateOpenUnlinked(t *testing.T, c *Client) {
	ctx := context.Background()
	f, a, err := c.Create(ctx, RootIno, "f", syscall.S_IFREG|0o640, 3, 4, syscall.O_RDWR)
	ok(t, err)
	if a.Mode != syscall.S_IFREG|0o640 || a.Uid != 3 || a.Gid != 4 || a.Nlink != 1 || a.Size != 0 {
		t.Fatalf("created attr %+v", a)
	}
	if got, ga, err := c.Lookup(ctx, RootIno, "f"); err != nil || got != f || ga != a {
		t.Fatalf("lookup gave %d %+v %v, want %d %+v", got, ga, err, f, a)
	}
	_, _, err = c.Create(ctx, RootIno, "f", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.EEXIST)
	_, _, err = c.Create(ctx, RootIno, "a/b", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.EINVAL)

	// A second handle, then unlink: the file outlives its name until both
	// handles are released.
	_, err = c.Open(ctx, f, 0)
	ok(t, err)
	ok(t, c.Unlink(ctx, RootIno, "f"))
	if a := must[Attr](t)(c.GetAttr(ctx, f)); a.Nlink != 0 {
		t.Fatalf("open unlinked nlink %d", a.Nlink)
	}
	ok(t, c.Release(ctx, f))
	ok(t, errOf(c.GetAttr(ctx, f)))
	ok(t, c.Release(ctx, f))
	_, err = c.GetAttr(ctx, f)
	wantErrno(t, err, syscall.ENOENT)
	wantErrno(t, c.Release(ctx, f), syscall.EBADF)

	// Created, unlinked while it is the only handle, released: gone.
	g, _, err := c.Create(ctx, RootIno, "g", 0o600, 0, 0, syscall.O_WRONLY)
	ok(t, err)
	ok(t, c.Unlink(ctx, RootIno, "g"))
	ok(t, errOf(c.GetAttr(ctx, g)))
	ok(t, c.Release(ctx, g))
	_, err = c.GetAttr(ctx, g)
	wantErrno(t, err, syscall.ENOENT)
}

// testUnlinkReleasesChunks checks both ways a removed file's slices become
// pending deletes: a small file's in the unlink's own transaction (no
// removed-file key left for the reaper), a file with more chunks than that
// through the removed-file key (PendingDeletes sweeps what the reaper has
// not done yet).
func testUnlinkReleasesChunks(t *testing.T, c *Client) {
	ctx := context.Background()
	write := func(name string, chunks int) (Ino, []uint64) {
		t.Helper()
		f, _, err := c.Mknod(ctx, RootIno, name, 0o644, 0, 0, 0)
		ok(t, err)
		var ids []uint64
		for i := range chunks {
			id := must[uint64](t)(c.NewSliceID(ctx))
			ok(t, c.WriteChunk(ctx, f, uint32(i), Slice{ID: id, Size: 4096, Len: 4096}, time.Now()))
			ids = append(ids, id)
		}
		return f, ids
	}
	removedKeyOf := func(ino Ino) bool {
		t.Helper()
		var found bool
		ok(t, c.view(ctx, func(tx kv.Tx) error {
			v, err := tx.Get(removedKey(ino))
			found = v != nil
			return err
		}))
		return found
	}
	small, smallIDs := write("small", 2)
	ok(t, c.Unlink(ctx, RootIno, "small"))
	if removedKeyOf(small) {
		t.Fatalf("a file of 2 chunks left a removed-file key")
	}
	pend := pendingIDs(t, c)
	for _, id := range smallIDs {
		if !pend[id] {
			t.Fatalf("slice %d of the small file not pending after unlink: %v", id, pend)
		}
	}
	_, bigIDs := write("big", inlineChunks+2)
	ok(t, c.Unlink(ctx, RootIno, "big"))
	pend = pendingIDs(t, c)
	for _, id := range bigIDs {
		if !pend[id] {
			t.Fatalf("slice %d of the big file not pending after unlink: %v", id, pend)
		}
	}
	ok(t, c.DoneDeleting(ctx, append(smallIDs, bigIDs...)))
	if pend := pendingIDs(t, c); len(pend) != 0 {
		t.Fatalf("pending after DoneDeleting %v", pend)
	}
}

// testReleaseMany checks that ReleaseMany is Release of each ino: counts per
// client, unlinked files removed at their last release, extra releases
// refused with EBADF while the rest still happen.
func testReleaseMany(t *testing.T, c *Client) {
	ctx := context.Background()
	var files []Ino
	for i := range releaseBatch + 3 { // more than one batch
		f, _, err := c.Create(ctx, RootIno, fmt.Sprintf("f%d", i), 0o644, 0, 0, 0)
		ok(t, err)
		files = append(files, f)
	}
	twice := files[0]
	ok(t, errOf(c.Open(ctx, twice, 0)))
	for i := 1; i < len(files); i += 2 {
		ok(t, c.Unlink(ctx, RootIno, fmt.Sprintf("f%d", i)))
	}
	// Release every file once: twice stays open, the unlinked ones go.
	ok(t, c.ReleaseMany(ctx, files))
	for i, f := range files {
		_, err := c.GetAttr(ctx, f)
		if i%2 == 1 {
			wantErrno(t, err, syscall.ENOENT)
		} else {
			ok(t, err)
		}
	}
	ok(t, c.Unlink(ctx, RootIno, "f0"))
	ok(t, errOf(c.GetAttr(ctx, twice))) // still open once
	// One release too many: EBADF, the valid one still done.
	wantErrno(t, c.ReleaseMany(ctx, []Ino{twice, twice}), syscall.EBADF)
	_, err := c.GetAttr(ctx, twice)
	wantErrno(t, err, syscall.ENOENT)
	wantErrno(t, c.Release(ctx, files[2]), syscall.EBADF)
}
