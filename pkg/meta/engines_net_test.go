package meta

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta/kv"
	"podfs.io/podfs/pkg/meta/kv/tikvmock"
)

var volSeq atomic.Int64

// etcdCase: every volume gets a fresh name on one etcd server per test.
func etcdCase() engineCase {
	return engineCase{name: "etcd", multi: true, newVolume: func(t testing.TB) func(testing.TB) *Client {
		ep := testenv.StartEtcd(t)
		vol := fmt.Sprintf("v%d", volSeq.Add(1))
		return func(t testing.TB) *Client {
			e, err := kv.OpenEtcd(context.Background(), kv.EtcdConfig{Endpoints: []string{ep}, Volume: vol, Prefix: keyPrefix(vol), Timeout: testOptions().ConnectTimeout + 5e9})
			if err != nil {
				t.Fatal(err)
			}
			return startClient(t, e)
		}
	}}
}

// tikvCase: a mock cluster split into several regions inside the volume's
// key range, so transactions span regions.
func tikvCase() engineCase { return tikvCaseRegions(true) }

// tikvCaseRegions with split=false keeps one region. Benchmarks use it: a
// transaction spanning regions commits its other regions' keys in the
// background, and a read meeting such a lock makes the mock resolve it by
// scanning the whole region (real TiKV keeps locks apart), which measures the
// mock, not podfs.
func tikvCaseRegions(split bool) engineCase {
	rpcs := new(atomic.Pointer[tikvmock.RPCs])
	return engineCase{name: "tikv", multi: true, rpcs: rpcs, newVolume: func(t testing.TB) func(testing.TB) *Client {
		vol := fmt.Sprintf("v%d", volSeq.Add(1))
		p := keyPrefix(vol)
		var splits [][]byte
		for _, c := range []byte{pAttr, pEntry, pChunk, pPending, pUsage} {
			if split {
				splits = append(splits, append(append([]byte(nil), p...), c))
			}
		}
		cli, counts := tikvmock.NewCounted(t, splits...)
		rpcs.Store(counts)
		return func(t testing.TB) *Client {
			return startClient(t, kv.NewTiKV(cli, "tikv-mock/"+vol, p))
		}
	}}
}
