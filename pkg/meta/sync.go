package meta

import (
	"context"
	"fmt"

	"podfs.io/podfs/pkg/meta/kv"
)

// Sync implements Meta.
func (c *Client) Sync(ctx context.Context) error {
	s, ok := c.e.(kv.Syncer)
	if !ok {
		return nil
	}
	if err := s.Sync(ctx); err != nil {
		return fmt.Errorf("make metadata durable in %s: %w", c.e.Name(), err)
	}
	return nil
}
