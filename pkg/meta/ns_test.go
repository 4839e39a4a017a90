package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

func wantErrno(t testing.TB, err error, want syscall.Errno) {
	t.Helper()
	var got syscall.Errno
	if !errors.As(err, &got) || got != want {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkClean runs the checker and fails on any problem.
func checkClean(t testing.TB, c *Client) {
	t.Helper()
	r, err := c.Check(context.Background(), false)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if len(r.Problems) > 0 {
		t.Fatalf("check found %d problems:\n%s", len(r.Problems), strings.Join(r.Problems, "\n"))
	}
}

func TestConformance(t *testing.T) {
	for _, ec := range allEngines() {
		t.Run(ec.name, func(t *testing.T) {
			for _, tc := range conformance {
				t.Run(tc.name, func(t *testing.T) {
					c := ec.newVolume(t)(t)
					tc.fn(t, c)
					checkClean(t, c)
				})
			}
		})
	}
}

var conformance = []struct {
	name string
	fn   func(t *testing.T, c *Client)
}{
	{"format", testFormat},
	{"create-lookup", testCreateLookup},
	{"mkdir-rmdir", testMkdirRmdir},
	{"symlink-link", testSymlinkLink},
	{"rename", testRename},
	{"readdir", testReaddir},
	{"setattr-truncate", testSetattr},
	{"chunks", testChunks},
	{"open-unlinked", testOpenUnlinked},
	{"bad-input", testBadInput},
	{"statfs", testStatFS},
	{"dir-mtime-skip", testDirMtimeSkip},
	{"create-open-unlinked", testCreateOpenUnlinked},
	{"unlink-releases-chunks", testUnlinkReleasesChunks},
	{"release-many", testReleaseMany},
	{"acl", testACL},
}

func testFormat(t *testing.T, c *Client) {
	ctx := context.Background()
	f := must[*Format](t)(c.Load(ctx))
	if f.Name != "test" || f.UUID == "" || f.BlockSize != 4<<20 || f.Version != FormatVersion {
		t.Fatalf("format %+v", f)
	}
	// Same volume again: fine; another name: refused.
	ok(t, c.Init(ctx, Format{Name: "test", Storage: "file:///tmp/x"}))
	ok(t, c.Init(ctx, Format{Name: "test", UUID: f.UUID, Storage: "file:///tmp/x", Inodes: 100}))
	wantErrno(t, c.Init(ctx, Format{Name: "other", Storage: "file:///tmp/x"}), syscall.EEXIST)
	wantErrno(t, c.Init(ctx, Format{Name: "test", UUID: "another", Storage: "file:///tmp/x"}), syscall.EEXIST)
	wantErrno(t, c.Init(ctx, Format{Name: "test", Storage: "file:///elsewhere"}), syscall.EEXIST)
	g := must[*Format](t)(c.Load(ctx))
	if g.UUID != f.UUID || g.Inodes != 100 {
		t.Fatalf("after reformat: %+v", g)
	}
}

func testCreateLookup(t *testing.T, c *Client) {
	ctx := context.Background()
	ino, a, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 1, 2)
	ok(t, err)
	if a.Mode != syscall.S_IFREG|0o644 || a.Uid != 1 || a.Gid != 2 || a.Nlink != 1 || a.Size != 0 {
		t.Fatalf("attr %+v", a)
	}
	got, ga, err := c.Lookup(ctx, RootIno, "f")
	ok(t, err)
	if got != ino || ga != a {
		t.Fatalf("lookup gave %d %+v, want %d %+v", got, ga, ino, a)
	}
	_, _, err = c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.EEXIST)
	_, _, err = c.Lookup(ctx, RootIno, "nope")
	wantErrno(t, err, syscall.ENOENT)
	_, _, err = c.Lookup(ctx, ino, "x")
	wantErrno(t, err, syscall.ENOTDIR)
	_, _, err = c.Mknod(ctx, ino, "x", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.ENOTDIR)
	dot, _, err := c.Lookup(ctx, RootIno, "..")
	ok(t, err)
	if dot != RootIno {
		t.Fatalf(".. of root is %d", dot)
	}
	fifo, fa, err := c.Mknod(ctx, RootIno, "p", syscall.S_IFIFO|0o600, 0, 0, 0)
	ok(t, err)
	if fa.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Fatalf("fifo mode %o", fa.Mode)
	}
	ok(t, c.Unlink(ctx, RootIno, "p"))
	_, err = c.GetAttr(ctx, fifo)
	wantErrno(t, err, syscall.ENOENT)
	ok(t, c.Unlink(ctx, RootIno, "f"))
	wantErrno(t, c.Unlink(ctx, RootIno, "f"), syscall.ENOENT)
}

