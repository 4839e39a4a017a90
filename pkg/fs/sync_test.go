package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// On the embedded engine a change is durable within SyncDelay, and fsync of
// a file or a directory makes everything committed before it durable at
// once (here SyncDelay is an hour: only fsync can have synced).
func TestFsyncMakesMetadataDurable(t *testing.T) {
	v := newBoltVolume(t)
	m, mp := mountVolume(t, v, func(c *Config) { c.SyncDelay = time.Hour })
	unsynced := func() uint64 { return m.m.Stats().Unsynced }

	path := filepath.Join(mp, "f")
	mustWrite(t, path, []byte("data"))
	if unsynced() == 0 {
		t.Fatal("a new file's metadata is durable without fsync: the test cannot tell fsync's effect")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := unsynced(); n != 0 {
		t.Fatalf("%d metadata records not durable after fsync of a file", n)
	}

	if err := os.Mkdir(filepath.Join(mp, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(mp, "d", "g"), nil)
	if unsynced() == 0 {
		t.Fatal("mkdir and create are durable without fsync")
	}
	d, err := os.Open(filepath.Join(mp, "d"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := unsynced(); n != 0 {
		t.Fatalf("%d metadata records not durable after fsync of a directory", n)
	}
	if st := m.m.Stats(); st.LogFlushes < 2 || st.Txns == 0 {
		t.Fatalf("stats after two fsyncs: %+v", st)
	}
}
