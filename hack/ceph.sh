#!/usr/bin/env bash
# A throwaway one-node Ceph cluster on 127.0.0.1 (or CEPH_ADDR): one monitor and one OSD
# (memstore: data in RAM, fast to start), no auth (or cephx, see CEPH_AUTH), pools of
# size 1. Every file it makes (config, keyrings, data, logs, pid files, admin sockets)
# lives in DIR.
#
#   hack/ceph.sh up DIR [PORT [POOL]]   start; PORT is the monitor's (msgr v1)
#                                       port (default 6789), POOL is created
#                                       (default podfs). Prints the config path.
#   hack/ceph.sh down DIR               stop the daemons by their pid files
#
# Tests pick a free PORT so several clusters can run side by side. Clients:
#   rados://POOL?conf=DIR/ceph.conf            or
#   rados://POOL?mon_host=127.0.0.1:PORT
# Environment: CEPH_AUTH=cephx turns cephx on: the CLI (and ceph.conf) use client.admin's
# keyring DIR/ceph.client.admin.keyring, and a user client.podfs with caps on POOL only
# (mon 'allow r', osd 'allow rw pool=POOL') gets DIR/ceph.client.podfs.keyring, for
#   rados://POOL?mon_host=127.0.0.1:PORT&user=podfs&keyring=DIR/ceph.client.podfs.keyring
# (default CEPH_AUTH=none: no auth, any user);
# CEPH_MEMSTORE_BYTES (OSD capacity, default 8 GiB of RAM at most);
# CEPH_ADDR (the IPv4 address the monitor and OSD bind and advertise, default
# 127.0.0.1; it must be local to the network namespace the script runs in,
# as for hack/backends.sh, which runs it inside a namespace of its own).
set -euo pipefail

