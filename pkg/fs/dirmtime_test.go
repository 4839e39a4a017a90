package fs

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mtimeOf(t *testing.T, path string) unix.Timespec {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mtim
}

// TestDirMtimeSkip: Config.DirMtimeSkip reaches the metadata engine. With
// it negative every create stamps the directory with the create's time;
// with an hour, a create in a directory made just before leaves the
// directory's mtime as mkdir set it.
func TestDirMtimeSkip(t *testing.T) {
	for _, tc := range []struct {
		skip  time.Duration
		moved bool // the directory's mtime follows the create
	}{
		{skip: -1, moved: true},
		{skip: time.Hour, moved: false},
	} {
		t.Run(tc.skip.String(), func(t *testing.T) {
			v := newBoltVolume(t)
			_, mp := mountVolume(t, v, func(c *Config) { c.DirMtimeSkip = tc.skip })
			dir := filepath.Join(mp, "d")
			if err := syscall.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			before := mtimeOf(t, dir)
			f := filepath.Join(dir, "f")
			mustWrite(t, f, nil)
			// The create's own time: the file's mtime, set in the same transaction.
			created := mtimeOf(t, f)
			after := mtimeOf(t, dir)
			if tc.moved {
				if after != created {
					t.Errorf("directory mtime %v after a create at %v, want the create's time (skip %s)", after, created, tc.skip)
				}
			} else if after != before {
				t.Errorf("directory mtime moved from %v to %v on a create within DirMtimeSkip %s", before, after, tc.skip)
			}
		})
	}
}

// TestMountDirMtimeSkipFlag: podfs mount documents --dir-mtime-skip,
// refuses a negative one before touching anything, and with 0 updates a
// directory's mtime on every create (where the default would skip).
func TestMountDirMtimeSkipFlag(t *testing.T) {
	code, out := runPodfs(t, "mount", "--help")
	if code != 0 || !strings.Contains(out, "-dir-mtime-skip") || !strings.Contains(out, "--dir-mtime-skip 0") {
		t.Errorf("mount --help does not explain --dir-mtime-skip: exit %d\n%s", code, out)
	}
	v := newBoltVolume(t)
	mp := t.TempDir()
	code, out = runPodfs(t, "mount", v.metaURL, mp, "--dir-mtime-skip", "-1s")
	if code != 2 || !strings.Contains(out, "--dir-mtime-skip") || !strings.Contains(out, "negative") {
		t.Errorf("mount --dir-mtime-skip -1s: exit %d, want 2 and a message\n%s", code, out)
	}
	if IsMounted(mp) {
		t.Errorf("%s mounted despite the bad flag", mp)
	}

	mp = newMountPoint(t)
	p := startMount(t, v.metaURL, mp, "--dir-mtime-skip", "0")
	p.waitMounted(t, mp)
	dir := filepath.Join(mp, "d")
	if err := syscall.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "f"), nil)
	if got, want := mtimeOf(t, dir), mtimeOf(t, filepath.Join(dir, "f")); got != want {
		t.Errorf("with --dir-mtime-skip 0 the directory's mtime is %v after a create at %v", got, want)
	}
	if code, out := runPodfs(t, "umount", mp); code != 0 {
		t.Fatalf("umount: exit %d\n%s", code, out)
	}
	if !p.awaitExit(t, "podfs umount") {
		t.FailNow()
	}
}