func testMkdirRmdir(t *testing.T, c *Client) {
	ctx := context.Background()
	d, da, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	if da.Nlink != 2 || da.Parent != RootIno || !isDir(da.Mode) {
		t.Fatalf("dir attr %+v", da)
	}
	ra := must[Attr](t)(c.GetAttr(ctx, RootIno))
	if ra.Nlink != 3 {
		t.Fatalf("root nlink %d, want 3", ra.Nlink)
	}
	sub, _, err := c.Mkdir(ctx, d, "sub", 0o755, 0, 0)
	ok(t, err)
	_, _, err = c.Mknod(ctx, sub, "f", 0o644, 0, 0, 0)
	ok(t, err)
	wantErrno(t, c.Rmdir(ctx, RootIno, "d"), syscall.ENOTEMPTY)
	wantErrno(t, c.Unlink(ctx, RootIno, "d"), syscall.EISDIR)
	wantErrno(t, c.Rmdir(ctx, sub, "f"), syscall.ENOTDIR)
	ok(t, c.Unlink(ctx, sub, "f"))
	ok(t, c.Rmdir(ctx, d, "sub"))
	_, err = c.GetAttr(ctx, sub)
	wantErrno(t, err, syscall.ENOENT)
	ok(t, c.Rmdir(ctx, RootIno, "d"))
	ra = must[Attr](t)(c.GetAttr(ctx, RootIno))
	if ra.Nlink != 2 {
		t.Fatalf("root nlink %d, want 2", ra.Nlink)
	}
	_, _, err = c.Mknod(ctx, d, "late", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.ENOENT)
}

func testSymlinkLink(t *testing.T, c *Client) {
	ctx := context.Background()
	s, sa, err := c.Symlink(ctx, RootIno, "l", "../target", 0, 0)
	ok(t, err)
	if sa.Size != 9 || sa.Mode != syscall.S_IFLNK|0o777 {
		t.Fatalf("symlink attr %+v", sa)
	}
	if got := must[string](t)(c.Readlink(ctx, s)); got != "../target" {
		t.Fatalf("readlink %q", got)
	}
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	_, err = c.Readlink(ctx, f)
	wantErrno(t, err, syscall.EINVAL)
	la, err := c.Link(ctx, f, RootIno, "g")
	ok(t, err)
	if la.Nlink != 2 {
		t.Fatalf("nlink after link %d", la.Nlink)
	}
	_, err = c.Link(ctx, RootIno, RootIno, "rootlink")
	wantErrno(t, err, syscall.EPERM)
	_, err = c.Link(ctx, f, RootIno, "l")
	wantErrno(t, err, syscall.EEXIST)
	ok(t, c.Unlink(ctx, RootIno, "f"))
	ga := must[Attr](t)(c.GetAttr(ctx, f))
	if ga.Nlink != 1 {
		t.Fatalf("nlink after unlink %d", ga.Nlink)
	}
	ok(t, c.Unlink(ctx, RootIno, "g"))
	_, err = c.GetAttr(ctx, f)
	wantErrno(t, err, syscall.ENOENT)
	ok(t, c.Unlink(ctx, RootIno, "l"))
}

