package data

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// memCache is a size-bounded LRU of whole blocks keyed by object key. Blocks
// are immutable once written (a key is never rewritten with other bytes), so
// cached copies never go stale; callers must not modify what Get returns.
type memCache struct {
	mu    sync.Mutex
	limit int64
	used  int64
	ll    *list.List // front = most recent
	items map[string]*list.Element
}

type memEntry struct {
	key  string
	data []byte
}

func newMemCache(limit int64) *memCache {
	return &memCache{limit: limit, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *memCache) Get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*memEntry).data, true
	}
	return nil, false
}

func (c *memCache) Add(key string, data []byte) {
	if int64(len(data)) > c.limit {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.items[key] = c.ll.PushFront(&memEntry{key, data})
	c.used += int64(len(data))
	for c.used > c.limit {
		e := c.ll.Back()
		me := e.Value.(*memEntry)
		c.ll.Remove(e)
		delete(c.items, me.key)
		c.used -= int64(len(me.data))
	}
}

func (c *memCache) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.Remove(e)
		delete(c.items, key)
		c.used -= int64(len(e.Value.(*memEntry).data))
	}
}

// diskCache keeps blocks as files under a directory, bounded in bytes, and
// finds what it cached before a restart by scanning the directory at start.
// Files are written to a temp name and renamed, so a crash leaves whole
// blocks or nothing; a block whose length differs from its key is dropped.
type diskCache struct {
	dir   string
	limit int64
	log   *slog.Logger

	mu    sync.Mutex
	used  int64
	ll    *list.List // front = most recent
	items map[string]*list.Element
}

type diskEntry struct {
	key  string
	size int64
}

func newDiskCache(dir string, limit int64, log *slog.Logger) (*diskCache, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	c := &diskCache{dir: dir, limit: limit, log: log, ll: list.New(), items: map[string]*list.Element{}}
	type found struct {
		key  string
		size int64
		at   time.Time
	}
	var all []found
	root := filepath.Join(dir, "blocks")
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		key := filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if _, _, blen, ok := ParseBlockKey(key); !ok || int64(blen) != info.Size() {
			_ = os.Remove(p)
			return nil
		}
		all = append(all, found{key, info.Size(), info.ModTime()})
		return nil
	})
	tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, t := range tmps {
		_ = os.Remove(filepath.Join(dir, "tmp", t.Name()))
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	for _, f := range all { // oldest first, so the newest end up in front
		c.items[f.key] = c.ll.PushFront(&diskEntry{f.key, f.size})
		c.used += f.size
	}
	c.evict()
	return c, nil
}

func (c *diskCache) path(key string) string {
	return filepath.Join(c.dir, "blocks", filepath.FromSlash(key))
}

// Get reads a cached block of blen bytes.
func (c *diskCache) Get(key string, blen int) ([]byte, bool) {
	c.mu.Lock()
	e, ok := c.items[key]
	if ok {
		c.ll.MoveToFront(e)
	}
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	b, err := os.ReadFile(c.path(key))
	if err != nil || len(b) != blen {
		c.remove(key)
		return nil, false
	}
	return b, true
}

// Add stores a block; failures only cost a future cache miss.
func (c *diskCache) Add(key string, data []byte) {
	if int64(len(data)) > c.limit {
		return
	}
	c.mu.Lock()
	_, ok := c.items[key]
	c.mu.Unlock()
	if ok {
		return
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(c.dir, "tmp", hex.EncodeToString(rnd[:]))
	dst := c.path(key)
	err := os.WriteFile(tmp, data, 0o600)
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
			err = os.Rename(tmp, dst)
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		c.log.Warn("disk cache write failed", "key", key, "err", err)
		return
	}
	c.mu.Lock()
	if _, ok := c.items[key]; !ok {
		c.items[key] = c.ll.PushFront(&diskEntry{key, int64(len(data))})
		c.used += int64(len(data))
	}
	c.evict()
	c.mu.Unlock()
}

func (c *diskCache) remove(key string) {
	c.mu.Lock()
	if e, ok := c.items[key]; ok {
		c.ll.Remove(e)
		delete(c.items, key)
		c.used -= e.Value.(*diskEntry).size
	}
	c.mu.Unlock()
	_ = os.Remove(c.path(key))
}

// evict drops least recently used blocks until the cache fits; c.mu held.
func (c *diskCache) evict() {
	for c.used > c.limit {
		e := c.ll.Back()
		de := e.Value.(*diskEntry)
		c.ll.Remove(e)
		delete(c.items, de.key)
		c.used -= de.size
		_ = os.Remove(c.path(de.key))
	}
}

// Used is the bytes the disk cache holds.
func (c *diskCache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}
