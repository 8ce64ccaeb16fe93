#!/usr/bin/env bash
# bench/instructions.sh — user-space instructions per I/O of a ballastd build (callgrind).
#
# Timings on this shared VM move by ±20 % from run to run (BENCHMARKS.md, "Noise"); the
# number of instructions the daemon executes per I/O does not, so small changes to the data
# path are compared with this. The daemon (one reactor, core 0) runs under
# `valgrind --tool=callgrind`; `ballast-perf` (core 1) drives its null namespace with 4 KiB
# random reads for SECONDS; the daemon's total instruction count (start-up included, < 0.1 %)
# is divided by the reads the bdev counted. Kernel time is not counted: see the perf profiles
# in BENCHMARKS.md for that. Under callgrind the daemon runs ~50× slower, so batches are
# fuller than in a real run (per-batch costs look smaller).
#
# Usage: bash bench/instructions.sh [BALLASTD] [QD] [SECONDS]
#   (defaults: target/release/ballastd, 32, 6). Prints "instructions per I/O: N (reads R)".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ballastd -p ballast-rpc -p ballast-bench --bins
BIN=target/release
DAEMON=${1:-$BIN/ballastd}
QD=${2:-32}
SECS=${3:-6}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
OUT=${OUT:-/tmp/ballast-instructions}
mkdir -p "$OUT"
. bench/lib.sh
port=$(free_port)
sock=$OUT/ballastd.sock
rm -f "$sock" "$OUT/callgrind.out"
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$DAEMON" -m 0x1 -r "$sock" -l 127.0.0.1:"$port" --default-size-mib 16 >"$OUT/ballastd.log" 2>&1 &
vpid=$!
trap 'kill $vpid 2>/dev/null; wait $vpid 2>/dev/null || true' EXIT
for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
wait_listening "$port" "$OUT/ballastd.log"
add_null_subsystem "$sock" "$port"
$BIN/ballast-perf -c 0x2 -t "$SECS" --warmup 0 --quiet -w randread -o 4096 -q "$QD" \
    -r "$(null_trid "$port")" >/dev/null
reads=$($BIN/ballast-rpc -s "$sock" bdev_get_iostat -b Null0 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["bdevs"][0]["num_read_ops"])')
kill -INT $vpid
wait $vpid || true
total=$(callgrind_annotate "$OUT/callgrind.out" 2>/dev/null |
    awk '/PROGRAM TOTALS/ && !n {gsub(",","",$1); print $1; n=1}')
echo "instructions per I/O: $((total / reads)) (reads $reads; profile: callgrind_annotate $OUT/callgrind.out)"
