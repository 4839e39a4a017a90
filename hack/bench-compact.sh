#!/usr/bin/env bash
# Measures what fragmented files cost in object storage, and what
# `podfs compact` gives back. Prints, for a podfs volume (bolt metadata, file
# storage): bytes of objects in the store against the bytes of the files
# (their lengths), after an fsx-style load (hack/fsx: random pwrite,
# truncate and mmap writes on 3 files of up to 10 MiB, FSX_OPS operations,
# FSX_RUNS runs), after `podfs compact`, and for 64 MiB written
# sequentially on a fresh volume. Target: at most 1.3x after compact, 1.0x
# for the sequential file.
#
# Environment: BENCH_DIR (work dir, default /var/tmp/podfs-bench-compact),
# FSX_OPS (20000), FSX_RUNS (2). Needs root (mounts).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "hack/bench-compact.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root: it mounts file systems"
export PATH=$PATH:/usr/local/go/bin
W=${BENCH_DIR:-/var/tmp/podfs-bench-compact}
OPS=${FSX_OPS:-20000}
RUNS=${FSX_RUNS:-2}

mounts=()
cleanup() {
	set +e
	for mp in "${mounts[@]}"; do
		mountpoint -q "$mp" && { "$W/podfs" umount "$mp" >/dev/null 2>&1 || umount -l "$mp"; }
	done
	rm -rf "$W"/vol-*
}
trap cleanup EXIT
for mp in "$W"/vol-*/mnt; do umount -l "$mp" 2>/dev/null || true; done
rm -rf "$W"
mkdir -p "$W"
go build -o "$W/podfs" ./cmd/podfs
go build -o "$W/fsx" ./hack/fsx

volume() { # volume NAME: formats and mounts a volume, sets mp and data
	local v="$W/vol-$1"
	mkdir -p "$v/mnt"
	"$W/podfs" format "bolt://$v/meta.db" "$1" --storage "file://$v/data" >/dev/null
	mounts+=("$v/mnt")
	"$W/podfs" mount "bolt://$v/meta.db" "$v/mnt" -d --log "$v/log" >/dev/null
	mp=$v/mnt data=$v/data
}

# bytes DIR: the total length of the regular files under DIR.
bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

report() { # report WHAT MP DATA
	sync
	local files objects
	files=$(bytes "$2")
	objects=$(bytes "$3/chunks" 2>/dev/null || echo 0)
	printf "%-36s files %12d B  objects %12d B  ratio %s\n" "$1" "$files" "$objects" \
		"$(awk -v o="$objects" -v f="$files" 'BEGIN {if (f > 0) printf "%.2fx", o / f; else print "-"}')"
}

volume fsx
for run in $(seq 1 "$RUNS"); do
	echo "== fsx run $run: $OPS operations" >&2
	"$W/fsx" -ops "$OPS" -seed "$run" "$mp" >&2
done
report "after fsx (background compaction)" "$mp" "$data"
"$W/podfs" compact "$mp"
report "after podfs compact" "$mp" "$data"

volume seq
dd if=/dev/urandom of="$mp/seq" bs=1M count=64 conv=fsync status=none
report "64 MiB sequential" "$mp" "$data"
