package provisioner

import "podfs.io/podfs/pkg/meta"

// MetaQuotas is the production Quotas of a volume's client: pkg/meta's
// directory quotas, kept exact in the transactions that change usage.
func MetaQuotas(m meta.Meta) Quotas { return m }
