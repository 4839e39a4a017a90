package kv

import (
	"bytes"
	"slices"
)

// reader is the read side an overlay sits on.
type reader interface {
	get(key []byte) []byte
	// seek positions an iterator at the first key >= start.
	iter(start, end []byte) iterator
}

// batchReader is a reader that reads many keys in one round trip.
type batchReader interface {
	batchGet(keys [][]byte) [][]byte
}

type iterator interface {
	// next returns the next key and value (copies) or ok=false at the end.
	next() (key, value []byte, ok bool)
}

// overlay buffers one transaction's writes over a reader, so a transaction
// that fails can be dropped without touching the store, and later reads of
// the same transaction see its own writes.
type overlay struct {
	r        reader
	writes   map[string][]byte // nil value = deleted
	readOnly bool
	err      error // a write in a read-only transaction
}

func newOverlay(r reader, readOnly bool) *overlay {
	return &overlay{r: r, readOnly: readOnly}
}

func (o *overlay) Get(key []byte) ([]byte, error) {
	if v, ok := o.writes[string(key)]; ok {
		return clone(v), nil
	}
	return o.r.get(key), nil
}

func (o *overlay) BatchGet(keys [][]byte) ([][]byte, error) {
	out := make([][]byte, len(keys))
	br, ok := o.r.(batchReader)
	if !ok {
		for i, k := range keys {
			out[i], _ = o.Get(k)
		}
		return out, nil
	}
	var miss [][]byte
	var at []int
	for i, k := range keys {
		if v, ok := o.writes[string(k)]; ok {
			out[i] = clone(v)
		} else {
			miss, at = append(miss, k), append(at, i)
		}
	}
	for j, v := range br.batchGet(miss) {
		out[at[j]] = v
	}
	return out, nil
}

func (o *overlay) Set(key, value []byte) {
	if o.readOnly {
		o.err = errReadOnly
		return
	}
	if o.writes == nil {
		o.writes = make(map[string][]byte)
	}
	if value == nil {
		value = []byte{}
	}
	o.writes[string(key)] = value
}

func (o *overlay) Delete(key []byte) {
	if o.readOnly {
		o.err = errReadOnly
		return
	}
	if o.writes == nil {
		o.writes = make(map[string][]byte)
	}
	o.writes[string(key)] = nil
}

// Lock implements Tx: the engines over an overlay (bolt, etcd) are
// serializable, so what was read already conflicts.
func (o *overlay) Lock(key []byte) error { return nil }

func (o *overlay) Scan(start, end []byte, limit int, fn func(k, v []byte) bool) error {
	// The overlay's own keys in range, sorted, merged with the store's.
	var mine []string
	for k := range o.writes {
		if k >= string(start) && (end == nil || k < string(end)) {
			mine = append(mine, k)
		}
	}
	slices.Sort(mine)
	it := o.r.iter(start, end)
	sk, sv, sok := it.next()
	n := 0
	for sok || len(mine) > 0 {
		var k, v []byte
		switch {
		case len(mine) > 0 && (!sok || bytes.Compare([]byte(mine[0]), sk) <= 0):
			if sok && mine[0] == string(sk) {
				sk, sv, sok = it.next()
			}
			k, v = []byte(mine[0]), o.writes[mine[0]]
			mine = mine[1:]
			if v == nil {
				continue // deleted here
			}
			v = clone(v)
		default:
			k, v = sk, sv
			sk, sv, sok = it.next()
		}
		if !fn(k, v) {
			return nil
		}
		n++
		if limit > 0 && n >= limit {
			return nil
		}
	}
	return nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
