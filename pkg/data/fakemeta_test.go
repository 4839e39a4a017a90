package data

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta"
)

// fakeMeta implements only the chunk and slice methods of meta.Meta, for
// tests of the data layer's logic (the embedded nil interface panics on any
// other call, which would be a bug in the data layer).
type fakeMeta struct {
	meta.Meta
	bs   int
	uuid string // a fresh volume identity, as Init gives

	mu      sync.Mutex
	files   map[meta.Ino]*fakeFile
	nextID  uint64
	refs    map[uint64]int
	sizes   map[uint64]uint32
	pending map[uint64]meta.Slice
}

type fakeFile struct {
	length uint64
	chunks map[uint32][]meta.Slice
}

func newFakeMeta(bs int) *fakeMeta {
	return &fakeMeta{bs: bs, uuid: rand.Text(), files: map[meta.Ino]*fakeFile{}, refs: map[uint64]int{}, sizes: map[uint64]uint32{}, pending: map[uint64]meta.Slice{}}
}

func (m *fakeMeta) file(ino meta.Ino) *fakeFile {
	f := m.files[ino]
	if f == nil {
		f = &fakeFile{chunks: map[uint32][]meta.Slice{}}
		m.files[ino] = f
	}
	return f
}

func (m *fakeMeta) incref(s meta.Slice) {
	if s.ID != 0 {
		m.refs[s.ID]++
		m.sizes[s.ID] = s.Size
	}
}

func (m *fakeMeta) decref(s meta.Slice) {
	if s.ID == 0 {
		return
	}
	m.refs[s.ID]--
	if m.refs[s.ID] == 0 {
		delete(m.refs, s.ID)
		m.pending[s.ID] = meta.Slice{ID: s.ID, Size: s.Size}
	}
}

func (m *fakeMeta) Load(ctx context.Context) (*meta.Format, error) {
	return &meta.Format{BlockSize: m.bs, UUID: m.uuid}, nil
}

func (m *fakeMeta) ReadChunk(ctx context.Context, ino meta.Ino, index uint32) ([]meta.Slice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.file(ino).chunks[index]), nil
}

func (m *fakeMeta) WriteChunk(ctx context.Context, ino meta.Ino, index uint32, s meta.Slice, mtime time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.Pos+s.Len > meta.ChunkSize || s.Off+s.Len > s.Size {
		return fmt.Errorf("bad slice %+v: %w", s, syscall.EINVAL)
	}
	f := m.file(ino)
	f.chunks[index] = append(f.chunks[index], s)
	m.incref(s)
	if end := uint64(index)*meta.ChunkSize + uint64(s.Pos+s.Len); end > f.length {
		f.length = end
	}
	return nil
}

func (m *fakeMeta) CompactChunk(ctx context.Context, ino meta.Ino, index uint32, old, repl []meta.Slice) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.file(ino)
	cur := f.chunks[index]
	if len(cur) < len(old) || !slices.Equal(cur[:len(old)], old) {
		return fmt.Errorf("chunk %d of %d changed: %w", index, ino, syscall.EAGAIN)
	}
	f.chunks[index] = append(slices.Clone(repl), cur[len(old):]...)
	for _, s := range repl {
		m.incref(s)
	}
	for _, o := range old {
		m.decref(o)
	}
	return nil
}

func (m *fakeMeta) NewSliceID(ctx context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	return m.nextID, nil
}

func (m *fakeMeta) ListSlices(ctx context.Context, fn func(ino meta.Ino, s meta.Slice) error) error {
	m.mu.Lock()
	var all []struct {
		ino meta.Ino
		s   meta.Slice
	}
	for ino, f := range m.files {
		for _, l := range f.chunks {
			for _, s := range l {
				all = append(all, struct {
					ino meta.Ino
					s   meta.Slice
				}{ino, s})
			}
		}
	}
	m.mu.Unlock()
	for _, x := range all {
		if err := fn(x.ino, x.s); err != nil {
			return err
		}
	}
	return nil
}

// Sync: the fake's commits are all in memory, nothing to make durable.
func (m *fakeMeta) Sync(ctx context.Context) error { return nil }

func (m *fakeMeta) PendingDeletes(ctx context.Context, limit int) ([]meta.Slice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []meta.Slice
	for _, s := range m.pending {
		if len(out) == limit {
			break
		}
		out = append(out, s)
	}
	return out, nil
}

func (m *fakeMeta) DoneDeleting(ctx context.Context, ids []uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		delete(m.pending, id)
	}
	return nil
}

// truncate is what meta.SetAttr(SetSize) does to the chunk lists: drop
// chunks past the end and cover the cut part of the last one with a hole.
func (m *fakeMeta) truncate(ino meta.Ino, size uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.file(ino)
	if size < f.length {
		for idx, l := range f.chunks {
			cs := uint64(idx) * meta.ChunkSize
			switch {
			case cs >= size:
				for _, s := range l {
					m.decref(s)
				}
				delete(f.chunks, idx)
			case cs+meta.ChunkSize > size && f.length > size:
				from := uint32(size - cs)
				to := uint32(min(f.length-cs, meta.ChunkSize))
				f.chunks[idx] = append(l, meta.Slice{Pos: from, Len: to - from})
			}
		}
	}
	f.length = size
}

func (m *fakeMeta) length(ino meta.Ino) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.file(ino).length
}
