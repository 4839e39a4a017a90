package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/redact"
	"podfs.io/podfs/pkg/storage"
)

// Volumes keeps one metadata client per metadata URL for the life of the
// controller: claims of many classes share a volume, and connecting to
// TiKV or etcd for every claim would be slow and would leave sessions
// behind.
type Volumes struct {
	// Open connects to a volume's metadata engine; create says a missing
	// embedded (bolt) database may be created because the volume is about
	// to be formatted. Default: meta.Open (create) or fs.OpenMeta.
	Open        func(ctx context.Context, url string, create bool) (meta.Meta, error)
	OpenTimeout time.Duration // default 30 s: an unreachable TiKV PD blocks long
	Log         *slog.Logger

	mu   sync.Mutex
	open map[string]*volume
}

type volume struct {
	mu     sync.Mutex   // serialises connecting and formatting
	m      meta.Meta    // nil until connected
	format *meta.Format // nil until loaded
}

// volumeSecret is what a class's provisioner Secret says about its volume.
type volumeSecret struct {
	MetaURL    string
	StorageURL string
	Format     *fs.FormatOptions // nil: the volume must already exist
}

// get returns the volume's client and settings, formatting the volume
// first when the Secret asks for it.
func (vs *Volumes) get(ctx context.Context, s *volumeSecret) (meta.Meta, *meta.Format, error) {
	v := vs.entry(s.MetaURL)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := vs.connect(ctx, v, s.MetaURL, s.Format != nil); err != nil {
		return nil, nil, err
	}
	if v.format != nil {
		return v.m, v.format, nil
	}
	if s.Format != nil {
		f, err := vs.format(ctx, v.m, s)
		if err != nil {
			return nil, nil, err
		}
		v.format = f
		return v.m, f, nil
	}
	f, err := v.m.Load(ctx)
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil, fmt.Errorf("no volume is formatted at %s: run podfs format %s NAME --storage URL, or put format: \"true\" and name: NAME in the provisioner Secret", redact.URL(s.MetaURL), redact.URL(s.MetaURL))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the volume's settings at %s: %w", redact.URL(s.MetaURL), err)
	}
	v.format = f
	return v.m, f, nil
}

func (vs *Volumes) format(ctx context.Context, m meta.Meta, s *volumeSecret) (*meta.Format, error) {
	o := *s.Format
	if o.Storage == "" {
		o.Storage = s.StorageURL
	}
	if err := o.Validate(s.MetaURL); err != nil {
		return nil, fmt.Errorf("format settings in the provisioner Secret: %w", err)
	}
	// A short-lived store: without the journal, which mounts sharing the
	// directory would otherwise find.
	store, err := storage.Open(ctx, storage.DefaultFileOption(o.Storage, "journal", "false"))
	if err != nil {
		return nil, fmt.Errorf("open storage %s to format the volume: %w", redact.URL(o.Storage), err)
	}
	defer store.Close()
	f, created, err := fs.Format(ctx, m, store, o)
	if err != nil {
		return nil, fmt.Errorf("format the volume at %s: %w", redact.URL(s.MetaURL), err)
	}
	if created {
		vs.log().Info("formatted volume", "name", f.Name, "meta", redact.URL(s.MetaURL), "storage", redact.URL(f.Storage))
	}
	return f, nil
}

// entry returns url's entry, made empty on first use. Connecting happens
// under the entry's own lock, so a slow engine delays only its claims.
func (vs *Volumes) entry(url string) *volume {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.open == nil {
		vs.open = map[string]*volume{}
	}
	v, ok := vs.open[url]
	if !ok {
		v = &volume{}
		vs.open[url] = v
	}
	return v
}

// connect opens v's client unless it is open; v.mu is held.
func (vs *Volumes) connect(ctx context.Context, v *volume, url string, create bool) error {
	if v.m != nil {
		return nil
	}
	timeout := vs.OpenTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	open := vs.Open
	if open == nil {
		open = defaultOpen(vs.log())
	}
	m, err := open(octx, url, create)
	if err != nil {
		return fmt.Errorf("cannot reach the volume's metadata at %s (check the Secret's metaURL and that the engine is reachable from the controller): %w", redact.URL(url), err)
	}
	v.m = m
	return nil
}

func defaultOpen(log *slog.Logger) func(ctx context.Context, url string, create bool) (meta.Meta, error) {
	return func(ctx context.Context, url string, create bool) (meta.Meta, error) {
		if create {
			return meta.Open(ctx, url, meta.Options{Logger: log})
		}
		return fs.OpenMeta(ctx, url, log)
	}
}

// Close closes every client.
func (vs *Volumes) Close(ctx context.Context) error {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	var errs []error
	for url, v := range vs.open {
		v.mu.Lock()
		m := v.m
		v.m = nil
		v.mu.Unlock()
		if m == nil {
			continue
		}
		if err := m.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", redact.URL(url), err))
		}
	}
	vs.open = nil
	return errors.Join(errs...)
}

func (vs *Volumes) log() *slog.Logger {
	if vs.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return vs.Log
}
