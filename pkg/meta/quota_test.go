package meta

import (
	"context"
	"fmt"
	"strings"
	"sync"
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
		{"quota-usage", testQuotaUsage},
		{"quota-limits", testQuotaLimits},
		{"quota-rename", testQuotaRename},
		{"quota-check-repair", testQuotaCheckRepair},
		{"quota-statfs-paths", testQuotaStatFSPaths},
	}...)
}

// wantUsage fails unless dir's quota reports these figures.
func wantUsage(t *testing.T, c *Client, what string, dir Ino, bytes, inodes uint64) {
	t.Helper()
	q, err := c.GetQuota(context.Background(), dir)
	if err != nil {
		t.Fatalf("%s: get quota of %d: %v", what, dir, err)
	}
	if q.UsedBytes != bytes || q.UsedInodes != inodes {
		t.Fatalf("%s: quota of %d uses %d bytes, %d inodes; want %d, %d", what, dir, q.UsedBytes, q.UsedInodes, bytes, inodes)
	}
}

// writeAt commits a slice covering [off, off+n) of file ino.
func writeAt(t testing.TB, c *Client, ino Ino, off, n uint64) error {
	t.Helper()
	id, err := c.NewSliceID(context.Background())
	ok(t, err)
	idx := uint32(off / ChunkSize)
	pos := uint32(off % ChunkSize)
	return c.WriteChunk(context.Background(), ino, idx, Slice{ID: id, Size: uint32(n), Len: uint32(n), Pos: pos}, time.Now())
}

// Every change of a tree is charged to its quotas, nested ones included,
// and removing the changes gives the usage back.
func testQuotaUsage(t *testing.T, c *Client) {
	ctx := context.Background()
	// A tree with content before the quota: SetQuota counts it.
	q, _, err := c.Mkdir(ctx, RootIno, "q", 0o755, 0, 0)
	ok(t, err)
	pre, _, err := c.Mknod(ctx, q, "pre", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, pre, 0, 5000)) // 8 KiB charged
	ok(t, c.SetQuota(ctx, q, 0, 0))
	wantUsage(t, c, "counted at set", q, 8192, 1)

	sub, _, err := c.Mkdir(ctx, q, "sub", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.SetQuota(ctx, sub, 1<<30, 100))
	wantUsage(t, c, "mkdir", q, 8192, 2)
	wantUsage(t, c, "nested empty", sub, 0, 0)

	f, _, err := c.Create(ctx, sub, "f", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, f, 0, 10000))         // 12 KiB
	ok(t, writeAt(t, c, f, ChunkSize+1, 100)) // grows to 64 MiB + 101: 64 MiB + 4 KiB
	size := align4k(ChunkSize + 101)
	wantUsage(t, c, "write", sub, uint64(size), 1)
	wantUsage(t, c, "write, outer", q, uint64(8192+size), 3)
	ok(t, c.Release(ctx, f))

	_, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 4097})
	ok(t, err)
	wantUsage(t, c, "truncate", sub, 8192, 1)
	ok(t, c.Fallocate(ctx, f, 0, 0, 3*4096))
	wantUsage(t, c, "fallocate", sub, 3*4096, 1)
	g, _, err := c.Mknod(ctx, sub, "g", 0o644, 0, 0, 0)
	ok(t, err)
	n, err := c.CopyFileRange(ctx, f, 0, g, 4096, 3*4096)
	ok(t, err)
	if n != 3*4096 {
		t.Fatalf("copied %d", n)
	}
	wantUsage(t, c, "copy_file_range", sub, 3*4096+4*4096, 2)
	_, _, err = c.Symlink(ctx, sub, "l", "f", 0, 0)
	ok(t, err)
	_, err = c.Link(ctx, g, sub, "g2")
	ok(t, err)
	wantUsage(t, c, "symlink, link", sub, 7*4096, 3)
	wantUsage(t, c, "symlink, link, outer", q, 8192+7*4096, 5)

	for _, name := range []string{"f", "g", "g2", "l"} {
		ok(t, c.Unlink(ctx, sub, name))
	}
	wantUsage(t, c, "unlink", sub, 0, 0)
	ok(t, c.Rmdir(ctx, q, "sub"))
	wantUsage(t, c, "rmdir", q, 8192, 1)
	// The removed directory's quota went with it.
	if qs := must[map[Ino]Quota](t)(c.ListQuotas(ctx)); len(qs) != 1 || qs[q].UsedBytes != 8192 {
		t.Fatalf("quotas after rmdir: %+v", qs)
	}
	ok(t, c.DeleteQuota(ctx, q))
	_, err = c.GetQuota(ctx, q)
	wantErrno(t, err, syscall.ENOENT)
	wantErrno(t, c.DeleteQuota(ctx, q), syscall.ENOENT)
	// With no quota left, changes are charged nowhere.
	ok(t, c.Unlink(ctx, q, "pre"))

	// An unlinked file still open stays charged until its last close,
	// even when its directory went first.
	ok(t, c.SetQuota(ctx, q, 0, 0))
	d, _, err := c.Mkdir(ctx, q, "d", 0o755, 0, 0)
	ok(t, err)
	h, _, err := c.Create(ctx, d, "h", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, h, 0, 4096))
	ok(t, c.Unlink(ctx, d, "h"))
	ok(t, c.Rmdir(ctx, q, "d"))
	wantUsage(t, c, "unlinked, open", q, 4096, 1)
	ok(t, c.Release(ctx, h))
	wantUsage(t, c, "released", q, 0, 0)
}

