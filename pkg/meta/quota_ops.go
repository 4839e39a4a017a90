package meta

import (
	"fmt"
	"slices"
	"syscall"

	"podfs.io/podfs/pkg/meta/kv"
)

// The quota hooks of namespace operations: removal, unlinked open files,
// hard links and renames across quota boundaries, and what creates and
// commits prefetch (quota.go describes the rules).

// unchargeInodeTx takes a removed inode's charge off its quotas, and
// deletes the quota of a removed directory.
func (c *Client) unchargeInodeTx(tx kv.Tx, ino Ino, a *Attr) error {
	if ino == RootIno {
		return nil
	}
	var space int64
	if isReg(a.Mode) {
		space = align4k(a.Size)
	}
	if err := c.chargeFileTx(tx, a, -space, -1); err != nil {
		return err
	}
	if !isDir(a.Mode) {
		return nil
	}
	cq := &c.quotas
	cq.mu.Lock()
	_, has := cq.limits[ino]
	cq.mu.Unlock()
	if !has {
		return nil
	}
	tx.Delete(quotaKey(ino))
	return deleteQuotaUsageTx(tx, ino)
}

// keepChargeTx points an unlinked file that stays open at the nearest
// quota above its parent (or leaves it): its charge stays there until its
// removal even if the parent directory goes first.
func (c *Client) keepChargeTx(a *Attr) error {
	chain, err := c.chainTx(a.Parent)
	if err != nil {
		return err
	}
	if len(chain) > 0 {
		a.Parent = chain[0]
	}
	return nil
}

// dropReservation drops ino's reservation once this client closed it
// (of.mu held).
func (c *Client) dropReservation(ino Ino, of *openFile) {
	if of.n == 0 {
		c.useReservation(ino, 0, true)
	}
}

// linkFitsTx refuses (EXDEV) a hard link of file a into dir when dir's
// quotas differ from those a is charged to: a file is charged once, by the
// quotas above its Attr.Parent.
func (c *Client) linkFitsTx(a *Attr, dir Ino) error {
	from, err := c.chainTx(a.Parent)
	if err != nil {
		return err
	}
	to, err := c.chainTx(dir)
	if err != nil {
		return err
	}
	if !slices.Equal(from, to) {
		return fmt.Errorf("hard link across a directory quota boundary (%v to %v): %w", from, to, syscall.EXDEV)
	}
	return nil
}

// moveChargeTx moves inode a's charge for a rename into directory dest. A
// directory may not cross a quota boundary (EXDEV: its tree's usage would
// have to move, and mv falls back to copying, which is charged); a file's
// charge moves with it (EDQUOT when it does not fit), unless it has other
// links (EXDEV). A file's Attr.Parent becomes dest.
func (c *Client) moveChargeTx(tx kv.Tx, a *Attr, dest Ino) error {
	from, err := c.chainTx(a.Parent)
	if err != nil {
		return err
	}
	to, err := c.chainTx(dest)
	if err != nil {
		return err
	}
	if isDir(a.Mode) {
		if !slices.Equal(from, to) {
			return fmt.Errorf("directory renamed across a directory quota boundary (quotas %v to %v; copy it instead): %w", from, to, syscall.EXDEV)
		}
		return nil
	}
	if !slices.Equal(from, to) {
		if a.Nlink > 1 {
			return fmt.Errorf("file with %d links renamed across a directory quota boundary: %w", a.Nlink, syscall.EXDEV)
		}
		var space int64
		if isReg(a.Mode) {
			space = align4k(a.Size)
		}
		var plus, minus []Ino
		for _, q := range to {
			if !slices.Contains(from, q) {
				plus = append(plus, q)
			}
		}
		for _, q := range from {
			if !slices.Contains(to, q) {
				minus = append(minus, q)
			}
		}
		if err := c.chargeTx(tx, plus, space, 1); err != nil {
			return err
		}
		if err := c.chargeTx(tx, minus, -space, -1); err != nil {
			return err
		}
	}
	a.Parent = dest
	return nil
}

// quotaKeys appends the usage keys a charge of chain on shard writes, for a
// transaction's first read to fetch with the rest.
func quotaKeys(keys [][]byte, chain []Ino, shard uint8) [][]byte {
	for _, q := range chain {
		keys = append(keys, quotaUsageKey(q, shard))
	}
	return keys
}

// fileChainHint guesses the quotas file ino is charged to, from its
// reservation (writes through the file system reserve first), so a commit
// can prefetch their keys; nil when unknown.
func (c *Client) fileChainHint(ino Ino) []Ino {
	cq := &c.quotas
	cq.mu.Lock()
	defer cq.mu.Unlock()
	if r := cq.pending[ino]; r != nil {
		return r.chain
	}
	return nil
}

// knownChain records the quotas a file just created (and opened) is
// charged to, so its first ReserveSpace need not read them; its last
// Release drops the record with the reservation.
func (c *Client) knownChain(ino Ino, chain []Ino) {
	if len(chain) == 0 {
		return
	}
	cq := &c.quotas
	cq.mu.Lock()
	defer cq.mu.Unlock()
	if cq.pending != nil && cq.pending[ino] == nil {
		cq.pending[ino] = &reservation{chain: chain}
	}
}
