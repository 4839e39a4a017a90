package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"

	"podfs.io/podfs/pkg/meta"
)

const quotaUsage = `quota set|get|list|delete|check META-URL [--path /DIR] [options]`

func runQuota(ctx context.Context, log *slog.Logger, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(os.Stderr, "Usage: podfs %s\n\n%s\n", quotaUsage, strings.TrimSpace(`
Directory quotas limit the bytes (file lengths in 4 KiB blocks) and inodes
of a directory tree; writes, creates and renames past a limit fail with
EDQUOT, and a mount of the directory (--subdir) reports the quota in df.
A directory cannot be renamed across a quota boundary (EXDEV: mv copies).

  set     create or change a quota: --path /DIR [--capacity 10GiB] [--inodes N] [--create]
  get     show one quota and its usage: --path /DIR
  list    show every quota
  delete  remove a quota: --path /DIR
  check   recount every quota's usage (the metadata part of fsck) [--repair]

Run 'podfs quota SUBCOMMAND --help' for its options.`))
		if len(args) == 0 {
			return usagef("quota needs a subcommand: set, get, list, delete or check")
		}
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "set":
		return runQuotaSet(ctx, log, args)
	case "get", "delete":
		return runQuotaGetDelete(ctx, log, sub, args)
	case "list", "ls":
		return runQuotaList(ctx, log, args)
	case "check":
		return runQuotaCheck(ctx, log, args)
	}
	return usagef("quota: unknown subcommand %q: use set, get, list, delete or check", sub)
}

// optSize is a size flag that knows whether it was given.
type optSize struct {
	sizeFlag
	set bool
}

func (o *optSize) Set(v string) error {
	if err := o.sizeFlag.Set(v); err != nil {
		return err
	}
	o.set = true
	return nil
}

// volumePath checks a path inside the volume and makes it absolute.
func volumePath(p string) (string, error) {
	if p == "" {
		return "", usagef("give the directory with --path /DIR (a path inside the volume)")
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return "", usagef("--path %q: must not contain '..'", p)
	}
	return path.Clean("/" + p), nil
}

// quotaVolume parses flags with one META-URL and opens the volume.
func quotaVolume(ctx context.Context, log *slog.Logger, f *flag.FlagSet, args []string) (meta.Meta, error) {
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usagef("%s takes one META-URL (see %s --help)", f.Name(), f.Name())
	}
	m, _, err := openVolume(ctx, log, pos[0])
	return m, err
}

// resolve finds the directory at p, with an error that says what to do.
func resolve(ctx context.Context, m meta.Meta, p string) (meta.Ino, error) {
	ino, err := meta.LookupPath(ctx, m, p)
	if errors.Is(err, syscall.ENOENT) {
		return 0, fmt.Errorf("%s does not exist in the volume (quota set --create makes it): %w", p, err)
	}
	return ino, err
}

func runQuotaSet(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("quota set", "META-URL --path /DIR [--capacity SIZE] [--inodes N] [--create]", `
Create or change the quota of a directory. A new quota counts the tree's
current usage; a limit left out keeps its current value (unlimited for a
new quota); 0 means unlimited.`)
	p := f.String("path", "", "the directory, a path inside the volume (e.g. /pvc/claim-1)")
	capacity := &optSize{}
	f.Var(capacity, "capacity", "byte limit: e.g. 10GiB, 500M, 0 = unlimited")
	inodes := f.Int64("inodes", 0, "inode limit (files, directories, links...), 0 = unlimited")
	create := f.Bool("create", false, "make the directory (and missing parents) when it does not exist")
	m, err := quotaVolume(ctx, log, f, args)
	if err != nil {
		return err
	}
	defer m.Close(context.Background())
	dir, err := volumePath(*p)
	if err != nil {
		return err
	}
	inodesSet := false
	f.Visit(func(fl *flag.Flag) { inodesSet = inodesSet || fl.Name == "inodes" })
	if inodesSet && *inodes < 0 {
		return usagef("--inodes %d: must be 0 (unlimited) or more", *inodes)
	}
	if !capacity.set && !inodesSet {
		return usagef("quota set: give --capacity, --inodes or both")
	}
	var ino meta.Ino
	if *create {
		ino, err = meta.MkdirAll(ctx, m, dir, 0o777, 0, 0)
	} else {
		ino, err = resolve(ctx, m, dir)
	}
	if err != nil {
		return err
	}
	q, err := m.GetQuota(ctx, ino)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	if capacity.set {
		q.MaxBytes = uint64(capacity.v)
	}
	if inodesSet {
		q.MaxInodes = uint64(*inodes)
	}
	if err := m.SetQuota(ctx, ino, q.MaxBytes, q.MaxInodes); err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%s is not a directory: quotas limit directory trees", dir)
		}
		return err
	}
	if q, err = m.GetQuota(ctx, ino); err != nil {
		return err
	}
	return printQuotas(map[string]meta.Quota{dir: q})
}

