package meta

import (
	"context"

	"podfs.io/podfs/pkg/meta/kv"
)

func openEtcd(ctx context.Context, p *ParsedURL, opt Options) (kv.Engine, error) {
	return kv.OpenEtcd(ctx, p.Hosts, p.Volume, keyPrefix(p.Volume), opt.ConnectTimeout)
}

func openTiKV(ctx context.Context, p *ParsedURL, opt Options) (kv.Engine, error) {
	return kv.OpenTiKV(ctx, p.Hosts, p.Volume, keyPrefix(p.Volume), opt.ConnectTimeout)
}
