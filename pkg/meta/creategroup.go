package meta

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// Creates that run at the same time in one client share a transaction on
// TiKV (snapshot isolation, where every transaction costs a read request
// and a commit request whatever its size): up to createGroupsRunning
// transactions of creates run at once, the creates arriving meanwhile
// queue, and a transaction done hands the queue (up to maxCreateGroup) to
// its first create, which runs them as one transaction; a queue that
// reaches maxCreateGroup runs at once, beside the others. Each create in
// it reads and writes exactly what it would alone and is refused (EEXIST,
// ENOENT, ENOTDIR) on its own; the others still commit. A lost race with
// another client retries the whole group, every create checked again. A
// lone create runs alone, as before: nothing waits for company.
//
// Serial and serializable engines (bolt, etcd) run every create alone: bolt
// groups commits itself, and on etcd every key a group read would be
// compared at commit, so one create's race would retry all.

// maxCreateGroup bounds the creates one transaction runs.
const maxCreateGroup = 16

// createGroupsRunning is how many groups of a client run at once: a create
// waits for company only while that many are running. One gathers the
// most: with two, on the tikv mock, 8 goroutines' creates averaged 2.4
// requests each instead of 1.1, and ran slower.
const createGroupsRunning = 1

type createGroups struct {
	mu    sync.Mutex
	queue []*createOp // non-empty only while createGroupsRunning or more run
	// running counts the groups running; a runner done hands the queue's
	// first maxCreateGroup creates to the first of them, if any.
	running int
}

// createOp is one create, alone or in a group.
type createOp struct {
	parent Ino
	name   string
	base   Attr // as asked; an attempt fills in times and set-group-ID
	target string
	openBy uint64
	ino    Ino
	chain  []Ino // quotas above parent (quota.go)
	shard  uint8 // the quota usage shard this attempt charges

	// Outcome of the last attempt.
	a       Attr
	err     error // this create's own refusal
	skipped bool  // left its directory's times alone: confirm (touchDir)
	// The directory's state read after the commit (by the next group's
	// transaction, or by its own group's runner when none follows);
	// confirmDone, when set, is closed once the read is done or failed.
	confirmDone chan struct{}
	confirmed   bool
	alive       bool

	done  chan struct{} // closed with the group's outcome, or to run a group
	lead  bool          // run group
	group []*createOp   // (lead) the creates to run, this one first
	// (lead) the previous group's creates whose directories this group's
	// transaction reads (it begins after they committed).
	confirm  []*createOp
	groupErr error // the group's transaction failed
	tried    bool  // ... at its commit (else before: run alone)
}

// runCreate creates op.
func (c *Client) runCreate(ctx context.Context, op *createOp) error {
	if c.serial || c.serializable {
		if _, err := c.createTxn(ctx, []*createOp{op}, nil); err != nil {
			return err
		}
		return c.finishCreate(ctx, op)
	}
	op.done = make(chan struct{})
	q := &c.groups
	q.mu.Lock()
	lead := q.running < createGroupsRunning
	if lead {
		q.running++
		op.group = []*createOp{op}
	} else if q.queue = append(q.queue, op); len(q.queue) >= maxCreateGroup {
		// A full group need not wait: it runs beside the others, so a
		// client's creates are never capped at one group per transaction
		// time.
		q.running++
		q.handOver(nil)
	}
	q.mu.Unlock()
	if !lead {
		<-op.done
		if !op.lead {
			switch {
			case op.groupErr == nil:
				return c.finishCreate(ctx, op)
			case op.tried:
				return op.groupErr
			}
			// The group failed before committing (a read failed, or its
			// runner's context ended): try alone, under this context.
			if _, err := c.createTxn(ctx, []*createOp{op}, nil); err != nil {
				return err
			}
			return c.finishCreate(ctx, op)
		}
	}
	group := op.group // op is first
	gctx := ctx
	if len(group) > 1 {
		// The others' creates must not fail because this caller gave up.
		gctx = context.WithoutCancel(ctx)
	}
	tried, err := c.createTxn(gctx, group, op.confirm)
	// The creates that must confirm their directory (see touchDir).
	var confirm []*createOp
	if err == nil && !c.serializable {
		for _, o := range group {
			if o.err == nil && o.skipped {
				o.confirmDone = make(chan struct{})
				confirm = append(confirm, o)
			}
		}
	}
	q.mu.Lock()
	if len(q.queue) > 0 {
		// Hand the next group to the first create queued; its transaction
		// confirms this group's directories.
		q.handOver(confirm)
		confirm = nil
	} else {
		q.running--
	}
	q.mu.Unlock()
	for _, o := range group[1:] {
		o.groupErr, o.tried = err, tried
		close(o.done)
	}
	if len(confirm) > 0 {
		c.confirmGroup(gctx, confirm)
	}
	if err != nil {
		return err
	}
	return c.finishCreate(ctx, op)
}

// handOver makes the first maxCreateGroup queued creates a group, run by
// the first of them, whose transaction also confirms the directories of
// confirm (q.mu held).
func (q *createGroups) handOver(confirm []*createOp) {
	n := min(len(q.queue), maxCreateGroup)
	next := append([]*createOp(nil), q.queue[:n]...)
	q.queue = append([]*createOp(nil), q.queue[n:]...)
	next[0].lead, next[0].group, next[0].confirm = true, next, confirm
	close(next[0].done)
}

