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

type usageSlots struct {
	owner uint64
	mu    sync.Mutex
	n     [256]uint32 // current slot per stripe
	uses  [256]uint16 // writes handed out from it
	full  int         // slots filled since the last fold
}

func usageSlotKey(owner uint64, stripe uint8, n uint32) []byte {
	return be32(append(be64([]byte{pUsage}, owner), stripe), n)
}

// usageSlotOn returns the slot a transaction holding ino's stripe adds its
// usage to. Every attempt takes a write, so retries count too.
func (c *Client) usageSlotOn(ino Ino) []byte {
	stripe := uint8(uint64(ino) % uint64(len(c.stripes)))
	s := &c.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uses[stripe] >= slotWrites {
		s.n[stripe]++
		s.uses[stripe] = 0
		s.full++
	}
	s.uses[stripe]++
	return usageSlotKey(s.owner, stripe, s.n[stripe])
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
