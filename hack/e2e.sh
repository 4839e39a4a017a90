#!/usr/bin/env bash
# The end-to-end suite from nothing: bring up the single-node cluster
# (hack/cluster.sh), build and import the images (hack/image.sh), install the
# chart (helm from hack/helm.sh), run `go test -tags e2e ./e2e/`, and tear
# everything down on every exit path.
#
#   hack/e2e.sh [go test flags, e.g. -run 'TestE2E/5']
#
# PODFS_E2E_KEEP=1 leaves the cluster up afterwards (hack/cluster.sh down
# removes it). The e2e log is written to bin/e2e.log.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state=${PODFS_E2E_STATE:-/var/lib/podfs-e2e}
release=podfs
release_ns=podfs-system
image=${PODFS_IMAGE:-podfs.io/podfs:dev}
t0=$SECONDS

# --- pod-network backends (hack/backends.sh) ---------------------------------
# etcd and Ceph in a network namespace on the pod bridge, for test pods that
# may not use the host network. Up after the cluster (which makes the bridge),
# down before it; with PODFS_E2E_KEEP=1 both stay up and hack/cluster.sh down
# stops the backends too. `env` prints the PODFS_PODNET_* exports the tests read.
backends_up() {
	local exports
	PODFS_E2E_STATE=$state hack/backends.sh up
	# Assigned first: a failing env inside eval "$(...)" would go unnoticed.
	exports=$(PODFS_E2E_STATE=$state hack/backends.sh env)
	eval "$exports"
}
backends_down() { PODFS_E2E_STATE=$state hack/backends.sh down; }
# ------------------------------------------------------------------------------

finish() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ ${PODFS_E2E_KEEP:-0} == 1 ]]; then
		echo "e2e: leaving the cluster up (PODFS_E2E_KEEP=1); hack/cluster.sh down removes it" >&2
	else
		backends_down || rc=1
		hack/cluster.sh down || rc=1
	fi
	echo "e2e: total $((SECONDS - t0)) s, exit $rc" >&2
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || {
	echo "e2e: run as root (a real kubelet, containerd and FUSE)" >&2
	exit 1
}

hack/cluster.sh up
backends_up
PODFS_IMAGE=$image hack/image.sh podfs
# A second tag of the same image: the in-place sidecar upgrade scenario
# changes a running pod's sidecar to it.
upgrade_image=${image%:*}:upgrade
ctr --address "$state/run/containerd.sock" -n k8s.io images tag --force "$image" "$upgrade_image" >/dev/null
helm=$(hack/helm.sh)
eval "$(hack/cluster.sh env)"
export KUBECONFIG KUBECTL

echo "e2e: installing the chart" >&2
if ! "$helm" upgrade --install "$release" charts/podfs -n "$release_ns" --create-namespace \
	-f charts/podfs/values-single-node.yaml \
	--set "image.repository=${image%:*}" --set "image.tag=${image##*:}" \
	--set "kubeletDir=$state/kubelet" \
	--wait --timeout 3m; then
	"$KUBECTL" -n "$release_ns" get pods -o wide >&2 || true
	for p in $("$KUBECTL" -n "$release_ns" get pods -o name); do
		"$KUBECTL" -n "$release_ns" logs "$p" --all-containers --tail=30 >&2 || true
	done
	echo "e2e: the chart did not become ready" >&2
	exit 1
fi
echo "e2e: chart ready after $((SECONDS - t0)) s" >&2

export PODFS_BIN=$root/bin/podfs PODFS_IMAGE=$image PODFS_IMAGE_UPGRADE=$upgrade_image PODFS_RELEASE=$release/$release_ns
export PODFS_KUBELET_DIR=$state/kubelet
set +e
go test -tags e2e -count=1 -v -timeout 45m ./e2e/ "$@" 2>&1 | tee bin/e2e.log
rc=${PIPESTATUS[0]}
set -e
grep -E '^(E2E-STARTUP|--- |ok|FAIL)|^    --- ' bin/e2e.log >&2 || true
exit "$rc"