// createTxn runs ops in one transaction holding their directories' stripes,
// and reads the directories of confirm, creates committed before it began
// (closing their confirmDone; failed reads leave them unconfirmed). tried
// reports whether the transaction function completed, so that an error is
// the commit's (its outcome maybe unknown).
func (c *Client) createTxn(ctx context.Context, ops, confirm []*createOp) (tried bool, err error) {
	inos := make([]Ino, len(ops))
	for i, op := range ops {
		inos[i] = op.parent
	}
	var slot *slotWrite
	defer func() {
		if confirm != nil { // not read
			for _, o := range confirm {
				close(o.confirmDone)
			}
		}
	}()
	err = c.txnOnThen(ctx, inos, func(tx kv.Tx) error {
		tried = false
		slot = c.usageSlotOn(ops[0].parent)
		seen := make(map[string]bool, 2*len(ops))
		keys := make([][]byte, 0, 2*len(ops)+1)
		for _, op := range ops {
			for _, k := range [][]byte{attrKey(op.parent), entryKey(op.parent, op.name)} {
				if !seen[string(k)] {
					seen[string(k)] = true
					keys = append(keys, k)
				}
			}
		}
		if !slot.blind {
			keys = append(keys, slot.key)
		}
		for _, op := range ops {
			op.shard = c.quotaShard()
			keys = quotaKeys(keys, op.chain, op.shard)
		}
		var dirs []int // index in keys of confirm[i]'s directory
		for _, o := range confirm {
			k := attrKey(o.parent)
			if !seen[string(k)] {
				seen[string(k)] = true
				keys = append(keys, k)
			}
			dirs = append(dirs, slices.IndexFunc(keys, func(x []byte) bool { return string(x) == string(k) }))
		}
		vals, err := tx.BatchGet(keys)
		if err != nil {
			return err
		}
		for i, o := range confirm {
			var a Attr
			if v := vals[dirs[i]]; v == nil {
				o.confirmed = true
			} else if decodeAttr(v, &a) == nil {
				o.confirmed, o.alive = true, a.Nlink > 0
			}
			close(o.confirmDone)
		}
		confirm = nil
		made := 0
		for _, op := range ops {
			if err := c.applyCreate(tx, op); err != nil {
				return err
			}
			if op.err == nil {
				made++
			}
		}
		if err := slot.add(c, tx, 0, int64(made)); err != nil {
			return err
		}
		tried = true
		return nil
	}, func(err error) {
		if slot != nil {
			slot.done(c, err)
		}
	})
	return tried, err
}

// applyCreate makes op in tx. A returned error is the transaction's (a
// failed read); op.err is the create's own refusal, which writes nothing.
func (c *Client) applyCreate(tx kv.Tx, op *createOp) error {
	op.err, op.skipped, op.confirmed = nil, false, false
	pa, err := getDir(tx, op.parent)
	if err == nil {
		var old Ino
		if old, _, err = getEntry(tx, op.parent, op.name); err == nil && old != 0 {
			err = syscall.EEXIST
		}
	}
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			op.err = err
			return nil
		}
		return err
	}
	if err := c.chargeTxAt(tx, op.chain, op.shard, 0, 1); err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			op.err = err
			return nil
		}
		return err
	}
	a := op.base
	t := now()
	a.Atime, a.Mtime, a.Ctime = t, t, t
	if pa.Mode&syscall.S_ISGID != 0 {
		a.Gid = pa.Gid
		if isDir(a.Mode) {
			a.Mode |= syscall.S_ISGID
		}
	}
	tx.Set(entryKey(op.parent, op.name), encodeEntry(op.ino, a.Mode))
	putAttr(tx, op.ino, &a)
	if op.target != "" {
		tx.Set(symlinkKey(op.ino), []byte(op.target))
	}
	if op.openBy != 0 && !c.localOpens {
		tx.Set(openKey(op.ino, op.openBy), present)
		tx.Set(sessOpenKey(op.openBy, op.ino), present)
	}
	if isDir(a.Mode) {
		pa.Nlink++
	}
	op.skipped = c.touchDir(tx, op.parent, &pa, t, isDir(a.Mode))
	op.a = a
	return nil
}

// confirmGroup reads, after they committed, the directories of ops (one
// read for all: it begins after every one of them committed) and closes
// their confirmDone. A failed read leaves each to read alone.
func (c *Client) confirmGroup(ctx context.Context, ops []*createOp) {
	dirs := make([]Ino, len(ops))
	for i, op := range ops {
		dirs[i] = op.parent
	}
	alive, err := c.readDirsAlive(ctx, dirs)
	for _, op := range ops {
		if err == nil {
			op.confirmed, op.alive = true, alive[op.parent]
		}
		close(op.confirmDone)
	}
}

// finishCreate completes a committed create: its refusal, or the check
// that its directory was not removed meanwhile (see touchDir).
func (c *Client) finishCreate(ctx context.Context, op *createOp) error {
	if op.err != nil {
		return op.err
	}
	if !op.skipped || c.serializable {
		return nil
	}
	if op.confirmDone != nil {
		<-op.confirmDone
	}
	alive := op.alive
	if !op.confirmed {
		var err error
		if alive, err = c.dirAlive(ctx, op.parent); err != nil {
			return err
		}
	}
	if alive {
		return nil
	}
	if err := c.dropOrphan(ctx, op.parent, op.name, op.ino); err != nil {
		return err
	}
	if op.openBy != 0 {
		if err := c.closeFile(ctx, op.openBy, op.ino); err != nil {
			return err
		}
	}
	return fmt.Errorf("directory %d was removed: %w", op.parent, syscall.ENOENT)
}
