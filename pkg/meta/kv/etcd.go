package kv

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdBatch bounds the operations of one etcd transaction we build for
// reading (etcd's --max-txn-ops defaults to 128).
const etcdBatch = 100

// Etcd is the engine over an etcd cluster. A transaction reads at one
// revision (the first read's), buffers its writes, and commits them in one
// etcd transaction that compares every key it read against the mod
// revision it saw, and every range it scanned against keys newer than that
// revision (an insert into a range read empty conflicts too): serializable,
// retried by Txn when a compare fails.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	name   string
}

// Name implements Engine.
func (e *Etcd) Name() string { return e.name }

// Serializable implements Serializable.
func (e *Etcd) Serializable() {}

// Close implements Engine.
func (e *Etcd) Close() error { return e.cli.Close() }

// Update implements Engine.
func (e *Etcd) Update(ctx context.Context, fn func(Tx) error) error {
	r := &etcdReader{ctx: ctx, e: e, seen: make(map[string]int64)}
	o := newOverlay(r, false)
	err := fn(o)
	if r.err != nil {
		return r.err // a failed read may have looked like a missing key to fn
	}
	if err != nil {
		return err
	}
	if len(o.writes) == 0 {
		return nil
	}
	cmps := make([]clientv3.Cmp, 0, len(r.seen)+len(r.iters))
	for k, rev := range r.seen {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}
	for _, it := range r.iters {
		if start, end, ok := it.covered(); ok {
			// Every key in the range must predate the read: none inserted.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(start), "<", r.rev+1).WithRange(end))
		}
	}
	ops := make([]clientv3.Op, 0, len(o.writes))
	for k, v := range o.writes {
		if v == nil {
			ops = append(ops, clientv3.OpDelete(e.prefix+k))
		} else {
			ops = append(ops, clientv3.OpPut(e.prefix+k, string(v)))
		}
	}
	resp, err := e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("%s: commit: %w", e.name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", e.name, ErrConflict)
	}
	return nil
}

// View implements Engine.
func (e *Etcd) View(ctx context.Context, fn func(Tx) error) error {
	r := &etcdReader{ctx: ctx, e: e}
	o := newOverlay(r, true)
	err := fn(o)
	if r.err != nil {
		return r.err
	}
	if err != nil {
		return err
	}
	return o.err
}

// etcdReader reads at one revision and remembers what it saw.
type etcdReader struct {
	ctx  context.Context
	e    *Etcd
	rev  int64            // 0 until the first read
	seen map[string]int64 // full key -> mod revision read (0 = absent); nil in views
	// iters are the ranges scanned in an Update (nil in views), compared at
	// commit so that inserts into them conflict.
	iters []*etcdIter
	// vals caches point reads, so a key prefetched with BatchGet costs no
	// second round trip (nil = absent).
	vals map[string][]byte
	err  error
}

func (r *etcdReader) opts(extra ...clientv3.OpOption) []clientv3.OpOption {
	if r.rev != 0 {
		extra = append(extra, clientv3.WithRev(r.rev))
	}
	return extra
}

func (r *etcdReader) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: read: %w", r.e.name, err)
	}
}

func (r *etcdReader) get(key []byte) []byte {
	if r.err != nil {
		return nil
	}
	k := r.e.prefix + string(key)
	if v, ok := r.vals[k]; ok {
		return clone(v)
	}
	resp, err := r.e.cli.Get(r.ctx, k, r.opts()...)
	if err != nil {
		r.fail(err)
		return nil
	}
	if r.rev == 0 {
		r.rev = resp.Header.Revision
	}
	var v []byte
	var mod int64
	if len(resp.Kvs) > 0 {
		v, mod = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
	}
	if r.seen != nil {
		r.seen[k] = mod
	}
	r.cache(k, v)
	return v
}

func (r *etcdReader) cache(k string, v []byte) {
	if r.vals == nil {
		r.vals = make(map[string][]byte)
	}
	r.vals[k] = v
}

