package meta

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// Usage slots keep the inode counter's hottest writer, create, off shared
// keys. Each create adds its +1 to a slot: a usage record (the same format
// as a shard's) under a key of this client's own, one per stripe (see
// txnOn), which takes slotWrites writes and is then replaced by a fresh one.
// So no two transactions of one client write the same slot at once (they
// hold different stripes), no two clients ever do, and no key gathers more
// than slotWrites versions (an MVCC store reads a key slower the more
// versions it holds until its garbage collection: the TiKV mock never
// collects). The slots are part of the counters at once — StatFS and Check
// sum every record under the usage prefix — so counts stay exact, crash or
// not. The client folds its full slots into a shard every few seconds,
// and all of them when it closes; a crashed client's slots stay, counted.
//
// Slot key: 'U' owner(8) stripe(1) n(4), where owner is random per client.

// slotWrites is how many transactions write one slot.
const slotWrites = 16

// usageFoldEvery is how often a client folds its full slots.
const usageFoldEvery = 2 * time.Second

// On engines where this client's transactions on one stripe run one at a
// time (all but the serial ones, whose transactions are not striped), a
// slot's writer knows what the slot holds without reading it: nothing (a
// fresh slot) plus what its committed writes added. Such a write is blind,
// which saves the slot's read in every create. A write whose transaction
// did not surely commit (its attempt failed after writing, commit errors
// included: the outcome may be unknown) leaves the slot's content
// uncertain, so the stripe's next write starts a fresh slot; the old one is
// folded, read, like any full slot.
type usageSlots struct {
	owner uint64
	mu    sync.Mutex
	n     [256]uint32   // current slot per stripe
	uses  [256]uint16   // writes handed out from it
	sum   [256][2]int64 // what it holds (space, inodes), for blind writes
	open  [256]bool     // a blind write of it awaits its outcome
	full  int           // slots filled since the last fold
}

func usageSlotKey(owner uint64, stripe uint8, n uint32) []byte {
	return be32(append(be64([]byte{pUsage}, owner), stripe), n)
}

// slotWrite is one transaction attempt's write to a usage slot.
type slotWrite struct {
	key    []byte
	stripe uint8
	n      uint32
	blind  bool     // write without reading: sum is what the slot holds
	sum    [2]int64 // the slot's content before this write
	wrote  [2]int64 // what this write added (blind writes)
}

// usageSlotOn returns the slot a transaction attempt holding ino's stripe
// adds its usage to. Every attempt takes a write, so retries count too.
func (c *Client) usageSlotOn(ino Ino) *slotWrite {
	stripe := uint8(uint64(ino) % uint64(len(c.stripes)))
	s := &c.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uses[stripe] >= slotWrites || s.open[stripe] {
		s.n[stripe]++
		s.uses[stripe] = 0
		s.sum[stripe] = [2]int64{}
		s.open[stripe] = false
		s.full++
	}
	s.uses[stripe]++
	return &slotWrite{
		key: usageSlotKey(s.owner, stripe, s.n[stripe]), stripe: stripe, n: s.n[stripe],
		blind: !c.serial, sum: s.sum[stripe],
	}
}

// add adds to the slot in tx: blind on striped engines, else read first.
func (w *slotWrite) add(c *Client, tx kv.Tx, space, inodes int64) error {
	if space == 0 && inodes == 0 {
		return nil
	}
	if !w.blind {
		return addUsageAt(tx, w.key, space, inodes)
	}
	tx.Set(w.key, encodeUsage(w.sum[0]+space, w.sum[1]+inodes))
	w.wrote = [2]int64{space, inodes}
	s := &c.slots
	s.mu.Lock()
	s.open[w.stripe] = true
	s.mu.Unlock()
	return nil
}

// done records the outcome of w's transaction; its caller still holds the
// stripe, so no other write of the slot began meanwhile. A committed blind
// write settles what the slot holds; a failed one leaves it open, and the
// stripe's next write moves to a fresh slot.
func (w *slotWrite) done(c *Client, err error) {
	if !w.blind || err != nil {
		return
	}
	s := &c.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[w.stripe] != w.n || !s.open[w.stripe] {
		return // no write of its own reached the slot
	}
	s.sum[w.stripe] = [2]int64{w.sum[0] + w.wrote[0], w.sum[1] + w.wrote[1]}
	s.open[w.stripe] = false
}

func (c *Client) usageFolder() {
	defer c.bg.Done()
	t := time.NewTicker(usageFoldEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if err := c.foldUsage(context.Background(), false); err != nil {
				c.log.Warn("fold usage slots", "err", err)
			}
		}
	}
}

// foldPerTxn bounds the slots one fold transaction deletes (etcd refuses
// transactions of more than --max-txn-ops operations, 128 by default).
const foldPerTxn = 100

// foldUsage moves this client's full slots (all of them with all: nothing
// may write them any more) into shards, foldPerTxn slots per transaction.
// The current slots are left alone: a create may be writing one right now.
func (c *Client) foldUsage(ctx context.Context, all bool) error {
	s := &c.slots
	s.mu.Lock()
	cur := s.n
	full := s.full
	s.full = 0
	s.mu.Unlock()
	if full == 0 && !all {
		return nil
	}
	prefix := be64([]byte{pUsage}, s.owner)
	for from := prefix; from != nil; {
		var next []byte
		err := c.txn(ctx, func(tx kv.Tx) error {
			next = nil
			var space, inodes int64
			var keys [][]byte
			if err := tx.Scan(from, kv.PrefixEnd(prefix), 0, func(k, v []byte) bool {
				if len(keys) == foldPerTxn {
					next = k
					return false
				}
				if len(k) != len(prefix)+5 {
					return true
				}
				if n := binary.BigEndian.Uint32(k[len(prefix)+1:]); !all && n >= cur[k[len(prefix)]] {
					return true
				}
				ds, di := decodeUsage(v)
				space, inodes = space+ds, inodes+di
				keys = append(keys, k)
				return true
			}); err != nil {
				return err
			}
			for _, k := range keys {
				tx.Delete(k)
			}
			return addUsage(tx, space, inodes)
		})
		if err != nil {
			s.mu.Lock()
			s.full += full // try again next time
			s.mu.Unlock()
			return fmt.Errorf("fold usage slots: %w", err)
		}
		from = next
	}
	return nil
}
