// Command imagebuild writes a container image as a docker-archive tarball
// (what `ctr images import` and `docker load` read) from files on this host,
// without a Docker daemon or a registry. podfs uses it for its own image and
// for the pause image kubelet's sandboxes run.
//
//	imagebuild -o podfs.tar -tag podfs.io/podfs:dev \
//	  -add bin/podfs:/usr/local/bin/podfs -libs \
//	  -busybox /bin/busybox -entrypoint /usr/local/bin/podfs
//
// -libs copies every shared library the added ELF files need (as `ldd`
// resolves them on this host) to the same path in the image, so a cgo binary
// linked against librados runs in the image exactly as it does here.
// Timestamps are fixed, so the same inputs give the same image ID and
// re-importing is a no-op.
//
// `imagebuild push -tar FILE -ref REF` pushes such a tarball's image to a
// registry (see runPush for credentials and CAs).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "push" {
		err = runPush(os.Stdin, os.Args[2:])
	} else {
		err = run(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	out := fs.String("o", "", "output docker-archive tarball (required)")
	tag := fs.String("tag", "", "image reference, e.g. podfs.io/podfs:dev (required)")
	var adds, envs, dirs listFlag
	fs.Var(&adds, "add", "SRC:DST — copy the host file SRC to DST in the image (repeatable)")
	fs.Var(&envs, "env", "KEY=VALUE in the image's environment (repeatable)")
	fs.Var(&dirs, "mkdir", "create this directory in the image (repeatable; /tmp is always made, mode 1777)")
	libs := fs.Bool("libs", false, "also copy the shared libraries the added ELF files need (per ldd)")
	busybox := fs.String("busybox", "", "a static busybox to install as /bin/busybox with a link for each applet (/bin/sh, ...)")
	entrypoint := fs.String("entrypoint", "", "the image's entrypoint, words separated by spaces")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *tag == "" {
		return fmt.Errorf("-o and -tag are required (see -help)")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	spec := imageSpec{Tag: *tag, Env: envs, Dirs: append([]string{"/tmp"}, dirs...)}
	if *entrypoint != "" {
		spec.Entrypoint = strings.Fields(*entrypoint)
	}
	for _, a := range adds {
		src, dst, ok := strings.Cut(a, ":")
		if !ok || src == "" || !strings.HasPrefix(dst, "/") {
			return fmt.Errorf("-add %q: want SRC:DST with an absolute DST", a)
		}
		spec.Files = append(spec.Files, fileSpec{Src: src, Dst: dst})
	}
	if *libs {
		var bins []string
		for _, f := range spec.Files {
			bins = append(bins, f.Src)
		}
		deps, err := sharedLibs(bins)
		if err != nil {
			return err
		}
		for _, d := range deps {
			spec.Files = append(spec.Files, fileSpec{Src: d, Dst: d})
		}
	}
	if *busybox != "" {
		applets, err := busyboxApplets(*busybox)
		if err != nil {
			return err
		}
		spec.Files = append(spec.Files, fileSpec{Src: *busybox, Dst: "/bin/busybox"})
		for _, a := range applets {
			spec.Links = append(spec.Links, linkSpec{Dst: "/bin/" + a, Target: "busybox"})
		}
		spec.Env = append(spec.Env, "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
	}
	if err := writeImage(*out, spec); err != nil {
		return err
	}
	slog.Info("image written", "tag", *tag, "file", *out, "files", len(spec.Files))
	return nil
}

// busyboxApplets lists the applets a busybox binary provides.
func busyboxApplets(bin string) ([]string, error) {
	outb, err := command(bin, "--list")
	if err != nil {
		return nil, fmt.Errorf("list busybox applets of %s (install busybox-static: hack/deps.sh --e2e): %w", bin, err)
	}
	var applets []string
	for _, l := range strings.Split(string(bytes.TrimSpace(outb)), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && l != "busybox" && !strings.Contains(l, "/") {
			applets = append(applets, l)
		}
	}
	return applets, nil
}
