package main

import (
	"context"
	"log/slog"
	"time"

	"podfs.io/podfs/webhook"
)

// runProbe is the webhook's exec probe: with replicas sharing a host port,
// only a unix socket in the pod is sure to reach the probed replica.
func runProbe(ctx context.Context, _ *slog.Logger, args []string) error {
	fs := newFlags("probe", "--socket PATH [--path /readyz]", `
Ask the webhook's health server on its unix socket (webhook --health-socket)
for /readyz or /healthz; exit 0 when it answers 200, 1 otherwise with what
failed. The Helm chart's probes run it when webhook.reusePort is on.`)
	socket := fs.String("socket", "", "the webhook's --health-socket")
	path := fs.String("path", "/readyz", "/readyz (readiness) or /healthz (liveness)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("probe takes no arguments, got %q", fs.Args())
	}
	if *socket == "" {
		return usagef("probe needs --socket PATH (the webhook's --health-socket)")
	}
	return webhook.ProbeSocket(ctx, *socket, *path, *timeout)
}
