package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type fileSpec struct{ Src, Dst string }

type linkSpec struct{ Dst, Target string }

type imageSpec struct {
	Tag        string
	Files      []fileSpec
	Links      []linkSpec
	Dirs       []string
	Env        []string
	Entrypoint []string
}

// epoch is every entry's timestamp: fixed so that equal inputs give equal digests.
var epoch = time.Unix(0, 0).UTC()

func writeImage(out string, spec imageSpec) error {
	ref, err := name.ParseReference(spec.Tag)
	if err != nil {
		return fmt.Errorf("image tag %q: %w", spec.Tag, err)
	}
	layerTar, err := buildLayer(spec)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("make layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Env = spec.Env
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.WorkingDir = "/"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

// buildLayer writes the one layer: parent directories first, then files and
// links in path order. Paths are image paths without the leading slash.
func buildLayer(spec imageSpec) ([]byte, error) {
	dirs := map[string]int64{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
	}
	for _, d := range spec.Dirs {
		d = path.Clean(d)
		dirs[d] = 0o755
		if d == "/tmp" {
			dirs[d] = 0o1777
		}
		addParents(d)
	}
	files := map[string]string{}
	for _, f := range spec.Files {
		dst := path.Clean(f.Dst)
		if prev, ok := files[dst]; ok && prev != f.Src {
			return nil, fmt.Errorf("%s is added twice, from %s and %s", dst, prev, f.Src)
		}
		files[dst] = f.Src
		addParents(dst)
	}
	links := map[string]string{}
	for _, l := range spec.Links {
		dst := path.Clean(l.Dst)
		if _, ok := files[dst]; ok {
			continue // a real file wins over a busybox applet link
		}
		links[dst] = l.Target
		addParents(dst)
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range sortedKeys(dirs) {
		h := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: dirs[d], ModTime: epoch}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	for _, dst := range sortedKeys(files) {
		if err := addFile(tw, files[dst], dst); err != nil {
			return nil, err
		}
	}
	for _, dst := range sortedKeys(links) {
		h := &tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(dst, "/"), Linkname: links[dst], Mode: 0o777, ModTime: epoch}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// addFile copies the host file src (following symlinks) to dst.
func addFile(tw *tar.Writer, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("add %s: %w", src, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("add %s: %w", src, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("add %s: not a regular file", src)
	}
	h := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(dst, "/"),
		Mode:     int64(st.Mode().Perm()),
		Size:     st.Size(),
		ModTime:  epoch,
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("add %s: %w", src, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("add %s: %w", src, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lddLine matches "libx.so.1 => /lib/x/libx.so.1 (0x...)" and
// "/lib64/ld-linux-x86-64.so.2 (0x...)".
var lddLine = regexp.MustCompile(`^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)`)

// sharedLibs returns the libraries (and the dynamic loader) the given ELF
// files load, as absolute host paths. Static binaries contribute nothing.
func sharedLibs(bins []string) ([]string, error) {
	seen := map[string]bool{}
	for _, b := range bins {
		outb, err := command("ldd", b)
		if err != nil {
			if strings.Contains(string(outb), "not a dynamic executable") {
				continue
			}
			return nil, fmt.Errorf("ldd %s: %w: %s", b, err, outb)
		}
		for _, l := range strings.Split(string(outb), "\n") {
			if strings.Contains(l, "=> not found") {
				return nil, fmt.Errorf("ldd %s: a library is missing on this host: %s", b, strings.TrimSpace(l))
			}
			if m := lddLine.FindStringSubmatch(l); m != nil {
				seen[m[1]] = true
			}
		}
	}
	return sortedKeys(seen), nil
}

func command(bin string, args ...string) ([]byte, error) {
	return exec.Command(bin, args...).CombinedOutput()
}
