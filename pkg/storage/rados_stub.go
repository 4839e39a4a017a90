//go:build norados || !cgo

package storage

import (
	"context"
	"fmt"
	"net/url"

	"podfs.io/podfs/pkg/redact"
)

func openRados(ctx context.Context, rawURL string, u *url.URL) (Store, error) {
	return nil, fmt.Errorf("storage URL %q: podfs was built without RADOS (tag norados or CGO_ENABLED=0); rebuild with CGO_ENABLED=1 and without -tags norados", redact.URL(rawURL))
}
