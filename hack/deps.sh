#!/usr/bin/env bash
# Installs the Debian packages podfs builds and tests with. Idempotent: packages
# already present are not fetched again, and apt's lists are refreshed at most
# once per run.
#
#   hack/deps.sh            build + test dependencies (librados, etcd, ceph, fio)
#   hack/deps.sh --minimal  only what building and running the embedded default needs
#   hack/deps.sh --e2e      everything above plus the node runtime the e2e cluster
#                           needs (containerd, runc, CNI plugins, busybox for images)
#   hack/deps.sh --registry only what hack/registry.sh runs (docker-registry,
#                           htpasswd, openssl, curl)
set -euo pipefail

base=(ca-certificates gcc libc6-dev librados-dev pkg-config)
# busybox-static: hack/imagebuild's test builds an image with it. acl: setfacl and
# getfacl for pkg/fs's permission tests.
full=(etcd-server ceph-mon ceph-osd ceph-mgr ceph-common fio e2fsprogs util-linux busybox-static acl)
# curl: the metrics scenario scrapes a sidecar from the pod network.
e2e=(containerd runc containernetworking-plugins iproute2 conntrack curl)

registry=(docker-registry apache2-utils openssl curl ca-certificates)

if [[ "${1:-}" == "--registry" ]]; then
	want=("${registry[@]}")
else
	want=("${base[@]}")
	[[ "${1:-}" == "--minimal" ]] || want+=("${full[@]}")
	[[ "${1:-}" == "--e2e" ]] && want+=("${e2e[@]}")
fi

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "hack/deps.sh: missing packages ${missing[*]}; run as root (or install them yourself)" >&2
	exit 1
fi

echo "hack/deps.sh: installing ${missing[*]}" >&2
# Debian's etcd-server and ceph packages start daemons on install; podfs starts
# its own on loopback ports, so forbid service starts while installing.
policy=/usr/sbin/policy-rc.d
had_policy=0
[[ -e $policy ]] && had_policy=1
if ((had_policy == 0)); then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
