package meta

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Fragmentation is how much object storage the volume's chunks reference
// against the data they show, and what waits for deletion: what `podfs
// status` reports so a user sees when `podfs compact` would pay.
type Fragmentation struct {
	Chunks     int64 // chunks with slices
	Slices     int64 // slice references in all chunk lists
	Referenced int64 // bytes of the distinct slices referenced (what their objects hold)
	Pending    int64 // slices whose objects wait for deletion
	PendingB   int64 // their bytes
}

// Fragmentation implements Meta: it scans every chunk list and the pending deletes (one pass
// over the keys: for status and tools, not for the I/O path).
func (c *Client) Fragmentation(ctx context.Context) (Fragmentation, error) {
	var f Fragmentation
	seen := map[uint64]bool{}
	err := c.scanAll(ctx, []byte{pChunk}, func(k, v []byte) error {
		ss, err := decodeSlices(v)
		if err != nil {
			return fmt.Errorf("chunk key %x: %w", k, err)
		}
		if len(ss) > 0 {
			f.Chunks++
		}
		for _, s := range ss {
			if s.ID == 0 {
				continue
			}
			f.Slices++
			if !seen[s.ID] {
				seen[s.ID] = true
				f.Referenced += int64(s.Size)
			}
		}
		return nil
	})
	if err == nil {
		err = c.scanAll(ctx, []byte{pPending}, func(k, v []byte) error {
			f.Pending++
			if len(v) == 4 {
				f.PendingB += int64(binary.BigEndian.Uint32(v))
			}
			return nil
		})
	}
	if err != nil {
		return Fragmentation{}, fmt.Errorf("fragmentation: %w", err)
	}
	return f, nil
}
