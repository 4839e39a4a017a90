#!/usr/bin/env bash
# Benchmarks podfs against the FUSE ceiling of this machine and prints one
# table with the ratios. Targets, each on the same disk:
#   loopback     a plain go-fuse loopback mount of a local directory (hack/loopback)
#   loopback-pt  the same with FUSE passthrough (the kernel serves file reads
#                and writes itself: the local disk's figures, for reference)
#   podfs-file   podfs, bolt metadata + file storage (the embedded default)
#   podfs-rados  podfs, bolt metadata + RADOS on a local one-node Ceph (hack/ceph.sh)
# Tests: fio sequential write and read of BENCH_SIZE with bs=1M, fio 4k random
# reads (O_DIRECT and buffered), then `podfs bench`: 128 KiB small-file writes,
# create / cold stat / ls -l / unlink of BENCH_FILES files in one directory.
#
# Environment: BENCH_DIR (work dir, default /var/tmp/podfs-bench), BENCH_SIZE
# (1G), BENCH_FILES (10000), BENCH_SMALL (1000), BENCH_RUNTIME (seconds per
# random-read run, 15), BENCH_TARGETS ("loopback podfs-file podfs-rados"),
# BENCH_FIO (1; 0 skips the fio runs, for the metadata figures alone).
# Needs root (mounts, dropping caches).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

die() { echo "hack/bench.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root: it mounts file systems and drops the kernel's caches"
export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found: install Go 1.26 into /usr/local/go"

W=${BENCH_DIR:-/var/tmp/podfs-bench}
SIZE=${BENCH_SIZE:-1G}
FILES=${BENCH_FILES:-10000}
SMALL=${BENCH_SMALL:-1000}
RUNTIME=${BENCH_RUNTIME:-15}
TARGETS=${BENCH_TARGETS:-loopback podfs-file podfs-rados}

hack/deps.sh
command -v fio >/dev/null || die "fio not found (hack/deps.sh installs it)"

mounts=()
pids=()
ceph_dir=
cleanup() {
	set +e
	for mp in "${mounts[@]}"; do
		if mountpoint -q "$mp"; then
			"$W/podfs" umount "$mp" >/dev/null 2>&1 || umount -l "$mp"
		fi
	done
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	done
	[[ -n $ceph_dir && -x hack/ceph.sh ]] && hack/ceph.sh down "$ceph_dir"
	# Keep the logs, drop the data (GiBs).
	rm -rf "$W"/loopback*-src "$W/ceph" "$W"/podfs-*/ 2>/dev/null
}
trap cleanup EXIT

# Mounts a previous, interrupted run left behind.
for mp in "$W"/mnt-*; do
	umount -l "$mp" 2>/dev/null || true
done
rm -rf "$W"
mkdir -p "$W"
echo "== building podfs and the loopback baseline" >&2
go build -o "$W/podfs" ./cmd/podfs
go build -o "$W/loopback" ./hack/loopback

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

declare -A R
# fio_run TARGET MP NAME FIELD ARGS...: runs one fio job, stores field FIELD
# of its terse output (7 read KiB/s, 8 read IOPS, 48 write KiB/s).
fio_run() {
	local target=$1 mp=$2 name=$3 field=$4
	shift 4
	local out
	# --fallocate=none: measure the writes, not how each target preallocates
	# (glibc's fallback writes a byte per 4 KiB block where fallocate is missing).
	out=$(fio --name="$name" --directory="$mp" --filename=fio.dat --size="$SIZE" \
		--ioengine=psync --fallocate=none --minimal "$@") || die "fio $name on $target failed"
	R[$target,$name]=$(echo "$out" | awk -F';' -v f="$field" 'NR==1 {print $f}')
}

bench_target() {
	local target=$1 mp=$2
	[[ ${BENCH_FIO:-1} == 0 ]] || fio_target "$target" "$mp"
	echo "== $target: small files and metadata (podfs bench)" >&2
	metadata_target "$target" "$mp"
}

fio_target() {
	local target=$1 mp=$2
	echo "== $target: fio sequential write, $SIZE with bs=1M" >&2
	fio_run "$target" "$mp" seqwrite 48 --rw=write --bs=1M --end_fsync=1
	R[$target,seqwrite]=$((R[$target,seqwrite] / 1024))
	drop_caches
	echo "== $target: fio sequential read" >&2
	fio_run "$target" "$mp" seqread 7 --rw=read --bs=1M
	R[$target,seqread]=$((R[$target,seqread] / 1024))
	drop_caches
	echo "== $target: fio 4k random read, O_DIRECT, ${RUNTIME}s" >&2
	fio_run "$target" "$mp" randread-direct 8 --rw=randread --bs=4k --direct=1 --time_based --runtime="$RUNTIME"
	drop_caches
	echo "== $target: fio 4k random read, buffered, ${RUNTIME}s" >&2
	fio_run "$target" "$mp" randread-buffered 8 --rw=randread --bs=4k --time_based --runtime="$RUNTIME"
	rm -f "$mp/fio.dat"
}

metadata_target() {
	local target=$1 mp=$2
	local line name count secs mibs ops
	while IFS=$'\t' read -r name count secs mibs ops; do
		case $name in
		"write small files"*) R[$target,small]=$ops ;;
		"create empty files") R[$target,create]=$ops ;;
		"stat files"*) R[$target,stat]=$ops ;;
		"ls -l"*) R[$target,ls]=$ops ;;
		"remove empty files") R[$target,unlink]=$ops ;;
		esac
	done < <("$W/podfs" bench "$mp" --big-size 0 --small-count "$SMALL" --files "$FILES" --format tsv)
}

