#!/usr/bin/env bash
# Benchmarks the metadata engine (pkg/meta) on every engine: bolt (syncing
# to disk), the in-process TiKV mock cluster and a real etcd server, with 8
# goroutines (create1: one goroutine, the latency a single writer sees),
# and prints ops/s per operation as a table; cpu-ns/op is the process's CPU
# time per create, steadier than ops/s while other work shares the machine;
# for the tikv mock's creates, rpc/op is the requests a real cluster would
# serve per create and keys/op the keys they name (the mock's work, which
# load on the machine does not change).
#   hack/bench-meta.sh [benchtime]     (default 2s; e.g. 5000x or 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
benchtime=${1:-2s}
command -v etcd >/dev/null || hack/deps.sh
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
go test ./pkg/meta/ -run '^$' -bench '^BenchmarkMeta$' -benchmem -benchtime "$benchtime" -timeout 30m 2>&1 \
  | grep -v '^\[' | tee "$out" >&2
go test ./pkg/meta/kv/ -run '^$' -bench '^Benchmark(BoltUpdate|BoltCommit1|Fdatasync|TiKVUpdate)$' -benchtime "$benchtime" 2>&1 | grep -v '^\[' | tee -a "$out" >&2
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (other work on the machine slows every figure)"
awk '
/^BenchmarkMeta\// {
  split($1, p, "/"); eng = p[2]; op = p[3]; sub(/-[0-9]+$/, "", op)
  for (i = 2; i <= NF; i++) {
    if ($(i+1) == "ops/s") ops = $i
    if ($(i+1) == "ns/op") ns = $i
    if ($(i+1) == "B/op") bop = $i
    if ($(i+1) == "allocs/op") al = $i
    if ($(i+1) == "cpu-ns/op") cpu = $i
    if ($(i+1) == "rpc/op") rpc = $i
    if ($(i+1) == "keys/op") keys = $i
  }
  printf "%-12s %-11s %12.0f %12.0f %12s %10d %10d %8s %8s\n", eng, op, ops, ns, (cpu == "" ? "-" : sprintf("%.0f", cpu)), bop, al, (rpc == "" ? "-" : sprintf("%.2f", rpc)), (keys == "" ? "-" : sprintf("%.2f", keys))
  cpu = ""; rpc = ""; keys = ""
  next
}
/^BenchmarkBoltUpdate/ {
  for (i = 2; i <= NF; i++) { if ($(i+1) == "txn/s") t = $i; if ($(i+1) == "txn/commit") g = $i }
  printf "\nbolt kv: %.0f small txn/s, %.1f txn per commit (group commit)\n", t, g
}
/^BenchmarkBoltCommit1/ { printf "bolt kv: %.0f us per commit of one caller (its write-ahead log write)\n", $3 / 1000 }
/^BenchmarkFdatasync/ { printf "disk: %.0f us per 4 KiB write + fdatasync (a bolt commit group costs one, in its write-ahead log)\n", $3 / 1000 }
/^BenchmarkTiKVUpdate/ { for (i = 2; i <= NF; i++) if ($(i+1) == "txn/s") printf "tikv mock: %.0f two-key txn/s (the floor under every tikv operation)\n", $i }
BEGIN { printf "%-12s %-11s %12s %12s %12s %10s %10s %8s %8s\n", "engine", "op", "ops/s", "ns/op", "cpu-ns/op", "B/op", "allocs/op", "rpc/op", "keys/op" }
' "$out"
