#!/usr/bin/env bash
# Builds helm with `go install` (no prebuilt downloads here) into a cache dir
# keyed by version and prints the binary's path. Later runs reuse it.
#
#   helm=$(hack/helm.sh)
set -euo pipefail

version=${HELM_VERSION:-v3.19.0}
dir=${PODFS_CACHE:-$HOME/.cache/podfs}/helm/$version
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [[ ! -x $dir/helm ]]; then
	echo "helm.sh: building helm $version (about a minute the first time)" >&2
	# Outside any module, so podfs's go.mod does not constrain helm's graph.
	(cd "$dir" && GOFLAGS= GOBIN=$dir CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$version") >&2
fi
echo "$dir/helm"
