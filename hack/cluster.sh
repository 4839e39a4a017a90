#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, from nothing, everything on
# 127.0.0.1: Debian etcd, kube-apiserver / controller-manager / scheduler /
# kubelet / kubectl built from source (hack/kube-bins.sh), Debian containerd +
# runc + CNI bridge, a pause image built by hack/image.sh.
#
#   hack/cluster.sh up      start (idempotent: running parts are left alone)
#   hack/cluster.sh down    stop everything by PID, unmount, delete the bridge,
#                           restore sysctls, remove the state dir
#   hack/cluster.sh status  what runs, and the node
#   hack/cluster.sh env     print `export KUBECONFIG=... KUBECTL=...`
#
# State (certs, configs, logs, pid files, etcd, containerd, kubelet root) lives
# in $PODFS_E2E_STATE (default /var/lib/podfs-e2e). Ports: etcd 12379/12380,
# apiserver 6443, kubelet 10250/10248 — all on 127.0.0.1.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${PODFS_E2E_STATE:-/var/lib/podfs-e2e}
etc=$state/etc
run=$state/run
logs=$state/log
kubelet_dir=$state/kubelet
etcd_port=${PODFS_E2E_ETCD_PORT:-12379}
api_port=6443
bridge=podfs0
pod_subnet=10.244.0.0/24
# Pods get .2-.239; .240-.254 are kept out of IPAM for fixed addresses on the
# bridge, such as hack/backends.sh's network namespace (10.244.0.250).
pod_range_start=10.244.0.2
pod_range_end=10.244.0.239
node=$(hostname | tr '[:upper:]' '[:lower:]')
pause_image=${PAUSE_IMAGE:-podfs.io/pause:dev}
containerd_sock=$run/containerd.sock
# The sysctls kubelet and the CNI plugins may change: saved at up, restored at down.
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)

log() { echo "cluster: $*" >&2; }
die() {
	echo "cluster: $*" >&2
	exit 1
}

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (containerd, kubelet, mounts)"; }

