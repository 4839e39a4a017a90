#!/usr/bin/env bash
# Runs every podfs test against real components: FUSE mounts, an etcd server,
# a one-node Ceph cluster and a kube-apiserver, all on 127.0.0.1 and all
# started (and stopped) by the tests themselves; then the end-to-end suite on
# a real single-node Kubernetes (hack/e2e.sh). Needs root and /dev/fuse.
#
# PODFS_SKIP_E2E=1 runs only the Go test suite (for a quick local loop; CI
# never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh
# envtest (webhook tests) runs a real kube-apiserver built once and cached.
KUBEBUILDER_ASSETS=$(hack/kube-bins.sh)
export KUBEBUILDER_ASSETS
# The chart tests run the real helm, built once and cached.
PODFS_HELM=$(hack/helm.sh)
export PODFS_HELM
go vet ./...
go vet -tags e2e ./e2e/
CGO_ENABLED=0 go build -tags norados ./...
# The sidecar-replacement load loop runs apart, without the race detector:
# 20 replacements by SIGTERM, then 20 by kill -9, each under a reader-writer
# load that must see no error (PODFS_HANDOFF_ROUNDS=50 for the full loop).
go test -race -count=1 -timeout 45m -skip '^TestHandoffReplaceUnderLoad$' ./... 2>&1
PODFS_HANDOFF_ROUNDS=20 go test -count=1 -timeout 20m -run '^TestHandoffReplaceUnderLoad$' ./pkg/fs/ 2>&1
if [[ ${PODFS_SKIP_E2E:-0} != 1 ]]; then
	hack/e2e.sh
fi