// Growth past a limit fails with EDQUOT at every entry point; nothing of
// the refused change is left behind.
func testQuotaLimits(t *testing.T, c *Client) {
	ctx := context.Background()
	q, _, err := c.Mkdir(ctx, RootIno, "q", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.SetQuota(ctx, q, 64<<10, 4))
	f, _, err := c.Mknod(ctx, q, "f", 0o644, 0, 0, 0)
	ok(t, err)
	_, _, err = c.Mkdir(ctx, q, "d", 0o755, 0, 0)
	ok(t, err)
	_, _, err = c.Symlink(ctx, q, "s", "f", 0, 0)
	ok(t, err)
	_, _, err = c.Mknod(ctx, q, "fifo", syscall.S_IFIFO|0o644, 0, 0, 0)
	ok(t, err)
	// Inodes: 4 of 4.
	_, _, err = c.Mknod(ctx, q, "x", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.EDQUOT)
	_, _, err = c.Create(ctx, q, "x", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.EDQUOT)
	_, _, err = c.Mkdir(ctx, q, "x", 0o755, 0, 0)
	wantErrno(t, err, syscall.EDQUOT)
	_, _, err = c.Symlink(ctx, q, "x", "f", 0, 0)
	wantErrno(t, err, syscall.EDQUOT)
	if _, _, err := c.Lookup(ctx, q, "x"); err == nil {
		t.Fatalf("a refused create left an entry")
	}
	wantUsage(t, c, "inodes full", q, 0, 4)
	// A hard link adds no inode.
	_, err = c.Link(ctx, f, q, "f2")
	ok(t, err)

	// Bytes: 64 KiB.
	ok(t, writeAt(t, c, f, 0, 60<<10))
	wantErrno(t, writeAt(t, c, f, 60<<10, 8<<10), syscall.EDQUOT)
	ok(t, writeAt(t, c, f, 60<<10, 4<<10)) // exactly full
	ok(t, writeAt(t, c, f, 0, 64<<10))     // overwrite: no growth
	_, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 64<<10 + 1})
	wantErrno(t, err, syscall.EDQUOT)
	wantErrno(t, c.Fallocate(ctx, f, 0, 0, 128<<10), syscall.EDQUOT)
	ok(t, c.Fallocate(ctx, f, FallocKeepSize, 0, 128<<10)) // no growth
	if a := must[Attr](t)(c.GetAttr(ctx, f)); a.Size != 64<<10 {
		t.Fatalf("size %d after refused growth", a.Size)
	}
	wantErrno(t, c.ReserveSpace(ctx, f, 4096), syscall.EDQUOT)
	_, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 32 << 10})
	ok(t, err)
	ok(t, c.ReserveSpace(ctx, f, 16<<10))
	// The reservation counts against the next one.
	wantErrno(t, c.ReserveSpace(ctx, f, 20<<10), syscall.EDQUOT)
	ok(t, writeAt(t, c, f, 32<<10, 16<<10)) // uses it up
	ok(t, c.ReserveSpace(ctx, f, 16<<10))
	// copy_file_range into the tree from outside.
	src, _, err := c.Mknod(ctx, RootIno, "src", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, src, 0, 64<<10))
	_, err = c.CopyFileRange(ctx, src, 0, f, 48<<10, 32<<10)
	wantErrno(t, err, syscall.EDQUOT)
	wantUsage(t, c, "bytes full", q, 48<<10, 4)

	// Raising the limit lets the tree grow again.
	ok(t, c.SetQuota(ctx, q, 1<<20, 10))
	_, err = c.CopyFileRange(ctx, src, 0, f, 48<<10, 32<<10)
	ok(t, err)
	_, _, err = c.Mknod(ctx, q, "x", 0o644, 0, 0, 0)
	ok(t, err)
	wantUsage(t, c, "raised", q, 80<<10, 5)
	// A hard link out of the tree would charge the file twice: EXDEV.
	_, err = c.Link(ctx, f, RootIno, "out")
	wantErrno(t, err, syscall.EXDEV)
}

