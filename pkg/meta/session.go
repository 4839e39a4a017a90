package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// NewSession implements Meta.
func (c *Client) NewSession(ctx context.Context, mountPoint string) error {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	if c.sid != 0 {
		return fmt.Errorf("new session: this client already has session %d: %w", c.sid, syscall.EBUSY)
	}
	sid, err := c.counterAllocInit(ctx, keyNextSessID)
	if err != nil {
		return fmt.Errorf("new session: %w", err)
	}
	host, _ := os.Hostname()
	s := Session{ID: sid, Hostname: host, Pid: os.Getpid(), MountPoint: mountPoint, Heartbeat: time.Now()}
	if err := c.writeSession(ctx, &s, false); err != nil {
		return fmt.Errorf("new session: %w", err)
	}
	c.sid = sid
	c.hbStop, c.hbDone = make(chan struct{}), make(chan struct{})
	go c.heartbeat(s, c.hbStop, c.hbDone)
	c.log.Debug("session started", "session", sid)
	return nil
}

// counterAllocInit hands out one id from a counter that starts at 1.
func (c *Client) counterAllocInit(ctx context.Context, key []byte) (uint64, error) {
	var id uint64
	err := c.txn(ctx, func(tx kv.Tx) error {
		b, err := tx.Get(key)
		if err != nil {
			return err
		}
		id = max(u64(b), 1)
		tx.Set(key, be64(nil, id+1))
		return nil
	})
	return id, err
}

// writeSession stores s; with mustExist it does nothing (and says so) when
// another client has reclaimed the session.
func (c *Client) writeSession(ctx context.Context, s *Session, mustExist bool) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return c.txn(ctx, func(tx kv.Tx) error {
		if mustExist {
			old, err := tx.Get(sessionKey(s.ID))
			if err != nil {
				return err
			}
			if old == nil {
				return fmt.Errorf("session %d was reclaimed by another client (no heartbeat for %s): %w", s.ID, c.opt.SessionTimeout, syscall.ESTALE)
			}
		}
		tx.Set(sessionKey(s.ID), b)
		return nil
	})
}

func (c *Client) heartbeat(s Session, stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(c.opt.Heartbeat)
	defer t.Stop()
	lastClean := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opt.Heartbeat)
		s.Heartbeat = time.Now()
		err := c.writeSession(ctx, &s, true)
		cancel()
		if err != nil {
			c.log.Error("session heartbeat failed", "session", s.ID, "err", err)
		}
		// Every live client sweeps for dead ones now and then, so what a
		// crashed client held does not wait for an fsck.
		if time.Since(lastClean) >= c.opt.SessionTimeout {
			lastClean = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), c.opt.SessionTimeout)
			if _, err := c.CleanStaleSessions(ctx); err != nil {
				c.log.Warn("clean stale sessions", "err", err)
			}
			cancel()
		}
	}
}

// SessionID is this client's session (0 before NewSession).
func (c *Client) SessionID() uint64 {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	return c.sid
}

// CloseSession implements Meta.
func (c *Client) CloseSession(ctx context.Context) error {
	c.stopHeartbeat()
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	if c.sid == 0 {
		return nil
	}
	err := c.reclaim(ctx, c.sid)
	if err == nil {
		c.opensMu.Lock()
		clear(c.opens)
		c.opensMu.Unlock()
		c.sid = 0
	}
	if err != nil {
		return fmt.Errorf("close session: %w", err)
	}
	return nil
}

// StopHeartbeat stops the session's heartbeat without releasing anything,
// as a client that dies would (tests of session reclaim use it).
func (c *Client) StopHeartbeat() { c.stopHeartbeat() }

