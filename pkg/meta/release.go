package meta

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// releaseBatch is how many files' open markers one ReleaseMany transaction
// drops: a few operations each, well under etcd's default cap of 128
// operations per transaction for files that stay; a batch that fails (a
// file's last close removing a big file, a conflict given up on) is retried
// one file per transaction.
const releaseBatch = 16

// ReleaseMany implements Meta.
func (c *Client) ReleaseMany(ctx context.Context, inos []Ino) error {
	counts := map[Ino]int{}
	for _, ino := range inos {
		counts[ino]++
	}
	keys := make([]Ino, 0, len(counts))
	for ino := range counts {
		keys = append(keys, ino)
	}
	// Sorted: two callers holding several files' locks take them in the
	// same order (Open, Create and Release hold one at a time).
	slices.Sort(keys)
	type held struct {
		ino Ino
		of  *openFile
		k   int
	}
	hs := make([]held, 0, len(keys))
	for _, ino := range keys {
		of := c.holdOpen(ino)
		of.mu.Lock()
		hs = append(hs, held{ino, of, counts[ino]})
	}
	defer func() {
		for _, h := range hs {
			c.dropReservation(h.ino, h.of)
			h.of.mu.Unlock()
			c.unholdOpen(h.ino, h.of)
		}
	}()
	var errs []error
	sid := c.SessionID()
	var closing []*held
	for i := range hs {
		h := &hs[i]
		if h.of.n < h.k {
			errs = append(errs, fmt.Errorf("release %d: %d more releases than opens in this client: %w", h.ino, h.k-h.of.n, syscall.EBADF))
			h.k = h.of.n
		}
		if h.k == 0 {
			continue
		}
		if h.of.n == h.k && sid != 0 && (!c.localOpens || h.of.stored) {
			closing = append(closing, h)
			continue
		}
		h.of.add(-h.k)
	}
	for len(closing) > 0 {
		batch := closing[:min(releaseBatch, len(closing))]
		closing = closing[len(batch):]
		var reap []Ino
		err := c.txn(ctx, func(tx kv.Tx) error {
			reap = reap[:0]
			for _, h := range batch {
				r, err := c.closeFileTx(tx, sid, h.ino)
				if err != nil {
					return fmt.Errorf("inode %d: %w", h.ino, err)
				}
				if r {
					reap = append(reap, h.ino)
				}
			}
			return nil
		})
		if err == nil {
			for _, h := range batch {
				h.of.add(-h.k)
				h.of.stored = false
			}
			for _, ino := range reap {
				c.reapLater(ino)
			}
			continue
		}
		for _, h := range batch {
			if err := c.closeFile(ctx, sid, h.ino); err != nil {
				errs = append(errs, fmt.Errorf("release %d: %w", h.ino, err))
				continue // still open, as after a failed Release
			}
			h.of.add(-h.k)
			h.of.stored = false
		}
	}
	return errors.Join(errs...)
}