kube_bins() {
	bins=$("$root/hack/kube-bins.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
}

# --- processes, by PID file -------------------------------------------------

# pid_of NAME prints the PID of component NAME if it runs (checked against
# the binary recorded at start, so a recycled PID is not mistaken for it).
pid_of() {
	local f=$run/$1.pid pid exe
	[[ -f $f ]] || return 1
	read -r pid exe <"$f" || return 1
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
	[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$exe" ]] || return 1
	echo "$pid"
}

# start NAME BIN ARGS... runs BIN detached (own session), logging to log/NAME.log.
start() {
	local name=$1 bin=$2
	shift 2
	if pid_of "$name" >/dev/null; then
		log "$name already running"
		return 0
	fi
	log "starting $name"
	# No job control here, so the background child is not a group leader and
	# setsid execs in place: $! is the component's own PID.
	setsid "$bin" "$@" >>"$logs/$name.log" 2>&1 </dev/null &
	echo "$! $(readlink -f "$bin")" >"$run/$name.pid"
}

# stop NAME: SIGTERM, then SIGKILL after a grace period.
stop() {
	local name=$1 pid i
	if pid=$(pid_of "$name"); then
		log "stopping $name ($pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$run/$name.pid"
}

# wait_for WHAT NAME CMD...: poll CMD until it succeeds, failing early (with
# the component's log) if NAME died, and after 120 s.
wait_for() {
	local what=$1 name=$2 i
	shift 2
	for ((i = 0; i < 600; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		if ! pid_of "$name" >/dev/null; then
			tail -n 30 "$logs/$name.log" >&2 || true
			die "$name exited while waiting for $what (log: $logs/$name.log)"
		fi
		sleep 0.2
	done
	tail -n 30 "$logs/$name.log" >&2 || true
	die "timed out waiting for $what (log: $logs/$name.log)"
}

# --- certificates and kubeconfigs ---------------------------------------------

# cert NAME SUBJECT [SANS]: a key pair signed by the cluster CA.
cert() {
	local name=$1 subj=$2 sans=${3:-}
	[[ -f $etc/pki/$name.crt ]] && return 0
	local ext=$etc/pki/$name.ext
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=serverAuth,clientAuth"
		[[ -n $sans ]] && echo "subjectAltName=$sans"
	} >"$ext"
	openssl req -new -newkey rsa:2048 -nodes -keyout "$etc/pki/$name.key" \
		-out "$etc/pki/$name.csr" -subj "$subj" 2>/dev/null
	openssl x509 -req -in "$etc/pki/$name.csr" -CA "$etc/pki/ca.crt" -CAkey "$etc/pki/ca.key" \
		-CAcreateserial -out "$etc/pki/$name.crt" -days 3650 -extfile "$ext" 2>/dev/null
	rm -f "$etc/pki/$name.csr" "$ext"
}

kubeconfig() {
	local name=$1
	cat >"$etc/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: podfs-e2e
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $etc/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $etc/pki/$name.crt
    client-key: $etc/pki/$name.key
contexts:
- name: podfs-e2e
  context: {cluster: podfs-e2e, user: $name}
current-context: podfs-e2e
EOF
}

make_pki() {
	mkdir -p "$etc/pki"
	if [[ ! -f $etc/pki/ca.crt ]]; then
		openssl req -x509 -newkey rsa:2048 -nodes -keyout "$etc/pki/ca.key" -out "$etc/pki/ca.crt" \
			-days 3650 -subj "/CN=podfs-e2e-ca" 2>/dev/null
	fi
	cert apiserver "/CN=kube-apiserver" \
		"DNS:localhost,DNS:$node,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
	cert admin "/O=system:masters/CN=podfs-e2e-admin"
	cert kubelet "/O=system:nodes/CN=system:node:$node"
	cert kubelet-serving "/CN=$node" "DNS:$node,DNS:localhost,IP:127.0.0.1"
	cert scheduler "/CN=system:kube-scheduler"
	cert controller-manager "/CN=system:kube-controller-manager"
	if [[ ! -f $etc/pki/sa.key ]]; then
		openssl genrsa -out "$etc/pki/sa.key" 2048 2>/dev/null
		openssl rsa -in "$etc/pki/sa.key" -pubout -out "$etc/pki/sa.pub" 2>/dev/null
	fi
	for n in admin kubelet scheduler controller-manager; do kubeconfig "$n"; done
}

# --- node runtime configuration ---------------------------------------------

write_configs() {
	mkdir -p "$state/cni/net.d" "$state/cni/ipam" "$state/containerd" "$kubelet_dir" "$state/kubelet-plugins"
	cat >"$etc/containerd.toml" <<EOF
version = 2
root = "$state/containerd"
state = "$run/containerd"
oom_score = 0

[grpc]
  address = "$containerd_sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # The VM lacks CAP_SYS_RESOURCE: without this runc fails every container.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
  # One directory per registry (HOST:PORT/hosts.toml), read at each pull:
  # hack/e2e.sh puts the CA of hack/registry.sh's registry there.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$etc/containerd-certs.d"
EOF
	# A bridge with no gateway and no masquerade: pods reach each other, and
	# iptables and ip_forward stay as they are. Pods that need the API server
	# use the host network.
	cat >"$state/cni/net.d/10-podfs-e2e.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "podfs-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_subnet", "rangeStart": "$pod_range_start", "rangeEnd": "$pod_range_end"}]],
        "dataDir": "$state/cni/ipam"
      }
    }
  ]
}
EOF
	cat >"$etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$containerd_sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $etc/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $etc/pki/kubelet-serving.crt
tlsPrivateKeyFile: $etc/pki/kubelet-serving.key
cgroupDriver: cgroupfs
failCgroupV1: false
# runc cannot raise oom_score_adj here (no CAP_SYS_RESOURCE).
oomScoreAdj: 0
failSwapOn: false
volumePluginDir: $state/kubelet-plugins
# Images come from ctr import and cannot be pulled back: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
clusterDomain: cluster.local
serializeImagePulls: false
EOF
}

# --- host state: sysctls, the pods dir mount ----------------------------------

save_sysctls() {
	[[ -f $state/sysctls.saved ]] && return 0
	local s
	for s in "${sysctls[@]}"; do
		echo "$s=$(sysctl -n "$s")"
	done >"$state/sysctls.saved.tmp"
	mv "$state/sysctls.saved.tmp" "$state/sysctls.saved"
}

restore_sysctls() {
	[[ -f $state/sysctls.saved ]] || return 0
	local kv
	while read -r kv; do
		[[ -n $kv ]] && sysctl -q -w "$kv" || log "could not restore $kv"
	done <"$state/sysctls.saved"
	rm -f "$state/sysctls.saved"
	log "restored sysctls"
}

