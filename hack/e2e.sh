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
#
# The podfs image reaches the cluster as it would a real one: pushed to a
# registry on 127.0.0.1 with TLS and basic auth (hack/registry.sh) and pulled
# by the node through an imagePullSecret (the chart's imagePullSecrets, which
# the webhook also adds to injected pods). PODFS_E2E_REGISTRY=0 imports the
# image into containerd instead.
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

# --- the image through a registry (hack/registry.sh) ---------------------------
registry=${PODFS_E2E_REGISTRY:-1}
pull_secret=podfs-registry
registry_up() {
	local exports certs
	PODFS_E2E_STATE=$state hack/registry.sh up
	exports=$(PODFS_E2E_STATE=$state hack/registry.sh env)
	eval "$exports"
	# The node's containerd trusts the registry's CA (hack/cluster.sh points
	# its registry config_path at this directory; read at every pull).
	certs=$state/etc/containerd-certs.d/$PODFS_REGISTRY
	mkdir -p "$certs"
	cat >"$certs/hosts.toml" <<EOF
server = "https://$PODFS_REGISTRY"
[host."https://$PODFS_REGISTRY"]
  capabilities = ["pull", "resolve"]
  ca = "$PODFS_REGISTRY_CA"
EOF
}
# pull_secret_apply creates the dockerconfigjson Secret in namespace $1; the
# password goes through standard input only, never a command line.
pull_secret_apply() {
	local auth cfg
	auth=$(printf '%s:%s' "$PODFS_REGISTRY_USERNAME" "$(<"$PODFS_REGISTRY_PASSWORD_FILE")" | base64 -w0)
	cfg=$(printf '{"auths":{"%s":{"auth":"%s"}}}' "$PODFS_REGISTRY" "$auth" | base64 -w0)
	"$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $pull_secret
  namespace: $1
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: $cfg
EOF
}
# ------------------------------------------------------------------------------

finish() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ ${PODFS_E2E_KEEP:-0} == 1 ]]; then
		echo "e2e: leaving the cluster up (PODFS_E2E_KEEP=1); hack/cluster.sh down removes it" >&2
	else
		backends_down || rc=1
		if [[ $registry == 1 ]]; then
			PODFS_E2E_STATE=$state hack/registry.sh down || rc=1
		fi
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
helm=$(hack/helm.sh)
eval "$(hack/cluster.sh env)"
export KUBECONFIG KUBECTL
chart_args=()
if [[ $registry == 1 ]]; then
	registry_up
	image=$PODFS_REGISTRY/podfs/podfs:dev
	PODFS_IMAGE=$image hack/image.sh podfs --push "$image" \
		--username "$PODFS_REGISTRY_USERNAME" --password-stdin --ca-file "$PODFS_REGISTRY_CA" <"$PODFS_REGISTRY_PASSWORD_FILE"
	"$KUBECTL" create namespace "$release_ns" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
	pull_secret_apply "$release_ns"
	# The chart's pods pull the image with the Secret (nothing imported it).
	chart_args+=(--set "imagePullSecrets[0].name=$pull_secret" --set image.pullPolicy=IfNotPresent)
else
	PODFS_IMAGE=$image hack/image.sh podfs
fi

echo "e2e: installing the chart" >&2
if ! "$helm" upgrade --install "$release" charts/podfs -n "$release_ns" --create-namespace \
	-f charts/podfs/values-single-node.yaml \
	--set "image.repository=${image%:*}" --set "image.tag=${image##*:}" \
	--set "kubeletDir=$state/kubelet" "${chart_args[@]}" \
	--wait --timeout 3m; then
	"$KUBECTL" -n "$release_ns" get pods -o wide >&2 || true
	for p in $("$KUBECTL" -n "$release_ns" get pods -o name); do
		"$KUBECTL" -n "$release_ns" logs "$p" --all-containers --tail=30 >&2 || true
	done
	echo "e2e: the chart did not become ready" >&2
	exit 1
fi
echo "e2e: chart ready after $((SECONDS - t0)) s" >&2
# A second tag of the same image (now on the node: imported, or pulled by the
# chart's pods): the in-place sidecar upgrade scenario changes a running
# pod's sidecar to it.
upgrade_image=${image%:*}:upgrade
# The runtime may record the pulled tag a moment after the pods are ready.
for i in $(seq 1 60); do
	if ctr --address "$state/run/containerd.sock" -n k8s.io images tag --force "$image" "$upgrade_image" >/dev/null 2>&1; then
		break
	fi
	if [[ $i == 60 ]]; then
		echo "e2e: image $image is not on the node after the chart started" >&2
		ctr --address "$state/run/containerd.sock" -n k8s.io images ls -q >&2 || true
		exit 1
	fi
	sleep 1
done

export PODFS_BIN=$root/bin/podfs PODFS_IMAGE=$image PODFS_IMAGE_UPGRADE=$upgrade_image PODFS_RELEASE=$release/$release_ns
if [[ $registry == 1 ]]; then
	# The Secret's name, for scenarios that pull in namespaces of their own.
	export PODFS_PULL_SECRET=$pull_secret
fi
export PODFS_KUBELET_DIR=$state/kubelet
set +e
go test -tags e2e -count=1 -v -timeout 45m ./e2e/ "$@" 2>&1 | tee bin/e2e.log
rc=${PIPESTATUS[0]}
set -e
grep -E '^(E2E-STARTUP|--- |ok|FAIL)|^    --- ' bin/e2e.log >&2 || true
exit "$rc"
