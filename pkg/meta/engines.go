package meta

import (
	"context"

	"podfs.io/podfs/pkg/meta/kv"
)

func openEtcd(ctx context.Context, p *ParsedURL, opt Options) (kv.Engine, error) {
	return kv.OpenEtcd(ctx, kv.EtcdConfig{Endpoints: p.Hosts, Volume: p.Volume, Prefix: keyPrefix(p.Volume),
		Timeout: opt.ConnectTimeout, User: p.User, Password: p.Password, PasswordFile: p.PasswordFile, TLS: p.TLS})
}

func openTiKV(ctx context.Context, p *ParsedURL, opt Options) (kv.Engine, error) {
	return kv.OpenTiKV(ctx, kv.TiKVConfig{PD: p.Hosts, Volume: p.Volume, Prefix: keyPrefix(p.Volume),
		Timeout: opt.ConnectTimeout, TLS: p.TLS})
}
