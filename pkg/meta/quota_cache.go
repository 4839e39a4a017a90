package meta

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// quotaRefresh is how often a client re-reads which directories carry
// quotas; quotaUsageAge how old the usage it checks limits against may be.
const (
	quotaRefresh  = 2 * time.Second
	quotaUsageAge = time.Second
	// maxChains bounds the cached directory chains (the cache starts over).
	maxChains = 1 << 16
)

// quotaCache is a client's view of the volume's quotas (quota.go).
type quotaCache struct {
	load sync.Mutex // one reload at a time

	mu       sync.Mutex
	loadedAt time.Time
	limits   map[Ino]quotaLimits
	used     map[Ino]*quotaUsed
	chains   map[Ino][]Ino // directory -> quotas at or above it, nearest first
	pending  map[Ino]*reservation
}

// quotaUsed is a quota's usage as last read, plus what this client charged
// since (growth only: an estimate that errs towards checking exactly).
type quotaUsed struct {
	space, inodes int64
	at            time.Time
}

// reservation is growth of file ino that this client accepted into its
// write buffers but has not committed (ReserveSpace).
type reservation struct {
	chain []Ino
	bytes int64
}

func (q *quotaCache) invalidate() {
	q.mu.Lock()
	q.loadedAt = time.Time{}
	q.mu.Unlock()
}

// chainMiss is returned inside a transaction that needs the quotas above a
// directory the cache does not hold; txn loads them and runs it again.
type chainMiss struct{ dir Ino }

func (e *chainMiss) Error() string { return fmt.Sprintf("quota chain of %d not cached", e.dir) }

