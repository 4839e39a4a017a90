package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"podfs.io/podfs/sidecar"
	"podfs.io/podfs/sidecar/volumeset"
)

func runSidecar(ctx context.Context, log *slog.Logger, args []string) error {
	fs := newFlags("sidecar", "[options]", `
Serve the pod's podfs volumes: the entry point of the podfs-sidecar container
the webhook injects. The volume set comes from $`+volumeset.EnvVar+` (JSON
written by the webhook). With --probe, ask a running sidecar whether every
volume is served instead (the startup probe and postStart hook).

On ordinary nodes this process supervises a child that serves: a child that
dies (a crash, an OOM kill of that process, a kill -9) is replaced at once,
and the new one continues the FUSE connections the CSI node holds. After
5 deaths in a row within a minute of their start it exits, and the
kubelet's container restarts take over. PODFS_SIDECAR_NO_SUPERVISOR=1 serves
in this process instead.`)
	probe := fs.Bool("probe", false, "probe a running sidecar: exit 0 when every volume is served")
	wait := fs.Duration("wait", 0, "with --probe: keep asking until ready, failed or this long")
	socket := fs.String("socket", volumeset.ProbeSocket, "unix socket of the readiness probe")
	grace := fs.Duration("stop-grace", 0, "non-native sidecars: after SIGTERM, wait this long for the apps before unmounting (default 20s)")
	termLog := fs.String("termination-log", "/dev/termination-log", "file the kubelet reads the failure reason from; \"\" = none")
	metrics := fs.String("metrics-addr", "", "serve every volume's Prometheus metrics (label volume) at http://ADDR/metrics, e.g. :9567; \"\" = none")
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
	if set.Mode == volumeset.ModeNode && !sidecar.Supervised() && os.Getenv("PODFS_SIDECAR_NO_SUPERVISOR") == "" {
		// This process only supervises; a child serves, and a new child
		// continues the connections at once when one dies.
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program to start the serving process: %w", err)
		}
		return sidecar.Supervise(ctx, sidecar.SuperviseConfig{
			Command: func() *exec.Cmd {
				c := exec.Command(self, append([]string{"sidecar"}, args...)...)
				c.Args[0] = "podfs"
				c.Env = append(os.Environ(), sidecar.SupervisedEnv+"=1")
				c.Stdout, c.Stderr = os.Stdout, os.Stderr
				return c
			},
			Log: log,
		})
	}
	// Metrics are served by the process that serves the volumes (the
	// supervisor's child on ordinary nodes, which gets the same flags).
	var met *sidecar.Metrics
	if *metrics != "" {
		met = sidecar.NewMetrics()
		// Metrics are not worth failing the pod's volumes for.
		if stop, err := met.Serve(*metrics, log); err != nil {
			log.Error("no metrics", "err", err)
		} else {
			defer stop()
		}
	}
	return sidecar.Run(ctx, sidecar.Config{
		Set: set,
		Mounter: &sidecar.FSMounter{Log: log, Metrics: met, MemoryLimit: *memLimit, IdleRelease: *idle,
			JournalDir: *journal},
		ProbeSocket:    *socket,
		TerminationLog: *termLog,
		StopGrace:      *grace,
		Log:            log,
	})
}
