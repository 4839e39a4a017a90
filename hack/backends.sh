#!/usr/bin/env bash
# podfs's e2e backends on the POD network: an etcd and a one-node Ceph
# (hack/ceph.sh, memstore) inside a network namespace of their own, joined to
# the cluster's pod bridge by a veth pair. Pods that may not use the host
# network (Pod Security "restricted") reach them at a fixed address in the pod
# subnet that hack/cluster.sh keeps out of its IPAM range. The host itself has
# no route to that address: host-side tools reach the backends by entering the
# namespace (nsenter --net=/run/netns/NAME or ip netns exec NAME).
#
#   hack/backends.sh up      create the namespace and start etcd and Ceph in it
#                            (idempotent: a healthy set is left alone, a partial
#                            one is torn down and made again)
#   hack/backends.sh down    stop every process by PID, delete the namespace
#                            (which deletes the veth pair), remove the state dir
#   hack/backends.sh env     print `export NAME=value` lines for the e2e tests:
#                            PODFS_PODNET_NETNS, PODFS_PODNET_ADDR,
#                            PODFS_PODNET_ETCD (HOST:PORT), PODFS_PODNET_CEPH_MON
#                            (HOST:PORT, msgr v1), PODFS_PODNET_CEPH_CONF,
#                            PODFS_PODNET_CEPH_POOL
#   hack/backends.sh status  what runs
#
# Environment (read by up; down, env and status use what up recorded):
#   PODFS_BACKENDS_DIR      state dir (default $PODFS_E2E_STATE/backends, i.e.
#                           /var/lib/podfs-e2e/backends)
#   PODFS_BACKENDS_NETNS    namespace name (default podfs-backends)
#   PODFS_BACKENDS_BRIDGE   the bridge to join (default podfs0, hack/cluster.sh's)
#   PODFS_BACKENDS_ADDR     address/prefix in the namespace (default 10.244.0.250/24)
#   PODFS_BACKENDS_CREATE_BRIDGE=1  create the bridge when it is missing (for
#                           standalone tests with a throwaway bridge name); down
#                           deletes it again if nothing else is attached to it
# Nothing is created on the host besides the veth end on the bridge (and, with
# PODFS_BACKENDS_CREATE_BRIDGE=1, the bridge). No address is put on the host,
# ip_forward and iptables are left alone.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

log() { echo "backends: $*" >&2; }
die() {
	echo "backends: $*" >&2
	exit 1
}

dir=${PODFS_BACKENDS_DIR:-${PODFS_E2E_STATE:-/var/lib/podfs-e2e}/backends}
conf_file=$dir/backends.conf
etcd_client_port=2379
etcd_peer_port=2380
ceph_port=6789
ceph_pool=podfs
# The veth end inside the namespace; its name only has to be unique there.
inner_if=bk0
# Set by up while it clears a partial set: down then leaves the bridge.
keep_bridge=0

