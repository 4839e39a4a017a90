package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"strconv"
	"strings"
	"syscall"
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

// defaultStorage is the data directory beside an embedded metadata file:
// bolt:///DIR/meta.db -> file:///DIR/data.
func defaultStorage(metaURL string) string {
	u, err := url.Parse(metaURL)
	if err != nil || u.Scheme != "bolt" || u.Path == "" {
		return ""
	}
	return "file://" + path.Join(path.Dir(u.Path), "data")
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
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
	metaURL, name := pos[0], pos[1]
	if !validName(name) {
		return usagef("volume name %q: use 1-63 letters, digits, '-', '_' or '.'", name)
	}
	if *storageURL == "" {
		*storageURL = defaultStorage(metaURL)
		if *storageURL == "" {
			return usagef("--storage is required unless META-URL is bolt:///DIR/meta.db (then it defaults to file:///DIR/data)")
		}
	}
	if bs := blockSize.v; bs < 64<<10 || bs > 64<<20 || bs&(bs-1) != 0 {
		return usagef("--block-size %s: use a power of two between 64K and 64M", blockSize)
	}
	if redact.URL(*storageURL) != *storageURL {
		// The storage URL is kept in the volume's metadata, where every
		// client reads it.
		log.Warn("the storage URL carries a secret (key=), which the volume's metadata will keep: prefer keyring= or keyfile= naming a file from a mounted Secret")
	}
	store, err := openToolStorage(ctx, *storageURL)
	if err != nil {
		return fmt.Errorf("open storage %s: %w", redact.URL(*storageURL), err)
	}
	defer store.Close()
	if err := probeStorage(ctx, store); err != nil {
		return fmt.Errorf("storage %s does not work: %w", store, err)
	}
	m, err := meta.Open(ctx, metaURL, meta.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("open metadata %s: %w", redact.URL(metaURL), err)
	}
	defer m.Close(context.Background())
	if old, err := m.Load(ctx); err == nil {
		if old.Name == name && old.Storage == *storageURL {
			fmt.Printf("volume %q is already formatted at %s (storage %s): nothing to do\n", name, redact.URL(metaURL), redact.URL(old.Storage))
			return nil
		}
		return fmt.Errorf("%s already holds volume %q (storage %s): pick another metadata URL, or remove that volume first", redact.URL(metaURL), old.Name, redact.URL(old.Storage))
	} else if !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("check for an existing volume at %s: %w", redact.URL(metaURL), err)
	}
	format := meta.Format{
		Name:      name,
		UUID:      newUUID(),
		BlockSize: int(blockSize.v),
		Storage:   *storageURL,
		Capacity:  uint64(capacity.v),
		Inodes:    *inodes,
		CreatedAt: time.Now().UTC(),
		Version:   meta.FormatVersion,
	}
	if err := m.Init(ctx, format); err != nil {
		return fmt.Errorf("format volume %q at %s: %w", name, redact.URL(metaURL), err)
	}
	fmt.Printf("formatted volume %q: metadata %s, storage %s, block size %s\n", name, redact.URL(metaURL), redact.URL(*storageURL), blockSize)
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// probeStorage writes, reads back and deletes one object, so a volume is
// never formatted on storage that does not work.
func probeStorage(ctx context.Context, s interface {
	Put(context.Context, string, []byte) error
	Get(context.Context, string, int64, []byte) (int, error)
	Delete(context.Context, string) error
}) error {
	key := "podfs-probe/" + newUUID()
	want := []byte("podfs storage probe")
	if err := s.Put(ctx, key, want); err != nil {
		return fmt.Errorf("write a test object: %w", err)
	}
	got := make([]byte, len(want))
	n, err := s.Get(ctx, key, 0, got)
	if err != nil || string(got[:n]) != string(want) {
		return fmt.Errorf("read back a test object: got %q, %v", got[:n], err)
	}
	return s.Delete(ctx, key)
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
