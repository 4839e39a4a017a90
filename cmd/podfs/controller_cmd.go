package main

import (
	"context"
	"log/slog"
	"os"

	"podfs.io/podfs/provisioner"
)

func runController(ctx context.Context, log *slog.Logger, args []string) error {
	fs := newFlags("controller", "[options]", `
Run podfs's dynamic provisioning controller: PersistentVolumeClaims of a
StorageClass with provisioner `+provisioner.DriverName+` become directories of a
shared podfs volume with a quota of the claim's size, and PersistentVolumes
that the webhook and the CSI node serve; expanded claims get their quota
raised; released volumes get the class's onDelete. The controller connects
to the volumes' metadata engines (TiKV, etcd) and, to format a volume, to
its object storage. See docs/provisioning.md.`)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file; \"\" = in-cluster configuration")
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader election Lease; default $POD_NAMESPACE")
	leader := fs.Bool("leader-elect", true, "elect a leader among replicas (a Lease in --namespace)")
	leaseName := fs.String("leader-election-id", "podfs-controller", "name of the leader election Lease")
	workers := fs.Int("workers", 4, "claims and volumes worked on at once (each)")
	metrics := fs.String("metrics-addr", ":8080", "Prometheus metrics address; 0 = off")
	health := fs.String("health-addr", ":8081", "healthz/readyz address; 0 = off")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("controller takes no arguments, got %q", fs.Args())
	}
	if *leader && *namespace == "" {
		return usagef("--leader-elect needs --namespace (or $POD_NAMESPACE); or pass --leader-elect=false with a single replica")
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	c, err := provisioner.New(provisioner.Options{
		RestConfig: cfg, LeaderElection: *leader, LeaderElectionID: *leaseName, LeaderElectionNamespace: *namespace,
		MetricsAddr: *metrics, HealthAddr: *health, Workers: *workers, Log: log,
	})
	if err != nil {
		return err
	}
	return c.Run(ctx)
}
