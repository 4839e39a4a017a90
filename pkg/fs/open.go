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
	return openMeta(ctx, url, meta.Options{Logger: log})
}

// openMeta is OpenMeta with the engine's options.
func openMeta(ctx context.Context, url string, opt meta.Options) (meta.Meta, error) {
	p, err := meta.ParseURL(url)
	if err != nil {
		return nil, err
	}
	if p.Scheme == "bolt" {
		if _, err := os.Stat(p.Path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no volume at %s (%s does not exist): format one first (podfs format %s NAME)", redactURL(url), p.Path, redactURL(url))
		}
	}
	m, err := meta.Open(ctx, url, opt)
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
	counter := func(name, help string, v func(data.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(d.Stats())) })
	}
	met.register(
		counter("podfs_data_block_uploads_total", "Block objects the data layer stored.", func(s data.Stats) int64 { return s.Uploads }),
		counter("podfs_data_block_fetches_total", "Block objects read from the object store (block cache misses).", func(s data.Stats) int64 { return s.Fetches }),
		counter("podfs_data_compactions_total", "Chunks compacted.", func(s data.Stats) int64 { return s.Compactions }),
		counter("podfs_data_buffer_relieves_total", "Times full write buffers forced partial blocks out.", func(s data.Stats) int64 { return s.Relieves }),
		counter("podfs_data_deleted_slices_total", "Slices whose objects were deleted.", func(s data.Stats) int64 { return s.Deleted }),
		counter("podfs_cache_hits_total", "Block reads the memory cache answered.", func(s data.Stats) int64 { return s.CacheHits }),
		gauge("podfs_write_buffer_peak_bytes", "Most memory write buffers held at once since the mount.", func() float64 { return float64(d.Stats().PeakBuffer) }),
		gauge("podfs_write_buffer_bytes", "Memory write buffers hold now.", func() float64 { return float64(d.Stats().Buffer) }),
		gauge("podfs_cache_bytes", "Memory the block cache takes now.", func() float64 { return float64(d.Stats().CacheBytes) }),
	)
	metaCounter := func(name, help string, v func(meta.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return v(m.Stats()) })
	}
	met.register(
		metaCounter("podfs_meta_transactions_total", "Metadata read-write transactions.", func(s meta.Stats) float64 { return float64(s.Txns) }),
		metaCounter("podfs_meta_conflicts_total", "Metadata transaction attempts retried after a conflict.", func(s meta.Stats) float64 { return float64(s.Conflicts) }),
		metaCounter("podfs_meta_transaction_seconds_total", "Time spent in metadata read-write transactions, retries included.", func(s meta.Stats) float64 { return s.TxnTime.Seconds() }),
		metaCounter("podfs_meta_reads_total", "Metadata read-only transactions.", func(s meta.Stats) float64 { return float64(s.Views) }),
		metaCounter("podfs_meta_log_flushes_total", "Embedded engine: fdatasyncs that made committed changes durable.", func(s meta.Stats) float64 { return float64(s.LogFlushes) }),
		gauge("podfs_meta_unsynced_records", "Embedded engine: committed log records not yet durable (at most --sync-delay old).", func() float64 { return float64(m.Stats().Unsynced) }),
	)
}

func gauge(name, help string, v func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v)
}
