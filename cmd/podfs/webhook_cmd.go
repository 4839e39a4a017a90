package main

import (
	"context"
	"errors"
	"log/slog"
)

func runWebhook(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}
