package kv

import (
	"context"
	"errors"
	"fmt"

	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/txnkv/transaction"
	"github.com/tikv/client-go/v2/txnkv/txnsnapshot"
)

// TiKV is the engine over a TiKV cluster: client-go txnkv with optimistic
// transactions (snapshot reads, write conflicts detected at commit and
// retried by Txn). Every key lives under a per-volume prefix. Values must
// not be empty (TiKV refuses them).
//
// Commits try one-phase commit (1PC): a transaction whose keys all live in
// one region is committed by its prewrite request alone, with no commit
// request and no commit timestamp to fetch. That is every transaction of a
// volume whose metadata fits one region (TiKV splits at 96 MiB by default);
// a transaction spanning regions commits in two phases as before. Which keys
// share a region follows pkg/meta's key schema (a record type byte after the
// volume prefix, so a create's entry, inode and usage slot lie in three
// ranges) and TiKV's size-based splits; no prefix chosen here can gather
// them, since every client of a volume reads the same keys and scans rely on
// the schema's order.
//
// Causal consistency stays off (client-go's default; TiDB's
// tidb_guarantee_linearizability): a 1PC transaction takes one timestamp
// from PD before its prewrite and commits above it, so it is ordered after
// every transaction that finished before it began committing, and any
// transaction starting after it returned sees it. That is linearizable, what
// close-to-open between clients needs; causal consistency would save the
// timestamp but order only transactions that share keys.
//
// Async commit stays off: the call returns before the commit is written,
// readers meeting its locks settle it from the secondaries, and client-go's
// mock cluster cannot run it, so no test here would ever exercise that path.
type TiKV struct {
	c      *txnkv.Client
	prefix []byte
	name   string
	owned  bool   // Close closes c
	done   func() // Close calls it after closing c (OpenTiKV's release of the security config)
}

// NewTiKV wraps an existing client (tests pass the in-process mock cluster's);
// Close leaves it open.
func NewTiKV(c *txnkv.Client, name string, prefix []byte) *TiKV {
	return &TiKV{c: c, prefix: append([]byte(nil), prefix...), name: name}
}

// Name implements Engine.
func (e *TiKV) Name() string { return e.name }

// Close implements Engine.
func (e *TiKV) Close() error {
	if !e.owned {
		return nil
	}
	err := e.c.Close()
	if e.done != nil {
		e.done()
	}
	return err
}

func isTiKVConflict(err error) bool {
	var latch *tikverr.ErrWriteConflictInLatch
	var retry *tikverr.ErrRetryable
	return tikverr.IsErrWriteConflict(err) || errors.As(err, &latch) || errors.As(err, &retry)
}

// Update implements Engine.
func (e *TiKV) Update(ctx context.Context, fn func(Tx) error) error {
	txn, err := e.c.Begin()
	if err != nil {
		return fmt.Errorf("%s: begin: %w", e.name, err)
	}
	txn.SetEnable1PC(true)
	txn.SetCausalConsistency(false)
	tx := &tikvTx{ctx: ctx, e: e, txn: txn}
	if err := fn(tx); err != nil {
		txn.Rollback()
		return err
	}
	if tx.err != nil {
		txn.Rollback()
		return tx.err
	}
	if err := txn.Commit(ctx); err != nil {
		if isTiKVConflict(err) {
			return fmt.Errorf("%s: %w: %v", e.name, ErrConflict, err)
		}
		return fmt.Errorf("%s: commit: %w", e.name, err)
	}
	return nil
}

// View implements Engine.
func (e *TiKV) View(ctx context.Context, fn func(Tx) error) error {
	txn, err := e.c.Begin()
	if err != nil {
		return fmt.Errorf("%s: begin: %w", e.name, err)
	}
	defer txn.Rollback()
	tx := &tikvTx{ctx: ctx, e: e, txn: txn, readOnly: true}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.err
}

// maxScanBatch bounds the keys one scan request fetches.
const maxScanBatch = 1024

type tikvTx struct {
	ctx      context.Context
	e        *TiKV
	txn      *transaction.KVTxn
	readOnly bool
	err      error // first failed write, reported at commit
}

func (t *tikvTx) key(k []byte) []byte {
	return append(append(make([]byte, 0, len(t.e.prefix)+len(k)), t.e.prefix...), k...)
}

func (t *tikvTx) Get(key []byte) ([]byte, error) {
	v, err := t.txn.Get(t.ctx, t.key(key))
	if tikverr.IsErrNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: get: %w", t.e.name, err)
	}
	return clone(v.Value), nil
}

func (t *tikvTx) BatchGet(keys [][]byte) ([][]byte, error) {
	pk := make([][]byte, len(keys))
	for i, k := range keys {
		pk[i] = t.key(k)
	}
	m, err := t.txn.BatchGet(t.ctx, pk)
	if err != nil {
		return nil, fmt.Errorf("%s: batch get: %w", t.e.name, err)
	}
	out := make([][]byte, len(keys))
	for i, k := range pk {
		if v, ok := m[string(k)]; ok && len(v.Value) > 0 {
			out[i] = clone(v.Value)
		}
	}
	return out, nil
}

func (t *tikvTx) Set(key, value []byte) {
	if t.readOnly {
		t.err = errReadOnly
		return
	}
	if len(value) == 0 {
		t.err = fmt.Errorf("%s: set %q: empty values cannot be stored", t.e.name, key)
		return
	}
	if err := t.txn.Set(t.key(key), value); err != nil && t.err == nil {
		t.err = fmt.Errorf("%s: set: %w", t.e.name, err)
	}
}

func (t *tikvTx) Delete(key []byte) {
	if t.readOnly {
		t.err = errReadOnly
		return
	}
	if err := t.txn.Delete(t.key(key)); err != nil && t.err == nil {
		t.err = fmt.Errorf("%s: delete: %w", t.e.name, err)
	}
}

// Lock rewrites the key with its value: under snapshot isolation only
// written keys conflict.
func (t *tikvTx) Lock(key []byte) error {
	v, err := t.Get(key)
	if err != nil || v == nil {
		return err
	}
	t.Set(key, v)
	return nil
}

func (t *tikvTx) Scan(start, end []byte, limit int, fn func(k, v []byte) bool) error {
	upper := PrefixEnd(t.e.prefix)
	if end != nil {
		upper = t.key(end)
	}
	// A scan fetches its keys in batches of the snapshot's batch size, 256 by
	// default: a limited scan asks for what it will use (an emptiness check
	// for 1 key, not 256; a readdir page of 1000 in one request, not four).
	batch := txnsnapshot.DefaultScanBatchSize
	if limit > 0 {
		batch = min(max(limit, 2), maxScanBatch)
	}
	t.txn.GetSnapshot().SetScanBatchSize(batch)
	it, err := t.txn.Iter(t.key(start), upper)
	if err != nil {
		return fmt.Errorf("%s: scan: %w", t.e.name, err)
	}
	defer it.Close()
	n := 0
	for it.Valid() {
		if !fn(clone(it.Key()[len(t.e.prefix):]), clone(it.Value())) {
			return nil
		}
		if n++; limit > 0 && n >= limit {
			return nil
		}
		if err := it.Next(); err != nil {
			return fmt.Errorf("%s: scan: %w", t.e.name, err)
		}
	}
	return nil
}
