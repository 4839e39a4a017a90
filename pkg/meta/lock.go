package meta

import (
	"context"
	"encoding/binary"
	"fmt"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// A lock belongs to an owner (the kernel's lock owner id) within a session;
// two clients' owners never collide because the session is part of it.
type lockOwner struct {
	sid, owner uint64
}

type flockRec struct {
	lockOwner
	typ uint32
}

const flockRecSize = 8 + 8 + 1

func decodeFlocks(b []byte) []flockRec {
	out := make([]flockRec, 0, len(b)/flockRecSize)
	for ; len(b) >= flockRecSize; b = b[flockRecSize:] {
		out = append(out, flockRec{lockOwner{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, uint32(b[16])})
	}
	return out
}

func encodeFlocks(rs []flockRec) []byte {
	b := make([]byte, 0, len(rs)*flockRecSize)
	for _, r := range rs {
		b = append(be64(be64(b, r.sid), r.owner), byte(r.typ))
	}
	return b
}

type plockRec struct {
	lockOwner
	pid        uint32
	typ        uint32
	start, end uint64 // inclusive
}

const plockRecSize = 8 + 8 + 4 + 1 + 8 + 8

func decodePlocks(b []byte) []plockRec {
	out := make([]plockRec, 0, len(b)/plockRecSize)
	be := binary.BigEndian
	for ; len(b) >= plockRecSize; b = b[plockRecSize:] {
		out = append(out, plockRec{lockOwner{be.Uint64(b), be.Uint64(b[8:])}, be.Uint32(b[16:]), uint32(b[20]), be.Uint64(b[21:]), be.Uint64(b[29:])})
	}
	return out
}

func encodePlocks(rs []plockRec) []byte {
	b := make([]byte, 0, len(rs)*plockRecSize)
	for _, r := range rs {
		b = be64(be64(append(be32(be64(be64(b, r.sid), r.owner), r.pid), byte(r.typ)), r.start), r.end)
	}
	return b
}

// setOrDelete stores v at k, or deletes k when v is empty.
func setOrDelete(tx kv.Tx, k, v []byte) {
	if len(v) == 0 {
		tx.Delete(k)
	} else {
		tx.Set(k, v)
	}
}

// ensureSession starts a session when the client has none yet: locks and
// open files belong to one.
func (c *Client) ensureSession(ctx context.Context) (uint64, error) {
	if sid := c.SessionID(); sid != 0 {
		return sid, nil
	}
	if err := c.NewSession(ctx, ""); err != nil && !isErrno(err, syscall.EBUSY) {
		return 0, err
	}
	return c.SessionID(), nil
}

// waitLock retries try until it stops reporting EAGAIN, polling with a
// growing interval, until ctx ends (EINTR, as a signal would).
func waitLock(ctx context.Context, try func() error) error {
	d := 5 * time.Millisecond
	for {
		err := try()
		if err != nil && ctx.Err() != nil {
			// The context ended during an attempt (a slow store): the
			// waiter gives up all the same, as EINTR.
			return fmt.Errorf("waiting for a lock: %v: %w", ctx.Err(), syscall.EINTR)
		}
		if !isErrno(err, syscall.EAGAIN) {
			return err
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for a lock: %v: %w", ctx.Err(), syscall.EINTR)
		case <-t.C:
		}
		d = min(2*d, 200*time.Millisecond)
	}
}

// Flock implements Meta: whole-file locks (flock(2)) shared across clients.
func (c *Client) Flock(ctx context.Context, ino Ino, owner uint64, typ uint32, block bool) error {
	if typ != syscall.F_RDLCK && typ != syscall.F_WRLCK && typ != syscall.F_UNLCK {
		return fmt.Errorf("flock %d: type %d: %w", ino, typ, syscall.EINVAL)
	}
	sid, err := c.ensureSession(ctx)
	if err != nil {
		return fmt.Errorf("flock %d: %w", ino, err)
	}
	me := lockOwner{sid, owner}
	try := func() error {
		return c.txn(ctx, func(tx kv.Tx) error {
			if _, err := getAttr(tx, ino); err != nil {
				return err
			}
			k := flockKey(ino)
			b, err := tx.Get(k)
			if err != nil {
				return err
			}
			var keep []flockRec
			for _, r := range decodeFlocks(b) {
				if r.lockOwner == me {
					continue
				}
				if typ == syscall.F_WRLCK || typ == syscall.F_RDLCK && r.typ == syscall.F_WRLCK {
					return syscall.EAGAIN
				}
				keep = append(keep, r)
			}
			if typ != syscall.F_UNLCK {
				keep = append(keep, flockRec{me, typ})
			}
			setOrDelete(tx, k, encodeFlocks(keep))
			return nil
		})
	}
	if block && typ != syscall.F_UNLCK {
		err = waitLock(ctx, try)
	} else {
		err = try()
	}
	if err != nil {
		return fmt.Errorf("flock %d: %w", ino, err)
	}
	return nil
}

func conflicts(r plockRec, me lockOwner, lk Plock) bool {
	return r.lockOwner != me && r.start <= lk.End && lk.Start <= r.end &&
		(lk.Type == syscall.F_WRLCK || r.typ == syscall.F_WRLCK)
}

func checkPlock(lk Plock) error {
	if lk.Type != syscall.F_RDLCK && lk.Type != syscall.F_WRLCK && lk.Type != syscall.F_UNLCK {
		return fmt.Errorf("lock type %d: %w", lk.Type, syscall.EINVAL)
	}
	if lk.Start > lk.End {
		return fmt.Errorf("lock range [%d, %d]: %w", lk.Start, lk.End, syscall.EINVAL)
	}
	return nil
}

// GetLk implements Meta (F_GETLK): lk becomes the first lock that would
// conflict with it, or its Type becomes F_UNLCK.
func (c *Client) GetLk(ctx context.Context, ino Ino, owner uint64, lk *Plock) error {
	if err := checkPlock(*lk); err != nil {
		return fmt.Errorf("getlk %d: %w", ino, err)
	}
	me := lockOwner{c.SessionID(), owner}
	q := *lk
	err := c.view(ctx, func(tx kv.Tx) error {
		*lk = q
		if _, err := getAttr(tx, ino); err != nil {
			return err
		}
		b, err := tx.Get(plockKey(ino))
		if err != nil {
			return err
		}
		for _, r := range decodePlocks(b) {
			if q.Type != syscall.F_UNLCK && conflicts(r, me, q) {
				*lk = Plock{Type: r.typ, Start: r.start, End: r.end, Pid: r.pid}
				return nil
			}
		}
		lk.Type = syscall.F_UNLCK
		return nil
	})
	if err != nil {
		return fmt.Errorf("getlk %d: %w", ino, err)
	}
	return nil
}

// SetLk implements Meta (F_SETLK, and F_SETLKW with block).
func (c *Client) SetLk(ctx context.Context, ino Ino, owner uint64, block bool, lk Plock) error {
	if err := checkPlock(lk); err != nil {
		return fmt.Errorf("setlk %d: %w", ino, err)
	}
	sid, err := c.ensureSession(ctx)
	if err != nil {
		return fmt.Errorf("setlk %d: %w", ino, err)
	}
	me := lockOwner{sid, owner}
	try := func() error {
		return c.txn(ctx, func(tx kv.Tx) error {
			if _, err := getAttr(tx, ino); err != nil {
				return err
			}
			k := plockKey(ino)
			b, err := tx.Get(k)
			if err != nil {
				return err
			}
			var out []plockRec
			for _, r := range decodePlocks(b) {
				if lk.Type != syscall.F_UNLCK && conflicts(r, me, lk) {
					return syscall.EAGAIN
				}
				if r.lockOwner != me || r.end < lk.Start || r.start > lk.End {
					out = append(out, r)
					continue
				}
				// Our own lock overlapping the new range: keep the parts outside.
				if r.start < lk.Start {
					left := r
					left.end = lk.Start - 1
					out = append(out, left)
				}
				if r.end > lk.End {
					right := r
					right.start = lk.End + 1
					out = append(out, right)
				}
			}
			if lk.Type != syscall.F_UNLCK {
				out = append(out, plockRec{me, lk.Pid, lk.Type, lk.Start, lk.End})
			}
			setOrDelete(tx, k, encodePlocks(out))
			return nil
		})
	}
	if block && lk.Type != syscall.F_UNLCK {
		err = waitLock(ctx, try)
	} else {
		err = try()
	}
	if err != nil {
		return fmt.Errorf("setlk %d [%d, %d]: %w", ino, lk.Start, lk.End, err)
	}
	return nil
}

// dropSessionLocks removes every flock and plock session sid holds.
func (c *Client) dropSessionLocks(ctx context.Context, sid uint64) error {
	for _, p := range []byte{pFlock, pPlock} {
		var keys [][]byte
		if err := c.scanAll(ctx, []byte{p}, func(k, v []byte) error {
			held := false
			if p == pFlock {
				for _, r := range decodeFlocks(v) {
					held = held || r.sid == sid
				}
			} else {
				for _, r := range decodePlocks(v) {
					held = held || r.sid == sid
				}
			}
			if held {
				keys = append(keys, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			if err := c.txn(ctx, func(tx kv.Tx) error {
				b, err := tx.Get(k)
				if err != nil {
					return err
				}
				if p == pFlock {
					var keep []flockRec
					for _, r := range decodeFlocks(b) {
						if r.sid != sid {
							keep = append(keep, r)
						}
					}
					setOrDelete(tx, k, encodeFlocks(keep))
				} else {
					var keep []plockRec
					for _, r := range decodePlocks(b) {
						if r.sid != sid {
							keep = append(keep, r)
						}
					}
					setOrDelete(tx, k, encodePlocks(keep))
				}
				return nil
			}); err != nil {
				return fmt.Errorf("drop locks of session %d: %w", sid, err)
			}
		}
	}
	return nil
}

// scanAll calls fn for every key with prefix p, a page per read
// transaction, fn outside the transaction.
func (c *Client) scanAll(ctx context.Context, p []byte, fn func(k, v []byte) error) error {
	const page = 1000
	start, end := p, kv.PrefixEnd(p)
	for {
		var ks, vs [][]byte
		if err := c.view(ctx, func(tx kv.Tx) error {
			ks, vs = ks[:0], vs[:0]
			return tx.Scan(start, end, page, func(k, v []byte) bool {
				ks, vs = append(ks, k), append(vs, v)
				return true
			})
		}); err != nil {
			return err
		}
		for i := range ks {
			if err := fn(ks[i], vs[i]); err != nil {
				return err
			}
		}
		if len(ks) < page {
			return nil
		}
		start = append(append([]byte(nil), ks[len(ks)-1]...), 0)
	}
}