func testRename(t *testing.T, c *Client) {
	ctx := context.Background()
	a, _, err := c.Mkdir(ctx, RootIno, "a", 0o755, 0, 0)
	ok(t, err)
	b, _, err := c.Mkdir(ctx, a, "b", 0o755, 0, 0)
	ok(t, err)
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	g, _, err := c.Mknod(ctx, RootIno, "g", 0o644, 0, 0, 0)
	ok(t, err)

	// Simple move into a directory.
	ok(t, c.Rename(ctx, RootIno, "f", b, "f2", 0))
	if got, _, _ := c.Lookup(ctx, b, "f2"); got != f {
		t.Fatalf("moved file: %d", got)
	}
	// Replace: g replaces f2; f loses its only link.
	ok(t, c.Rename(ctx, RootIno, "g", b, "f2", 0))
	_, err = c.GetAttr(ctx, f)
	wantErrno(t, err, syscall.ENOENT)
	// No-replace and exchange.
	h, _, err := c.Mknod(ctx, RootIno, "h", 0o644, 0, 0, 0)
	ok(t, err)
	wantErrno(t, c.Rename(ctx, RootIno, "h", b, "f2", RenameNoReplace), syscall.EEXIST)
	ok(t, c.Rename(ctx, RootIno, "h", b, "f2", RenameExchange))
	if got, _, _ := c.Lookup(ctx, RootIno, "h"); got != g {
		t.Fatalf("exchange: h is %d, want %d", got, g)
	}
	if got, _, _ := c.Lookup(ctx, b, "f2"); got != h {
		t.Fatalf("exchange: f2 is %d, want %d", got, h)
	}
	wantErrno(t, c.Rename(ctx, RootIno, "nope", b, "x", RenameExchange), syscall.ENOENT)
	wantErrno(t, c.Rename(ctx, RootIno, "h", b, "absent", RenameExchange), syscall.ENOENT)
	// Directory loops.
	wantErrno(t, c.Rename(ctx, RootIno, "a", b, "a", 0), syscall.EINVAL)
	wantErrno(t, c.Rename(ctx, RootIno, "a", a, "a", 0), syscall.EINVAL)
	// Directory moves fix parents and nlink.
	ok(t, c.Rename(ctx, a, "b", RootIno, "b", 0))
	ba := must[Attr](t)(c.GetAttr(ctx, b))
	aa := must[Attr](t)(c.GetAttr(ctx, a))
	ra := must[Attr](t)(c.GetAttr(ctx, RootIno))
	if ba.Parent != RootIno || aa.Nlink != 2 || ra.Nlink != 4 {
		t.Fatalf("after dir move: b parent %d, a nlink %d, root nlink %d", ba.Parent, aa.Nlink, ra.Nlink)
	}
	// Dir over file and file over dir.
	wantErrno(t, c.Rename(ctx, RootIno, "b", RootIno, "h", 0), syscall.ENOTDIR)
	wantErrno(t, c.Rename(ctx, RootIno, "h", RootIno, "b", 0), syscall.EISDIR)
	// Dir over non-empty dir, then over empty dir.
	wantErrno(t, c.Rename(ctx, RootIno, "a", RootIno, "b", 0), syscall.ENOTEMPTY)
	ok(t, c.Rename(ctx, RootIno, "b", RootIno, "a", 0))
	_, err = c.GetAttr(ctx, a)
	wantErrno(t, err, syscall.ENOENT)
	ra = must[Attr](t)(c.GetAttr(ctx, RootIno))
	if ra.Nlink != 3 {
		t.Fatalf("root nlink %d after dir replace, want 3", ra.Nlink)
	}
	// Rename onto another link of the same file does nothing.
	_, err = c.Link(ctx, g, RootIno, "g2")
	ok(t, err)
	ok(t, c.Rename(ctx, RootIno, "h", RootIno, "g2", 0))
	if _, _, err := c.Lookup(ctx, RootIno, "h"); err != nil {
		t.Fatalf("h vanished: %v", err)
	}
	// Exchange of a dir and a file across directories.
	e, _, err := c.Mkdir(ctx, RootIno, "e", 0o755, 0, 0)
	ok(t, err)
	ok(t, c.Rename(ctx, RootIno, "e", b, "f2", RenameExchange))
	if ea := must[Attr](t)(c.GetAttr(ctx, e)); ea.Parent != b {
		t.Fatalf("exchanged dir parent %d, want %d", ea.Parent, b)
	}
}