// loadQuotas refreshes the cache when it is older than quotaRefresh.
func (c *Client) loadQuotas(ctx context.Context) error {
	q := &c.quotas
	q.mu.Lock()
	fresh := time.Since(q.loadedAt) < quotaRefresh
	q.mu.Unlock()
	if fresh {
		return nil
	}
	q.load.Lock()
	defer q.load.Unlock()
	q.mu.Lock()
	fresh = time.Since(q.loadedAt) < quotaRefresh
	q.mu.Unlock()
	if fresh {
		return nil
	}
	lim := map[Ino]quotaLimits{}
	err := c.view(ctx, func(tx kv.Tx) error {
		clear(lim)
		return tx.Scan([]byte{pQuota}, []byte{pQuota + 1}, 0, func(k, v []byte) bool {
			if l, err := decodeLimits(v); err == nil && len(k) == 9 {
				lim[Ino(u64(k[1:]))] = l
			}
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("load quotas: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	same := len(lim) == len(q.limits)
	for d := range lim {
		if _, ok := q.limits[d]; !ok {
			same = false
		}
	}
	if !same || q.chains == nil {
		q.chains = map[Ino][]Ino{}
	}
	if q.used == nil {
		q.used = map[Ino]*quotaUsed{}
	}
	for d := range q.used {
		if _, ok := lim[d]; !ok {
			delete(q.used, d)
		}
	}
	if q.pending == nil {
		q.pending = map[Ino]*reservation{}
	}
	q.limits = lim
	q.loadedAt = time.Now()
	return nil
}

// cachedChain returns the quotas at or above dir from the cache; ok is
// false when they are not cached. No quotas on the volume: nil, true.
func (c *Client) cachedChain(dir Ino) (chain []Ino, ok bool) {
	q := &c.quotas
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.limits) == 0 || dir == 0 {
		return nil, true
	}
	chain, ok = q.chains[dir]
	return chain, ok
}

// chainTx is cachedChain for use inside a transaction: a miss aborts it
// (txn loads the chain and runs the transaction again).
func (c *Client) chainTx(dir Ino) ([]Ino, error) {
	chain, ok := c.cachedChain(dir)
	if !ok {
		return nil, &chainMiss{dir}
	}
	return chain, nil
}

// quotaChain returns the quotas at or above dir, reading the parents it
// does not know.
func (c *Client) quotaChain(ctx context.Context, dir Ino) ([]Ino, error) {
	if err := c.loadQuotas(ctx); err != nil {
		return nil, err
	}
	if chain, ok := c.cachedChain(dir); ok {
		return chain, nil
	}
	// Walk up to a directory whose chain is known (or the root).
	var path []Ino
	var above []Ino
	err := c.view(ctx, func(tx kv.Tx) error {
		path, above = path[:0], nil
		for p, n := dir, 0; ; n++ {
			if chain, ok := c.cachedChain(p); ok {
				above = chain
				return nil
			}
			path = append(path, p)
			if p == RootIno {
				return nil
			}
			if n > 1<<16 {
				return fmt.Errorf("parent chain of %d does not reach the root: %w", dir, syscall.EIO)
			}
			a, err := getAttr(tx, p)
			if errors.Is(err, syscall.ENOENT) {
				return nil // removed: nothing above it is charged
			}
			if err != nil {
				return err
			}
			if !isDir(a.Mode) {
				return fmt.Errorf("inode %d is not a directory: %w", p, syscall.ENOTDIR)
			}
			p = a.Parent
		}
	})
	if err != nil {
		return nil, fmt.Errorf("quotas above %d: %w", dir, err)
	}
	q := &c.quotas
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.chains) > maxChains {
		q.chains = map[Ino][]Ino{}
	}
	for i := len(path) - 1; i >= 0; i-- {
		d := path[i]
		if _, ok := q.limits[d]; ok {
			above = append([]Ino{d}, above...)
		}
		q.chains[d] = slices.Clip(above)
	}
	return above, nil
}

// quotaShard is the usage shard a charge writes: a random one of 256, so
// concurrent charges seldom meet on a key (a conflict, retried), and
// consecutive charges of one client do not read a key the previous one
// just wrote. A shard per (client, stripe) avoided even those rare
// conflicts but read the previous commit's key every time: on the tikv
// mock, where a read meeting a secondary lock still being committed
// resolves it by scanning the region, 800 creates and writes by two
// clients took 20 s instead of 6 s.
func (c *Client) quotaShard() uint8 { return uint8(rand.N(quotaShards)) }

// chargeTx adds (space, inodes) to every quota of chain in tx, refusing
// growth that does not fit (EDQUOT, nothing written).
func (c *Client) chargeTx(tx kv.Tx, chain []Ino, space, inodes int64) error {
	return c.chargeTxAt(tx, chain, c.quotaShard(), space, inodes)
}

// chargeTxAt is chargeTx on a shard the caller picked (and prefetched:
// quotaKeys).
func (c *Client) chargeTxAt(tx kv.Tx, chain []Ino, shard uint8, space, inodes int64) error {
	if len(chain) == 0 || space == 0 && inodes == 0 {
		return nil
	}
	for _, q := range chain {
		if err := c.fitsTx(tx, q, space, inodes); err != nil {
			return err
		}
	}
	keys := make([][]byte, len(chain))
	for i, q := range chain {
		keys[i] = quotaUsageKey(q, shard)
	}
	vals, err := tx.BatchGet(keys)
	if err != nil {
		return err
	}
	for i, k := range keys {
		s, n := decodeUsage(vals[i])
		tx.Set(k, encodeUsage(s+space, n+inodes))
	}
	c.noteCharge(chain, space, inodes)
	return nil
}

// fitsTx checks that growth of quota q fits: against the cached estimate,
// or, within 1/16 of a limit, against the exact usage read in tx.
func (c *Client) fitsTx(tx kv.Tx, q Ino, space, inodes int64) error {
	cq := &c.quotas
	cq.mu.Lock()
	l, ok := cq.limits[q]
	var est quotaUsed
	if u := cq.used[q]; u != nil && time.Since(u.at) < quotaUsageAge {
		est = *u
	} else {
		est.space, est.inodes = -1, -1 // unknown: check exactly
	}
	cq.mu.Unlock()
	if !ok {
		return nil
	}
	near := func(used, add int64, limit uint64) bool {
		return add > 0 && limit > 0 && (used < 0 || used+add > int64(limit-limit/16))
	}
	if !near(est.space, space, l.bytes) && !near(est.inodes, inodes, l.inodes) {
		return nil
	}
	s, n, err := quotaUsageTx(tx, q)
	if err != nil {
		return err
	}
	c.noteUsage(q, s, n)
	if !c.serializable && (near(s, space, l.bytes) || near(n, inodes, l.inodes)) {
		// Changes near the limit take turns (their scans do not conflict).
		if err := tx.Lock(quotaKey(q)); err != nil {
			return err
		}
	}
	if space > 0 && l.bytes > 0 && s+space > int64(l.bytes) {
		return fmt.Errorf("quota of directory %d: %d of %d bytes used, %d more do not fit: %w", q, s, l.bytes, space, syscall.EDQUOT)
	}
	if inodes > 0 && l.inodes > 0 && n+inodes > int64(l.inodes) {
		return fmt.Errorf("quota of directory %d: %d of %d inodes used: %w", q, n, l.inodes, syscall.EDQUOT)
	}
	return nil
}

// noteUsage records a quota's usage as read now.
func (c *Client) noteUsage(q Ino, space, inodes int64) {
	cq := &c.quotas
	cq.mu.Lock()
	defer cq.mu.Unlock()
	if cq.used != nil {
		cq.used[q] = &quotaUsed{space: space, inodes: inodes, at: time.Now()}
	}
}

// noteCharge adds a charge's growth to the cached estimates.
func (c *Client) noteCharge(chain []Ino, space, inodes int64) {
	cq := &c.quotas
	cq.mu.Lock()
	defer cq.mu.Unlock()
	for _, q := range chain {
		if u := cq.used[q]; u != nil {
			u.space += max(space, 0)
			u.inodes += max(inodes, 0)
		}
	}
}

// precheck refuses growth that the cached usage (refreshed when old) plus
// this client's reservations says does not fit, before any transaction.
// The cached estimate errs high, so it refuses only on a fresh reading.
func (c *Client) precheck(ctx context.Context, chain []Ino, space, inodes int64) error {
	cq := &c.quotas
	for _, q := range chain {
		cq.mu.Lock()
		l, ok := cq.limits[q]
		u := cq.used[q]
		fresh := u != nil && time.Since(u.at) < quotaUsageAge
		cq.mu.Unlock()
		if !ok || (space <= 0 || l.bytes == 0) && (inodes <= 0 || l.inodes == 0) {
			continue
		}
		if fresh && c.estimateFits(q, l, space, inodes) == nil {
			continue
		}
		var s, n int64
		if err := c.view(ctx, func(tx kv.Tx) error {
			var err error
			s, n, err = quotaUsageTx(tx, q)
			return err
		}); err != nil {
			return fmt.Errorf("read usage of quota %d: %w", q, err)
		}
		c.noteUsage(q, s, n)
		if err := c.estimateFits(q, l, space, inodes); err != nil {
			return err
		}
	}
	return nil
}

// estimateFits checks growth against quota q's cached usage plus this
// client's reservations.
func (c *Client) estimateFits(q Ino, l quotaLimits, space, inodes int64) error {
	cq := &c.quotas
	cq.mu.Lock()
	u := cq.used[q]
	if u == nil {
		cq.mu.Unlock()
		return nil
	}
	est := *u
	for _, r := range cq.pending {
		if slices.Contains(r.chain, q) {
			est.space += r.bytes
		}
	}
	cq.mu.Unlock()
	if space > 0 && l.bytes > 0 && est.space+space > int64(l.bytes) {
		return fmt.Errorf("quota of directory %d: %d of %d bytes used or reserved, %d more do not fit: %w", q, est.space, l.bytes, space, syscall.EDQUOT)
	}
	if inodes > 0 && l.inodes > 0 && est.inodes+inodes > int64(l.inodes) {
		return fmt.Errorf("quota of directory %d: %d of %d inodes used: %w", q, est.inodes, l.inodes, syscall.EDQUOT)
	}
	return nil
}

// ReserveSpace implements Meta: it reserves grow bytes of the quotas above
// file ino for writes this client buffers, refusing (EDQUOT) what does not
// fit. WriteChunk's commit uses the reservation up; Release drops the rest.
func (c *Client) ReserveSpace(ctx context.Context, ino Ino, grow uint64) error {
	if grow == 0 {
		return nil
	}
	if err := c.loadQuotas(ctx); err != nil {
		return err
	}
	cq := &c.quotas
	cq.mu.Lock()
	none := len(cq.limits) == 0
	r := cq.pending[ino]
	cq.mu.Unlock()
	if none {
		return nil
	}
	if r == nil {
		a, err := c.GetAttr(ctx, ino)
		if err != nil {
			return fmt.Errorf("reserve space for %d: %w", ino, err)
		}
		chain, err := c.quotaChain(ctx, a.Parent)
		if err != nil {
			return fmt.Errorf("reserve space for %d: %w", ino, err)
		}
		r = &reservation{chain: chain}
		cq.mu.Lock()
		if cur := cq.pending[ino]; cur != nil {
			r = cur
		} else {
			cq.pending[ino] = r
		}
		cq.mu.Unlock()
	}
	if len(r.chain) == 0 {
		return nil
	}
	if err := c.precheck(ctx, r.chain, int64(grow), 0); err != nil {
		return fmt.Errorf("write to %d: %w", ino, err)
	}
	cq.mu.Lock()
	r.bytes += int64(grow)
	cq.mu.Unlock()
	return nil
}

// useReservation takes committed growth off ino's reservation; with all,
// drops it (release, truncate).
func (c *Client) useReservation(ino Ino, grow int64, all bool) {
	cq := &c.quotas
	cq.mu.Lock()
	defer cq.mu.Unlock()
	r := cq.pending[ino]
	if r == nil {
		return
	}
	if all {
		delete(cq.pending, ino)
		return
	}
	r.bytes = max(r.bytes-grow, 0)
}

// chargeFileTx charges a change of file a's length (or inode count) to the
// quotas above its parent, inside tx.
func (c *Client) chargeFileTx(tx kv.Tx, a *Attr, space, inodes int64) error {
	if space == 0 && inodes == 0 {
		return nil
	}
	chain, err := c.chainTx(a.Parent)
	if err != nil {
		return err
	}
	return c.chargeTx(tx, chain, space, inodes)
}

// hasQuotas reports whether the volume has quotas, as last loaded.
func (c *Client) hasQuotas() bool {
	cq := &c.quotas
	cq.mu.Lock()
	defer cq.mu.Unlock()
	return len(cq.limits) > 0
}
