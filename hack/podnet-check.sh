#!/usr/bin/env bash
# Proves hack/backends.sh without the cluster: on a throwaway bridge it brings
# the backends up, adds a "fake pod" (a network namespace with an address from
# the pod range on the same bridge, as the CNI would make), and from inside it
# formats and mounts an etcd:// + rados:// volume at the backends' address,
# writes and reads files (again after a remount, so the data comes back from
# Ceph), then tears everything down and fails if any namespace, interface,
# process or mount is left behind.
#
#   hack/podnet-check.sh [--go]
#
# --go also runs the e2e helpers' own check (go test -tags e2e -run
# TestPodNetBackends ./e2e/) against the same backends. Needs root. Uses
# PODFS_BIN if set, else builds bin/podfs. Talks to nothing outside this
# machine: the bridge and the namespaces have no route anywhere else.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { echo "podnet-check: $*" >&2; }
die() {
	echo "podnet-check: FAIL: $*" >&2
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

run_go=0
case ${1:-} in
--go) run_go=1 ;;
"") ;;
*)
	echo "usage: hack/podnet-check.sh [--go]" >&2
	exit 2
	;;
esac
[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, daemons, FUSE)"

# Names of their own, so the check never touches a cluster's podfs0 or the
# e2e's podfs-backends running beside it (interface names: at most 15 bytes,
# and PIDs have at most 7 digits).
id=$$
bridge=pfschk$id
pod_ns=podfs-fakepod-$id
pod_veth=pfspod$id
pod_addr=10.244.0.10/24
work=$(mktemp -d /tmp/podfs-podnet-check.XXXXXX)
mnt=$work/mnt
export PODFS_BACKENDS_DIR=$work/backends PODFS_BACKENDS_NETNS=podfs-bk-chk$id
export PODFS_BACKENDS_BRIDGE=$bridge PODFS_BACKENDS_CREATE_BRIDGE=1

podfs=${PODFS_BIN:-}
if [[ -z $podfs ]]; then
	hack/deps.sh
	log "building bin/podfs"
	go build -o bin/podfs ./cmd/podfs
	podfs=$root/bin/podfs
fi
[[ -x $podfs ]] || die "$podfs is not an executable"

in_pod() { nsenter --net="/run/netns/$pod_ns" -- "$@"; }

# teardown runs on every exit path: the mount, the fake pod, the backends.
teardown() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	if grep -qF " $mnt " /proc/self/mountinfo; then
		"$podfs" umount "$mnt" >/dev/null 2>&1 || umount -l "$mnt"
	fi
	[[ -e /run/netns/$pod_ns ]] && ip netns delete "$pod_ns"
	hack/backends.sh down
	if leftovers; then
		((rc == 0)) && log "PASS (no namespace, interface, process or mount left behind)"
	else
		rc=1
	fi
	rm -rf "$work"
	exit "$rc"
}

# leftovers reports (and fails on) anything of this check still present.
leftovers() {
	local bad=0 p cmd
	for p in "$pod_ns" "$PODFS_BACKENDS_NETNS"; do
		[[ -e /run/netns/$p ]] && {
			log "left behind: network namespace $p"
			bad=1
		}
	done
	for p in "$bridge" "$pod_veth"; do
		ip link show "$p" >/dev/null 2>&1 && {
			log "left behind: interface $p"
			bad=1
		}
	done
	# Every process of the check names $work (etcd's data dir, Ceph's config,
	# podfs's mount point) on its command line.
	for p in /proc/[0-9]*; do
		# A process may exit between the listing and the read; reading the
		# command line of one stuck on a dead FUSE mount (anyone's) can hang.
		cmd=$(timeout -s KILL 2 cat "$p/cmdline" 2>/dev/null | tr '\0' ' ') || continue
		if [[ $cmd == *"$work"* ]]; then
			log "left behind: process ${p#/proc/}: $cmd"
			bad=1
		fi
	done
	if grep -F -- "$work" /proc/self/mountinfo >&2; then
		log "left behind: the mounts above"
		bad=1
	fi
	return "$bad"
}

trap teardown EXIT
trap 'exit 130' INT TERM

t=$(now)
hack/backends.sh up
up_time=$(since "$t")
exports=$(hack/backends.sh env)
eval "$exports"
log "backends up in $up_time"

# The fake pod: what the CNI bridge plugin makes for a pod, by hand.
ip netns add "$pod_ns"
ip link add "$pod_veth" type veth peer name pod0 netns "$pod_ns"
ip link set "$pod_veth" master "$bridge"
ip link set "$pod_veth" up
ip -n "$pod_ns" link set lo up
ip -n "$pod_ns" addr add "$pod_addr" dev pod0
ip -n "$pod_ns" link set pod0 up
log "fake pod $pod_ns at $pod_addr on $bridge"
in_pod curl -sf --max-time 10 "http://$PODFS_PODNET_ETCD/health" >/dev/null ||
	die "the fake pod cannot reach etcd at $PODFS_PODNET_ETCD"

vol=check$id
meta=etcd://$PODFS_PODNET_ETCD/$vol
store="rados://$PODFS_PODNET_CEPH_POOL?mon_host=v1:$PODFS_PODNET_CEPH_MON&user=admin&namespace=$vol"
t=$(now)
in_pod "$podfs" format "$meta" "$vol" --storage "$store" || die "podfs format from the fake pod"
format_time=$(since "$t")
log "formatted $vol in $format_time"

mkdir -p "$mnt"
# nsenter (not ip netns exec) keeps the host's mount namespace, so the mount
# is visible here; the daemon it starts stays in the fake pod's network.
t=$(now)
in_pod "$podfs" mount "$meta" "$mnt" -d --log "$work/mount.log" || die "podfs mount; see $work/mount.log"
log "mounted in $(since "$t")"
head -c $((9 << 20)) /dev/urandom >"$work/big"
cp "$work/big" "$mnt/big"
echo "hello from $pod_addr" >"$mnt/small"
sync "$mnt/big" "$mnt/small"
cmp "$work/big" "$mnt/big" || die "big file reads back different"
[[ $(cat "$mnt/small") == "hello from $pod_addr" ]] || die "small file reads back different"
"$podfs" umount "$mnt" || die "podfs umount"
# Remounted, the data comes from Ceph rather than the first mount's cache.
in_pod "$podfs" mount "$meta" "$mnt" -d --log "$work/mount.log" || die "podfs mount again; see $work/mount.log"
cmp "$work/big" "$mnt/big" || die "big file differs after a remount"
[[ $(cat "$mnt/small") == "hello from $pod_addr" ]] || die "small file differs after a remount"
"$podfs" umount "$mnt" || die "podfs umount"
objects=$(in_pod rados -c "$PODFS_PODNET_CEPH_CONF" -p "$PODFS_PODNET_CEPH_POOL" -N "$vol" ls | wc -l)
((objects > 0)) || die "no objects in RADOS namespace $vol"
log "wrote and read 9 MiB + a small file through etcd + RADOS from the fake pod ($objects objects)"

if ((run_go)); then
	PODFS_BIN=$podfs go test -tags e2e -count=1 -v -run 'TestPodNetBackends$' ./e2e/ ||
		die "TestPodNetBackends"
fi
log "timings: backends up $up_time, format $format_time"
