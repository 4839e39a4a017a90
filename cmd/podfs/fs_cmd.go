package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/redact"
	"podfs.io/podfs/pkg/storage"
)

// parseInterleaved parses flags that may come before, between or after the
// positional arguments (podfs mount META MP -d works like podfs mount -d META MP).
func parseInterleaved(f *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			return nil, err
		}
		args = f.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// sizeFlag is a byte size flag accepting 4M, 4MiB, 64K, 1G, 1T or plain bytes.
type sizeFlag struct{ v int64 }

func (s *sizeFlag) String() string {
	if s == nil {
		return "0"
	}
	return formatSize(s.v)
}

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	s.v = n
	return nil
}

func parseSize(v string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(v))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		case 'P':
			mult = 1 << 50
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: write e.g. 4M, 512K, 10G or a number of bytes", v)
	}
	return int64(n * float64(mult)), nil
}

func formatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

func runFormat(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("format", "META-URL NAME [--storage URL] [options]", `
Format a volume: write its settings into the metadata engine at META-URL.
META-URL is bolt:///DIR/meta.db (embedded, one machine), etcd://HOST:PORT/NAME
or tikv://PD1:2379,PD2:2379/NAME. With bolt://, --storage defaults to
file:///DIR/data beside the metadata file. Formatting an existing volume with
the same name and storage again changes nothing.`)
	storageURL := f.String("storage", "", "object storage URL: file:///DIR or rados://POOL?conf=/etc/ceph/ceph.conf&user=admin")
	blockSize := &sizeFlag{v: 4 << 20}
	f.Var(blockSize, "block-size", "size of one data object (64K..64M)")
	capacity := &sizeFlag{}
	f.Var(capacity, "capacity", "space quota of the volume, e.g. 100G (0 = unlimited)")
	inodes := f.Uint64("inodes", 0, "inode quota of the volume (0 = unlimited)")
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("format takes META-URL and NAME, got %d arguments (see podfs format --help)", len(pos))
	}
	metaURL := pos[0]
	o := fs.FormatOptions{Name: pos[1], Storage: *storageURL, BlockSize: int(blockSize.v), Capacity: uint64(capacity.v), Inodes: *inodes}
	if err := o.Validate(metaURL); err != nil {
		return usagef("%v", err)
	}
	if redact.URL(o.Storage) != o.Storage {
		// The storage URL is kept in the volume's metadata, where every
		// client reads it.
		log.Warn("the storage URL carries a secret (key=), which the volume's metadata will keep: prefer keyring= or keyfile= naming a file from a mounted Secret")
	}
	store, err := openToolStorage(ctx, o.Storage)
	if err != nil {
		return fmt.Errorf("open storage %s: %w", redact.URL(o.Storage), err)
	}
	defer store.Close()
	m, err := meta.Open(ctx, metaURL, meta.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("open metadata %s: %w", redact.URL(metaURL), err)
	}
	defer m.Close(context.Background())
	vol, created, err := fs.Format(ctx, m, store, o)
	if err != nil {
		return fmt.Errorf("format %s: %w", redact.URL(metaURL), err)
	}
	if !created {
		fmt.Printf("volume %q is already formatted at %s (storage %s): nothing to do\n", vol.Name, redact.URL(metaURL), redact.URL(vol.Storage))
		return nil
	}
	fmt.Printf("formatted volume %q: metadata %s, storage %s, block size %s\n", vol.Name, redact.URL(metaURL), redact.URL(vol.Storage), blockSize)
	return nil
}

func runUmount(ctx context.Context, log *slog.Logger, args []string) error {
	f := newFlags("umount", "MOUNTPOINT [--lazy]", `
Unmount a podfs mount. When the podfs process serving it runs on this machine
it is asked to stop (it flushes buffered data, closes its session, unmounts and
exits) and umount waits for it; otherwise the mount is unmounted directly.
A busy mount is unmounted lazily (gone once the last process leaves it).`)
	lazy := f.Bool("lazy", false, "detach the mount now even if it is busy")
	timeout := f.Duration("timeout", 30*time.Second, "how long to wait for the serving process to exit")
	pos, err := parseInterleaved(f, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("umount takes one MOUNTPOINT (see podfs umount --help)")
	}
	return umount(ctx, log, pos[0], *lazy, *timeout)
}

// openToolStorage opens a volume's storage for format, fsck and gc: a file
// store without its journal (unless the URL asks for it), so a short-lived
// command leaves no journal segments behind for mounts, which may share
// the directory, to find.
func openToolStorage(ctx context.Context, url string) (storage.Store, error) {
	return fs.OpenStorage(ctx, storage.DefaultFileOption(url, "journal", "false"))
}