# load_config sets netns, bridge, addr, veth and the made_* flags: from what
# up recorded when there is a record, else from the environment.
load_config() {
	netns=${PODFS_BACKENDS_NETNS:-podfs-backends}
	bridge=${PODFS_BACKENDS_BRIDGE:-podfs0}
	addr=${PODFS_BACKENDS_ADDR:-10.244.0.250/24}
	made_bridge=0
	made_run_netns=0
	if [[ -f $conf_file ]]; then
		# shellcheck source=/dev/null
		source "$conf_file"
	fi
	ip4=${addr%/*}
	# Interface names are at most 15 bytes; a checksum of the namespace name
	# keeps two sets of backends (say, e2e and a standalone check) apart.
	veth=pfs$(printf %s "$netns" | cksum | cut -d' ' -f1)
	veth=${veth:0:15}
}

nsrun() { nsenter --net="/run/netns/$netns" "$@"; }

netns_exists() { [[ -e /run/netns/$netns ]]; }

# pid_of NAME prints the PID of NAME if it runs (checked against the binary
# recorded at start, so a recycled PID is never mistaken for it).
pid_of() {
	local f=$dir/run/$1.pid pid exe
	[[ -f $f ]] || return 1
	read -r pid exe <"$f" || return 1
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
	[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$exe" ]] || return 1
	echo "$pid"
}

# ceph_running: the monitor and the OSD hack/ceph.sh started are alive.
ceph_running() {
	local f pid n=0
	for f in "$dir"/ceph/run/mon.*.pid "$dir"/ceph/run/osd.*.pid; do
		[[ -f $f ]] || return 1
		pid=$(cat "$f" 2>/dev/null) || return 1
		kill -0 "$pid" 2>/dev/null || return 1
		n=$((n + 1))
	done
	((n == 2))
}

healthy() {
	netns_exists && pid_of etcd >/dev/null && ceph_running &&
		nsrun curl -sf --max-time 5 "http://$ip4:$etcd_client_port/health" >/dev/null 2>&1
}

stop_etcd() {
	local pid i
	pid=$(pid_of etcd) || {
		rm -f "$dir/run/etcd.pid"
		return 0
	}
	log "stopping etcd ($pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$dir/run/etcd.pid"
}

down() {
	[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, daemons)"
	load_config
	if [[ ! -d $dir ]] && ! netns_exists; then
		return 0
	fi
	stop_etcd
	if [[ -d $dir/ceph ]]; then
		"$root/hack/ceph.sh" down "$dir/ceph" || log "hack/ceph.sh down $dir/ceph failed"
	fi
	# Deleting the namespace deletes the veth pair with it (both ends).
	if netns_exists; then
		ip netns delete "$netns" || die "cannot delete network namespace $netns"
		log "deleted network namespace $netns"
	fi
	# A namespace that was never made leaves a host-side end behind only if up
	# died between the two steps.
	if ip link show "$veth" >/dev/null 2>&1; then
		ip link delete "$veth" || log "cannot delete $veth"
	fi
	if ((made_bridge && !keep_bridge)) && [[ -d /sys/class/net/$bridge/brif ]]; then
		if [[ -z $(ls -A "/sys/class/net/$bridge/brif") ]]; then
			ip link delete "$bridge" && log "deleted bridge $bridge"
		else
			log "leaving bridge $bridge: other interfaces are attached to it"
		fi
	fi
	# `ip netns add` made /run/netns a mount point of its own. Undo that when up
	# did it and no namespace is left (a plain umount fails while one is).
	if ((made_run_netns)) && [[ -d /run/netns && -z $(ls -A /run/netns) ]]; then
		if mountpoint -q /run/netns; then umount /run/netns 2>/dev/null || true; fi
		mountpoint -q /run/netns || rmdir /run/netns 2>/dev/null || true
	fi
	rm -rf "${dir:?}"
	log "down"
}

up() {
	[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, daemons)"
	local t0=$SECONDS
	load_config
	if [[ -f $conf_file ]] && healthy; then
		log "already up ($netns, $ip4)"
		return 0
	fi
	# Anything half made (an earlier up that failed, a daemon that died) goes
	# first: a fresh set takes seconds and memstore data does not survive a
	# restart anyway.
	local remade_bridge=0
	if [[ -d $dir ]] || netns_exists; then
		log "tearing down a partial set first"
		# A bridge an earlier up made stays, and stays ours to delete.
		remade_bridge=$made_bridge
		keep_bridge=1 down
	fi
	load_config
	[[ -e /sys/class/net/$bridge ]] && made_bridge=$remade_bridge
	[[ $addr =~ ^[0-9]+(\.[0-9]+){3}/[0-9]+$ ]] || die "PODFS_BACKENDS_ADDR must be IPv4/PREFIX, got $addr"
	local tool tools=(ip nsenter curl etcd ceph-mon ceph-osd)
	for tool in "${tools[@]}"; do
		command -v "$tool" >/dev/null || {
			"$root/hack/deps.sh" || die "$tool is missing and hack/deps.sh could not install it"
			break
		}
	done
	for tool in "${tools[@]}"; do
		command -v "$tool" >/dev/null || die "$tool not found on PATH (etcd-server, ceph-*, iproute2, util-linux, curl)"
	done

	# The bridge belongs to the cluster (hack/cluster.sh up creates it); making
	# one here by accident would leave the backends on a bridge no pod uses.
	local create=${PODFS_BACKENDS_CREATE_BRIDGE:-0}
	if [[ -e /sys/class/net/$bridge ]]; then
		[[ -d /sys/class/net/$bridge/bridge ]] || die "$bridge exists but is not a bridge"
	elif [[ $create == 1 ]]; then
		:
	else
		die "bridge $bridge does not exist: start the cluster first (hack/cluster.sh up creates it), name another with PODFS_BACKENDS_BRIDGE, or set PODFS_BACKENDS_CREATE_BRIDGE=1 to create it"
	fi
	if ip link show "$veth" >/dev/null 2>&1; then
		die "interface $veth exists already: another set of backends named $netns? (hack/backends.sh down)"
	fi

	mkdir -p "$dir/run" "$dir/log"
	[[ -d /run/netns ]] || made_run_netns=1
	# Recorded before anything is made, so down always knows what to remove.
	write_config
	if [[ ! -e /sys/class/net/$bridge ]]; then
		ip link add name "$bridge" type bridge
		made_bridge=1
		write_config
		ip link set "$bridge" up
		log "created bridge $bridge"
	fi

	ip netns add "$netns"
	ip link add "$veth" type veth peer name "$inner_if" netns "$netns"
	ip link set "$veth" master "$bridge"
	ip link set "$veth" up
	ip -n "$netns" link set lo up
	ip -n "$netns" addr add "$addr" dev "$inner_if"
	ip -n "$netns" link set "$inner_if" up
	log "network namespace $netns: $addr on $bridge (veth $veth)"

	start_etcd
	log "starting Ceph in $netns"
	local cephconf
	# hack/ceph.sh runs inside the namespace, so its daemons (which detach)
	# and its own checks live there too.
	if ! cephconf=$(CEPH_ADDR=$ip4 nsrun "$root/hack/ceph.sh" up "$dir/ceph" "$ceph_port" "$ceph_pool"); then
		die "Ceph did not start in $netns; see $dir/ceph/log/ (hack/backends.sh down cleans up)"
	fi
	cephconf=$(tail -n 1 <<<"$cephconf")
	[[ -f $cephconf ]] || die "hack/ceph.sh printed $cephconf, which is not a file"
	wait_etcd
	log "up in $((SECONDS - t0)) s: etcd $ip4:$etcd_client_port, Ceph mon $ip4:$ceph_port, pool $ceph_pool"
}

write_config() {
	cat >"$conf_file" <<EOF
netns=$netns
bridge=$bridge
addr=$addr
made_bridge=$made_bridge
made_run_netns=$made_run_netns
EOF
}

start_etcd() {
	local bin
	bin=$(readlink -f "$(command -v etcd)")
	mkdir -p "$dir/etcd"
	chmod 700 "$dir/etcd"
	local client=http://$ip4:$etcd_client_port peer=http://$ip4:$etcd_peer_port
	log "starting etcd in $netns"
	# Without job control the background child is no group leader, so nsenter
	# and setsid both exec in place: $! is etcd's own PID (nsenter is called
	# directly: a backgrounded shell function would be a subshell).
	nsenter --net="/run/netns/$netns" setsid "$bin" --name podfs-podnet --data-dir "$dir/etcd" \
		--listen-client-urls "$client" --advertise-client-urls "$client" \
		--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
		--initial-cluster "podfs-podnet=$peer" --initial-cluster-state new \
		--max-txn-ops 4096 --logger zap --log-level error \
		>>"$dir/log/etcd.log" 2>&1 </dev/null &
	echo "$! $bin" >"$dir/run/etcd.pid"
}

wait_etcd() {
	local i
	for ((i = 0; i < 300; i++)); do
		pid_of etcd >/dev/null || die "etcd exited; see $dir/log/etcd.log"
		nsrun curl -sf --max-time 2 "http://$ip4:$etcd_client_port/health" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "etcd does not answer on $ip4:$etcd_client_port after 30 s; see $dir/log/etcd.log"
}

env_cmd() {
	load_config
	[[ -f $conf_file ]] && netns_exists && [[ -f $dir/ceph/ceph.conf ]] ||
		die "not up ($dir): run hack/backends.sh up"
	local kv
	for kv in "PODFS_PODNET_NETNS=$netns" "PODFS_PODNET_ADDR=$ip4" \
		"PODFS_PODNET_ETCD=$ip4:$etcd_client_port" "PODFS_PODNET_CEPH_MON=$ip4:$ceph_port" \
		"PODFS_PODNET_CEPH_CONF=$dir/ceph/ceph.conf" "PODFS_PODNET_CEPH_POOL=$ceph_pool"; do
		printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
	done
}

status() {
	load_config
	local pid
	if netns_exists; then echo "netns $netns: $addr on $bridge (veth $veth)"; else echo "netns $netns: absent"; fi
	if pid=$(pid_of etcd); then echo "etcd: running (pid $pid)"; else echo "etcd: stopped"; fi
	if ceph_running; then echo "ceph: running"; else echo "ceph: stopped"; fi
}

case ${1:-} in
up) up ;;
down) down ;;
env) env_cmd ;;
status) status ;;
*)
	echo "usage: hack/backends.sh up|down|env|status" >&2
	exit 2
	;;
esac
