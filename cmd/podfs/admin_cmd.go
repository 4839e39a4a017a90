package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"text/tabwriter"
	"time"

	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/redact"
)

// openVolume opens the metadata at metaURL and loads the volume's settings,
// with errors that say what to do.
func openVolume(ctx context.Context, log *slog.Logger, metaURL string) (meta.Meta, *meta.Format, error) {
	m, err := fs.OpenMeta(ctx, metaURL, log)
	if err != nil {
		return nil, nil, err
	}
	f, err := m.Load(ctx)
	if err != nil {
		m.Close(context.Background())
		if errors.Is(err, syscall.ENOENT) {
			return nil, nil, fmt.Errorf("no volume at %s: format one first (podfs format %s NAME --storage URL)", redact.URL(metaURL), redact.URL(metaURL))
		}
		return nil, nil, fmt.Errorf("load the volume at %s: %w", redact.URL(metaURL), err)
	}
	return m, f, nil
}

func runStatus(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("status", "META-URL", `
Show a volume's settings, the clients that have it mounted (sessions) and its usage.`)
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("status takes one META-URL (see podfs status --help)")
	}
	var st *fs.Status
	m, format, err := openVolume(ctx, log, pos[0])
	if err != nil {
		// An embedded volume is held by the process serving it: ask it.
		s, serr := statusFromMounts(pos[0])
		if serr != nil {
			return err
		}
		st = s
	} else {
		defer m.Close(context.Background())
		st = &fs.Status{MetaURL: pos[0], Format: *format}
		if st.StatFS, err = m.StatFS(ctx); err != nil {
			return fmt.Errorf("statfs: %w", err)
		}
		if st.Sessions, err = m.ListSessions(ctx); err != nil {
			return fmt.Errorf("list sessions: %w", err)
		}
		frag, err := m.Fragmentation(ctx)
		if err != nil {
			return err
		}
		st.Frag = &frag
	}
	printStatus(st)
	return nil
}

func printStatus(st *fs.Status) {
	f := &st.Format
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Volume\t%s\n", f.Name)
	fmt.Fprintf(w, "UUID\t%s\n", f.UUID)
	fmt.Fprintf(w, "Metadata\t%s\n", redact.URL(st.MetaURL))
	fmt.Fprintf(w, "Storage\t%s\n", redact.URL(f.Storage))
	fmt.Fprintf(w, "Block size\t%s\n", formatSize(int64(f.BlockSize)))
	fmt.Fprintf(w, "Capacity\t%s\n", quota(f.Capacity, true))
	fmt.Fprintf(w, "Inodes\t%s\n", quota(f.Inodes, false))
	fmt.Fprintf(w, "Format version\t%d\n", f.Version)
	fmt.Fprintf(w, "Created\t%s\n", f.CreatedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "Used space\t%s\n", formatSize(int64(st.StatFS.TotalSpace-st.StatFS.AvailSpace)))
	fmt.Fprintf(w, "Used inodes\t%d\n", st.StatFS.UsedInodes)
	if fr := st.Frag; fr != nil {
		used := int64(st.StatFS.TotalSpace - st.StatFS.AvailSpace)
		ratio := "-"
		if used > 0 {
			ratio = fmt.Sprintf("%.2fx used space", float64(fr.Referenced)/float64(used))
		}
		fmt.Fprintf(w, "Referenced data\t%s in %d slices of %d chunks (%s; podfs compact lowers it)\n",
			formatSize(fr.Referenced), fr.Slices, fr.Chunks, ratio)
		fmt.Fprintf(w, "Pending deletes\t%d slices, %s\n", fr.Pending, formatSize(fr.PendingB))
	}
	if st.MountPoint != "" {
		fmt.Fprintf(w, "Read through\tthe mount at %s (it holds the embedded metadata)\n", st.MountPoint)
	}
	w.Flush()
	fmt.Printf("\nSessions: %d\n", len(st.Sessions))
	if len(st.Sessions) > 0 {
		w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tHOST\tPID\tMOUNTPOINT\tHEARTBEAT")
		for _, s := range st.Sessions {
			fmt.Fprintf(w, "%d\t%s\t%d\t%s\t%s ago\n", s.ID, s.Hostname, s.Pid, s.MountPoint,
				time.Since(s.Heartbeat).Round(time.Second))
		}
		w.Flush()
	}
}

func quota(v uint64, bytes bool) string {
	if v == 0 {
		return "unlimited"
	}
	if bytes {
		return formatSize(int64(v))
	}
	return fmt.Sprint(v)
}

func runFsck(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("fsck", "META-URL [--repair]", `
Check a volume: the metadata's invariants (entries, link counts, chunks,
sessions), then that every data object a file references exists in storage
with the right size. Exits 1 when problems were found.`)
	repair := f.Bool("repair", false, "fix what the metadata check can fix")
	storageURL := f.String("storage", "", "storage URL overriding the one recorded in the volume")
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("fsck takes one META-URL (see podfs fsck --help)")
	}
	m, format, err := openVolume(ctx, log, pos[0])
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
	if *storageURL == "" {
		*storageURL = format.Storage
	}
	store, err := openToolStorage(ctx, *storageURL)
	if err != nil {
		return fmt.Errorf("open storage %s: %w", redact.URL(*storageURL), err)
	}
	defer store.Close()
	objProblems, checked, err := checkObjects(ctx, m, store, format, func(p string) { fmt.Println("data:", p) })
	if err != nil {
		return fmt.Errorf("check objects: %w", err)
	}
	n := len(rep.Problems) + objProblems
	fmt.Printf("checked metadata and %d objects: %d problems", checked, n)
	if *repair {
		fmt.Printf(", %d repaired", rep.Repaired)
	}
	fmt.Println()
	if n > rep.Repaired {
		return fmt.Errorf("volume %q has %d problems", format.Name, n-rep.Repaired)
	}
	return nil
}

func runGC(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("gc", "META-URL [--delete]", `
Find objects in storage that no file references (left by crashed clients or
interrupted deletes) and slices waiting for deletion. Without --delete only
reports them.`)
	del := f.Bool("delete", false, "delete what is found")
	storageURL := f.String("storage", "", "storage URL overriding the one recorded in the volume")
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("gc takes one META-URL (see podfs gc --help)")
	}
	m, format, err := openVolume(ctx, log, pos[0])
	if err != nil {
		return err
	}
	defer m.Close(context.Background())
	if *storageURL == "" {
		*storageURL = format.Storage
	}
	store, err := openToolStorage(ctx, *storageURL)
	if err != nil {
		return fmt.Errorf("open storage %s: %w", redact.URL(*storageURL), err)
	}
	defer store.Close()
	return collectGarbage(ctx, m, store, format, *del)
}
