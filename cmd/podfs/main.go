// Command podfs is the one binary of podfs: the file system client and its
// tools, the admission webhook, the CSI node plugin, the provisioning
// controller and the sidecar runtime.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"podfs.io/podfs/pkg/redact"
)

// command is one subcommand. run gets the arguments after the subcommand's name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, log *slog.Logger, args []string) error
}

func commands() []command {
	return []command{
		{"format", "format a volume: format META-URL NAME --storage URL", runFormat},
		{"mount", "mount a volume: mount META-URL MOUNTPOINT [-d]", runMount},
		{"umount", "unmount a podfs mount: umount MOUNTPOINT", runUmount},
		{"status", "show a volume's settings, sessions and usage: status META-URL", runStatus},
		{"fsck", "check a volume's metadata and objects: fsck META-URL", runFsck},
		{"quota", "directory quotas: quota set|get|list|delete|check META-URL --path /DIR", runQuota},
		{"gc", "delete objects no file references: gc META-URL [--delete]", runGC},
		{"compact", "compact fragmented files of a mounted podfs: compact PATH...", runCompact},
		{"bench", "benchmark a mounted podfs: bench PATH", runBench},
		{"webhook", "serve the mutating admission webhook", runWebhook},
		{"probe", "check a webhook's health socket: probe --socket PATH --path /readyz", runProbe},
		{"controller", "provision, expand and delete podfs volumes of StorageClasses", runController},
		{"sidecar", "serve a pod's podfs volumes (the injected sidecar)", runSidecar},
		{"csi-node", "serve the CSI node plugin", runCSINode},
		{"rollout-sidecars", "change the sidecar image of running pods in place: rollout-sidecars --image IMAGE", runRollout},
		{"version", "print the version", runVersion},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func runVersion(ctx context.Context, log *slog.Logger, args []string) error {
	fmt.Println("podfs", version)
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: podfs COMMAND [options] [args]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-17s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'podfs COMMAND --help' for a command's options.\n"+
		"Set PODFS_LOG=debug|info|warn|error and PODFS_LOG_FORMAT=text|json to tune logs.\n")
}

func newLogger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("PODFS_LOG"))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("PODFS_LOG_FORMAT") == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	log := newLogger()
	// client-go (events, leader election) and mount-utils log through
	// klog: to the same place, set once before any command starts.
	klog.SetSlogLogger(log)
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		// SIGTERM and SIGINT cancel ctx; each command decides what a clean stop means.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		err := c.run(ctx, log, args[1:])
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			// Redacted once more here: no message may show a URL's secrets.
			fmt.Fprintf(os.Stderr, "podfs %s: %s\n", c.name, redact.Text(err.Error()))
			var u usageError
			if errors.As(err, &u) {
				return 2
			}
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "podfs: unknown command %q\n\n", args[0])
	usage(os.Stderr)
	return 2
}

// usageError marks a mistake in how a command was called (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return usageError{msg: fmt.Sprintf(format, a...)}
}

// newFlags returns a flag set for a subcommand whose --help prints its usage
// line, summary and options.
func newFlags(name, args, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("podfs "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: podfs %s %s\n\n%s\n", name, args, strings.TrimSpace(summary))
		fmt.Fprintln(w, "\nOptions:")
		fs.PrintDefaults()
	}
	return fs
}
