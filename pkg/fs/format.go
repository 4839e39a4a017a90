package fs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"path"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/redact"
	"podfs.io/podfs/pkg/storage"
)

// FormatOptions are the settings of a new volume (podfs format, and the
// controller's format-on-first-use).
type FormatOptions struct {
	Name      string
	Storage   string // storage URL; "" = DefaultStorage of the metadata URL
	BlockSize int    // bytes per data object; 0 = DefaultBlockSize
	Capacity  uint64 // bytes; 0 = unlimited
	Inodes    uint64 // 0 = unlimited
}

// DefaultBlockSize is a new volume's data object size unless asked otherwise.
const DefaultBlockSize = 4 << 20

// Validate checks the options and fills in defaults that depend on metaURL.
func (o *FormatOptions) Validate(metaURL string) error {
	if !ValidVolumeName(o.Name) {
		return fmt.Errorf("volume name %q: use 1-63 letters, digits, '-', '_' or '.'", o.Name)
	}
	if o.Storage == "" {
		o.Storage = DefaultStorage(metaURL)
		if o.Storage == "" {
			return errors.New("a storage URL is required unless the metadata URL is bolt:///DIR/meta.db (then it defaults to file:///DIR/data)")
		}
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if bs := o.BlockSize; bs < 64<<10 || bs > 64<<20 || bs&(bs-1) != 0 {
		return fmt.Errorf("block size %d: use a power of two between 64K and 64M", bs)
	}
	return nil
}

// ErrOtherVolume is returned by Format when the metadata engine already
// holds a volume of another name or storage.
var ErrOtherVolume = errors.New("the metadata URL holds another volume")

// Format writes a new volume's settings into m. Formatting again with the
// same name and storage changes nothing and returns the existing settings
// with created false, so a caller may format on every start; a different
// volume already there is refused (ErrOtherVolume). Before writing, Format
// checks that store works (writes, reads back and deletes an object), so no
// volume is formatted on storage that does not work. o must have passed
// Validate.
func Format(ctx context.Context, m meta.Meta, store storage.Store, o FormatOptions) (f *meta.Format, created bool, err error) {
	old, err := m.Load(ctx)
	switch {
	case err == nil:
		if old.Name == o.Name && old.Storage == o.Storage {
			return old, false, nil
		}
		return nil, false, fmt.Errorf("%w: it holds volume %q (storage %s), not %q (storage %s): pick another metadata URL, or remove that volume first",
			ErrOtherVolume, old.Name, redact.URL(old.Storage), o.Name, redact.URL(o.Storage))
	case !errors.Is(err, syscall.ENOENT):
		return nil, false, fmt.Errorf("check for an existing volume: %w", err)
	}
	if err := ProbeStorage(ctx, store); err != nil {
		return nil, false, fmt.Errorf("storage %s does not work: %w", redact.URL(o.Storage), err)
	}
	nf := meta.Format{
		Name:      o.Name,
		UUID:      NewUUID(),
		BlockSize: o.BlockSize,
		Storage:   o.Storage,
		Capacity:  o.Capacity,
		Inodes:    o.Inodes,
		CreatedAt: time.Now().UTC(),
		Version:   meta.FormatVersion,
	}
	if err := m.Init(ctx, nf); err != nil {
		// Another client may have formatted the same volume meanwhile.
		if again, lerr := m.Load(ctx); lerr == nil && again.Name == o.Name && again.Storage == o.Storage {
			return again, false, nil
		}
		return nil, false, fmt.Errorf("format volume %q: %w", o.Name, err)
	}
	return &nf, true, nil
}

// ValidVolumeName says whether s may name a volume.
func ValidVolumeName(s string) bool {
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

// DefaultStorage is the data directory beside an embedded metadata file:
// bolt:///DIR/meta.db -> file:///DIR/data; "" for other engines.
func DefaultStorage(metaURL string) string {
	u, err := url.Parse(metaURL)
	if err != nil || u.Scheme != "bolt" || u.Path == "" {
		return ""
	}
	return "file://" + path.Join(path.Dir(u.Path), "data")
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// ProbeStorage writes, reads back and deletes one object.
func ProbeStorage(ctx context.Context, s storage.Store) error {
	key := "podfs-probe/" + NewUUID()
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