// A file renamed across a quota boundary moves its usage (EDQUOT when it
// does not fit); a directory gets EXDEV.
func testQuotaRename(t *testing.T, c *Client) {
	ctx := context.Background()
	a, _, err := c.Mkdir(ctx, RootIno, "a", 0o755, 0, 0)
	ok(t, err)
	b, _, err := c.Mkdir(ctx, RootIno, "b", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.SetQuota(ctx, a, 0, 0))
	ok(t, c.SetQuota(ctx, b, 16<<10, 0))
	inner, _, err := c.Mkdir(ctx, a, "inner", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.SetQuota(ctx, inner, 0, 0))

	f, _, err := c.Mknod(ctx, a, "f", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, f, 0, 8<<10))
	wantUsage(t, c, "before", a, 8<<10, 2)
	// Within one quota: nothing moves.
	d, _, err := c.Mkdir(ctx, a, "d", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.Rename(ctx, a, "f", d, "f", 0))
	wantUsage(t, c, "within", a, 8<<10, 3)
	// Into a nested quota: the inner one is charged, the outer keeps it.
	ok(t, c.Rename(ctx, d, "f", inner, "f", 0))
	wantUsage(t, c, "into nested", inner, 8<<10, 1)
	wantUsage(t, c, "into nested, outer", a, 8<<10, 3)
	// Across to b: a and inner give it up, b takes it.
	ok(t, c.Rename(ctx, inner, "f", b, "f", 0))
	wantUsage(t, c, "across, from", a, 0, 2)
	wantUsage(t, c, "across, from inner", inner, 0, 0)
	wantUsage(t, c, "across, to", b, 8<<10, 1)
	// Out of every quota.
	ok(t, c.Rename(ctx, b, "f", RootIno, "f", 0))
	wantUsage(t, c, "out", b, 0, 0)
	// Too big for b: EDQUOT, nothing moved.
	ok(t, writeAt(t, c, f, 0, 20<<10))
	err = c.Rename(ctx, RootIno, "f", b, "f", 0)
	wantErrno(t, err, syscall.EDQUOT)
	if _, _, err := c.Lookup(ctx, RootIno, "f"); err != nil {
		t.Fatalf("refused rename moved the file: %v", err)
	}
	wantUsage(t, c, "refused", b, 0, 0)
	// Exchange across: both move.
	_, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 4096})
	ok(t, err)
	g, _, err := c.Mknod(ctx, b, "g", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, g, 0, 8<<10))
	ok(t, c.Rename(ctx, RootIno, "f", b, "g", RenameExchange))
	wantUsage(t, c, "exchange", b, 4096, 1)
	// Directories: EXDEV across a boundary, fine within one.
	wantErrno(t, c.Rename(ctx, a, "d", b, "d", 0), syscall.EXDEV)
	wantErrno(t, c.Rename(ctx, a, "d", RootIno, "d", 0), syscall.EXDEV)
	wantErrno(t, c.Rename(ctx, a, "d", inner, "d", 0), syscall.EXDEV)
	e, _, err := c.Mkdir(ctx, d, "e", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.Rename(ctx, d, "e", a, "e", 0))
	_ = e
	// A quota directory itself moves with its tree where no quota is crossed.
	ok(t, c.Rename(ctx, RootIno, "a", RootIno, "a2", 0))
	wantUsage(t, c, "renamed quota dir", a, 0, 3)
	// Replacing a file across a boundary frees the replaced one's charge.
	h, _, err := c.Mknod(ctx, a, "h", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, h, 0, 4096))
	ok(t, c.Rename(ctx, b, "g", a, "h", 0))
	wantUsage(t, c, "replace, to", a, 4096, 4)
	wantUsage(t, c, "replace, from", b, 0, 0)
}

