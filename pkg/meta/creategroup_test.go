package meta

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// holdGroup makes the next createGroupsRunning creates in dir run alone and
// wait on its stripe until the returned release is called, so that the
// creates started meanwhile queue up and then run as one group.
func holdGroup(t *testing.T, c *Client, dir Ino) (release func(), queued func() int) {
	stripe := &c.stripes[uint64(dir)%uint64(len(c.stripes))]
	stripe.Lock()
	queued = func() int {
		c.groups.mu.Lock()
		defer c.groups.mu.Unlock()
		if c.groups.running < createGroupsRunning {
			return -1
		}
		return len(c.groups.queue)
	}
	return stripe.Unlock, queued
}

type createResult struct {
	name string
	dir  bool
	err  error
}

// Creates queued behind a running one share a transaction; each is checked
// on its own: a name that exists, or that an earlier create of the group
// takes, is refused with EEXIST while the others commit, directories count
// in their parent's links.
func TestCreateGroup(t *testing.T) {
	ec := tikvCaseRegions(false) // one region: one prewrite per transaction
	ctx := context.Background()
	c := ec.newVolume(t)(t)
	d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	_, _, err = c.Mknod(ctx, d, "exists", 0o644, 0, 0, 0)
	ok(t, err)

	release, queued := holdGroup(t, c, d)
	var wg sync.WaitGroup
	results := make(chan createResult, 32)
	start := func(name string, dir bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if dir {
				_, _, err = c.Mkdir(ctx, d, name, 0o755, 0, 0)
			} else {
				_, _, err = c.Mknod(ctx, d, name, 0o644, 0, 0, 0)
			}
			results <- createResult{name, dir, err}
		}()
	}
	for i := range createGroupsRunning { // run alone, waiting on the stripe
		start(fmt.Sprintf("first%d", i), false)
	}
	waitFor(t, "the first creates to run", func() bool { return queued() == 0 })
	names := []string{"a0", "a1", "a2", "exists", "twice", "twice"}
	for _, n := range names {
		start(n, false)
	}
	start("sub0", true)
	start("sub1", true)
	want := len(names) + 2
	waitFor(t, "the creates to queue", func() bool { return queued() == want })
	before := ec.rpcs.Load().Snapshot()["Prewrite"]
	release()
	wg.Wait()
	close(results)
	if n := ec.rpcs.Load().Snapshot()["Prewrite"] - before; n != createGroupsRunning+1 {
		t.Errorf("%d prewrites for %d lone creates and the group, want %d", n, createGroupsRunning, createGroupsRunning+1)
	}

	created := map[string]int{}
	for r := range results {
		switch {
		case r.err == nil:
			created[r.name]++
		case r.name == "exists" || r.name == "twice":
			wantErrno(t, r.err, syscall.EEXIST)
		default:
			t.Fatalf("create %q: %v", r.name, r.err)
		}
	}
	wantNames := []string{"a0", "a1", "a2", "exists", "sub0", "sub1", "twice"}
	for i := range createGroupsRunning {
		wantNames = append(wantNames, fmt.Sprintf("first%d", i))
	}
	sort.Strings(wantNames)
	for _, n := range wantNames {
		if n == "exists" {
			continue
		}
		if created[n] != 1 {
			t.Fatalf("%q created %d times, want once (created: %v)", n, created[n], created)
		}
	}
	if created["exists"] != 0 {
		t.Fatalf("the existing name was created again")
	}
	a := must[Attr](t)(c.GetAttr(ctx, d))
	if a.Nlink != 4 {
		t.Fatalf("directory with 2 subdirectories has nlink %d, want 4", a.Nlink)
	}
	es := must[[]Entry](t)(c.Readdir(ctx, d, "", 100))
	var got []string
	for _, e := range es {
		got = append(got, e.Name)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(wantNames) {
		t.Fatalf("directory holds %v", got)
	}
	if n := must[StatFS](t)(c.StatFS(ctx)).UsedInodes; n != uint64(2+len(wantNames)) { // root, d, the entries
		t.Fatalf("statfs counts %d inodes, want %d", n, 2+len(wantNames))
	}
	checkClean(t, c)
}

// failReads makes, while on, the reads of groups (more than one create's
// keys) in Updates fail.
type failReads struct {
	kv.Engine
	on atomic.Bool
}

type failReadsTx struct {
	kv.Tx
	e *failReads
}

func (e *failReads) Update(ctx context.Context, fn func(kv.Tx) error) error {
	return e.Engine.Update(ctx, func(tx kv.Tx) error { return fn(failReadsTx{tx, e}) })
}

func (t failReadsTx) BatchGet(keys [][]byte) ([][]byte, error) {
	if t.e.on.Load() && len(keys) > 2 {
		return nil, errors.New("read failed (test)")
	}
	return t.Tx.BatchGet(keys)
}

// A group whose transaction fails before committing (a read failed) fails
// the create that ran it; the others are then made alone.
func TestCreateGroupReadFails(t *testing.T) {
	ec := tikvCase()
	ctx := context.Background()
	base := ec.newVolume(t)(t)
	fe := &failReads{Engine: base.Engine()}
	c := NewClient(fe, testOptions())
	t.Cleanup(func() { c.Close(ctx) })
	d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)

	release, queued := holdGroup(t, c, d)
	var wg sync.WaitGroup
	results := make(chan createResult, 16)
	start := func(name string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := c.Mknod(ctx, d, name, 0o644, 0, 0, 0)
			results <- createResult{name: name, err: err}
		}()
	}
	for i := range createGroupsRunning {
		start(fmt.Sprintf("first%d", i))
	}
	waitFor(t, "the first creates to run", func() bool { return queued() == 0 })
	for i := range 4 {
		start(fmt.Sprintf("f%d", i))
	}
	waitFor(t, "the creates to queue", func() bool { return queued() == 4 })
	// The lone creates' reads work, the group's fails.
	fe.on.Store(true)
	release()
	wg.Wait()
	close(results)
	failed := 0
	for r := range results {
		if r.err != nil {
			failed++
			continue
		}
		_, _, err := c.Lookup(ctx, d, r.name)
		ok(t, err)
	}
	if failed != 1 {
		t.Fatalf("%d creates failed, want 1 (the group's runner)", failed)
	}
	checkClean(t, c)
}