# mounts_under DIR...: mount points at or below the given dirs, deepest first.
mounts_under() {
	local d m
	awk '{print $5}' /proc/self/mountinfo | while read -r m; do
		for d in "$@"; do
			if [[ $m == "$d" || $m == "$d"/* ]]; then echo "$m"; fi
		done
	done | awk '{print gsub("/", "/"), $0}' | sort -rn | cut -d' ' -f2- | uniq || true
}

# Host paths the node components create outside the state dir. up records
# those that did not exist yet; down removes exactly those.
host_paths=(/var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns)

record_host_paths() {
	local p
	[[ -f $state/created-paths ]] && return 0
	for p in "${host_paths[@]}"; do
		[[ -e $p ]] || echo "$p"
	done >"$state/created-paths"
}

remove_host_paths() {
	local p
	[[ -f $state/created-paths ]] || return 0
	# Deepest first, so a parent goes after its children.
	while read -r p; do
		[[ -n $p && -e $p ]] || continue
		if [[ -n $(mounts_under "$p") ]]; then
			log "not removing $p: something is still mounted under it"
			continue
		fi
		rm -rf --one-file-system "$p"
	done < <(sort -r "$state/created-paths")
}

unmount_under() {
	local m
	# Dead FUSE mounts (a killed sidecar) would block a plain umount.
	while read -r m; do
		[[ -z $m ]] && continue
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
	done < <(mounts_under "$@")
}

# make_bridge creates the pod bridge now rather than at the first pod the CNI
# sets up (host-network pods never make it), so hack/backends.sh can join it
# before any test pod runs. The CNI plugin adopts an existing bridge as is.
make_bridge() {
	if ! ip link show "$bridge" >/dev/null 2>&1; then
		ip link add name "$bridge" type bridge
		log "created bridge $bridge"
	fi
	ip link set "$bridge" up
}

# --- up / down / status -----------------------------------------------------

up() {
	need_root
	local t0=$SECONDS
	"$root/hack/deps.sh" --e2e
	kube_bins
	mkdir -p "$etc" "$run" "$logs"
	record_host_paths
	save_sysctls
	make_pki
	write_configs

	start etcd /usr/bin/etcd --name podfs-e2e --data-dir "$state/etcd" \
		--listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
		--initial-cluster "podfs-e2e=http://127.0.0.1:$((etcd_port + 1))"
	wait_for "etcd" etcd curl -sf "http://127.0.0.1:$etcd_port/health"

	start kube-apiserver "$bins/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address=127.0.0.1 --secure-port=$api_port \
		--service-cluster-ip-range=10.96.0.0/24 \
		--tls-cert-file="$etc/pki/apiserver.crt" --tls-private-key-file="$etc/pki/apiserver.key" \
		--client-ca-file="$etc/pki/ca.crt" \
		--kubelet-client-certificate="$etc/pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$etc/pki/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=Hostname \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$etc/pki/sa.pub" \
		--service-account-signing-key-file="$etc/pki/sa.key" \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--allow-privileged=true --profiling=false --v=1
	wait_for "the API server" kube-apiserver curl -sf --cacert "$etc/pki/ca.crt" \
		--cert "$etc/pki/admin.crt" --key "$etc/pki/admin.key" "https://127.0.0.1:$api_port/readyz"

	start kube-controller-manager "$bins/kube-controller-manager" \
		--kubeconfig="$etc/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$etc/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$etc/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port=0 \
		--service-account-private-key-file="$etc/pki/sa.key" --root-ca-file="$etc/pki/ca.crt" \
		--use-service-account-credentials=true --allocate-node-cidrs=false \
		--leader-elect=false --profiling=false --v=1
	start kube-scheduler "$bins/kube-scheduler" \
		--kubeconfig="$etc/scheduler.kubeconfig" \
		--authentication-kubeconfig="$etc/scheduler.kubeconfig" \
		--authorization-kubeconfig="$etc/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --profiling=false --v=1

	start containerd /usr/bin/containerd --config "$etc/containerd.toml"
	wait_for "containerd" containerd ctr --address "$containerd_sock" version
	if ! ctr --address "$containerd_sock" -n k8s.io images check "name==$pause_image" 2>/dev/null | grep -q complete; then
		PAUSE_IMAGE=$pause_image CONTAINERD_ADDRESS=$containerd_sock PODFS_E2E_STATE=$state "$root/hack/image.sh" pause
	fi

	make_bridge
	start kubelet "$bins/kubelet" --config="$etc/kubelet.yaml" \
		--kubeconfig="$etc/kubelet.kubeconfig" --root-dir="$kubelet_dir" \
		--hostname-override="$node" --v=1
	wait_for "node $node Ready" kubelet node_ready
	wait_for "the default service account" kube-controller-manager \
		"$bins/kubectl" --kubeconfig "$etc/admin.kubeconfig" get serviceaccount default -n default
	log "up in $((SECONDS - t0)) s; use: eval \$(hack/cluster.sh env)"
}

node_ready() {
	[[ $("$bins/kubectl" --kubeconfig "$etc/admin.kubeconfig" get node "$node" \
		-o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# stop_pods asks kubelet to stop every pod (so CNI and volumes are torn down
# the normal way), then kills whatever containerd still runs.
stop_pods() {
	local kubectl=$bins/kubectl kc=$etc/admin.kubeconfig i
	if pid_of kube-apiserver >/dev/null && pid_of kubelet >/dev/null && [[ -x $kubectl ]]; then
		"$kubectl" --kubeconfig "$kc" delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
		for ((i = 0; i < 150; i++)); do
			[[ -z $(ctr --address "$containerd_sock" -n k8s.io tasks ls -q 2>/dev/null) ]] && break
			sleep 0.2
		done
	fi
	stop kubelet
	if pid_of containerd >/dev/null; then
		local t
		for t in $(ctr --address "$containerd_sock" -n k8s.io tasks ls -q 2>/dev/null); do
			log "killing leftover container $t"
			ctr --address "$containerd_sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
		done
		for ((i = 0; i < 50; i++)); do
			[[ -z $(ctr --address "$containerd_sock" -n k8s.io tasks ls -q 2>/dev/null) ]] && break
			sleep 0.2
		done
	fi
}

# Shims (containerd-shim-runc-v2) outlive containerd; ours name our socket.
kill_shims() {
	local p
	for p in /proc/[0-9]*; do
		[[ -r $p/cmdline ]] || continue
		if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.*-address $containerd_sock"; then
			log "killing leftover shim ${p#/proc/}"
			kill -KILL "${p#/proc/}" 2>/dev/null || true
		fi
	done
}

remove_cgroups() {
	local c d
	for c in /sys/fs/cgroup/*/; do
		[[ -d ${c}kubepods ]] || continue
		find "${c}kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
	for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
		[[ -d $c ]] && log "cgroup $c is still there (processes left in it?)"
	done
	true
}

down() {
	need_root
	bins=${PODFS_CACHE:-$HOME/.cache/podfs}/kube/${KUBE_VERSION:-v1.33.13}
	[[ -d $state ]] || {
		log "nothing to do: no $state"
		return 0
	}
	# The e2e registry (hack/registry.sh) keeps its state under $state:
	# stop it before that goes, or it outlives its files.
	if [[ -f $state/registry/registry.pid ]]; then
		PODFS_E2E_STATE=$state "$(dirname "$0")/registry.sh" down || true
	fi
	stop kube-controller-manager
	stop kube-scheduler
	stop_pods
	stop containerd
	kill_shims
	# Network namespaces the CRI made and could not tear down.
	# (Only the CRI names them cni-*, and this cluster runs the only CRI here.)
	local ns
	for ns in /run/netns/cni-*; do
		[[ -e $ns ]] || continue
		log "removing leftover network namespace $ns"
		umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
		rm -f "$ns"
	done
	stop kube-apiserver
	stop etcd
	unmount_under "$kubelet_dir" "$state"
	# The pod-network backends (hack/backends.sh) sit on the bridge and keep
	# their state under $state: stop them first (a no-op when none run).
	PODFS_E2E_STATE=$state "$root/hack/backends.sh" down || log "hack/backends.sh down failed"
	if ip link show "$bridge" >/dev/null 2>&1; then
		ip link delete "$bridge"
		log "deleted bridge $bridge"
	fi
	remove_cgroups
	restore_sysctls
	remove_host_paths
	local left
	left=$(mounts_under "$state")
	[[ -z $left ]] || die "mounts left behind: $left"
	rm -rf "$state"
	log "down"
}

status() {
	local n pid
	for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet; do
		if pid=$(pid_of "$n"); then
			printf '%-24s running (pid %s)\n' "$n" "$pid"
		else
			printf '%-24s stopped\n' "$n"
		fi
	done
	bins=${PODFS_CACHE:-$HOME/.cache/podfs}/kube/${KUBE_VERSION:-v1.33.13}
	if pid_of kube-apiserver >/dev/null; then
		"$bins/kubectl" --kubeconfig "$etc/admin.kubeconfig" get nodes -o wide || true
	fi
	local m
	m=$(mounts_under "$state")
	[[ -z $m ]] || printf 'mounts:\n%s\n' "$m"
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
env)
	echo "export KUBECONFIG=$etc/admin.kubeconfig KUBECTL=${PODFS_CACHE:-$HOME/.cache/podfs}/kube/${KUBE_VERSION:-v1.33.13}/kubectl"
	;;
*)
	echo "usage: hack/cluster.sh up|down|status|env" >&2
	exit 2
	;;
esac