// fsck finds a wrong usage counter and a quota of a removed directory,
// and repairs both.
func testQuotaCheckRepair(t *testing.T, c *Client) {
	ctx := context.Background()
	q, _, err := c.Mkdir(ctx, RootIno, "q", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.SetQuota(ctx, q, 0, 0))
	f, _, err := c.Mknod(ctx, q, "f", 0o644, 0, 0, 0)
	ok(t, err)
	ok(t, writeAt(t, c, f, 0, 4096))
	ok(t, kv.Txn(ctx, c.Engine(), func(tx kv.Tx) error {
		tx.Set(quotaUsageKey(q, 7), encodeUsage(12345, -3))
		tx.Set(quotaKey(999999), encodeLimits(1, 1))
		return nil
	}))
	r, err := c.Check(ctx, false)
	ok(t, err)
	text := strings.Join(r.Problems, "\n")
	if len(r.Problems) != 2 || !strings.Contains(text, fmt.Sprintf("quota of directory %d: counters say", q)) || !strings.Contains(text, "999999") {
		t.Fatalf("check found:\n%s", text)
	}
	r, err = c.Check(ctx, true)
	ok(t, err)
	if r.Repaired != 2 {
		t.Fatalf("repaired %d of %v", r.Repaired, r.Problems)
	}
	wantUsage(t, c, "repaired", q, 4096, 1)
}

// StatFSDir reports the nearest quota; LookupPath and MkdirAll resolve
// and make paths.
func testQuotaStatFSPaths(t *testing.T, c *Client) {
	ctx := context.Background()
	d, err := MkdirAll(ctx, c, "/pv/claim-1/", 0o755, 0, 0)
	ok(t, err)
	if got := must[Ino](t)(LookupPath(ctx, c, "pv//claim-1")); got != d {
		t.Fatalf("lookup gave %d, want %d", got, d)
	}
	if got := must[Ino](t)(MkdirAll(ctx, c, "/pv/claim-1", 0o755, 0, 0)); got != d {
		t.Fatalf("mkdir of an existing path gave %d, want %d", got, d)
	}
	_, err = LookupPath(ctx, c, "/pv/none")
	wantErrno(t, err, syscall.ENOENT)
	f, _, err := c.Mknod(ctx, d, "f", 0o644, 0, 0, 0)
	ok(t, err)
	_, err = MkdirAll(ctx, c, "/pv/claim-1/f/x", 0o755, 0, 0)
	wantErrno(t, err, syscall.ENOTDIR)
	wantErrno(t, c.SetQuota(ctx, f, 1, 1), syscall.ENOTDIR)

	vol := must[StatFS](t)(c.StatFSDir(ctx, d))
	if want := must[StatFS](t)(c.StatFS(ctx)); vol != want {
		t.Fatalf("statfs without quota %+v, volume %+v", vol, want)
	}
	ok(t, c.SetQuota(ctx, d, 10<<20, 100))
	ok(t, writeAt(t, c, f, 0, 1<<20))
	sub, err := MkdirAll(ctx, c, "/pv/claim-1/a/b", 0o755, 0, 0)
	ok(t, err)
	st := must[StatFS](t)(c.StatFSDir(ctx, sub))
	if st.TotalSpace != 10<<20 || st.AvailSpace != 9<<20 || st.UsedInodes != 3 || st.AvailInodes != 97 {
		t.Fatalf("statfs under the quota: %+v", st)
	}
}

