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
// TODO(lead): the quota branch adds SetQuota(ctx, dir meta.Ino, maxBytes,
// maxInodes uint64) error to meta.Meta itself. Once merged, every client
// satisfies Quotas: make this `return m` and delete noQuotas and
// ErrNoQuotas (and the ErrNoQuotas branches in provision.go and the
// tests). Until then a client without the method fails provisioning with
// ErrNoQuotas rather than hand out an unlimited directory.
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
