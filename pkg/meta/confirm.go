package meta

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// dirConfirms gathers the reads by which creates confirm, after committing,
// that their directory still exists (finishCreate), so that concurrent
// creates of this client share one read: one transaction and one request
// for the lot instead of one each.
//
// A read confirms every create that queued before it began: each queued
// after its own commit, so the read's snapshot is later than all of them,
// which is all a confirmation needs (see touchDir). One read runs at a time;
// the creates that queue meanwhile wait for it to end, and the first of them
// then reads for all that queued. A lone create reads at once, as before.
type dirConfirms struct {
	mu    sync.Mutex
	queue []*dirConfirm
	busy  bool // a read is running; its reader hands over when done
}

type dirConfirm struct {
	dir  Ino
	done chan struct{} // closed with the answer, or to make it the reader
	lead bool          // read for the queue
	// The answer: whether dir exists and has links.
	alive bool
	err   error
}

// dirAlive reports whether directory dir exists (and has links) at a
// snapshot taken after the call began.
func (c *Client) dirAlive(ctx context.Context, dir Ino) (bool, error) {
	r := &dirConfirm{dir: dir, done: make(chan struct{})}
	q := &c.confirms
	q.mu.Lock()
	q.queue = append(q.queue, r)
	lead := !q.busy
	q.busy = true
	q.mu.Unlock()
	if !lead {
		<-r.done
		if !r.lead {
			if r.err != nil {
				// The reader's read failed (its context may have ended):
				// read alone, under this caller's context.
				alive, err := c.readDirsAlive(ctx, []Ino{dir})
				return alive[dir], err
			}
			return r.alive, nil
		}
	}
	q.mu.Lock()
	batch := q.queue
	q.queue = nil
	q.mu.Unlock()
	dirs := make([]Ino, 0, len(batch))
	for _, o := range batch {
		dirs = append(dirs, o.dir)
	}
	alive, err := c.readDirsAlive(ctx, dirs)
	for _, o := range batch {
		if o != r {
			o.alive, o.err = alive[o.dir], err
			close(o.done)
		}
	}
	q.mu.Lock()
	if len(q.queue) > 0 {
		next := q.queue[0]
		next.lead = true
		close(next.done)
	} else {
		q.busy = false
	}
	q.mu.Unlock()
	return alive[dir], err
}

// readDirsAlive reads which of dirs exist with links, in one transaction.
func (c *Client) readDirsAlive(ctx context.Context, dirs []Ino) (map[Ino]bool, error) {
	alive := make(map[Ino]bool, len(dirs))
	keys := make([][]byte, 0, len(dirs))
	var uniq []Ino
	for _, d := range dirs {
		if _, dup := alive[d]; !dup {
			alive[d] = false
			uniq = append(uniq, d)
			keys = append(keys, attrKey(d))
		}
	}
	err := c.view(ctx, func(tx kv.Tx) error {
		vals, err := tx.BatchGet(keys)
		if err != nil {
			return err
		}
		for i, v := range vals {
			if v == nil {
				continue
			}
			var a Attr
			if err := decodeAttr(v, &a); err != nil {
				return fmt.Errorf("inode %d: %v: %w", uniq[i], err, syscall.EIO)
			}
			alive[uniq[i]] = a.Nlink > 0
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("confirm directories: %w", err)
	}
	return alive, nil
}