func runQuotaGetDelete(ctx context.Context, log *slog.Logger, sub string, args []string) error {
	summary := "Show a directory's quota and its usage."
	if sub == "delete" {
		summary = "Remove a directory's quota (the directory and its files stay)."
	}
	f := newFlags("quota "+sub, "META-URL --path /DIR", summary)
	p := f.String("path", "", "the directory, a path inside the volume")
	m, err := quotaVolume(ctx, log, f, args)
	if err != nil {
		return err
	}
	defer m.Close(context.Background())
	dir, err := volumePath(*p)
	if err != nil {
		return err
	}
	ino, err := resolve(ctx, m, dir)
	if err != nil {
		return err
	}
	if sub == "delete" {
		err = m.DeleteQuota(ctx, ino)
	} else {
		var q meta.Quota
		if q, err = m.GetQuota(ctx, ino); err == nil {
			err = printQuotas(map[string]meta.Quota{dir: q})
		}
	}
	if errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("%s has no quota (podfs quota list shows them)", dir)
	}
	return err
}

func runQuotaList(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("quota list", "META-URL", "Show every quota of the volume with its usage.")
	m, err := quotaVolume(ctx, log, f, args)
	if err != nil {
		return err
	}
	defer m.Close(context.Background())
	qs, err := m.ListQuotas(ctx)
	if err != nil {
		return err
	}
	named := map[string]meta.Quota{}
	for ino, q := range qs {
		p, err := pathOf(ctx, m, ino)
		if err != nil {
			p = fmt.Sprintf("<inode %d: %v>", ino, err)
		}
		named[p] = q
	}
	return printQuotas(named)
}

func runQuotaCheck(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("quota check", "META-URL [--repair]", `
Recount every quota's usage from the inodes and compare it with the
counters; the check is the metadata part of podfs fsck (its other findings
are printed too). Run it on a quiet volume.`)
	repair := f.Bool("repair", false, "correct the counters (and what else fsck's metadata check can fix)")
	m, err := quotaVolume(ctx, log, f, args)
	if err != nil {
		return err
	}
	defer m.Close(context.Background())
	rep, err := m.Check(ctx, *repair)
	if err != nil {
		return fmt.Errorf("check metadata: %w", err)
	}
	for _, p := range rep.Problems {
		fmt.Println("metadata:", p)
	}
	fmt.Printf("%d problems", len(rep.Problems))
	if *repair {
		fmt.Printf(", %d repaired", rep.Repaired)
	}
	fmt.Println()
	if len(rep.Problems) > rep.Repaired {
		return fmt.Errorf("%d problems left", len(rep.Problems)-rep.Repaired)
	}
	return nil
}

// pathOf finds a directory's path by its parents' entries.
func pathOf(ctx context.Context, m meta.Meta, ino meta.Ino) (string, error) {
	var names []string
	for d, n := ino, 0; d != meta.RootIno; n++ {
		if n > 4096 {
			return "", fmt.Errorf("no path to the root")
		}
		a, err := m.GetAttr(ctx, d)
		if err != nil {
			return "", err
		}
		name, err := entryName(ctx, m, a.Parent, d)
		if err != nil {
			return "", err
		}
		names = append(names, name)
		d = a.Parent
	}
	slices.Reverse(names)
	return "/" + strings.Join(names, "/"), nil
}

func entryName(ctx context.Context, m meta.Meta, dir, ino meta.Ino) (string, error) {
	for cursor := ""; ; {
		ents, err := m.Readdir(ctx, dir, cursor, 1000)
		if err != nil {
			return "", err
		}
		for _, e := range ents {
			if e.Ino == ino {
				return e.Name, nil
			}
		}
		if len(ents) < 1000 {
			return "", fmt.Errorf("inode %d has no entry in %d", ino, dir)
		}
		cursor = ents[len(ents)-1].Name
	}
}

func printQuotas(qs map[string]meta.Quota) error {
	paths := make([]string, 0, len(qs))
	for p := range qs {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PATH\tCAPACITY\tUSED\tUSE%\tINODES\tIUSED\tIUSE%\t")
	pct := func(used, limit uint64) string {
		if limit == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f%%", 100*float64(used)/float64(limit))
	}
	for _, p := range paths {
		q := qs[p]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t\n", p, quota(q.MaxBytes, true), formatSize(int64(q.UsedBytes)),
			pct(q.UsedBytes, q.MaxBytes), quota(q.MaxInodes, false), q.UsedInodes, pct(q.UsedInodes, q.MaxInodes))
	}
	return w.Flush()
}
