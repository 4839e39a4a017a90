package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"k8s.io/client-go/kubernetes"

	"podfs.io/podfs/rollout"
)

func runRollout(ctx context.Context, log *slog.Logger, args []string) error {
	fs := newFlags("rollout-sidecars", "--image IMAGE [options]", `
Change the podfs sidecar of running pods to IMAGE in place, one pod at a
time, waiting for each new sidecar to start before the next: the apps keep
their open files (the CSI node holds the FUSE connections meanwhile). Run it
after upgrading the chart, whose webhook gives new pods the new image.
Serverless pods are listed but must be recreated.`)
	image := fs.String("image", "", "the sidecar image to run (required)")
	ns := fs.String("namespace", "", "only pods of this namespace; \"\" = all namespaces")
	sel := fs.String("selector", "", "only pods matching this label selector")
	timeout := fs.Duration("timeout", 3*time.Minute, "stop if a pod's new sidecar has not started after this long")
	dry := fs.Bool("dry-run", false, "list what would change, change nothing")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file; \"\" = in-cluster configuration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("rollout-sidecars takes no arguments, got %q", fs.Args())
	}
	if *image == "" {
		return usagef("--image is required: the sidecar image to roll out, e.g. --image registry.example/podfs:1.2.0")
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	res, err := rollout.Run(ctx, kc, rollout.Options{Image: *image, Namespace: *ns, Selector: *sel, Timeout: *timeout, DryRun: *dry, Log: log})
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tPOD\tACTION\tFROM\tTOOK")
	for _, r := range res {
		took := "-"
		if r.Took > 0 {
			took = r.Took.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.Pod, r.Action, r.From, took)
	}
	w.Flush()
	return err
}
