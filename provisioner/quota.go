package provisioner

import (
	"context"
	"errors"
	"fmt"

	"podfs.io/podfs/pkg/meta"
)

// ErrNoQuotas says a volume's metadata client cannot set directory quotas.
var ErrNoQuotas = errors.New("this podfs build's metadata engine cannot set directory quotas")

// MetaQuotas is the production Quotas of a volume's client.
//
// TODO(lead): pkg/meta gains SetQuota(ctx, dir meta.Ino, maxBytes,
// maxInodes uint64) error on its client in a parallel change. Once merged,
// replace this adapter with the client itself (return m, or add SetQuota to
// meta.Meta and drop the assertion). Until then a client without the method
// fails provisioning with ErrNoQuotas rather than hand out an unlimited
// directory.
func MetaQuotas(m meta.Meta) Quotas {
	if q, ok := m.(Quotas); ok {
		return q
	}
	return noQuotas{}
}

type noQuotas struct{}

func (noQuotas) SetQuota(ctx context.Context, dir meta.Ino, maxBytes, maxInodes uint64) error {
	return fmt.Errorf("set a quota on inode %d: %w", dir, ErrNoQuotas)
}
