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

	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/log"
	"go.uber.org/zap/zapcore"

	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/testutils"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/tikvrpc"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/util/async"
	pd "github.com/tikv/pd/client"
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
	hijack := func(c tikv.Client) tikv.Client {
		return &countingClient{Client: onePC{Client: c, pd: pdClient, rpcs: rpcs}, rpcs: rpcs}
	}
	store, err := tikv.NewTestTiKVStore(client, pdClient, hijack, nil, 0)
	if err != nil {
		t.Fatalf("mock TiKV store: %v", err)
	}
	c := &txnkv.Client{KVStore: store}
	t.Cleanup(func() { c.Close() })
	return c, rpcs
}

// RPCs counts requests by type, and the keys they name: the mock store
// seeks a fresh iterator per key read, prewritten or committed, its main
// cost per operation.
type RPCs struct {
	mu   sync.Mutex
	n    map[tikvrpc.CmdType]int64
	keys int64
}

func (r *RPCs) add(req *tikvrpc.Request) {
	k := 0
	switch req.Type {
	case tikvrpc.CmdGet, tikvrpc.CmdScan:
		k = 1
	case tikvrpc.CmdBatchGet:
		k = len(req.BatchGet().GetKeys())
	case tikvrpc.CmdPrewrite:
		k = len(req.Prewrite().GetMutations())
	case tikvrpc.CmdCommit:
		k = len(req.Commit().GetKeys())
	}
	r.mu.Lock()
	r.n[req.Type]++
	r.keys += int64(k)
	r.mu.Unlock()
}

func (r *RPCs) addKeys(k int) {
	r.mu.Lock()
	r.keys += int64(k)
	r.mu.Unlock()
}

// Keys returns how many keys the requests so far named (gets, prewrites and
// commits, one-phase commits' included; a scan counts one).
func (r *RPCs) Keys() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys
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
	c.rpcs.add(req)
	return c.Client.SendRequest(ctx, addr, req, timeout)
}

func (c *countingClient) SendRequestAsync(ctx context.Context, addr string, req *tikvrpc.Request, cb async.Callback[*tikvrpc.Response]) {
	c.rpcs.add(req)
	c.Client.SendRequestAsync(ctx, addr, req, cb)
}

// onePC gives the mock store TiKV's one-phase commit, which client-go's mock
// lacks (it ignores the request's TryOnePc and the client falls back to two
// phases). A real TiKV (5.0 on) commits a transaction whose keys are all in
// one region in its prewrite request; the client then sends no commit request
// and takes no commit timestamp. Here the prewrite runs as the mock has it
// and, when it succeeded, the same keys are committed at once with a fresh
// timestamp from the mock PD: later than every timestamp handed out before,
// so no reader's snapshot changes under it, and at least the request's
// MinCommitTs. Past the request's MaxCommitTs, or when the commit fails (a
// reader rolled the locks back), the answer is the plain prewrite's and the
// client finishes in two phases, as it does when a real TiKV declines 1PC.
type onePC struct {
	tikv.Client
	pd   pd.Client
	rpcs *RPCs // counts the commit's keys (not a request of its own)
}

func (c onePC) SendRequest(ctx context.Context, addr string, req *tikvrpc.Request, timeout time.Duration) (*tikvrpc.Response, error) {
	resp, err := c.Client.SendRequest(ctx, addr, req, timeout)
	if err != nil || req.Type != tikvrpc.CmdPrewrite || !req.Prewrite().GetTryOnePc() {
		return resp, err
	}
	pw := req.Prewrite()
	presp, ok := resp.Resp.(*kvrpcpb.PrewriteResponse)
	if !ok || presp.GetRegionError() != nil || len(presp.GetErrors()) > 0 {
		return resp, nil
	}
	physical, logical, err := c.pd.GetTS(ctx)
	if err != nil {
		return resp, nil
	}
	commitTS := oracle.ComposeTS(physical, logical)
	if commitTS < pw.GetMinCommitTs() || (pw.GetMaxCommitTs() > 0 && commitTS > pw.GetMaxCommitTs()) {
		return resp, nil
	}
	keys := make([][]byte, 0, len(pw.GetMutations()))
	for _, m := range pw.GetMutations() {
		if m.GetOp() != kvrpcpb.Op_CheckNotExists {
			keys = append(keys, m.GetKey())
		}
	}
	creq := tikvrpc.NewRequest(tikvrpc.CmdCommit, &kvrpcpb.CommitRequest{
		StartVersion: pw.GetStartVersion(), Keys: keys, CommitVersion: commitTS,
	}, req.Context)
	c.rpcs.addKeys(len(keys))
	cresp, err := c.Client.SendRequest(ctx, addr, creq, timeout)
	if err != nil {
		return resp, nil
	}
	if cr, ok := cresp.Resp.(*kvrpcpb.CommitResponse); !ok || cr.GetRegionError() != nil || cr.GetError() != nil {
		return resp, nil
	}
	presp.OnePcCommitTs = commitTS
	return resp, nil
}
