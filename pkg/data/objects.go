package data

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/storage"
)

// KeyPrefix is where block objects live in the object store; GC looks only here.
const KeyPrefix = "chunks/"

// BlockKey names block idx (of blen bytes) of slice id. The first two levels
// spread objects over 256 prefixes and then by id/1000, so no directory of a
// file store (and no listing prefix) grows without bound.
func BlockKey(id uint64, idx, blen int) string {
	return fmt.Sprintf("%s%02x/%d/%d_%d_%d", KeyPrefix, id%256, id/1000, id, idx, blen)
}

// ParseBlockKey is BlockKey's inverse; ok is false for keys podfs did not write.
func ParseBlockKey(key string) (id uint64, idx, blen int, ok bool) {
	if !strings.HasPrefix(key, KeyPrefix) {
		return 0, 0, 0, false
	}
	parts := strings.Split(key[len(KeyPrefix):], "/")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	f := strings.Split(parts[2], "_")
	if len(f) != 3 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	id, err1 = strconv.ParseUint(f[0], 10, 64)
	idx, err2 = strconv.Atoi(f[1])
	blen, err3 = strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || err3 != nil || idx < 0 || blen <= 0 || BlockKey(id, idx, blen) != key {
		return 0, 0, 0, false
	}
	return id, idx, blen, true
}

// blockLen is the length of block idx of a slice of size bytes.
func blockLen(size uint32, idx, bs int) int {
	n := int(size) - idx*bs
	if n > bs {
		n = bs
	}
	return n
}

// numBlocks is how many blocks a slice of size bytes has.
func numBlocks(size uint32, bs int) int { return (int(size) + bs - 1) / bs }

// SliceKeys lists the object keys of a slice of size bytes.
func SliceKeys(id uint64, size uint32, bs int) []string {
	if id == 0 {
		return nil
	}
	n := numBlocks(size, bs)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = BlockKey(id, i, blockLen(size, i, bs))
	}
	return keys
}

// eio marks err as an I/O error the kernel should see as EIO, keeping the cause.
func eio(err error) error {
	if errors.Is(err, syscall.EIO) {
		return err
	}
	return fmt.Errorf("%w: %w", syscall.EIO, err)
}

// retry runs op until it succeeds, fails with a permanent error, ctx ends or
// max retries pass, sleeping with exponential backoff in between.
func retry(ctx context.Context, max int, backoff time.Duration, what string, op func() error) error {
	var err error
	for attempt := 0; ; attempt++ {
		if err = op(); err == nil {
			return nil
		}
		// A directory quota's refusal is final (a commit re-checks it).
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, syscall.EDQUOT) || ctx.Err() != nil || attempt >= max {
			break
		}
		d := backoff << attempt
		if d > 5*time.Second || d <= 0 {
			d = 5 * time.Second
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