podfs_mount() { # podfs_mount TARGET STORAGE-URL: sets mp
	local target=$1 storage=$2
	mp="$W/mnt-$1"
	mkdir -p "$mp" "$W/$target"
	"$W/podfs" format "bolt://$W/$target/meta.db" bench --storage "$storage" >&2
	mounts+=("$mp")
	"$W/podfs" mount "bolt://$W/$target/meta.db" "$mp" -d --log "$W/$target.log" >&2
}

for target in $TARGETS; do
	case $target in
	loopback | loopback-pt)
		mp="$W/mnt-$target"
		mkdir -p "$W/$target-src" "$mp"
		mounts+=("$mp")
		pt=
		[[ $target == loopback-pt ]] && pt=-passthrough
		"$W/loopback" $pt "$W/$target-src" "$mp" >"$W/$target.log" 2>&1 &
		pids+=($!)
		for _ in $(seq 1 200); do mountpoint -q "$mp" && break; sleep 0.05; done
		mountpoint -q "$mp" || die "$target did not mount; see $W/$target.log"
		;;
	podfs-file)
		podfs_mount podfs-file "file://$W/podfs-file/data"
		;;
	podfs-rados)
		[[ -x hack/ceph.sh ]] || die "hack/ceph.sh missing: it comes with the data layer"
		ceph_dir="$W/ceph"
		port=$((20000 + RANDOM % 20000))
		echo "== starting a one-node Ceph cluster (monitor port $port)" >&2
		conf=$(hack/ceph.sh up "$ceph_dir" "$port" podfs | tail -n1)
		podfs_mount podfs-rados "rados://podfs?conf=$conf"
		;;
	*) die "unknown target $target (known: loopback loopback-pt podfs-file podfs-rados)" ;;
	esac
	bench_target "$target" "$mp"
done

# The table: one row per measurement, one column per target, and each podfs
# target's ratio to the loopback ceiling.
rows=(
	"seqwrite|seq write 1M (MiB/s)|0.95x loopback"
	"seqread|seq read 1M (MiB/s)|0.95x loopback"
	"randread-direct|4k randread direct (IOPS)|"
	"randread-buffered|4k randread buffered (IOPS)|"
	"create|create (files/s)|4000"
	"stat|cold stat (files/s)|17000"
	"ls|ls -l, cold, as GNU ls asks (entries/s)|2x loopback"
	"unlink|unlink (files/s)|"
	"small|128 KiB files (files/s)|1000"
)
echo
{
	printf "test"
	for t in $TARGETS; do
		printf "\t%s" "$t"
		[[ $t != loopback && $TARGETS == *loopback* ]] && printf "\t%s/loop" "${t#podfs-}"
	done
	printf "\ttarget\n"
	for row in "${rows[@]}"; do
		IFS='|' read -r key label goal <<<"$row"
		printf "%s" "$label"
		for t in $TARGETS; do
			v=${R[$t,$key]:-}
			printf "\t%s" "${v:--}"
			if [[ $t != loopback && $TARGETS == *loopback* ]]; then
				l=${R[loopback,$key]:-}
				if [[ -n $v && -n $l && $l != 0 ]]; then
					printf "\t%s" "$(awk -v a="$v" -v b="$l" 'BEGIN {printf "%.2f", a/b}')"
				else
					printf "\t-"
				fi
			fi
		done
		printf "\t%s\n" "${goal:--}"
	done
} | column -t -s $'\t'
