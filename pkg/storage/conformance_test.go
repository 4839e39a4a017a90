package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 3 && os.Args[1] == crashHelperArg {
		os.Exit(crashHelper(os.Args[2], os.Args[3]))
	}
	os.Exit(testenv.CephMain(m))
}

// stores opens one fresh, empty store of each backend for a test.
func stores(t *testing.T) map[string]func(t *testing.T) Store {
	return map[string]func(t *testing.T) Store{
		"mem": func(t *testing.T) Store { return NewMem(t.Name()) },
		"file": func(t *testing.T) Store {
			s, err := Open(context.Background(), "file://"+t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"file-nojournal": func(t *testing.T) Store {
			s, err := Open(context.Background(), "file://"+t.TempDir()+"?journal=false")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"rados": func(t *testing.T) Store {
			c := testenv.SharedCeph(t)
			s, err := Open(context.Background(), c.URL("namespace="+strings.ReplaceAll(t.Name(), "/", "_")))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func TestConformance(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) { conformance(t, open(t)) })
	}
}

func conformance(t *testing.T, s Store) {
	ctx := context.Background()
	mustPut := func(key string, data []byte) {
		t.Helper()
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}

	// Missing objects.
	if _, err := s.Get(ctx, "a/missing", 0, make([]byte, 4)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v, want ErrNotFound", err)
	}
	if _, err := s.Head(ctx, "a/missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("head missing: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "a/missing"); err != nil {
		t.Fatalf("delete missing: %v, want nil", err)
	}

	// Put, ranged get, head, replace.
	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	mustPut("a/b/obj", data)
	for _, tc := range []struct {
		off     int64
		n, want int
	}{{0, 10, 10}, {5, 100, 100}, {99_990, 100, 10}, {100_000, 10, 0}, {200_000, 10, 0}, {0, 100_000, 100_000}} {
		p := make([]byte, tc.n)
		n, err := s.Get(ctx, "a/b/obj", tc.off, p)
		if err != nil || n != tc.want {
			t.Fatalf("get off %d len %d: n=%d err=%v, want n=%d", tc.off, tc.n, n, err, tc.want)
		}
		if n > 0 && !bytes.Equal(p[:n], data[tc.off:tc.off+int64(n)]) {
			t.Fatalf("get off %d len %d: wrong bytes", tc.off, tc.n)
		}
	}
	o, err := s.Head(ctx, "a/b/obj")
	if err != nil || o.Size != int64(len(data)) || o.Key != "a/b/obj" {
		t.Fatalf("head: %+v %v", o, err)
	}
	mustPut("a/b/obj", []byte("short"))
	p := make([]byte, 10)
	if n, err := s.Get(ctx, "a/b/obj", 0, p); err != nil || string(p[:n]) != "short" {
		t.Fatalf("get after replace: %q %v", p[:n], err)
	}
	mustPut("a/empty", nil)
	if o, err := s.Head(ctx, "a/empty"); err != nil || o.Size != 0 {
		t.Fatalf("head empty: %+v %v", o, err)
	}

	// List: prefix, marker, limit, key order (including a key that sorts
	// between a directory's name and its children: "a-c" < "a/...").
	for _, k := range []string{"a-c", "b/1", "b/2", "b/3", "b0", "c/x/y/z"} {
		mustPut(k, []byte(k))
	}
	keys := func(prefix, marker string, limit int) string {
		t.Helper()
		objs, err := s.List(ctx, prefix, marker, limit)
		if err != nil {
			t.Fatalf("list %q %q %d: %v", prefix, marker, limit, err)
		}
		var ks []string
		for _, o := range objs {
			ks = append(ks, fmt.Sprintf("%s:%d", o.Key, o.Size))
		}
		return strings.Join(ks, " ")
	}
	for _, tc := range []struct {
		prefix, marker string
		limit          int
		want           string
	}{
		{"", "", 0, "a-c:3 a/b/obj:5 a/empty:0 b/1:3 b/2:3 b/3:3 b0:2 c/x/y/z:7"},
		{"b", "", 0, "b/1:3 b/2:3 b/3:3 b0:2"},
		{"b/", "", 0, "b/1:3 b/2:3 b/3:3"},
		{"b/", "b/1", 0, "b/2:3 b/3:3"},
		{"b", "b/3", 0, "b0:2"},
		{"", "", 3, "a-c:3 a/b/obj:5 a/empty:0"},
		{"", "a/empty", 2, "b/1:3 b/2:3"},
		{"c/x/", "", 0, "c/x/y/z:7"},
		{"c/x/y/z", "", 0, "c/x/y/z:7"},
		{"nothing/", "", 0, ""},
		{"", "c", 0, "c/x/y/z:7"},
	} {
		if got := keys(tc.prefix, tc.marker, tc.limit); got != tc.want {
			t.Errorf("list prefix %q marker %q limit %d:\n got %s\nwant %s", tc.prefix, tc.marker, tc.limit, got, tc.want)
		}
	}

	// Delete.
	if err := s.Delete(ctx, "b/2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, "b/2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("head deleted: %v", err)
	}
	if got := keys("b/", "", 0); got != "b/1:3 b/3:3" {
		t.Fatalf("list after delete: %s", got)
	}

	// Bad keys are refused, not mapped somewhere surprising.
	for _, k := range []string{"", "/abs", "a/../../etc", "a//b", "dir/", ".podfs-tmp/x"} {
		if err := s.Put(ctx, k, []byte("x")); err == nil {
			t.Errorf("put of bad key %q succeeded", k)
		}
	}

	// Concurrent writers of one key: every read sees one whole version.
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if err := s.Put(ctx, "race", bytes.Repeat([]byte{byte('a' + w)}, 64<<10)); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	for i := 0; i < 20; i++ {
		p := make([]byte, 64<<10)
		n, err := s.Get(ctx, "race", 0, p)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n != len(p) || !bytes.Equal(p, bytes.Repeat(p[:1], len(p))) {
			t.Fatalf("torn read of concurrently written object: n=%d", n)
		}
	}
	wg.Wait()
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ url, want string }{
		{"", "no scheme"},
		{"s3://bucket", "unknown scheme"},
		{"file://host/dir", "three slashes"},
		{"file://", "absolute directory"},
		{"file:///tmp/x?fsync=maybe", "fsync"},
		{"file:///tmp/x?bogus=1", "unknown option"},
		{"rados://", "pool"},
		{"rados://pool", "mon_host"},
		{"rados://pool?mon_host=127.0.0.1:1&connect_timeout=soon", "duration"},
		{"rados://pool?mon_host=127.0.0.1:1&what=1", "unknown option"},
	} {
		_, err := Open(ctx, tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want error mentioning %q", tc.url, err, tc.want)
		}
		if err != nil && tc.url != "rados://pool?mon_host=127.0.0.1:1&connect_timeout=soon" && !strings.Contains(err.Error(), "accepted storage URLs") && !strings.Contains(err.Error(), "fsync") && !strings.Contains(err.Error(), "duration") {
			t.Errorf("Open(%q) error does not list the accepted forms: %v", tc.url, err)
		}
	}
}

// A monitor address where nothing answers gives an error naming it, in
// about the connect timeout.
func TestRadosUnreachable(t *testing.T) {
	port := testenv.FreePort(t)
	_, err := Open(context.Background(), fmt.Sprintf("rados://p?mon_host=127.0.0.1:%d&connect_timeout=2s", port))
	if err == nil {
		t.Fatal("open of an unreachable cluster succeeded")
	}
	if !strings.Contains(err.Error(), fmt.Sprint(port)) && !strings.Contains(err.Error(), "RADOS") {
		t.Fatalf("error does not name the monitor: %v", err)
	}
	t.Log(err)
}

func TestRadosWithConfFile(t *testing.T) {
	c := testenv.SharedCeph(t)
	s, err := Open(context.Background(), "rados://"+c.Pool+"?conf="+c.Conf+"&user=admin&namespace=conf")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conformance(t, s)
}

func TestFileLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	// A temp file left by a crash is removed on open and never listed.
	if err := os.MkdirAll(filepath.Join(dir, tmpPrefix), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, tmpPrefix, "dead"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewFile(dir, FileOptions{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(context.Background(), "k/v", []byte("v")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, tmpPrefix))
	if len(ents) != 0 {
		t.Fatalf("temp dir holds %d files after open and put", len(ents))
	}
	objs, err := s.List(context.Background(), "", "", 0)
	if err != nil || len(objs) != 1 || objs[0].Key != "k/v" {
		t.Fatalf("list: %+v %v", objs, err)
	}
}
