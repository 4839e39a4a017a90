package meta

import (
	"context"
	"errors"

	"podfs.io/podfs/pkg/meta/kv"
)

func openEtcd(ctx context.Context, p *ParsedURL, opt Options) (kv.Engine, error) {
	return nil, errors.New("etcd engine: not implemented yet")
}

func openTiKV(ctx context.Context, p *ParsedURL, opt Options) (kv.Engine, error) {
	return nil, errors.New("tikv engine: not implemented yet")
}
