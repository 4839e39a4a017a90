package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"podfs.io/podfs/pkg/data"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/storage"
)

// OpenMeta connects to the metadata engine a URL names.
func OpenMeta(ctx context.Context, url string, log *slog.Logger) (meta.Meta, error) {
	return nil, fmt.Errorf("open metadata %s: %w", redactURL(url), errors.New("metadata engines not merged yet"))
}

// OpenStorage opens the object store a URL names.
func OpenStorage(ctx context.Context, url string) (storage.Store, error) {
	return nil, errors.New("storage not merged yet")
}

// registerLayerMetrics adds what the metadata engine and the data layer
// export about themselves, when they do.
func registerLayerMetrics(met *metrics, m meta.Meta, d *data.Store) {
	for _, x := range []any{m, d} {
		if c, ok := x.(prometheus.Collector); ok {
			met.register(c)
		}
	}
}
