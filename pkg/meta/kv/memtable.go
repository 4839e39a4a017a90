package kv

import (
	"bytes"

	"github.com/google/btree"
	bolt "go.etcd.io/bbolt"
)

// memEntry is one committed write not yet checkpointed into the bolt file.
type memEntry struct {
	key string
	val []byte // nil: deleted (a tombstone hiding the bolt file's value)
}

// memtable holds committed writes ordered by key. The committer owns a
// mutable one; readers get immutable copy-on-write clones (btree Clone is
// lazy: it marks the nodes shared, and the next writes copy the paths they
// touch), so a reader never sees a later write.
type memtable = btree.BTreeG[*memEntry]

func newMemtable() *memtable {
	return btree.NewG(16, func(a, b *memEntry) bool { return a.key < b.key })
}

// memState is what a reader sees: the committed writes newer than the bolt
// file, newest layer first. It is immutable once published.
type memState struct {
	active *memtable // writes since the last freeze
	frozen *memtable // writes being checkpointed into bolt (nil: none)
	// ckpts is how many checkpoints may have reached the bolt file while
	// this state is current (the frozen layer's included). A reader whose
	// bolt transaction finds more started (Bolt.ckptStarted) reads a bolt
	// file newer than this state and starts over.
	ckpts int64
}

// layeredReader reads memtable layers over a bolt bucket.
type layeredReader struct {
	layers []*memtable // newest first
	b      *bolt.Bucket
}

func (s *memState) layers() []*memtable {
	if s.frozen == nil {
		return []*memtable{s.active}
	}
	return []*memtable{s.active, s.frozen}
}

func (r layeredReader) get(key []byte) []byte {
	if len(r.layers) > 0 {
		probe := &memEntry{key: string(key)}
		for _, l := range r.layers {
			if e, ok := l.Get(probe); ok {
				return clone(e.val)
			}
		}
	}
	return clone(r.b.Get(key))
}

func (r layeredReader) iter(start, end []byte) iterator {
	srcs := make([]source, 0, len(r.layers)+1)
	for _, l := range r.layers {
		if l.Len() > 0 {
			srcs = append(srcs, &memIter{t: l, from: string(start), end: end})
		}
	}
	bi := &boltIter{c: r.b.Cursor(), start: start, end: end}
	if len(srcs) == 0 {
		return bi
	}
	srcs = append(srcs, boltSource{bi})
	m := &mergeIter{srcs: srcs, heads: make([]head, len(srcs))}
	for i := range srcs {
		m.advance(i)
	}
	return m
}

// source is an ordered stream of entries, tombstones included.
type source interface {
	next() (key, val []byte, del, ok bool)
}

type boltSource struct{ it *boltIter }

func (s boltSource) next() ([]byte, []byte, bool, bool) {
	k, v, ok := s.it.next()
	return k, v, false, ok
}

// memIter walks a memtable range in small batches (the btree only iterates
// by callback), resuming after the last key of each batch.
type memIter struct {
	t    *memtable
	from string // next batch starts at the first key >= from
	end  []byte // nil: no end
	buf  []*memEntry
	done bool
}

const memBatch = 64

func (it *memIter) next() ([]byte, []byte, bool, bool) {
	if len(it.buf) == 0 {
		if it.done {
			return nil, nil, false, false
		}
		it.fill()
		if len(it.buf) == 0 {
			return nil, nil, false, false
		}
	}
	e := it.buf[0]
	it.buf = it.buf[1:]
	return []byte(e.key), clone(e.val), e.val == nil, true
}

func (it *memIter) fill() {
	it.buf = it.buf[:0]
	collect := func(e *memEntry) bool {
		if it.end != nil && e.key >= string(it.end) {
			it.done = true
			return false
		}
		it.buf = append(it.buf, e)
		return len(it.buf) < memBatch
	}
	it.t.AscendGreaterOrEqual(&memEntry{key: it.from}, collect)
	if len(it.buf) < memBatch {
		it.done = true
	}
	if n := len(it.buf); n > 0 {
		it.from = it.buf[n-1].key + "\x00" // the smallest key after it
	}
}

type head struct {
	key, val []byte
	del, ok  bool
}

// mergeIter merges sources (newest first): of equal keys the newest wins,
// and a winning tombstone hides the key.
type mergeIter struct {
	srcs  []source
	heads []head
}

func (m *mergeIter) advance(i int) {
	h := &m.heads[i]
	h.key, h.val, h.del, h.ok = m.srcs[i].next()
}

func (m *mergeIter) next() ([]byte, []byte, bool) {
	for {
		best := -1
		for i := range m.heads {
			if !m.heads[i].ok {
				continue
			}
			if best < 0 || bytes.Compare(m.heads[i].key, m.heads[best].key) < 0 {
				best = i // strictly smaller: on a tie the newer source stays
			}
		}
		if best < 0 {
			return nil, nil, false
		}
		h := m.heads[best]
		for i := range m.heads {
			if i != best && m.heads[i].ok && bytes.Equal(m.heads[i].key, h.key) {
				m.advance(i)
			}
		}
		m.advance(best)
		if !h.del {
			return h.key, h.val, true
		}
	}
}
