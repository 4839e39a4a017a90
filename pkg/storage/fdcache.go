package storage

import (
	"container/list"
	"sync"

	"golang.org/x/sys/unix"
)

// fdCache keeps read-only descriptors of recently read objects open, so a
// Get costs one pread instead of open, pread and close: opening (a walk of
// five path components and a new file description) cost as much CPU as the
// read itself for 4 KiB reads, and a descriptor kept open also keeps the
// kernel's readahead state of the object between a sequential reader's
// requests. A descriptor reads the object as it was when opened: podfs
// writes each key once (Put and Delete here drop the key's descriptor; a
// replacement made by another process is not seen until the descriptor is
// evicted, which is why only immutable objects suit this store).
type fdCache struct {
	mu    sync.Mutex
	limit int
	ll    *list.List // front = most recently used; values *cachedFD
	items map[string]*list.Element
}

type cachedFD struct {
	key    string
	fd     int
	refs   int  // Gets using fd now
	closed bool // evicted or dropped: close when refs drops to 0
}

func newFDCache(limit int) *fdCache {
	return &fdCache{limit: limit, ll: list.New(), items: map[string]*list.Element{}}
}

// get returns the open descriptor of key, or opens path; release it with put.
func (c *fdCache) get(key, path string) (*cachedFD, error) {
	c.mu.Lock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		cf := e.Value.(*cachedFD)
		cf.refs++
		c.mu.Unlock()
		return cf, nil
	}
	c.mu.Unlock()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	cf := &cachedFD{key: key, fd: fd, refs: 1}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		// Opened meanwhile by another reader: use that one.
		_ = unix.Close(fd)
		c.ll.MoveToFront(e)
		cf = e.Value.(*cachedFD)
		cf.refs++
		return cf, nil
	}
	c.items[key] = c.ll.PushFront(cf)
	for c.ll.Len() > c.limit {
		c.removeLocked(c.ll.Back())
	}
	return cf, nil
}

// put releases a descriptor from get.
func (c *fdCache) put(cf *cachedFD) {
	c.mu.Lock()
	cf.refs--
	if cf.refs == 0 && cf.closed {
		_ = unix.Close(cf.fd)
	}
	c.mu.Unlock()
}

// drop forgets key's descriptor (the object is replaced or deleted).
func (c *fdCache) drop(key string) {
	c.mu.Lock()
	if e, ok := c.items[key]; ok {
		c.removeLocked(e)
	}
	c.mu.Unlock()
}

func (c *fdCache) removeLocked(e *list.Element) {
	cf := e.Value.(*cachedFD)
	c.ll.Remove(e)
	delete(c.items, cf.key)
	cf.closed = true
	if cf.refs == 0 {
		_ = unix.Close(cf.fd)
	}
}

// close closes every descriptor not in use (those in use close on put).
func (c *fdCache) close() {
	c.mu.Lock()
	for c.ll.Len() > 0 {
		c.removeLocked(c.ll.Back())
	}
	c.mu.Unlock()
}
