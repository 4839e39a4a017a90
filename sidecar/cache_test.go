package sidecar

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/sidecar/volumeset"
)

// TestTwoVolumesCollidingSliceIDs serves two separately formatted volumes
// from one sidecar on an ordinary node, with one cache directory root and
// object stores the data layer caches (remote=true). Both volumes count
// slice ids from 1, so their block objects have the same keys. Each must
// read its own data: from cold caches, from the warm memory cache, from the
// disk cache alone after a restart (the object stores are moved away), and,
// after a restart during which another client rewrote one file, the new
// data rather than the cached blocks of the old.
func TestTwoVolumesCollidingSliceIDs(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	handoff := filepath.Join(dir, "run", "handoff")
	cacheDir := filepath.Join(dir, "cache")
	type vol struct {
		name, metaURL, objects, target string
		data                           []byte
	}
	var vols []*vol
	set := &volumeset.VolumeSet{Mode: volumeset.ModeNode, Native: true}
	for i, n := range []string{"alpha", "beta"} {
		v := &vol{name: n, objects: filepath.Join(dir, n+"-objects")}
		v.metaURL = formatRemote(t, dir, n, "00000000-0000-4000-8000-0000000000b"+string(rune('1'+i)), v.objects)
		v.target = publishFor(t, dir, handoff, "pv-"+n, &fuseconn.Source{MetaURL: v.metaURL}).target
		// Same length, different bytes: the same slice ids and block keys.
		v.data = bytes.Repeat([]byte{byte('a' + i)}, 3<<20+4097)
		for k := range v.data {
			v.data[k] += byte(k % 7)
		}
		vols = append(vols, v)
		set.Volumes = append(set.Volumes, volumeset.Volume{Name: n, Handoff: "pv-" + n,
			Cache: volumeset.Cache{CacheDir: cacheDir, CacheSize: 64 << 20}})
	}
	socket := filepath.Join(dir, "probe.sock")
	env := []string{"SOCKET=" + socket, "HANDOFF=" + handoff, "JOURNAL=" + filepath.Join(dir, "run", "journal")}
	start := func() (stop func()) {
		cmd, _, done := startChild(t, "fs", set, env...)
		waitReady(t, socket, done)
		return func() {
			t.Helper()
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := waitExit(done, 60*time.Second); err != nil {
				t.Fatalf("sidecar exit after SIGTERM: %v", err)
			}
		}
	}
	check := func(when string) {
		t.Helper()
		for _, v := range vols {
			got := readUncached(t, filepath.Join(v.target, "f"))
			if !bytes.Equal(got, v.data) {
				t.Fatalf("%s: volume %s read %d bytes that are not its own (first difference at %d)", when, v.name, len(got), diffAt(got, v.data))
			}
		}
	}

	stop := start()
	for _, v := range vols {
		if err := os.WriteFile(filepath.Join(v.target, "f"), v.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check("cold caches")
	check("warm memory cache")
	stop()
	keys := make([][]string, len(vols))
	for i, v := range vols {
		keys[i] = objectKeys(t, v.objects)
	}
	if len(keys[0]) == 0 || !slices.Equal(keys[0], keys[1]) {
		t.Fatalf("object keys %v and %v: the test needs the volumes' slice ids to collide", keys[0], keys[1])
	}
	for i := range vols {
		uuid := "00000000-0000-4000-8000-0000000000b" + string(rune('1'+i))
		if blocks := objectKeys(t, filepath.Join(cacheDir, uuid)); len(blocks) == 0 {
			t.Fatalf("volume %s left nothing in its disk cache %s", vols[i].name, filepath.Join(cacheDir, uuid))
		}
	}

	// Only the disk cache can answer now.
	for _, v := range vols {
		if err := os.Rename(v.objects, v.objects+"-away"); err != nil {
			t.Fatal(err)
		}
	}
	stop = start()
	check("disk cache alone, after a restart")
	stop()
	for _, v := range vols {
		if err := os.RemoveAll(v.objects); err != nil { // an empty store the sidecar made
			t.Fatal(err)
		}
		if err := os.Rename(v.objects+"-away", v.objects); err != nil {
			t.Fatal(err)
		}
	}

	// Another client rewrites alpha's file while no sidecar runs.
	rewriteElsewhere(t, vols[0].metaURL, filepath.Join(dir, "other-client"), vols[0].data)
	stop = start()
	check("after another client rewrote alpha's file")
	stop()
}

// formatRemote formats a bolt volume whose file store the data layer
// caches like an object store.
func formatRemote(t *testing.T, dir, name, uuid, objects string) string {
	t.Helper()
	return formatBoltWith(t, dir, name, uuid, "file://"+objects+"?remote=true")
}

// rewriteElsewhere mounts the volume in this process, as another client,
// and rewrites f with data reversed (same length, other bytes).
func rewriteElsewhere(t *testing.T, metaURL, mp string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := fs.New(ctx, fs.Config{MetaURL: metaURL, MountPoint: mp})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount(ctx)
	for i, j := 0, len(data)-1; i < j; i, j = i+1, j-1 {
		data[i], data[j] = data[j], data[i]
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
}

// readUncached reads path after dropping its pages from the kernel's page
// cache, so the sidecar serves every byte.
func readUncached(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b.Bytes()
}

func objectKeys(t *testing.T, root string) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if !d.IsDir() && !strings.HasPrefix(rel, ".") && !strings.Contains(rel, "/.") {
			keys = append(keys, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

func diffAt(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