die() { echo "hack/ceph.sh: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || die "usage: hack/ceph.sh up DIR [PORT [POOL]] | down DIR"

stop_all() {
	local d=$1 pidf pid i
	for pidf in "$d"/run/*.pid; do
		[[ -e $pidf ]] || continue
		pid=$(cat "$pidf" 2>/dev/null || true)
		[[ -n $pid ]] || continue
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pidf in "$d"/run/*.pid; do
		[[ -e $pidf ]] || continue
		pid=$(cat "$pidf" 2>/dev/null || true)
		[[ -n $pid ]] || continue
		for i in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		rm -f "$pidf"
	done
}

case $cmd in
down)
	[[ -d $dir ]] || exit 0
	stop_all "$dir"
	if [[ -e $dir/run/watch.pid.keep ]]; then
		w=$(cat "$dir/run/watch.pid.keep")
		rm -f "$dir/run/watch.pid.keep"
		[[ $w != "${PPID:-}" ]] && kill "$w" 2>/dev/null || true
	fi
	exit 0
	;;
up) ;;
*) die "unknown command $cmd; usage: hack/ceph.sh up DIR [PORT [POOL]] | down DIR" ;;
esac

port=${3:-6789}
pool=${4:-podfs}
addr=${CEPH_ADDR:-127.0.0.1}
auth=${CEPH_AUTH:-none}
[[ $auth == none || $auth == cephx ]] || die "CEPH_AUTH must be none or cephx, got $auth"
[[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got $port"
[[ $addr =~ ^[0-9]+(\.[0-9]+){3}$ ]] || die "CEPH_ADDR must be an IPv4 address, got $addr"

cd "$(dirname "$0")/.."
if ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v ceph >/dev/null; then
	hack/deps.sh || die "Ceph is not installed and hack/deps.sh could not install it (run it as root)"
fi
[[ $(id -u) -eq 0 ]] || die "needs root (Ceph daemons)"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[[ -e $dir/ceph.conf ]] && stop_all "$dir"
rm -rf "${dir:?}"/{mon,osd,run,log,ceph.conf,monmap,mon.keyring,ceph.client.admin.keyring,ceph.client.podfs.keyring}
mkdir -p "$dir"/{mon,osd,run,log}

fsid=$(cat /proc/sys/kernel/random/uuid)
conf=$dir/ceph.conf
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v1:$addr:$port
public addr = $addr
cluster addr = $addr
ms bind msgr2 = false
auth cluster required = $auth
auth service required = $auth
auth client required = $auth
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
keyring = $dir/ceph.client.admin.keyring
# The OSD is placed in the CRUSH map by this script: a starting OSD that
# sends its own placement command can race its monitor session (the command
# goes out with a zero fsid and init fails).
osd crush update on start = false
osd class update on start = false
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-8589934592}
osd max object size = 134217728
mon data avail crit = 1
mon data avail warn = 2
# With cephx each daemon keeps its key in its data directory.
[mon]
keyring = $dir/mon/\$cluster-\$id/keyring
[osd]
keyring = $dir/osd/\$cluster-\$id/keyring
CONF

ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
# client.admin's key, known to the monitor from its first start (used with cephx only).
ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key -n client.admin \
	--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/ceph.client.admin.keyring" >/dev/null
chmod 600 "$dir/mon.keyring" "$dir/ceph.client.admin.keyring"
monmaptool --create --fsid "$fsid" --addv a "[v1:$addr:$port]" "$dir/monmap" >/dev/null
# With PODFS_CEPH_OWNER=PID the cluster stops itself once that process is gone
# (a test binary that crashed or was killed cannot run its cleanup).
if [[ -n ${PODFS_CEPH_OWNER:-} ]]; then
	script=$(pwd)/hack/ceph.sh
	nohup setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -e "$2/ceph.conf" ]]; do sleep 2; done; "$3" down "$2"' \
		watch "$PODFS_CEPH_OWNER" "$dir" "$script" >/dev/null 2>&1 </dev/null &
	echo $! >"$dir/run/watch.pid.keep"
fi

ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -c "$conf" -i a 2>>"$dir/log/start.log" || die "ceph-mon did not start; see $dir/log/mon.a.log"

# -k: a CLI stuck in librados may ignore the polite signal.
c() { timeout -k 5 30 ceph -c "$conf" --connect-timeout 20 "$@"; }
# Each CLI call retried: a monitor busy committing a new map may time out one.
retry_c() {
	local i out
	for i in 1 2 3 4 5; do
		out=$(c "$@" 2>&1) && return 0
		sleep 1
	done
	die "ceph $* failed: $out"
}
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
# Retried (same uuid, same id): a monitor still forming its quorum under load
# answers "EPERM: problem getting command descriptions".
id=
for i in 1 2 3 4 5; do
	id=$(c osd new "$osd_uuid" 2>>"$dir/log/start.log") && break
	id=
	sleep 1
done
[[ -n $id ]] || die "ceph osd new failed; see $dir/log/start.log and $dir/log/mon.a.log"
mkdir -p "$dir/osd/ceph-$id"
# The OSD's key, known to the monitor before the OSD first asks it (with cephx).
ceph-authtool --create-keyring "$dir/osd/ceph-$id/keyring" --gen-key -n "osd.$id" >/dev/null
if [[ $auth == cephx ]]; then
	retry_c auth add "osd.$id" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -i "$dir/osd/ceph-$id/keyring"
fi
ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" >"$dir/log/osd-mkfs.log" 2>&1 ||
	die "ceph-osd --mkfs failed; see $dir/log/osd-mkfs.log"
# Checked and retried: an OSD outside the default root gets no PGs, and the
# pool then never becomes writable (all three are idempotent).
retry_c osd crush add-bucket localhost host
retry_c osd crush move localhost root=default
retry_c osd crush add "osd.$id" 1.0 host=localhost
started=0
for i in 1 2 3; do
	if ceph-osd -c "$conf" -i "$id" 2>>"$dir/log/start.log"; then
		started=1
		break
	fi
	sleep 1
done
((started)) || die "ceph-osd did not start; see $dir/log/osd.$id.log"

retry_c osd pool create "$pool" 8 8
retry_c osd pool set "$pool" size 1 --yes-i-really-mean-it
retry_c osd pool application enable "$pool" podfs
if [[ $auth == cephx ]]; then
	# The user podfs runs as: reads the maps, reads and writes POOL only.
	retry_c auth get-or-create client.podfs mon 'allow r' osd "allow rw pool=$pool" -o "$dir/ceph.client.podfs.keyring"
	chmod 600 "$dir/ceph.client.podfs.keyring"
fi

# Up when a write to the pool goes through (the OSD is up and its PGs active).
ok=0
deadline=$((SECONDS + 90))
while ((SECONDS < deadline)); do
	if echo probe | timeout -k 2 10 rados -c "$conf" -p "$pool" put .ceph-sh-probe - 2>/dev/null; then
		timeout -k 2 10 rados -c "$conf" -p "$pool" rm .ceph-sh-probe 2>/dev/null || true
		ok=1
		break
	fi
	sleep 0.5
done
if ((!ok)); then
	c osd tree >&2 2>&1 || true
	c osd pool ls detail >&2 2>&1 || true
	die "pool $pool accepts no writes after 90 s; see $dir/log/"
fi
echo "$conf"