func testReaddir(t *testing.T, c *Client) {
	ctx := context.Background()
	d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	for i := range 25 {
		_, _, err := c.Mknod(ctx, d, fmt.Sprintf("f%02d", i), 0o644, 0, 0, 0)
		ok(t, err)
	}
	_, _, err = c.Mkdir(ctx, d, "zdir", 0o700, 0, 0)
	ok(t, err)
	var all []Entry
	cursor := ""
	for {
		page := must[[]Entry](t)(c.Readdir(ctx, d, cursor, 10))
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		cursor = page[len(page)-1].Name
	}
	if len(all) != 26 {
		t.Fatalf("readdir gave %d entries, want 26", len(all))
	}
	for i, e := range all[:25] {
		if e.Name != fmt.Sprintf("f%02d", i) || e.Attr.Mode != syscall.S_IFREG|0o644 || e.Attr.Nlink != 1 {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if !isDir(all[25].Attr.Mode) || all[25].Attr.Nlink != 2 {
		t.Fatalf("dir entry %+v", all[25])
	}
	f := all[0].Ino
	_, err = c.Readdir(ctx, f, "", 10)
	wantErrno(t, err, syscall.ENOTDIR)
}

func testSetattr(t *testing.T, c *Client) {
	ctx := context.Background()
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	a, err := c.SetAttr(ctx, f, SetMode|SetUid|SetGid|SetAtime|SetMtime, Attr{Mode: 0o600, Uid: 7, Gid: 8, Atime: 1e9, Mtime: 2e9})
	ok(t, err)
	if a.Mode != syscall.S_IFREG|0o600 || a.Uid != 7 || a.Gid != 8 || a.Atime != 1e9 || a.Mtime != 2e9 {
		t.Fatalf("setattr gave %+v", a)
	}
	if got := must[Attr](t)(c.GetAttr(ctx, f)); got != a {
		t.Fatalf("getattr %+v != %+v", got, a)
	}
	a, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 1 << 20})
	ok(t, err)
	if a.Size != 1<<20 {
		t.Fatalf("size %d", a.Size)
	}
	_, err = c.SetAttr(ctx, RootIno, SetSize, Attr{Size: 0})
	wantErrno(t, err, syscall.EISDIR)
	_, err = c.SetAttr(ctx, 999999, SetMode, Attr{Mode: 0o600})
	wantErrno(t, err, syscall.ENOENT)
}

