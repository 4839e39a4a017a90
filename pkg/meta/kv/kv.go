// Package kv is the small transactional key-value interface pkg/meta is built
// on, with its engines: bbolt (embedded, group commit), etcd and TiKV.
//
// An engine runs one attempt of a transaction; Txn retries attempts that
// failed on a conflict with bounded, jittered backoff. Transaction functions
// may therefore run more than once and must keep no state between attempts.
package kv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrConflict reports that a transaction attempt lost a race with another
// writer; Txn retries it.
var ErrConflict = errors.New("kv: transaction conflict")

// ErrClosed is returned by an engine used after Close.
var ErrClosed = errors.New("kv: engine closed")

// Tx is one transaction's view of the store. Keys and values passed in must
// not be modified afterwards; values returned are the caller's to keep.
type Tx interface {
	// Get returns the value of key, or nil when it does not exist.
	Get(key []byte) ([]byte, error)
	// BatchGet returns the values of keys in the same order (nil = missing).
	BatchGet(keys [][]byte) ([][]byte, error)
	Set(key, value []byte)
	Delete(key []byte)
	// Scan calls fn for the keys in [start, end) in ascending order, at most
	// limit of them (limit <= 0: all), until fn returns false.
	Scan(start, end []byte, limit int, fn func(key, value []byte) bool) error
	// Lock makes key (read before) part of the transaction's conflict set, so
	// a concurrent change of it makes one of the two transactions retry. Engines
	// whose reads already conflict (serializable ones) treat it as a no-op.
	Lock(key []byte) error
}

// Engine is one store. Update and View run a single attempt.
type Engine interface {
	// Update runs fn in a read-write transaction and commits it when fn
	// returns nil. A lost race gives an error wrapping ErrConflict.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction (Set and Delete are refused).
	View(ctx context.Context, fn func(Tx) error) error
	// Name is the engine's URL with credentials removed, for messages.
	Name() string
	Close() error
}

// Serial is implemented by engines that run read-write transactions one
// after another and so never report conflicts (bolt); clients skip their own
// conflict-avoiding serialization on them.
type Serial interface {
	Serial()
}

// Serializable is implemented by engines whose transactions are
// serializable: one commits only if nothing it read, ranges scanned
// included, changed meanwhile (bolt, etcd). On others (tikv, snapshot
// isolation) only written keys conflict; see Tx.Lock.
type Serializable interface {
	Serializable()
}

// Exclusive is implemented by engines that one process at a time can open
// (bolt's file lock): no other client can change the store, so state that
// only guards against other clients may stay in memory until needed.
type Exclusive interface {
	Exclusive()
}

// MaxAttempts bounds Txn's retries of conflicting attempts.
const MaxAttempts = 100

// Txn runs fn in a read-write transaction, retrying conflicts with
// exponential, jittered backoff (1 ms doubling up to 50 ms) at most
// MaxAttempts times.
func Txn(ctx context.Context, e Engine, fn func(Tx) error) error {
	_, err := TxnAttempts(ctx, e, fn)
	return err
}

// TxnAttempts is Txn reporting how many attempts it made (conflicts + 1).
func TxnAttempts(ctx context.Context, e Engine, fn func(Tx) error) (int, error) {
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		err := e.Update(ctx, fn)
		if err == nil || !errors.Is(err, ErrConflict) {
			return attempt, err
		}
		if attempt >= MaxAttempts {
			return attempt, fmt.Errorf("%s: gave up after %d conflicting attempts: %w", e.Name(), attempt, err)
		}
		d := backoff/2 + rand.N(backoff)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, fmt.Errorf("%s: retry after conflict: %w", e.Name(), ctx.Err())
		case <-t.C:
		}
		if backoff < 50*time.Millisecond {
			backoff *= 2
		}
	}
}

// PrefixEnd returns the smallest key greater than every key starting with p
// (nil when there is none), the end of a prefix scan.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// errReadOnly is returned when a View transaction tries to write.
var errReadOnly = errors.New("kv: write in a read-only transaction")
