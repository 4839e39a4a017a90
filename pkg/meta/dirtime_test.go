package meta

import (
	"context"
	"testing"
	"time"
)

// testDirMtimeSkip checks that operations in a directory leave its times
// alone while they are younger than DirMtimeSkip, update them once older,
// always write link count changes, and always update with the skip off.
// Times are set explicitly (SetAttr) and the window is an hour, so nothing
// depends on how fast the test runs.
func testDirMtimeSkip(t *testing.T, c *Client) {
	ctx := context.Background()
	saved := c.opt.DirMtimeSkip
	defer func() { c.opt.DirMtimeSkip = saved }()
	c.opt.DirMtimeSkip = time.Hour

	d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	setTimes := func(ago time.Duration) int64 {
		t.Helper()
		ts := time.Now().Add(-ago).UnixNano()
		_, err := c.SetAttr(ctx, d, SetMtime|SetCtime, Attr{Mtime: ts, Ctime: ts})
		ok(t, err)
		return ts
	}
	wantTimes := func(op string, old int64, updated bool) Attr {
		t.Helper()
		a := must[Attr](t)(c.GetAttr(ctx, d))
		switch {
		case updated && (a.Mtime <= old || a.Ctime <= old):
			t.Fatalf("after %s: directory times %d/%d, want newer than %d", op, a.Mtime, a.Ctime, old)
		case !updated && (a.Mtime != old || a.Ctime != old):
			t.Fatalf("after %s: directory times %d/%d, want unchanged %d", op, a.Mtime, a.Ctime, old)
		}
		return a
	}

	// Older than the window: every kind of change updates the times.
	old := setTimes(2 * time.Hour)
	f, _, err := c.Mknod(ctx, d, "f", 0o644, 0, 0, 0)
	ok(t, err)
	wantTimes("create of old dir", old, true)
	old = setTimes(2 * time.Hour)
	ok(t, c.Unlink(ctx, d, "f"))
	wantTimes("unlink in old dir", old, true)

	// Within the window: entry changes alone leave the times as they are.
	recent := setTimes(time.Minute)
	f, _, err = c.Mknod(ctx, d, "f", 0o644, 0, 0, 0)
	ok(t, err)
	wantTimes("create", recent, false)
	_, err = c.Link(ctx, f, d, "g")
	ok(t, err)
	wantTimes("link", recent, false)
	ok(t, c.Rename(ctx, d, "g", d, "h", 0))
	wantTimes("rename", recent, false)
	_, _, err = c.Symlink(ctx, d, "s", "f", 0, 0)
	ok(t, err)
	wantTimes("symlink", recent, false)
	ok(t, c.Unlink(ctx, d, "h"))
	wantTimes("unlink", recent, false)

	// Link count changes are always written, with the times.
	n := must[Attr](t)(c.GetAttr(ctx, d)).Nlink
	_, _, err = c.Mkdir(ctx, d, "sub", 0o755, 0, 0)
	ok(t, err)
	if a := wantTimes("mkdir", recent, true); a.Nlink != n+1 {
		t.Fatalf("after mkdir: nlink %d, want %d", a.Nlink, n+1)
	}
	recent = setTimes(time.Minute)
	ok(t, c.Rmdir(ctx, d, "sub"))
	if a := wantTimes("rmdir", recent, true); a.Nlink != n {
		t.Fatalf("after rmdir: nlink %d, want %d", a.Nlink, n)
	}
	// A directory moved out changes both parents' link counts.
	_, _, err = c.Mkdir(ctx, d, "sub", 0o755, 0, 0)
	ok(t, err)
	recent = setTimes(time.Minute)
	ok(t, c.Rename(ctx, d, "sub", RootIno, "moved", 0))
	if a := wantTimes("rename of a directory out", recent, true); a.Nlink != n {
		t.Fatalf("after moving a directory out: nlink %d, want %d", a.Nlink, n)
	}

	// Negative: always update.
	c.opt.DirMtimeSkip = -1
	recent = setTimes(time.Minute)
	ok(t, c.Unlink(ctx, d, "f"))
	wantTimes("unlink with the skip off", recent, true)
}