func testChunks(t *testing.T, c *Client) {
	ctx := context.Background()
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	id1 := must[uint64](t)(c.NewSliceID(ctx))
	id2 := must[uint64](t)(c.NewSliceID(ctx))
	if id1 == 0 || id2 == id1 {
		t.Fatalf("slice ids %d %d", id1, id2)
	}
	mt := time.Unix(100, 0)
	s1 := Slice{ID: id1, Size: 8192, Off: 0, Len: 8192, Pos: 0}
	s2 := Slice{ID: id2, Size: 4096, Off: 0, Len: 4096, Pos: 4096}
	ok(t, c.WriteChunk(ctx, f, 0, s1, mt))
	ok(t, c.WriteChunk(ctx, f, 0, s2, mt))
	ok(t, c.WriteChunk(ctx, f, 0, s2, mt)) // a retry: no second copy
	ss := must[[]Slice](t)(c.ReadChunk(ctx, f, 0))
	if len(ss) != 2 || ss[0] != s1 || ss[1] != s2 {
		t.Fatalf("chunk %+v", ss)
	}
	a := must[Attr](t)(c.GetAttr(ctx, f))
	if a.Size != 8192 || a.Mtime != mt.UnixNano() {
		t.Fatalf("attr after writes %+v", a)
	}
	// A write in chunk 2 extends the file.
	id3 := must[uint64](t)(c.NewSliceID(ctx))
	ok(t, c.WriteChunk(ctx, f, 2, Slice{ID: id3, Size: 100, Len: 100, Pos: 10}, mt))
	if a := must[Attr](t)(c.GetAttr(ctx, f)); a.Size != 2*ChunkSize+110 {
		t.Fatalf("size %d", a.Size)
	}
	// Compaction: stale list refused, right list replaced.
	id4 := must[uint64](t)(c.NewSliceID(ctx))
	s4 := Slice{ID: id4, Size: 8192, Len: 8192}
	err = c.CompactChunk(ctx, f, 0, []Slice{s2}, []Slice{s4})
	if !errors.Is(err, ErrChunkChanged) {
		t.Fatalf("stale compaction: %v", err)
	}
	ok(t, c.CompactChunk(ctx, f, 0, []Slice{s1, s2}, []Slice{s4}))
	ok(t, c.CompactChunk(ctx, f, 0, []Slice{s1, s2}, []Slice{s4})) // a retry after an unknown outcome
	if ss := must[[]Slice](t)(c.ReadChunk(ctx, f, 0)); len(ss) != 1 || ss[0] != s4 {
		t.Fatalf("after compaction %+v", ss)
	}
	pend := pendingIDs(t, c)
	if len(pend) != 2 || !pend[id1] || !pend[id2] {
		t.Fatalf("pending after compaction %v", pend)
	}
	// Truncate drops chunk 2 and cuts chunk 0.
	_, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 1000})
	ok(t, err)
	if ss := must[[]Slice](t)(c.ReadChunk(ctx, f, 2)); len(ss) != 0 {
		t.Fatalf("chunk 2 after truncate %+v", ss)
	}
	ss = must[[]Slice](t)(c.ReadChunk(ctx, f, 0))
	if len(ss) != 2 || ss[1] != (Slice{Pos: 1000, Len: ChunkSize - 1000}) {
		t.Fatalf("chunk 0 after truncate %+v", ss)
	}
	if pend := pendingIDs(t, c); !pend[id3] {
		t.Fatalf("pending after truncate %v", pend)
	}
	listed := map[uint64]Ino{}
	ok(t, c.ListSlices(ctx, func(ino Ino, s Slice) error { listed[s.ID] = ino; return nil }))
	if len(listed) != 1 || listed[id4] != f {
		t.Fatalf("ListSlices %v", listed)
	}
	// Unlink: the file's slices become pending.
	ok(t, c.Unlink(ctx, RootIno, "f"))
	if pend := pendingIDs(t, c); !pend[id4] {
		t.Fatalf("pending after unlink %v", pend)
	}
	var ids []uint64
	for id := range pendingIDs(t, c) {
		ids = append(ids, id)
	}
	ok(t, c.DoneDeleting(ctx, ids))
	if pend := pendingIDs(t, c); len(pend) != 0 {
		t.Fatalf("pending after DoneDeleting %v", pend)
	}
	err = c.WriteChunk(ctx, f, 0, s1, mt)
	wantErrno(t, err, syscall.ENOENT)
	err = c.WriteChunk(ctx, RootIno, 0, Slice{ID: 1, Size: 10, Len: 20}, mt)
	wantErrno(t, err, syscall.EINVAL)
}

func pendingIDs(t testing.TB, c *Client) map[uint64]bool {
	ps, err := c.PendingDeletes(context.Background(), 0)
	ok(t, err)
	m := map[uint64]bool{}
	for _, s := range ps {
		m[s.ID] = true
	}
	return m
}

func testOpenUnlinked(t *testing.T, c *Client) {
	ctx := context.Background()
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	_, err = c.Open(ctx, f, 0)
	ok(t, err)
	_, err = c.Open(ctx, f, 0)
	ok(t, err)
	ok(t, c.Unlink(ctx, RootIno, "f"))
	a, err := c.GetAttr(ctx, f)
	ok(t, err)
	if a.Nlink != 0 {
		t.Fatalf("open unlinked nlink %d", a.Nlink)
	}
	ok(t, c.Release(ctx, f))
	_, err = c.GetAttr(ctx, f)
	ok(t, err)
	ok(t, c.Release(ctx, f))
	_, err = c.GetAttr(ctx, f)
	wantErrno(t, err, syscall.ENOENT)
	wantErrno(t, c.Release(ctx, f), syscall.EBADF)
}

