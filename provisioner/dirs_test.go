package provisioner

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// boltVolume formats a real bolt volume with file storage in a temp dir.
func boltVolume(t *testing.T) meta.Meta {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	url := "bolt://" + filepath.Join(dir, "meta.db")
	m, err := meta.Open(ctx, url, meta.Options{})
	must(t, err)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	o := fs.FormatOptions{Name: "vol"}
	must(t, o.Validate(url))
	store, err := storage.Open(ctx, o.Storage)
	must(t, err)
	defer store.Close()
	_, _, err = fs.Format(ctx, m, store, o)
	must(t, err)
	return m
}

type failQuotas struct{ err error }

func (f failQuotas) SetQuota(context.Context, meta.Ino, uint64, uint64) error { return f.err }

type okQuotas struct{}

func (okQuotas) SetQuota(context.Context, meta.Ino, uint64, uint64) error { return nil }

func names(t *testing.T, m meta.Meta, dir string) []string {
	t.Helper()
	ino := meta.RootIno
	if dir != "" {
		var err error
		ino, err = lookupPath(context.Background(), m, dir)
		must(t, err)
	}
	ents, err := m.Readdir(context.Background(), ino, "", 100)
	must(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	return out
}

// A failed quota leaves nothing of this attempt; a directory an earlier
// attempt made stays for the next one.
func TestEnsureClaimDirFailure(t *testing.T) {
	ctx := context.Background()
	m := boltVolume(t)
	boom := errors.New("quota engine down")
	if _, err := ensureClaimDir(ctx, m, failQuotas{boom}, "ns/a", "uid-a", 1<<20); !errors.Is(err, boom) {
		t.Fatalf("err %v, want the quota's", err)
	}
	if got := names(t, m, "ns"); len(got) != 0 {
		t.Errorf("ns/ holds %v after a failed attempt, want nothing", got)
	}
	// A crashed attempt's temporary directory is kept on failure and reused.
	parent, err := lookupPath(ctx, m, "ns")
	must(t, err)
	tmp, _, err := m.Mkdir(ctx, parent, tmpPrefix+"uid-b", claimMode, 0, 0)
	must(t, err)
	if _, err := ensureClaimDir(ctx, m, failQuotas{boom}, "ns/b", "uid-b", 1<<20); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	d, err := ensureClaimDir(ctx, m, okQuotas{}, "ns/b", "uid-b", 1<<20)
	if err != nil || d.ino != tmp || !d.created {
		t.Fatalf("got %+v, %v; want the earlier attempt's inode %d", d, err, tmp)
	}
	if got := strings.Join(names(t, m, "ns"), ","); got != "b" {
		t.Errorf("ns/ holds %s, want b", got)
	}
}

// Collisions: a directory that is not the claim's, another claim's, a
// path inside another claim's directory.
func TestEnsureClaimDirCollisions(t *testing.T) {
	ctx := context.Background()
	m := boltVolume(t)
	_, err := mkdirAll(ctx, m, "ns/plain")
	must(t, err)
	_, err = ensureClaimDir(ctx, m, okQuotas{}, "ns/owned", "uid-1", 1)
	must(t, err)
	for _, tc := range []struct{ path, want string }{
		{"ns/plain", "was not made for this claim"},
		{"ns/owned", "belongs to claim uid-1"},
		{"ns/owned/inner", "would lie inside it"},
	} {
		_, err := ensureClaimDir(ctx, m, okQuotas{}, tc.path, "uid-2", 1)
		if !errors.Is(err, errCollision) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a collision saying %q", tc.path, err, tc.want)
		}
	}
	// Reused by its own claim.
	if d, err := ensureClaimDir(ctx, m, okQuotas{}, "ns/owned", "uid-1", 1); err != nil || d.created {
		t.Errorf("own directory: %+v, %v", d, err)
	}
	// Delete and archive touch only the claim's own directory.
	if err := deleteClaimDir(ctx, m, "ns/owned", "uid-2"); !errors.Is(err, errCollision) {
		t.Errorf("delete of another claim's directory: %v", err)
	}
	if _, err := archiveClaimDir(ctx, m, "ns/plain", "uid-2", time.Now()); !errors.Is(err, errCollision) {
		t.Errorf("archive of an unmarked directory: %v", err)
	}
	if err := deleteClaimDir(ctx, m, "ns/gone", "uid-3"); err != nil {
		t.Errorf("delete of a directory already gone: %v", err)
	}
	// A deep tree goes entirely.
	ino, err := mkdirAll(ctx, m, "ns/tree/x/y")
	must(t, err)
	f, _, err := m.Create(ctx, ino, "f", 0o644, 0, 0, 0)
	must(t, err)
	must(t, m.Release(ctx, f))
	tree, err := lookupPath(ctx, m, "ns/tree")
	must(t, err)
	must(t, m.SetXattr(ctx, tree, ownerXattr, []byte("uid-4"), 0))
	must(t, deleteClaimDir(ctx, m, "ns/tree", "uid-4"))
	if _, err := lookupPath(ctx, m, "ns/tree"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("ns/tree after delete: %v", err)
	}
}
