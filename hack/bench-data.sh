#!/usr/bin/env bash
# Benchmarks of podfs's object stores and data layer, on a local directory
# (file://, with fsync) and on a one-node Ceph (rados://, memstore OSD) that
# the benchmarks start and stop themselves. Prints the raw `go test -bench`
# output, then tables:
#   - put/get of 4 KiB and 4 MiB objects per backend;
#   - 1 GiB sequential write and read through the data layer (1 MiB calls)
#     next to the raw backend in the same run: 4 MiB objects from one stream
#     and from 20 (write) / 16 (read) parallel streams, with the ratios
#     data/raw, the data layer's peak heap and peak write buffer (bound 128 MiB).
# Needs root (Ceph). Environment: BENCHTIME (put/get, default 2s), COUNT
# (passes of the 1 GiB benchmark, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/deps.sh

out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test ./pkg/storage -run '^$' -bench 'PutGet' -benchtime "${BENCHTIME:-2s}" -timeout 30m 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' | tee -a "$out"
go test ./pkg/data -run '^$' -bench 'Sequential' -benchtime 1x -count "${COUNT:-1}" -timeout 60m 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' | tee -a "$out"
if grep -q '^FAIL' "$out"; then
	echo "hack/bench-data.sh: a benchmark failed (see above)" >&2
	exit 1
fi

echo
awk '
function mbs(line,   i, f) { n = split(line, f, " "); for (i = 2; i <= n; i++) if (f[i] == "MB/s") return f[i-1]; return "" }
function metric(line, name,   i, f) { n = split(line, f, " "); for (i = 2; i <= n; i++) if (f[i] == name) return f[i-1]; return "" }
/^BenchmarkPutGet\// {
	split($1, p, "/"); sub(/-[0-9]+$/, "", p[4])
	pg[p[3] " " p[4] " " p[2]] = mbs($0); ops[p[3] " " p[4] " " p[2]] = 1e9 / $3
	backends[p[3]] = 1; sizes[p[4]] = 1
}
/^BenchmarkSequential\// {
	split($1, p, "/"); sub(/-[0-9]+$/, "", p[3])
	k = p[2] " " p[3]; sum[k] += mbs($0); cnt[k]++
	if (metric($0, "peak-heap-MiB") != "") heap[k] = metric($0, "peak-heap-MiB")
	if (metric($0, "peak-buffer-MiB") != "") buf[k] = metric($0, "peak-buffer-MiB")
	seqb[p[2]] = 1
}
function avg(k) { return cnt[k] ? sum[k] / cnt[k] : 0 }
function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
END {
	printf "Object store put/get (one stream)\n"
	printf "%-8s %-6s %12s %10s %12s %10s\n", "backend", "size", "put MB/s", "put op/s", "get MB/s", "get op/s"
	for (b in backends) for (s in sizes)
		printf "%-8s %-6s %12.1f %10.0f %12.1f %10.0f\n", b, s, pg[b " " s " put"], ops[b " " s " put"], pg[b " " s " get"], ops[b " " s " get"]
	printf "\n1 GiB sequential, data layer vs raw backend (MB/s)\n"
	printf "%-8s %-6s %10s %10s %10s %12s %12s %14s %16s\n", "backend", "op", "raw-1", "raw-par", "data", "data/raw-1", "data/raw-par", "peak heap MiB", "peak buffer MiB"
	for (b in seqb) {
		w1 = avg(b " raw-write-1"); wp = avg(b " raw-write-20"); wd = avg(b " data-write")
		r1 = avg(b " raw-read-1"); rp = avg(b " raw-read-16"); rd = avg(b " data-read")
		printf "%-8s %-6s %10.1f %10.1f %10.1f %12s %12s %14s %16s\n", b, "write", w1, wp, wd, ratio(wd, w1), ratio(wd, wp), heap[b " data-write"], buf[b " data-write"]
		printf "%-8s %-6s %10.1f %10.1f %10.1f %12s %12s %14s %16s\n", b, "read", r1, rp, rd, ratio(rd, r1), ratio(rd, rp), heap[b " data-read"], "-"
	}
}' "$out"
