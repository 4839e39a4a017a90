#!/usr/bin/env bash
# make demo: set this machine up and run podfs on the embedded default.
# On a fresh Debian 12, as root: installs what building and mounting need,
# builds bin/podfs, formats a volume (bolt metadata + file storage in one
# directory), mounts it in the background, uses it, and says how to unmount.
# Safe to run again: an existing volume is reused, a running demo mount is
# unmounted and mounted afresh.
#
# Environment: PODFS_DEMO_DIR (volume directory, default /var/lib/podfs-demo),
# PODFS_DEMO_MOUNT (mount point, default /mnt/podfs-demo).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "hack/quickstart.sh: $*" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and mounts a file system): sudo make demo"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available"
export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "Go is not installed: install Go 1.26 into /usr/local/go (https://go.dev/dl/), then rerun"

dir=${PODFS_DEMO_DIR:-/var/lib/podfs-demo}
mp=${PODFS_DEMO_MOUNT:-/mnt/podfs-demo}
meta="bolt://$dir/meta.db"
podfs=$PWD/bin/podfs

step "installing build dependencies (hack/deps.sh --minimal)"
hack/deps.sh --minimal

step "building bin/podfs"
mkdir -p bin
go build -trimpath -o "$podfs" ./cmd/podfs
"$podfs" version

# A live demo mount is unmounted; a dead one (its podfs was killed) is
# cleared by the mount below.
if mountpoint -q "$mp" 2>/dev/null; then
	step "unmounting the previous demo mount at $mp"
	"$podfs" umount "$mp"
fi

step "formatting volume 'demo': metadata $meta, data file://$dir/data"
mkdir -p "$dir"
"$podfs" format "$meta" demo

step "mounting it on $mp (in the background)"
"$podfs" mount "$meta" "$mp" -d --log /var/log/podfs/demo.log

step "using it"
set -x
echo "hello from podfs, $(date -u)" >"$mp/hello.txt"
cat "$mp/hello.txt"
mkdir -p "$mp/dir/sub"
dd if=/dev/urandom of="$mp/dir/random.bin" bs=1M count=64 status=none
sha256sum "$mp/dir/random.bin"
cp "$mp/dir/random.bin" "$mp/dir/sub/copy.bin"
cmp "$mp/dir/random.bin" "$mp/dir/sub/copy.bin"
ln -sf ../hello.txt "$mp/dir/link"
ls -lR "$mp"
df -h "$mp"
set +x

step "volume status"
"$podfs" status "$meta"

cat <<EOF

podfs serves the volume 'demo' at $mp (log: /var/log/podfs/demo.log).
  unmount:            $podfs umount $mp
  mount again:        $podfs mount $meta $mp -d
  status:             $podfs status $meta
  check (unmounted):  $podfs fsck $meta
  benchmark it:       $podfs bench $mp
EOF
