package main

import (
	"context"
	"errors"
	"log/slog"
)

func runFormat(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}

func runMount(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}

func runUmount(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}

func runStatus(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}

func runFsck(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}

func runGC(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}

func runBench(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("not implemented yet")
}
