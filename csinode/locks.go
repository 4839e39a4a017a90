package csinode

import "sync"

// keyLocks lets one operation at a time work on a path. A second caller gets
// false instead of waiting: kubelet retries Aborted calls, and a caller stuck
// behind a hung FUSE mount must not pile up goroutines.
type keyLocks struct {
	mu   sync.Mutex
	held map[string]struct{}
}

func newKeyLocks() *keyLocks {
	return &keyLocks{held: make(map[string]struct{})}
}

// tryLock takes all keys or none.
func (l *keyLocks) tryLock(keys ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if _, ok := l.held[k]; ok {
			return false
		}
	}
	for _, k := range keys {
		l.held[k] = struct{}{}
	}
	return true
}

func (l *keyLocks) unlock(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		delete(l.held, k)
	}
}
