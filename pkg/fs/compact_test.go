package fs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storedBytes is the total size of the block objects of a file store.
func storedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(dir, "chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// podfs compact, through a mount: a file rewritten in place many times
// costs about its length in objects afterwards, reads the same, and a
// sparse file keeps its hole.
func TestCompactCommand(t *testing.T) {
	v := newBoltVolume(t)
	_, mp := mountVolume(t, v, func(c *Config) { c.Data.CompactSlices = -1 }) // only the command compacts
	rng := rand.New(rand.NewPCG(3, 4))
	const size = 3 << 20
	want := make([]byte, size)
	f, err := os.OpenFile(filepath.Join(mp, "f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		off, n := rng.IntN(size-1), 1+rng.IntN(256<<10)
		n = min(n, size-off)
		p := want[off : off+n]
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil { // a slice per write
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A sparse file: 1 MiB, a 10 MiB hole, 1 MiB.
	sparse := make([]byte, 12<<20)
	for _, off := range []int{0, 11 << 20} {
		for j := off; j < off+1<<20; j++ {
			sparse[j] = byte(j)
		}
	}
	s, err := os.Create(filepath.Join(mp, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 11 << 20, 0} { // the first range twice: two slices
		if _, err := s.WriteAt(sparse[off:off+1<<20], off); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	data := filepath.Join(v.dir, "data")
	before := storedBytes(t, data)
	code, out := runPodfs(t, "compact", mp)
	if code != 0 || !strings.Contains(out, "2 files") {
		t.Fatalf("podfs compact: exit %d\n%s", code, out)
	}
	after := storedBytes(t, data)
	files := int64(size + 2<<20) // the sparse file costs its written bytes
	if after > files*13/10 || after >= before {
		t.Fatalf("objects %d bytes before compact, %d after, for %d bytes of data: want at most 1.3x", before, after, files)
	}
	t.Logf("objects: %d bytes before podfs compact, %d after (%.2fx the data); %s", before, after, float64(after)/float64(files), strings.TrimSpace(out))
	if got := mustRead(t, filepath.Join(mp, "f")); !bytes.Equal(got, want) {
		t.Fatal("f reads differently after compaction")
	}
	if got := mustRead(t, filepath.Join(mp, "sparse")); !bytes.Equal(got, sparse) {
		t.Fatal("sparse reads differently after compaction")
	}
	if code, out := runPodfs(t, "compact", t.TempDir()); code == 0 || !strings.Contains(out, "not in a podfs mount") {
		t.Fatalf("podfs compact outside podfs: exit %d\n%s", code, out)
	}
}
