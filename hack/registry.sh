#!/usr/bin/env bash
# A private image registry on loopback to push podfs's image to and pull it
# from: Debian's docker-registry (distribution 2.8) with TLS, its certificate
# signed by a CA this script makes, and basic auth from an htpasswd file.
#
#   hack/registry.sh up      install the packages if needed, make the CA, the
#                            certificate, the user and its password once, start
#                            the registry (idempotent: a running one is left
#                            alone; one that does not answer is restarted)
#   hack/registry.sh down    stop it by PID (the images and certificates stay;
#                            `down --purge` removes the state dir too)
#   hack/registry.sh env     print `export NAME=value` lines:
#                            PODFS_REGISTRY (HOST:PORT), PODFS_REGISTRY_CA (the
#                            CA's PEM file), PODFS_REGISTRY_USERNAME,
#                            PODFS_REGISTRY_PASSWORD_FILE (mode 0600; the
#                            password itself is never printed)
#   hack/registry.sh status  whether it runs and answers
#
# Environment:
#   PODFS_REGISTRY_DIR   state dir (default $PODFS_E2E_STATE/registry, i.e.
#                        /var/lib/podfs-e2e/registry)
#   PODFS_REGISTRY_ADDR  where it listens (default 127.0.0.1:5000); loopback only
#
# Push the podfs image there with
#   eval "$(hack/registry.sh env)"
#   hack/image.sh podfs --push "$PODFS_REGISTRY/podfs/podfs:dev" \
#     --username "$PODFS_REGISTRY_USERNAME" --password-stdin <"$PODFS_REGISTRY_PASSWORD_FILE"
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

log() { echo "registry: $*" >&2; }
die() {
	echo "registry: $*" >&2
	exit 1
}

dir=${PODFS_REGISTRY_DIR:-${PODFS_E2E_STATE:-/var/lib/podfs-e2e}/registry}
addr=${PODFS_REGISTRY_ADDR:-127.0.0.1:5000}
user=podfs
bin=/usr/bin/docker-registry
host=${addr%:*}
port=${addr##*:}
case $host in
127.* | localhost | "[::1]") ;;
*) die "PODFS_REGISTRY_ADDR=$addr: only a loopback address (127.x.x.x, localhost, [::1])" ;;
esac
[[ $port =~ ^[0-9]+$ ]] || die "PODFS_REGISTRY_ADDR=$addr: want HOST:PORT"

# pid prints the registry's PID if it runs (checked against the binary, so a
# recycled PID is never mistaken for it).
pid() {
	local p
	[[ -f $dir/registry.pid ]] || return 1
	p=$(<"$dir/registry.pid")
	[[ -n $p && $(readlink "/proc/$p/exe" 2>/dev/null) == "$bin" ]] || return 1
	echo "$p"
}

# answers reports whether the registry asks for credentials over TLS that
# the CA vouches for: what a client sees before it logs in.
answers() {
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$dir/ca.crt" "https://$addr/v2/" 2>/dev/null) || return 1
	[[ $code == 401 ]]
}

make_certs() {
	[[ -s $dir/ca.crt && -s $dir/tls.crt && -s $dir/tls.key ]] && return 0
	log "making a CA and the registry's certificate for $host"
	local san
	case $host in
	localhost) san="DNS:localhost,IP:127.0.0.1" ;;
	"[::1]") san="IP:::1,DNS:localhost" ;;
	*) san="IP:$host,DNS:localhost" ;;
	esac
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
		-keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/CN=podfs-registry-ca" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/tls.key" -out "$dir/tls.csr" -subj "/CN=$host" 2>/dev/null
	printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n' "$san" >"$dir/tls.ext"
	openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
		-days 825 -extfile "$dir/tls.ext" -out "$dir/tls.crt" 2>/dev/null
	rm -f "$dir/tls.csr" "$dir/tls.ext"
	chmod 600 "$dir/ca.key" "$dir/tls.key"
}

make_user() {
	[[ -s $dir/htpasswd && -s $dir/password ]] && return 0
	log "making user $user (password in $dir/password)"
	(umask 077 && openssl rand -hex 24 >"$dir/password")
	# bcrypt: the only scheme the registry's htpasswd reader accepts.
	htpasswd -B -i -c "$dir/htpasswd" "$user" <"$dir/password" 2>/dev/null
	chmod 600 "$dir/htpasswd"
}

write_config() {
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr
  tls:
    certificate: $dir/tls.crt
    key: $dir/tls.key
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: podfs-registry
    path: $dir/htpasswd
EOF
}

up() {
	[[ $(id -u) -eq 0 ]] || die "run as root (installs packages)"
	"$root/hack/deps.sh" --registry
	mkdir -p "$dir/data"
	chmod 700 "$dir"
	make_certs
	make_user
	write_config
	if p=$(pid); then
		if answers; then
			log "already running (pid $p) at https://$addr"
			return 0
		fi
		log "pid $p does not answer: restarting it"
		stop
	fi
	# setsid: its own session, so the caller's terminal signals miss it.
	setsid "$bin" serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
	echo $! >"$dir/registry.pid"
	for _ in $(seq 100); do
		answers && {
			log "running (pid $(<"$dir/registry.pid")) at https://$addr, user $user"
			return 0
		}
		pid >/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$dir/registry.log" >&2 || true
	stop
	die "the registry did not answer at https://$addr (log: $dir/registry.log)"
}

stop() {
	local p
	p=$(pid) || {
		rm -f "$dir/registry.pid"
		return 0
	}
	kill "$p"
	for _ in $(seq 50); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$p" 2>/dev/null && kill -9 "$p"
	rm -f "$dir/registry.pid"
	log "stopped pid $p"
}

env_out() {
	[[ -s $dir/ca.crt && -s $dir/password ]] || die "no registry state in $dir: hack/registry.sh up"
	printf 'export PODFS_REGISTRY=%q\n' "$addr"
	printf 'export PODFS_REGISTRY_CA=%q\n' "$dir/ca.crt"
	printf 'export PODFS_REGISTRY_USERNAME=%q\n' "$user"
	printf 'export PODFS_REGISTRY_PASSWORD_FILE=%q\n' "$dir/password"
}

case ${1:-} in
up) up ;;
down)
	stop
	if [[ ${2:-} == --purge ]]; then
		rm -rf "$dir"
		log "removed $dir"
	fi
	;;
env) env_out ;;
status)
	if p=$(pid); then
		if answers; then echo "running (pid $p) at https://$addr"; else echo "pid $p does not answer at https://$addr"; fi
	else
		echo "not running"
		exit 1
	fi
	;;
*)
	echo "usage: hack/registry.sh up|down [--purge]|env|status" >&2
	exit 2
	;;
esac
