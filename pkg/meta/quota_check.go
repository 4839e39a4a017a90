package meta

import (
	"context"
	"fmt"

	"podfs.io/podfs/pkg/meta/kv"
)

// checkQuotas recounts every quota's usage by the charging rule (each
// inode but the root charged to the quotas above its Attr.Parent) from
// attrs, a scan of every inode, and reports (with repair, corrects)
// counters that differ and quotas of directories that no longer exist.
func (c *Client) checkQuotas(ctx context.Context, attrs map[Ino]Attr, problem func(string, ...any), fix func(string, func(kv.Tx) error)) error {
	quotas, err := c.ListQuotas(ctx)
	if err != nil {
		return err
	}
	if len(quotas) == 0 {
		return nil
	}
	chains := map[Ino][]Ino{}
	var chainOf func(d Ino, depth int) []Ino
	chainOf = func(d Ino, depth int) []Ino {
		if ch, ok := chains[d]; ok {
			return ch
		}
		a, ok := attrs[d]
		if !ok || !isDir(a.Mode) || depth > 1<<16 {
			return nil
		}
		var above []Ino
		if d != RootIno {
			above = chainOf(a.Parent, depth+1)
		}
		ch := above
		if _, ok := quotas[d]; ok {
			ch = append([]Ino{d}, above...)
		}
		chains[d] = ch
		return ch
	}
	count := map[Ino][2]int64{}
	for ino, a := range attrs {
		if ino == RootIno {
			continue
		}
		var space int64
		if isReg(a.Mode) {
			space = align4k(a.Size)
		}
		for _, q := range chainOf(a.Parent, 0) {
			u := count[q]
			count[q] = [2]int64{u[0] + space, u[1] + 1}
		}
	}
	for d, q := range quotas {
		if a, ok := attrs[d]; !ok || !isDir(a.Mode) {
			problem("quota of directory %d, which does not exist", d)
			fix(fmt.Sprintf("delete quota of missing directory %d", d), func(tx kv.Tx) error {
				if b, err := tx.Get(attrKey(d)); err != nil || b != nil {
					return err // made again meanwhile? leave it
				}
				tx.Delete(quotaKey(d))
				return deleteQuotaUsageTx(tx, d)
			})
			continue
		}
		want := count[d]
		if int64(q.UsedBytes) == want[0] && int64(q.UsedInodes) == want[1] {
			continue
		}
		problem("quota of directory %d: counters say %d bytes and %d inodes, its tree adds up to %d and %d", d, q.UsedBytes, q.UsedInodes, want[0], want[1])
		seen := q
		fix(fmt.Sprintf("correct usage of quota %d", d), func(tx kv.Tx) error {
			s, n, err := quotaUsageTx(tx, d)
			if err != nil {
				return err
			}
			if uint64(max(s, 0)) != seen.UsedBytes || uint64(max(n, 0)) != seen.UsedInodes {
				return fmt.Errorf("usage of quota %d changed during the check; run it again on a quiet volume", d)
			}
			return setQuotaUsageTx(tx, d, want[0], want[1])
		})
	}
	return nil
}
