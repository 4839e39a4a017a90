package meta

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// Closing a session while its heartbeat sweeps for stale sessions returns:
// the sweep once waited for the lock that Close held while waiting for the
// heartbeat to stop.
func TestCloseSessionDuringSweep(t *testing.T) {
	e, err := kv.OpenBolt(filepath.Join(t.TempDir(), "meta.db"), kv.BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	opt := testOptions()
	opt.Heartbeat, opt.SessionTimeout = time.Millisecond, 3*time.Millisecond // a sweep every few ms
	c := NewClient(e, opt)
	defer c.Close(context.Background())
	ctx := context.Background()
	if err := c.Init(ctx, Format{Name: "test", Storage: "file:///tmp/x"}); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := c.NewSession(ctx, "/mnt"); err != nil {
			t.Fatal(err)
		}
		// Close at varying points of the heartbeat's cycle.
		time.Sleep(time.Duration(i%7) * time.Millisecond)
		closed := make(chan error, 1)
		go func() { closed <- c.CloseSession(ctx) }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: CloseSession still blocked after 30 s (deadlock with the heartbeat)", i)
		}
	}
}
