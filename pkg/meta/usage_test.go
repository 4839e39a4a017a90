package meta

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"podfs.io/podfs/pkg/meta/kv"
)

// Creates count in usage slots; the counters stay exact before and after
// folds, and a fold leaves only the current slots.
func TestUsageSlots(t *testing.T) {
	for _, ec := range allEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			c := ec.newVolume(t)(t)
			// Two directories on different stripes, more creates than a
			// slot takes, and some unlinks (counted in shards).
			var dirs []Ino
			for i := range 2 {
				d, _, err := c.Mkdir(ctx, RootIno, fmt.Sprintf("d%d", i), 0o755, 0, 0)
				ok(t, err)
				dirs = append(dirs, d)
			}
			const files = 5*slotWrites + 3
			for _, d := range dirs {
				for i := range files {
					_, _, err := c.Mknod(ctx, d, fmt.Sprintf("f%d", i), 0o644, 0, 0, 0)
					ok(t, err)
				}
				for i := range 5 {
					ok(t, c.Unlink(ctx, d, fmt.Sprintf("f%d", i)))
				}
			}
			want := uint64(2+2*(files-5)) + 1 // the root counts too
			statInodes := func() uint64 { return must[StatFS](t)(c.StatFS(ctx)).UsedInodes }
			if n := statInodes(); n != want {
				t.Fatalf("statfs counts %d inodes before the fold, want %d", n, want)
			}
			c.slots.mu.Lock()
			var used uint32
			for _, n := range c.slots.n {
				used += n
			}
			c.slots.mu.Unlock()
			if used < 10 {
				t.Fatalf("creates filled %d usage slots, want 10 or more", used)
			}
			checkClean(t, c)
			ok(t, c.foldUsage(ctx, false))
			if n := countSlots(t, c); n > 3 { // the current slots of the stripes used
				t.Fatalf("%d usage slots left after the fold", n)
			}
			if n := statInodes(); n != want {
				t.Fatalf("statfs counts %d inodes after the fold, want %d", n, want)
			}
			checkClean(t, c)
			ok(t, c.foldUsage(ctx, true))
			if n := countSlots(t, c); n != 0 {
				t.Fatalf("%d usage slots left after folding all", n)
			}
			checkClean(t, c)
		})
	}
}

func countSlots(t *testing.T, c *Client) int {
	n := 0
	ok(t, c.view(context.Background(), func(tx kv.Tx) error {
		return tx.Scan([]byte{pUsage}, []byte{pUsage + 1}, 0, func(k, _ []byte) bool {
			if len(k) == 14 {
				n++
			}
			return true
		})
	}))
	return n
}

// unsureEngine makes the next Update fail after its transaction function
// ran: lie commits it and still reports an error (an outcome the caller
// cannot know, as when a commit's answer is lost), drop rolls it back.
type unsureEngine struct {
	kv.Engine
	lie, drop atomic.Bool
}

func (e *unsureEngine) Update(ctx context.Context, fn func(kv.Tx) error) error {
	if e.drop.CompareAndSwap(true, false) {
		_ = e.Engine.Update(ctx, func(tx kv.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return errors.New("dropped before commit (test)")
		})
		return errors.New("commit outcome unknown (test)")
	}
	err := e.Engine.Update(ctx, fn)
	if err == nil && e.lie.CompareAndSwap(true, false) {
		return errors.New("commit outcome unknown (test)")
	}
	return err
}

// Creates write their usage slot without reading it where a client's
// transactions on a stripe run one at a time; a create whose outcome the
// client did not learn (committed or not) must leave the counters exact:
// the stripe's next create moves to a fresh slot.
func TestUsageSlotUnsureCommit(t *testing.T) {
	for _, ec := range allEngines() {
		if !ec.multi {
			continue // bolt reads its slots (serial engine)
		}
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			base := ec.newVolume(t)(t)
			ue := &unsureEngine{Engine: base.Engine()}
			c := NewClient(ue, testOptions())
			t.Cleanup(func() { c.Close(ctx) })
			d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
			ok(t, err)
			n := 0
			create := func() {
				t.Helper()
				_, _, err := c.Mknod(ctx, d, fmt.Sprintf("f%d", n), 0o644, 0, 0, 0)
				ok(t, err)
				n++
			}
			create()
			create()
			ue.lie.Store(true)
			if _, _, err := c.Mknod(ctx, d, "committed", 0o644, 0, 0, 0); err == nil {
				t.Fatal("the create whose commit was reported failed succeeded")
			}
			create()
			ue.drop.Store(true)
			if _, _, err := c.Mknod(ctx, d, "dropped", 0o644, 0, 0, 0); err == nil {
				t.Fatal("the create that was not committed succeeded")
			}
			create()
			for range slotWrites {
				create()
			}
			// root, d, the files made and "committed".
			want := uint64(2 + n + 1)
			if got := must[StatFS](t)(c.StatFS(ctx)).UsedInodes; got != want {
				t.Fatalf("statfs counts %d inodes, want %d", got, want)
			}
			checkClean(t, c)
			ok(t, c.foldUsage(ctx, true))
			if got := must[StatFS](t)(c.StatFS(ctx)).UsedInodes; got != want {
				t.Fatalf("statfs counts %d inodes after folding, want %d", got, want)
			}
			checkClean(t, c)
		})
	}
}
