package data

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// memCache is a size-bounded LRU of whole blocks keyed by volume and object
// key, sharded to keep readers of different blocks off each other's lock. Blocks
// are immutable once written (a key is never rewritten with other bytes), so
// cached copies never go stale. Callers never hold a cached buffer: they copy
// out under the shard's lock, which lets evicted buffers be reused at once
// (fresh memory costs page faults that halve RADOS read speed).
type memCache struct {
	shards  [16]memShard
	limit   int64
	recycle func([]byte)
}

// ckey names a cached block: slice ids are counted per volume, so an object
// key alone is ambiguous in a cache that several volumes share.
type ckey struct {
	vol string // the volume's UUID
	key string // the block's object key
}

type memShard struct {
	mu    sync.Mutex
	limit int64
	used  int64
	ll    *list.List // front = most recent
	items map[ckey]*list.Element
}

type memEntry struct {
	key  ckey
	data []byte
}

func newMemCache(limit int64, recycle func([]byte)) *memCache {
	c := &memCache{limit: limit, recycle: recycle}
	for i := range c.shards {
		c.shards[i] = memShard{limit: limit / int64(len(c.shards)), ll: list.New(), items: map[ckey]*list.Element{}}
	}
	return c
}

func (c *memCache) shard(k ckey) *memShard {
	h := uint32(2166136261)
	for _, s := range [2]string{k.vol, k.key} {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint32(s[i])) * 16777619
		}
	}
	return &c.shards[h%uint32(len(c.shards))]
}

// Limit is the cache's bound in bytes.
func (c *memCache) Limit() int64 { return c.limit }

// Has reports whether key is cached.
func (c *memCache) Has(key ckey) bool {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.items[key]
	return ok
}

// CopyOut copies the cached block's bytes from off into dst.
func (c *memCache) CopyOut(key ckey, off int, dst []byte) bool {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.items[key]
	if !ok {
		return false
	}
	sh.ll.MoveToFront(e)
	copy(dst, e.Value.(*memEntry).data[off:])
	return true
}

// Used is the memory the cached blocks take.
func (c *memCache) Used() int64 {
	var n int64
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += sh.used
		sh.mu.Unlock()
	}
	return n
}

// Add takes ownership of data: it is cached or recycled.
func (c *memCache) Add(key ckey, data []byte) {
	sh := c.shard(key)
	size := int64(cap(data))
	sh.mu.Lock()
	if _, ok := sh.items[key]; ok || size > sh.limit {
		sh.mu.Unlock()
		c.recycle(data)
		return
	}
	sh.items[key] = sh.ll.PushFront(&memEntry{key, data})
	sh.used += size
	var evicted [][]byte
	for sh.used > sh.limit {
		e := sh.ll.Back()
		me := e.Value.(*memEntry)
		sh.ll.Remove(e)
		delete(sh.items, me.key)
		sh.used -= int64(cap(me.data))
		evicted = append(evicted, me.data)
	}
	sh.mu.Unlock()
	for _, b := range evicted {
		c.recycle(b)
	}
}

func (c *memCache) Remove(key ckey) {
	sh := c.shard(key)
	sh.mu.Lock()
	e, ok := sh.items[key]
	if ok {
		sh.ll.Remove(e)
		delete(sh.items, key)
		sh.used -= int64(cap(e.Value.(*memEntry).data))
	}
	sh.mu.Unlock()
	if ok {
		c.recycle(e.Value.(*memEntry).data)
	}
}

// RemoveVolume drops the blocks of one volume (vol "" = all), so a mount
// that ends leaves its share of a shared cache to the others.
func (c *memCache) RemoveVolume(vol string) {
	for i := range c.shards {
		sh := &c.shards[i]
		var freed [][]byte
		sh.mu.Lock()
		for e := sh.ll.Front(); e != nil; {
			next := e.Next()
			me := e.Value.(*memEntry)
			if vol == "" || me.key.vol == vol {
				sh.ll.Remove(e)
				delete(sh.items, me.key)
				sh.used -= int64(cap(me.data))
				freed = append(freed, me.data)
			}
			e = next
		}
		sh.mu.Unlock()
		for _, b := range freed {
			c.recycle(b)
		}
	}
}

// Clear drops every block.
func (c *memCache) Clear() { c.RemoveVolume("") }

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

// openDiskCache opens volume vol's disk cache in CacheDir root: the
// directory root/vol. Blocks an older podfs kept in root/blocks carry no
// volume identity and cannot be trusted with several volumes: they go.
func openDiskCache(root, vol string, limit int64, log *slog.Logger) (*diskCache, error) {
	for _, legacy := range []string{"blocks", "tmp"} {
		p := filepath.Join(root, legacy)
		if _, err := os.Lstat(p); err == nil {
			log.Info("removing a disk cache of blocks without volume identity", "dir", p)
			if err := os.RemoveAll(p); err != nil {
				return nil, err
			}
		}
	}
	return newDiskCache(filepath.Join(root, vol), limit, log)
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

// Read fills buf (a block's length) from the cache.
func (c *diskCache) Read(key string, buf []byte) bool {
	c.mu.Lock()
	e, ok := c.items[key]
	if ok {
		c.ll.MoveToFront(e)
	}
	c.mu.Unlock()
	if !ok {
		return false
	}
	fh, err := os.Open(c.path(key))
	if err == nil {
		var n int
		n, err = fh.ReadAt(buf, 0)
		fh.Close()
		if err == io.EOF && n == len(buf) {
			err = nil
		}
		if err == nil && n == len(buf) {
			return true
		}
	}
	c.remove(key)
	return false
}

// ReadAt copies bytes [off, off+len(dst)) of a cached block into dst.
func (c *diskCache) ReadAt(key string, off int, dst []byte) bool {
	c.mu.Lock()
	_, ok := c.items[key]
	c.mu.Unlock()
	if !ok {
		return false
	}
	fh, err := os.Open(c.path(key))
	if err != nil {
		c.remove(key)
		return false
	}
	defer fh.Close()
	n, err := fh.ReadAt(dst, int64(off))
	return n == len(dst) && (err == nil || err == io.EOF)
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