// gateEngine holds, once armed, the next Update between its reads and its
// commit until gate is closed (reached is closed when it gets there).
type gateEngine struct {
	kv.Engine
	armed   atomic.Bool
	reached chan struct{}
	gate    chan struct{}
}

func (e *gateEngine) Update(ctx context.Context, fn func(kv.Tx) error) error {
	if !e.armed.CompareAndSwap(true, false) {
		return e.Engine.Update(ctx, fn)
	}
	return e.Engine.Update(ctx, func(tx kv.Tx) error {
		err := fn(tx)
		close(e.reached)
		<-e.gate
		return err
	})
}

// A create committed while an rmdir of its directory (begun before it)
// commits is confirmed by the next group's transaction, which finds the
// directory removed: the create fails with ENOENT and leaves no orphan.
func TestCreateGroupConfirmsRemoved(t *testing.T) {
	ec := tikvCase()
	ctx := context.Background()
	vol := ec.newVolume(t)
	base := vol(t)
	ge := &gateEngine{Engine: base.Engine(), reached: make(chan struct{}), gate: make(chan struct{})}
	a := NewClient(ge, testOptions())
	t.Cleanup(func() { a.Close(ctx) })
	b := vol(t)
	b.opt.DirMtimeSkip = time.Hour // creates leave the directories' times: they confirm
	r, _, err := a.Mkdir(ctx, RootIno, "r", 0o755, 0, 0)
	ok(t, err)
	d, _, err := a.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)

	// The rmdir reads r empty and waits to commit.
	ge.armed.Store(true)
	rmdirErr := make(chan error, 1)
	go func() { rmdirErr <- a.Rmdir(ctx, RootIno, "r") }()
	<-ge.reached

	releaseR, queued := holdGroup(t, b, r)
	releaseD, _ := holdGroup(t, b, d)
	results := make(chan createResult, 2)
	go func() {
		_, _, err := b.Mknod(ctx, r, "w", 0o644, 0, 0, 0)
		results <- createResult{name: "w", err: err}
	}()
	waitFor(t, "the create in r to run", func() bool { return queued() == 0 })
	go func() {
		_, _, err := b.Mknod(ctx, d, "z", 0o644, 0, 0, 0)
		results <- createResult{name: "z", err: err}
	}()
	waitFor(t, "the create in d to queue", func() bool { return queued() == 1 })
	// w commits; its confirmation goes to z's group, which waits on d.
	releaseR()
	waitFor(t, "w to commit and hand over", func() bool {
		_, _, err := base.Lookup(ctx, r, "w")
		return err == nil && queued() == 0
	})
	close(ge.gate)
	ok(t, <-rmdirErr)
	releaseD()
	for range 2 {
		res := <-results
		if res.name == "w" {
			wantErrno(t, res.err, syscall.ENOENT)
		} else {
			ok(t, res.err)
		}
	}
	checkClean(t, base)
}

// A queue that fills a group runs at once beside the running group instead
// of waiting for it.
func TestCreateGroupFullRunsAtOnce(t *testing.T) {
	ec := tikvCaseRegions(false) // one region: one prewrite per transaction
	ctx := context.Background()
	c := ec.newVolume(t)(t)
	d, _, err := c.Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
	ok(t, err)
	release, queued := holdGroup(t, c, d)
	running := func() int {
		c.groups.mu.Lock()
		defer c.groups.mu.Unlock()
		return c.groups.running
	}
	var wg sync.WaitGroup
	errs := make(chan error, maxCreateGroup+createGroupsRunning)
	start := func(name string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := c.Mknod(ctx, d, name, 0o644, 0, 0, 0)
			errs <- err
		}()
	}
	for i := range createGroupsRunning {
		start(fmt.Sprintf("first%d", i))
	}
	waitFor(t, "the first creates to run", func() bool { return queued() == 0 })
	for i := range maxCreateGroup - 1 {
		start(fmt.Sprintf("f%d", i))
	}
	waitFor(t, "the creates to queue", func() bool { return queued() == maxCreateGroup-1 })
	if n := running(); n != createGroupsRunning {
		t.Fatalf("%d groups running before the queue is full, want %d", n, createGroupsRunning)
	}
	start("last")
	waitFor(t, "the full group to start", func() bool { return running() == createGroupsRunning+1 && queued() == 0 })
	before := ec.rpcs.Load().Snapshot()["Prewrite"]
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		ok(t, err)
	}
	if n := ec.rpcs.Load().Snapshot()["Prewrite"] - before; n != createGroupsRunning+1 {
		t.Errorf("%d prewrites, want %d", n, createGroupsRunning+1)
	}
	if n := len(must[[]Entry](t)(c.Readdir(ctx, d, "", 100))); n != maxCreateGroup+createGroupsRunning {
		t.Fatalf("directory holds %d entries, want %d", n, maxCreateGroup+createGroupsRunning)
	}
	if n := running(); n != 0 {
		t.Fatalf("%d groups running after all creates returned", n)
	}
	checkClean(t, c)
}