// batchGet reads many keys in few round trips.
func (r *etcdReader) batchGet(keys [][]byte) [][]byte {
	res := make([][]byte, len(keys))
	// Serve cached keys, fetch the rest.
	var fetch [][]byte
	var at []int
	for i, k := range keys {
		if v, ok := r.vals[r.e.prefix+string(k)]; ok {
			res[i] = clone(v)
		} else {
			fetch, at = append(fetch, k), append(at, i)
		}
	}
	for j, v := range r.fetch(fetch) {
		res[at[j]] = v
	}
	return res
}

func (r *etcdReader) fetch(keys [][]byte) [][]byte {
	res := make([][]byte, len(keys))
	out := res
	for len(keys) > 0 && r.err == nil {
		if r.rev == 0 {
			// Fix the revision with a first single read.
			out[0] = r.get(keys[0])
			keys, out = keys[1:], out[1:]
			continue
		}
		n := min(len(keys), etcdBatch)
		ops := make([]clientv3.Op, n)
		for i := range n {
			ops[i] = clientv3.OpGet(r.e.prefix+string(keys[i]), r.opts()...)
		}
		resp, err := r.e.cli.Txn(r.ctx).Then(ops...).Commit()
		if err != nil {
			r.fail(err)
			break
		}
		for i, rp := range resp.Responses {
			rr := rp.GetResponseRange()
			var mod int64
			if rr != nil && len(rr.Kvs) > 0 {
				out[i], mod = rr.Kvs[0].Value, rr.Kvs[0].ModRevision
			}
			if r.seen != nil {
				r.seen[r.e.prefix+string(keys[i])] = mod
			}
			r.cache(r.e.prefix+string(keys[i]), out[i])
		}
		keys, out = keys[n:], out[n:]
	}
	return res
}

func (r *etcdReader) iter(start, end []byte) iterator {
	it := &etcdIter{r: r, start: r.e.prefix + string(start), next_: r.e.prefix + string(start), end: r.endKey(end)}
	if r.seen != nil {
		r.iters = append(r.iters, it)
	}
	return it
}

func (r *etcdReader) endKey(end []byte) string {
	if end == nil {
		return string(PrefixEnd([]byte(r.e.prefix)))
	}
	return r.e.prefix + string(end)
}

// etcdIter pages through a range. Keys it returns join the compare set, so
// a concurrent change of any of them fails the commit, and so does the part
// of the range it went through (covered), so an insert there fails it too.
type etcdIter struct {
	r     *etcdReader
	start string
	next_ string
	end   string
	buf   []*kvPair
	done  bool
	last  string // the last key returned ("" = none)
	ended bool   // returned every key of the range
}

// covered is the part [start, end) of the range the scan's caller saw: all
// of it once the scan ended, else up to the last key returned.
func (it *etcdIter) covered() (start, end string, ok bool) {
	switch {
	case it.ended:
		return it.start, it.end, true
	case it.last != "":
		return it.start, it.last + "\x00", true
	}
	return "", "", false
}

type kvPair struct {
	k, v []byte
	mod  int64
}

func (it *etcdIter) next() ([]byte, []byte, bool) {
	r := it.r
	if len(it.buf) == 0 && !it.done && r.err == nil {
		resp, err := r.e.cli.Get(r.ctx, it.next_, r.opts(clientv3.WithRange(it.end), clientv3.WithLimit(256))...)
		if err != nil {
			r.fail(err)
			return nil, nil, false
		}
		if r.rev == 0 {
			r.rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			it.buf = append(it.buf, &kvPair{kv.Key, kv.Value, kv.ModRevision})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			it.done = true
		} else {
			it.next_ = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	if len(it.buf) == 0 {
		it.ended = it.done && r.err == nil
		return nil, nil, false
	}
	p := it.buf[0]
	it.buf = it.buf[1:]
	it.last = string(p.k)
	if r.seen != nil {
		r.seen[string(p.k)] = p.mod
	}
	return p.k[len(r.e.prefix):], p.v, true
}
