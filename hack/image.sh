#!/usr/bin/env bash
# Builds podfs's container images without a Docker daemon or a registry
# (hack/imagebuild writes docker-archive tarballs) and imports them into the
# e2e cluster's containerd, or pushes one to a registry.
#
#   hack/image.sh [podfs|pause|all] [--no-import]
#   hack/image.sh [podfs|pause] --push REF [--username USER --password-stdin] [--ca-file CA]
#
# --push REF pushes the built image to REF (e.g. registry.example.com/podfs/podfs:v1)
# instead of importing it, with go-containerregistry: credentials from
# --username and the password on standard input, else $PODFS_REGISTRY_USERNAME
# and $PODFS_REGISTRY_PASSWORD, else docker's keychain (~/.docker/config.json,
# $DOCKER_CONFIG, credential helpers); --ca-file (or $PODFS_REGISTRY_CA) adds
# a CA for the registry's certificate. It prints REF@sha256:... on standard
# output. The image is built reproducibly: the same commit gives the same digest.
#
#   podfs  podfs.io/podfs:dev — the podfs binary (cgo, librados) with the shared
#          libraries it loads, busybox for a shell; runs webhook, sidecar, csi-node
#   pause  podfs.io/pause:dev — the sandbox image containerd's sandbox_image names
#
# Tarballs land in bin/images/. PODFS_IMAGE / PAUSE_IMAGE override the tags;
# CONTAINERD_ADDRESS the containerd socket (default the e2e cluster's).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${PODFS_E2E_STATE:-/var/lib/podfs-e2e}
address=${CONTAINERD_ADDRESS:-$state/run/containerd.sock}
podfs_image=${PODFS_IMAGE:-podfs.io/podfs:dev}
pause_image=${PAUSE_IMAGE:-podfs.io/pause:dev}

usage() {
	echo "usage: hack/image.sh [podfs|pause|all] [--no-import]" >&2
	echo "       hack/image.sh [podfs|pause] --push REF [--username USER --password-stdin] [--ca-file CA]" >&2
	exit 2
}
what=all
import=1
push=""
push_args=()
while (($#)); do
	case $1 in
	podfs | pause | all) what=$1 ;;
	--no-import) import=0 ;;
	--push)
		(($# >= 2)) || usage
		push=$2
		shift
		;;
	--username | --ca-file)
		(($# >= 2)) || usage
		push_args+=("-${1#--}" "$2")
		shift
		;;
	--password-stdin) push_args+=(-password-stdin) ;;
	*) usage ;;
	esac
	shift
done
if [[ -n $push ]]; then
	[[ $what != all ]] || what=podfs
	import=0
elif ((${#push_args[@]})); then
	usage
fi

"$root/hack/deps.sh" --e2e
out=$root/bin/images
mkdir -p "$out"
cd "$root"
go build -o bin/imagebuild ./hack/imagebuild

build_pause() {
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/pause ./hack/pause
	bin/imagebuild -o "$out/pause.tar" -tag "$pause_image" \
		-add bin/pause:/pause -entrypoint /pause
}

build_podfs() {
	local version
	version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
	CGO_ENABLED=1 go build -trimpath -ldflags "-X main.version=$version" -o bin/podfs ./cmd/podfs
	# util-linux mount/umount: mount-utils (CSI node, sidecar) parses their errors.
	local extra=(-add /usr/bin/mount:/usr/bin/mount -add /usr/bin/umount:/usr/bin/umount)
	# go-fuse mounts directly as root; fusermount3 is the fallback when present.
	[[ -x /bin/fusermount3 ]] && extra+=(-add /bin/fusermount3:/usr/bin/fusermount3)
	bin/imagebuild -o "$out/podfs.tar" -tag "$podfs_image" \
		-add bin/podfs:/usr/local/bin/podfs "${extra[@]}" -libs \
		-busybox "$(command -v busybox)" \
		-mkdir /var/lib/podfs -mkdir /etc/ceph -mkdir /run \
		-entrypoint /usr/local/bin/podfs
}

import_tar() {
	local tar=$1
	if [[ ! -S $address ]]; then
		echo "hack/image.sh: no containerd at $address: start the cluster (hack/cluster.sh up) or pass --no-import" >&2
		exit 1
	fi
	ctr --address "$address" -n k8s.io images import "$tar" >/dev/null
}

case $what in
pause) build_pause ;;
podfs) build_podfs ;;
all)
	build_pause
	build_podfs
	;;
esac

if [[ -n $push ]]; then
	bin/imagebuild push -tar "$out/$what.tar" -ref "$push" "${push_args[@]}"
	echo "hack/image.sh: pushed $what to $push" >&2
fi

if ((import)); then
	case $what in
	pause) import_tar "$out/pause.tar" ;;
	podfs) import_tar "$out/podfs.tar" ;;
	all)
		import_tar "$out/pause.tar"
		import_tar "$out/podfs.tar"
		;;
	esac
	echo "hack/image.sh: imported $what into containerd at $address" >&2
fi