// Two clients writing, creating and removing in one quota'd tree at once
// leave the usage exact (as recounted by Check).
func TestQuotaConcurrentClients(t *testing.T) {
	for _, ec := range allEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			vol := ec.newVolume(t)
			a := vol(t)
			clients := []*Client{a}
			if ec.multi {
				clients = append(clients, vol(t))
			}
			q, _, err := a.Mkdir(ctx, RootIno, "q", 0o755, 0, 0)
			ok(t, err)
			ok(t, a.SetQuota(ctx, q, 0, 0))
			inner, _, err := a.Mkdir(ctx, q, "inner", 0o755, 0, 0)
			ok(t, err)
			ok(t, a.SetQuota(ctx, inner, 0, 0))
			for _, c := range clients {
				c.quotas.invalidate() // what quotaRefresh does within 2 s
			}
			const workers, files = 4, 25
			var wg sync.WaitGroup
			errs := make(chan error, len(clients)*workers)
			for ci, c := range clients {
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						dir := q
						if w%2 == 1 {
							dir = inner
						}
						for i := range files {
							name := fmt.Sprintf("c%d-w%d-%d", ci, w, i)
							f, _, err := c.Mknod(ctx, dir, name, 0o644, 0, 0, 0)
							if err == nil {
								err = writeAt(t, c, f, 0, uint64(1000*(i+1)))
							}
							if err == nil && i%3 == 0 {
								_, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 100})
							}
							if err == nil && i%5 == 0 {
								err = c.Unlink(ctx, dir, name)
							}
							if err != nil {
								errs <- err
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// The expected figures, computed independently of the counters.
			var innerBytes, outerBytes, innerN, outerN uint64
			for range clients {
				for w := range workers {
					for i := range files {
						if i%5 == 0 {
							continue
						}
						size := uint64(align4k(uint64(1000 * (i + 1))))
						if i%3 == 0 {
							size = 4096
						}
						if w%2 == 1 {
							innerBytes, innerN = innerBytes+size, innerN+1
						} else {
							outerBytes, outerN = outerBytes+size, outerN+1
						}
					}
				}
			}
			for _, c := range clients {
				wantUsage(t, c, "inner", inner, innerBytes, innerN)
				wantUsage(t, c, "outer", q, outerBytes+innerBytes, outerN+innerN+1)
			}
			checkClean(t, a)
		})
	}
}

// A quota set by one client is charged by the others once they refresh.
func TestQuotaSeenByOtherClient(t *testing.T) {
	for _, ec := range multiEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			vol := ec.newVolume(t)
			a, b := vol(t), vol(t)
			q, _, err := a.Mkdir(ctx, RootIno, "q", 0o755, 0, 0)
			ok(t, err)
			_, _, err = b.Mknod(ctx, q, "before", 0o644, 0, 0, 0) // b caches "no quotas"
			ok(t, err)
			ok(t, a.SetQuota(ctx, q, 0, 2))
			b.quotas.invalidate() // what quotaRefresh does within 2 s
			_, _, err = b.Mknod(ctx, q, "x", 0o644, 0, 0, 0)
			ok(t, err)
			_, _, err = b.Mknod(ctx, q, "y", 0o644, 0, 0, 0)
			wantErrno(t, err, syscall.EDQUOT)
			wantUsage(t, a, "after b", q, 0, 2)
		})
	}
}
