package meta

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// Creates that run at the same time in one client share a transaction on
// TiKV (snapshot isolation, where every transaction costs a read request
// and a commit request whatever its size): up to createGroupsRunning
// transactions of creates run at once, the creates arriving meanwhile
// queue, and a transaction done hands the queue (up to maxCreateGroup) to
// its first create, which runs them as one transaction. Each create in
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
	queue []*createOp // non-empty only while createGroupsRunning run
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

	// Outcome of the last attempt.
	a       Attr
	err     error // this create's own refusal
	skipped bool  // left its directory's times alone: confirm (touchDir)
	// The directory's state read after the commit by the group's runner.
	confirmed bool
	alive     bool

	done     chan struct{} // closed with the group's outcome, or to run a group
	lead     bool          // run group
	group    []*createOp   // (lead) the creates to run, this one first
	groupErr error         // the group's transaction failed
	tried    bool          // ... at its commit (else before: run alone)
}

// runCreate creates op.
func (c *Client) runCreate(ctx context.Context, op *createOp) error {
	if c.serial || c.serializable {
		if _, err := c.createTxn(ctx, []*createOp{op}); err != nil {
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
	} else {
		q.queue = append(q.queue, op)
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
			if _, err := c.createTxn(ctx, []*createOp{op}); err != nil {
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
	tried, err := c.createTxn(gctx, group)
	if err == nil {
		c.confirmGroup(gctx, group)
	}
	for _, o := range group[1:] {
		o.groupErr, o.tried = err, tried
		close(o.done)
	}
	q.mu.Lock()
	if len(q.queue) > 0 {
		// Hand the next group to the first create queued.
		n := min(len(q.queue), maxCreateGroup)
		next := append([]*createOp(nil), q.queue[:n]...)
		q.queue = append([]*createOp(nil), q.queue[n:]...)
		next[0].lead, next[0].group = true, next
		close(next[0].done)
	} else {
		q.running--
	}
	q.mu.Unlock()
	if err != nil {
		return err
	}
	return c.finishCreate(ctx, op)
}

// createTxn runs ops in one transaction holding their directories' stripes.
// tried reports whether the transaction function completed, so that an
// error is the commit's (its outcome maybe unknown).
func (c *Client) createTxn(ctx context.Context, ops []*createOp) (tried bool, err error) {
	inos := make([]Ino, len(ops))
	for i, op := range ops {
		inos[i] = op.parent
	}
	var slot *slotWrite
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
		if err := prefetch(tx, keys...); err != nil {
			return err
		}
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

// confirmGroup reads, after the group committed, the directories of its
// creates that must confirm theirs (one read for all: it began after every
// one of them committed). A failed read leaves each to read alone.
func (c *Client) confirmGroup(ctx context.Context, group []*createOp) {
	if c.serializable {
		return
	}
	var dirs []Ino
	for _, op := range group {
		if op.err == nil && op.skipped {
			dirs = append(dirs, op.parent)
		}
	}
	if len(dirs) == 0 {
		return
	}
	alive, err := c.readDirsAlive(ctx, dirs)
	if err != nil {
		return
	}
	for _, op := range group {
		if op.err == nil && op.skipped {
			op.confirmed, op.alive = true, alive[op.parent]
		}
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
