package meta

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
	"podfs.io/podfs/pkg/meta/kv/tikvmock"
)

// engineCase builds fresh clients on one engine kind. newVolume returns a
// constructor of clients that share one (formatted) volume; engines that
// serve only one process (bolt) return a single client.
type engineCase struct {
	name      string
	multi     bool // several clients may share a volume
	newVolume func(t testing.TB) func(t testing.TB) *Client
	// rpcs, when set, holds the request counts of the last volume made
	// (the tikv mock's), for benchmarks to report.
	rpcs *atomic.Pointer[tikvmock.RPCs]
}

func testOptions() Options {
	return Options{
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Heartbeat:      100 * time.Millisecond,
		SessionTimeout: 2 * time.Second,
		NoSync:         true,
	}
}

func boltCase() engineCase {
	return engineCase{name: "bolt", newVolume: func(t testing.TB) func(testing.TB) *Client {
		path := filepath.Join(t.TempDir(), "meta.db")
		used := false
		return func(t testing.TB) *Client {
			if used {
				t.Fatalf("bolt serves one client per file")
			}
			used = true
			e, err := kv.OpenBolt(path, kv.BoltOptions{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			return startClient(t, e)
		}
	}}
}

// startClient wraps an engine in a client closed at the end of the test and
// formats the volume if needed.
func startClient(t testing.TB, e kv.Engine) *Client {
	c := NewClient(e, testOptions())
	t.Cleanup(func() { c.Close(context.Background()) })
	ctx := context.Background()
	if err := c.Init(ctx, Format{Name: "test", Storage: "file:///tmp/x"}); err != nil {
		t.Fatalf("init: %v", err)
	}
	if _, err := c.Load(ctx); err != nil {
		t.Fatalf("load: %v", err)
	}
	return c
}

func allEngines() []engineCase { return []engineCase{boltCase(), etcdCase(), tikvCase()} }
