// Package tikvmock starts client-go's in-process mock TiKV cluster for tests.
// It is imported only by tests: nothing that ships links it.
package tikvmock

import (
	"os"
	"testing"

	"github.com/pingcap/log"
	"go.uber.org/zap/zapcore"

	"github.com/tikv/client-go/v2/testutils"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/txnkv"
)

// New starts a mock cluster split into regions at splitKeys (raw keys, with
// any engine prefix included) and returns a txnkv client over it, closed when
// the test ends. Several kv.TiKV engines may share the client: each is a
// separate podfs client of the same cluster.
func New(t testing.TB, splitKeys ...[]byte) *txnkv.Client {
	t.Helper()
	// client-go logs every lock it resolves at info level; keep test output
	// to what matters.
	if os.Getenv("PODFS_TIKV_LOG") == "" {
		log.SetLevel(zapcore.ErrorLevel)
	}
	client, cluster, pdClient, err := testutils.NewMockTiKV("", nil)
	if err != nil {
		t.Fatalf("start the mock TiKV cluster: %v", err)
	}
	if len(splitKeys) > 0 {
		testutils.BootstrapWithMultiRegions(cluster, splitKeys...)
	} else {
		testutils.BootstrapWithSingleStore(cluster)
	}
	store, err := tikv.NewTestTiKVStore(client, pdClient, nil, nil, 0)
	if err != nil {
		t.Fatalf("mock TiKV store: %v", err)
	}
	c := &txnkv.Client{KVStore: store}
	t.Cleanup(func() { c.Close() })
	return c
}