// stopHeartbeat stops the heartbeat goroutine and waits for it, without
// holding sessMu meanwhile: its stale-session sweep takes sessMu too.
func (c *Client) stopHeartbeat() {
	c.sessMu.Lock()
	stop, done := c.hbStop, c.hbDone
	c.hbStop, c.hbDone = nil, nil
	c.sessMu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// ListSessions implements Meta.
func (c *Client) ListSessions(ctx context.Context) ([]Session, error) {
	var out []Session
	err := c.view(ctx, func(tx kv.Tx) error {
		out = out[:0]
		var derr error
		err := tx.Scan([]byte{pSession}, []byte{pSession + 1}, 0, func(k, v []byte) bool {
			var s Session
			if err := json.Unmarshal(v, &s); err != nil {
				derr = fmt.Errorf("session key %x: %v: %w", k, err, syscall.EIO)
				return false
			}
			out = append(out, s)
			return true
		})
		if err != nil {
			return err
		}
		return derr
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// CleanStaleSessions implements Meta.
func (c *Client) CleanStaleSessions(ctx context.Context) (int, error) {
	ss, err := c.ListSessions(ctx)
	if err != nil {
		return 0, err
	}
	own := c.SessionID()
	n := 0
	for _, s := range ss {
		if s.ID == own || time.Since(s.Heartbeat) < c.opt.SessionTimeout {
			continue
		}
		c.log.Info("reclaiming stale session", "session", s.ID, "host", s.Hostname, "pid", s.Pid, "heartbeat", s.Heartbeat)
		if err := c.reclaim(ctx, s.ID); err != nil {
			return n, fmt.Errorf("clean stale sessions: %w", err)
		}
		n++
	}
	return n, nil
}

// reclaim releases everything session sid holds: its open files (removing
// those unlinked meanwhile), its locks, and its record.
func (c *Client) reclaim(ctx context.Context, sid uint64) error {
	// Open files, a page per transaction.
	p := be64([]byte{pSessOpen}, sid)
	for {
		var inos []Ino
		if err := c.view(ctx, func(tx kv.Tx) error {
			inos = inos[:0]
			return tx.Scan(p, kv.PrefixEnd(p), 100, func(k, _ []byte) bool {
				inos = append(inos, Ino(u64(k[9:])))
				return true
			})
		}); err != nil {
			return fmt.Errorf("reclaim session %d: %w", sid, err)
		}
		for _, ino := range inos {
			if err := c.closeFile(ctx, sid, ino); err != nil {
				return fmt.Errorf("reclaim session %d: %w", sid, err)
			}
		}
		if len(inos) < 100 {
			break
		}
	}
	if err := c.dropSessionLocks(ctx, sid); err != nil {
		return fmt.Errorf("reclaim session %d: %w", sid, err)
	}
	return c.txn(ctx, func(tx kv.Tx) error {
		tx.Delete(sessionKey(sid))
		return nil
	})
}

// Open implements Meta. Only the first open of an inode in this client
// writes (the session's open marker); later ones read the attributes.
func (c *Client) Open(ctx context.Context, ino Ino, flags uint32) (Attr, error) {
	sid, err := c.ensureSession(ctx)
	if err != nil {
		return Attr{}, fmt.Errorf("open %d: %w", ino, err)
	}
	of := c.holdOpen(ino)
	defer c.unholdOpen(ino, of)
	of.mu.Lock()
	defer of.mu.Unlock()
	var a Attr
	switch {
	case of.n > 0:
		a, err = c.GetAttr(ctx, ino)
	case c.localOpens:
		// Counted before the read, which the engine serializes with
		// writes: an unlink ordered before it removed the file (ENOENT
		// here), one ordered after it sees the open and keeps the file.
		of.live.Add(1)
		err = c.txn(ctx, func(tx kv.Tx) error {
			var err error
			a, err = getAttr(tx, ino)
			return err
		})
		if err != nil {
			of.live.Add(-1)
		}
	default:
		err = c.txn(ctx, func(tx kv.Tx) error {
			var err error
			if a, err = getAttr(tx, ino); err != nil {
				return err
			}
			if err := tx.Lock(attrKey(ino)); err != nil {
				return err
			}
			tx.Set(openKey(ino, sid), present)
			tx.Set(sessOpenKey(sid, ino), present)
			return nil
		})
	}
	if err != nil {
		return Attr{}, fmt.Errorf("open %d: %w", ino, err)
	}
	of.add(1)
	return a, nil
}

// Release implements Meta.
func (c *Client) Release(ctx context.Context, ino Ino) error {
	sid := c.SessionID()
	of := c.holdOpen(ino)
	defer c.unholdOpen(ino, of)
	of.mu.Lock()
	defer of.mu.Unlock()
	defer c.dropReservation(ino, of)
	if of.n == 0 {
		return fmt.Errorf("release %d: not open in this client: %w", ino, syscall.EBADF)
	}
	if of.n == 1 && sid != 0 && (!c.localOpens || of.stored) {
		if err := c.closeFile(ctx, sid, ino); err != nil {
			return fmt.Errorf("release %d: %w", ino, err)
		}
		of.stored = false
	}
	of.add(-1)
	return nil
}

func (c *Client) holdOpen(ino Ino) *openFile {
	c.opensMu.Lock()
	defer c.opensMu.Unlock()
	of := c.opens[ino]
	if of == nil {
		of = &openFile{}
		c.opens[ino] = of
	}
	of.refs++
	return of
}

func (c *Client) unholdOpen(ino Ino, of *openFile) {
	c.opensMu.Lock()
	defer c.opensMu.Unlock()
	of.refs--
	if of.refs == 0 && of.n == 0 && c.opens[ino] == of {
		delete(c.opens, ino)
	}
}

// closeFile drops session sid's open marker of ino and removes the inode
// when that was the last opener of an unlinked file.
func (c *Client) closeFile(ctx context.Context, sid uint64, ino Ino) error {
	var reap bool
	err := c.txn(ctx, func(tx kv.Tx) error {
		var err error
		reap, err = c.closeFileTx(tx, sid, ino)
		return err
	})
	if err == nil && reap {
		c.reapLater(ino)
	}
	return err
}

// closeFileTx is closeFile's work in tx; it reports whether the inode was
// removed leaving chunks for the reaper.
func (c *Client) closeFileTx(tx kv.Tx, sid uint64, ino Ino) (bool, error) {
	tx.Delete(openKey(ino, sid))
	tx.Delete(sessOpenKey(sid, ino))
	b, err := tx.Get(attrKey(ino))
	if err != nil || b == nil {
		return false, err
	}
	var a Attr
	if err := decodeAttr(b, &a); err != nil {
		return false, fmt.Errorf("inode %d: %v: %w", ino, err, syscall.EIO)
	}
	if a.Nlink > 0 || isDir(a.Mode) {
		return false, nil
	}
	other := false
	p := inoKey(pOpen, ino)
	if err := tx.Scan(p, kv.PrefixEnd(p), 2, func(k, _ []byte) bool {
		if u64(k[9:]) != sid {
			other = true
			return false
		}
		return true
	}); err != nil {
		return false, err
	}
	if other {
		return false, nil
	}
	return c.removeInode(tx, ino, &a)
}
