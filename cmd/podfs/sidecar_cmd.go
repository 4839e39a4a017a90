package main

import (
	"context"
	"log/slog"
	"os"

	"podfs.io/podfs/sidecar"
	"podfs.io/podfs/sidecar/volumeset"
)

func runSidecar(ctx context.Context, log *slog.Logger, args []string) error {
	fs := newFlags("sidecar", "[options]", `
Serve the pod's podfs volumes: the entry point of the podfs-sidecar container
the webhook injects. The volume set comes from $`+volumeset.EnvVar+` (JSON
written by the webhook). With --probe, ask a running sidecar whether every
volume is served instead (the startup probe and postStart hook).`)
	probe := fs.Bool("probe", false, "probe a running sidecar: exit 0 when every volume is served")
	wait := fs.Duration("wait", 0, "with --probe: keep asking until ready, failed or this long")
	socket := fs.String("socket", volumeset.ProbeSocket, "unix socket of the readiness probe")
	grace := fs.Duration("stop-grace", 0, "non-native sidecars: after SIGTERM, wait this long for the apps before unmounting (default 20s)")
	termLog := fs.String("termination-log", "/dev/termination-log", "file the kubelet reads the failure reason from; \"\" = none")
	metrics := fs.String("metrics-addr", "", "serve the file system's Prometheus metrics here; \"\" = none")
	memLimit := fs.Int64("memory-limit", 0, "bytes of memory the volumes' shared cache and write buffers are sized from; 0 = the container's cgroup limit, else $"+sidecar.MemoryLimitEnv)
	idle := fs.Duration("idle-release", sidecar.DefaultIdleRelease, "give cache memory back after the volumes idle this long; negative = never")
	journal := fs.String("journal-dir", sidecar.DefaultJournalDir, "ordinary nodes: keep each volume's write journal here, so a killed sidecar loses no acknowledged write; \"\" = none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("sidecar takes no arguments, got %q", fs.Args())
	}
	if *probe {
		return sidecar.Probe(ctx, *socket, *wait)
	}
	set, err := volumeset.Decode(os.Getenv(volumeset.EnvVar))
	if err != nil {
		return err
	}
	if _, err := os.Stat(*termLog); err != nil {
		*termLog = "" // not in a pod
	}
	return sidecar.Run(ctx, sidecar.Config{
		Set: set,
		Mounter: &sidecar.FSMounter{Log: log, MetricsAddr: *metrics, MemoryLimit: *memLimit, IdleRelease: *idle,
			JournalDir: *journal},
		ProbeSocket:    *socket,
		TerminationLog: *termLog,
		StopGrace:      *grace,
		Log:            log,
	})
}
