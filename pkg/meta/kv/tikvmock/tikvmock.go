// Package tikvmock starts client-go's in-process mock TiKV cluster for tests.
// It is imported only by tests: nothing that ships links it.
package tikvmock

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pingcap/log"
	"go.uber.org/zap/zapcore"

	"github.com/tikv/client-go/v2/testutils"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/tikvrpc"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/util/async"
)

// New starts a mock cluster split into regions at splitKeys (raw keys, with
// any engine prefix included) and returns a txnkv client over it, closed when
// the test ends. Several kv.TiKV engines may share the client: each is a
// separate podfs client of the same cluster.
func New(t testing.TB, splitKeys ...[]byte) *txnkv.Client {
	c, _ := NewCounted(t, splitKeys...)
	return c
}

// NewCounted is New that also counts the RPCs the client sends to the mock
// store, by request type: how many round trips an operation costs on a real
// cluster, whatever the mock's own speed.
func NewCounted(t testing.TB, splitKeys ...[]byte) (*txnkv.Client, *RPCs) {
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
	rpcs := &RPCs{n: map[tikvrpc.CmdType]int64{}}
	hijack := func(c tikv.Client) tikv.Client { return &countingClient{Client: c, rpcs: rpcs} }
	store, err := tikv.NewTestTiKVStore(client, pdClient, hijack, nil, 0)
	if err != nil {
		t.Fatalf("mock TiKV store: %v", err)
	}
	c := &txnkv.Client{KVStore: store}
	t.Cleanup(func() { c.Close() })
	return c, rpcs
}

// RPCs counts requests by type.
type RPCs struct {
	mu sync.Mutex
	n  map[tikvrpc.CmdType]int64
}

func (r *RPCs) add(t tikvrpc.CmdType) {
	r.mu.Lock()
	r.n[t]++
	r.mu.Unlock()
}

// Snapshot returns the counts so far, keyed by request type name (Get,
// BatchGet, Prewrite, Commit, ...).
func (r *RPCs) Snapshot() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int64, len(r.n))
	for t, n := range r.n {
		m[t.String()] = n
	}
	return m
}

// Since formats the counts added after before, per op operations, for a
// benchmark's or a test's log.
func (r *RPCs) Since(before map[string]int64, ops int) string {
	now := r.Snapshot()
	var parts []string
	for name, n := range now {
		if d := n - before[name]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.2f", name, float64(d)/float64(max(ops, 1))))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

type countingClient struct {
	tikv.Client
	rpcs *RPCs
}

func (c *countingClient) SendRequest(ctx context.Context, addr string, req *tikvrpc.Request, timeout time.Duration) (*tikvrpc.Response, error) {
	c.rpcs.add(req.Type)
	return c.Client.SendRequest(ctx, addr, req, timeout)
}

func (c *countingClient) SendRequestAsync(ctx context.Context, addr string, req *tikvrpc.Request, cb async.Callback[*tikvrpc.Response]) {
	c.rpcs.add(req.Type)
	c.Client.SendRequestAsync(ctx, addr, req, cb)
}
