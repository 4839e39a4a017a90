package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// OpenMeta connects to the metadata engine of an existing volume. An
// embedded (bolt) database that does not exist is refused rather than
// created: mounting or checking a volume must not leave files behind.
func OpenMeta(ctx context.Context, url string, log *slog.Logger) (meta.Meta, error) {
	p, err := meta.ParseURL(url)
	if err != nil {
		return nil, err
	}
	if p.Scheme == "bolt" {
		if _, err := os.Stat(p.Path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no volume at %s (%s does not exist): format one first (podfs format %s NAME)", url, p.Path, url)
		}
	}
	m, err := meta.Open(ctx, url, meta.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", redactURL(url), err)
	}
	return m, nil
}

// OpenStorage opens the object store a URL names.
func OpenStorage(ctx context.Context, url string) (storage.Store, error) {
	return storage.Open(ctx, url)
}

// registerLayerMetrics adds what the metadata engine and the data layer
// export about themselves, when they do.
func registerLayerMetrics(met *metrics, m meta.Meta, d *data.Store) {
	for _, x := range []any{m, d} {
		if c, ok := x.(prometheus.Collector); ok {
			met.register(c)
		}
	}
	met.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podfs_write_buffer_peak_bytes", Help: "Most memory write buffers held at once since the mount.",
	}, func() float64 { return float64(d.PeakBuffer()) }))
}
