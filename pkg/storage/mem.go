package storage

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Mem is an in-memory store for tests. It copies data in and out, so callers
// may reuse their buffers.
type Mem struct {
	name string
	mu   sync.RWMutex
	objs map[string]memObj
}

type memObj struct {
	data []byte
	mod  time.Time
}

// NewMem returns an empty memory store.
func NewMem(name string) *Mem { return &Mem{name: name, objs: map[string]memObj{}} }

func (m *Mem) Put(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	m.objs[key] = memObj{data: append([]byte(nil), data...), mod: time.Now()}
	m.mu.Unlock()
	return nil
}

func (m *Mem) Get(ctx context.Context, key string, off int64, p []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.RLock()
	o, ok := m.objs[key]
	m.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("get %s from %s: %w", key, m, ErrNotFound)
	}
	if off < 0 {
		return 0, fmt.Errorf("get %s: negative offset %d", key, off)
	}
	if off >= int64(len(o.data)) {
		return 0, nil
	}
	return copy(p, o.data[off:]), nil
}

func (m *Mem) Delete(ctx context.Context, key string) error {
	m.mu.Lock()
	delete(m.objs, key)
	m.mu.Unlock()
	return nil
}

func (m *Mem) Head(ctx context.Context, key string) (Object, error) {
	m.mu.RLock()
	o, ok := m.objs[key]
	m.mu.RUnlock()
	if !ok {
		return Object{}, fmt.Errorf("head %s in %s: %w", key, m, ErrNotFound)
	}
	return Object{Key: key, Size: int64(len(o.data)), ModTime: o.mod}, nil
}

func (m *Mem) List(ctx context.Context, prefix, marker string, limit int) ([]Object, error) {
	m.mu.RLock()
	var out []Object
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) && k > marker {
			out = append(out, Object{Key: k, Size: int64(len(o.data)), ModTime: o.mod})
		}
	}
	m.mu.RUnlock()
	return sortLimit(out, limit), nil
}

func (m *Mem) String() string { return "mem://" + m.name }
func (m *Mem) Close() error   { return nil }

// sortLimit orders objects by key and keeps the first limit (all when limit <= 0).
func sortLimit(out []Object, limit int) []Object {
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}