func testBadInput(t *testing.T, c *Client) {
	ctx := context.Background()
	d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	sub, _, err := c.Mkdir(ctx, d, "sub", 0o755, 0, 0)
	ok(t, err)
	before := must[[]Entry](t)(c.Readdir(ctx, RootIno, "", 0))
	long := strings.Repeat("x", 256)
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"slash", second(c.Mknod(ctx, RootIno, "a/b", 0o644, 0, 0, 0)), syscall.EINVAL},
		{"nul", second(c.Mknod(ctx, RootIno, "a\x00b", 0o644, 0, 0, 0)), syscall.EINVAL},
		{"long", second(c.Mknod(ctx, RootIno, long, 0o644, 0, 0, 0)), syscall.ENAMETOOLONG},
		{"long-mkdir", second(c.Mkdir(ctx, RootIno, long, 0o755, 0, 0)), syscall.ENAMETOOLONG},
		{"dot", second(c.Mkdir(ctx, RootIno, ".", 0o755, 0, 0)), syscall.EINVAL},
		{"long-lookup", second(c.Lookup(ctx, RootIno, long)), syscall.ENAMETOOLONG},
		{"slash-rename", c.Rename(ctx, RootIno, "d", RootIno, "x/y", 0), syscall.EINVAL},
		{"setattr-missing", errOf(c.SetAttr(ctx, 424242, SetMode, Attr{Mode: 0o777})), syscall.ENOENT},
		{"rename-into-child", c.Rename(ctx, RootIno, "d", sub, "d", 0), syscall.EINVAL},
		{"rename-into-self", c.Rename(ctx, RootIno, "d", d, "x", 0), syscall.EINVAL},
		{"rename-flags", c.Rename(ctx, RootIno, "d", RootIno, "e", RenameExchange|RenameNoReplace), syscall.EINVAL},
		{"symlink-empty", second(c.Symlink(ctx, RootIno, "s", "", 0, 0)), syscall.EINVAL},
		{"mknod-dir", second(c.Mknod(ctx, RootIno, "x", syscall.S_IFDIR|0o755, 0, 0, 0)), syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErrno(t, tc.err, tc.want) })
	}
	after := must[[]Entry](t)(c.Readdir(ctx, RootIno, "", 0))
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("bad input changed the root:\n%v\n%v", before, after)
	}
	if got, _, _ := c.Lookup(ctx, d, "sub"); got != sub {
		t.Fatalf("sub moved")
	}
}

func second[A, B any](_ A, _ B, err error) error { return err }
func errOf[A any](_ A, err error) error          { return err }

func testStatFS(t *testing.T, c *Client) {
	ctx := context.Background()
	st0 := must[StatFS](t)(c.StatFS(ctx))
	f, _, err := c.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
	ok(t, err)
	_, err = c.SetAttr(ctx, f, SetSize, Attr{Size: 10000})
	ok(t, err)
	st := must[StatFS](t)(c.StatFS(ctx))
	if st.UsedInodes != st0.UsedInodes+1 || st0.AvailSpace-st.AvailSpace != 12288 {
		t.Fatalf("statfs before %+v after %+v", st0, st)
	}
	ok(t, c.Init(ctx, Format{Name: "test", Storage: "file:///tmp/x", Inodes: st.UsedInodes, Capacity: 1 << 30}))
	_, err = c.Load(ctx)
	ok(t, err)
	_, _, err = c.Mknod(ctx, RootIno, "g", 0o644, 0, 0, 0)
	wantErrno(t, err, syscall.ENOSPC)
	st = must[StatFS](t)(c.StatFS(ctx))
	if st.TotalSpace != 1<<30 || st.AvailSpace != 1<<30-12288 || st.AvailInodes != 0 {
		t.Fatalf("statfs with quotas %+v", st)
	}
}
