#!/usr/bin/env bash
# Builds Kubernetes server binaries from source (no prebuilt downloads are
# reachable here) into a cache dir keyed by version, and prints that dir.
# Later runs reuse the cache. The dir also gets Debian's etcd, so it can serve
# as controller-runtime envtest's KUBEBUILDER_ASSETS.
#
#   hack/kube-bins.sh                      kube-apiserver only (envtest)
#   hack/kube-bins.sh kube-apiserver kubelet kube-scheduler kube-controller-manager kubectl
set -euo pipefail

version=${KUBE_VERSION:-v1.33.13}
cache=${PODFS_CACHE:-$HOME/.cache/podfs}/kube/$version
components=("$@")
((${#components[@]})) || components=(kube-apiserver)

mkdir -p "$cache"
# One build at a time: parallel test packages may call this together.
exec 9>"$cache/.lock"
flock 9

if [[ ! -x $cache/etcd ]]; then
	command -v etcd >/dev/null || "$(dirname "$0")/deps.sh" >&2
	ln -sf "$(command -v etcd)" "$cache/etcd"
fi

missing=()
for c in "${components[@]}"; do
	[[ -x $cache/$c ]] || missing+=("$c")
done
if ((${#missing[@]} == 0)); then
	echo "$cache"
	exit 0
fi

# A throwaway module that requires k8s.io/kubernetes and points each staging
# module (which kubernetes' own go.mod replaces with ./staging paths) at its
# published version. No `go mod tidy`: it chases test-only imports the proxy
# does not serve.
src=$cache/src
mkdir -p "$src"
staging=v0${version#v1}
minor=${version#v1.}
minor=${minor%%.*}
cat >"$src/go.mod" <<MOD
module podfs.io/kube-build

go 1.24

require k8s.io/kubernetes $version
MOD
gomod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[[ -f $gomod ]] || { echo "kube-bins: cannot fetch k8s.io/kubernetes@$version's go.mod" >&2; exit 1; }
{
	echo
	echo "replace ("
	sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
	echo ")"
} >>"$src/go.mod"

for c in "${missing[@]}"; do
	pkg=k8s.io/kubernetes/cmd/$c
	echo "kube-bins: building $c $version (several minutes the first time)" >&2
	(cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath \
		-ldflags "-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
		-o "$cache/$c.tmp" "$pkg") >&2
	mv "$cache/$c.tmp" "$cache/$c"
done
echo "$cache"
