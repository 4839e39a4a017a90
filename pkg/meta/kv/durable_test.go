package kv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openLazy(t *testing.T, opt BoltOptions) *Bolt {
	t.Helper()
	e, err := OpenBolt(filepath.Join(t.TempDir(), "meta.db"), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// With SyncDelay a commit is answered before the log is synced; Sync makes
// everything committed before it durable.
func TestBoltSyncOnDemand(t *testing.T) {
	e := openLazy(t, BoltOptions{SyncDelay: time.Hour})
	setKeys(t, e, 0, 50)
	l := &e.lazy
	if w, s := l.written.Load(), l.synced.Load(); w != 50 || s != 0 {
		t.Fatalf("after 50 commits: %d records written, %d synced; want 50 and 0 (nothing synced before asked)", w, s)
	}
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w, s := l.written.Load(), l.synced.Load(); s != w {
		t.Fatalf("after Sync: %d records written, %d synced", w, s)
	}
	// Nothing new: Sync returns at once, without a flush.
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Without Sync, the flusher makes a commit durable SyncDelay after it.
func TestBoltSyncDelayed(t *testing.T) {
	e := openLazy(t, BoltOptions{SyncDelay: 2 * time.Millisecond})
	setKeys(t, e, 0, 10)
	l := &e.lazy
	deadline := time.Now().Add(10 * time.Second)
	for l.synced.Load() < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("10 records written, %d synced 10 s later", l.synced.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// A segment the committer leaves is synced with it, so recovery never finds
// an earlier segment missing records.
func TestBoltSyncAtRotation(t *testing.T) {
	e := openLazy(t, BoltOptions{SyncDelay: time.Hour, CheckpointBytes: 8 << 10})
	setKeys(t, e, 0, 200)
	for deadline := time.Now().Add(10 * time.Second); e.ckptStarted.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint ran: the test needs the log to rotate")
		}
	}
	if l := &e.lazy; l.synced.Load() == 0 {
		t.Fatalf("%d records written, none synced across rotations", l.written.Load())
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := OpenBolt(e.path, BoltOptions{SyncDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if n := countKeys(t, e2, "k"); n != 200 {
		t.Fatalf("%d keys after reopen, want 200", n)
	}
}

// Commits and Syncs from many goroutines, then Close: every Sync returns,
// and a Sync after Close reports it.
func TestBoltSyncConcurrent(t *testing.T) {
	e := openLazy(t, BoltOptions{SyncDelay: 500 * time.Microsecond, CheckpointBytes: 16 << 10})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				if err := Txn(context.Background(), e, func(tx Tx) error {
					tx.Set(fmt.Appendf(nil, "g%d/%03d", g, i), []byte("v"))
					return nil
				}); err != nil {
					errs <- err
					return
				}
				if i%10 == g {
					if err := e.Sync(context.Background()); err != nil {
						errs <- err
						return
					}
					if w := e.lazy.written.Load(); e.lazy.synced.Load() == 0 && w > 0 {
						errs <- fmt.Errorf("Sync returned with nothing synced of %d records", w)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := countKeys(t, e, "g"); n != 800 {
		t.Fatalf("%d keys, want 800", n)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
}

// A crash image of a lazy engine: records synced before the crash survive
// a reboot; those only staged survive a crash of the process alone (same
// boot), never a reboot, where the page cache they lived in is gone.
func TestBoltStagedRecordsAfterReboot(t *testing.T) {
	const boot = "11111111-2222-3333-4444-555555555555"
	e := openLazy(t, BoltOptions{SyncDelay: time.Hour, bootID: boot})
	setKeys(t, e, 0, 30)
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	setKeys(t, e, 30, 50) // answered, staged, not synced
	image := copyFiles(t, e.path)

	for _, tc := range []struct {
		name, boot string
		want       int
	}{
		{"same boot", boot, 50},
		{"after reboot", "99999999-2222-3333-4444-555555555555", 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := copyFiles(t, image)
			e2, err := OpenBolt(path, BoltOptions{SyncDelay: time.Hour, bootID: tc.boot})
			if err != nil {
				t.Fatal(err)
			}
			defer e2.Close()
			if n := countKeys(t, e2, "k"); n != tc.want {
				t.Fatalf("%d keys after reopening, want %d", n, tc.want)
			}
		})
	}
}

// The barrier runs before records reach the log, only when there are any;
// when it fails, Sync says so, writes are refused, and the answered records
// stay in the staging file for the next open.
func TestBoltBarrier(t *testing.T) {
	var calls int
	fail := false
	e := openLazy(t, BoltOptions{SyncDelay: time.Hour, Barrier: func() error {
		calls++
		if fail {
			return errors.New("disk on fire")
		}
		return nil
	}})
	ctx := context.Background()
	setKeys(t, e, 0, 5)
	if err := e.Sync(ctx); err != nil || calls != 1 {
		t.Fatalf("Sync: %v after %d barrier calls, want nil after 1", err, calls)
	}
	if err := e.Sync(ctx); err != nil || calls != 1 {
		t.Fatalf("Sync with nothing new: %v after %d barrier calls, want nil after 1", err, calls)
	}
	setKeys(t, e, 5, 8)
	fail = true
	if err := e.Sync(ctx); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Sync with a failing barrier: %v", err)
	}
	if err := e.Update(ctx, func(tx Tx) error { tx.Set([]byte("x"), []byte("y")); return nil }); err == nil {
		t.Fatal("a write after a failed flush was accepted")
	}
	image := copyFiles(t, e.path) // as a crash would leave it
	e2, err := OpenBolt(image, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if n := countKeys(t, e2, "k"); n != 8 {
		t.Fatalf("%d keys after reopening, want all 8 answered", n)
	}
}
