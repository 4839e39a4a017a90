package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"podfs.io/podfs/internal/testenv"
)

// TestImageRoundTrip builds an image from a dynamic binary (with its
// libraries) and busybox, reads the tarball back the way an importer does,
// and checks the files, links and config landed where they should.
func TestImageRoundTrip(t *testing.T) {
	busybox := testenv.LookPath(t, "busybox", "hack/deps.sh --e2e")
	dir := t.TempDir()
	data := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(data, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	args := []string{"-o", out, "-tag", "podfs.io/test:v1", "-add", data + ":/etc/hello.txt",
		"-add", "/bin/ls:/usr/local/bin/ls", "-libs", "-busybox", busybox,
		"-entrypoint", "/usr/local/bin/ls -l", "-mkdir", "/var/lib/podfs"}
	if err := run(args); err != nil {
		t.Fatal(err)
	}
	// Same inputs, same image: a re-import is a no-op.
	out2 := filepath.Join(dir, "img2.tar")
	args[1] = out2
	if err := run(args); err != nil {
		t.Fatal(err)
	}

	tag, _ := name.NewTag("podfs.io/test:v1")
	ids := make([]string, 2)
	for i, p := range []string{out, out2} {
		img, err := tarball.ImageFromPath(p, &tag)
		if err != nil {
			t.Fatalf("read back %s: %v", p, err)
		}
		d, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = d.String()
	}
	if ids[0] != ids[1] {
		t.Errorf("two builds of the same inputs differ: %s vs %s", ids[0], ids[1])
	}

	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Entrypoint; len(got) != 2 || got[0] != "/usr/local/bin/ls" {
		t.Errorf("entrypoint = %q", got)
	}
	entries := map[string]*tar.Header{}
	contents := map[string]string{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[strings.TrimSuffix(h.Name, "/")] = h
		if h.Name == "etc/hello.txt" {
			b, _ := io.ReadAll(tr)
			contents[h.Name] = string(b)
		}
	}
	if contents["etc/hello.txt"] != "hello" {
		t.Errorf("etc/hello.txt = %q", contents["etc/hello.txt"])
	}
	if h := entries["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
		t.Errorf("bin/sh is not a link to busybox: %+v", h)
	}
	if h := entries["tmp"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/ missing or wrong mode: %+v", h)
	}
	if entries["var/lib/podfs"] == nil {
		t.Errorf("var/lib/podfs/ missing")
	}
	libs, err := sharedLibs([]string{"/bin/ls"})
	if err != nil || len(libs) == 0 {
		t.Fatalf("sharedLibs(/bin/ls) = %v, %v; want the libc and loader", libs, err)
	}
	for _, l := range libs {
		if entries[l[1:]] == nil {
			t.Errorf("library %s missing from the image", l)
		}
	}
}
