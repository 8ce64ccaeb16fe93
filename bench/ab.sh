#!/usr/bin/env bash
# bench/ab.sh — A/B two ballastd binaries over NVMe/TCP, interleaved, in one sitting.
#
# Both daemons run at once (one reactor each on core 0; the one not being measured is idle
# and asleep) with a 1 GiB malloc namespace (written first) or, with NULL=1, a null
# namespace; ballast-perf (core 1) alternates between them REPS times. Prints each pair and
# the median of the per-pair ratios new/old (IOPS).
#
# Usage: [NULL=1] bash bench/ab.sh OLD_BALLASTD NEW_BALLASTD REPS SECONDS ballast-perf-args...
#   e.g. bash bench/ab.sh /tmp/old/ballastd target/release/ballastd 8 2 -w randread -o 4096 -q 32
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 REPS=$3 SECS=$4
shift 4
cargo build --release -q -p ballast-rpc -p ballast-bench --bins
BIN=target/release
OUT=${OUT:-/tmp/ballast-ab}
mkdir -p "$OUT"
. bench/lib.sh

start() { # start NAME BINARY -> sets port_NAME; daemons stop when the script exits
    local name=$1 bin=$2 port
    port=$(free_port)
    "$bin" -m 0x1 -r "$OUT/$name.sock" -l 127.0.0.1:"$port" --default-size-mib 1024 \
        >"$OUT/$name.log" 2>&1 &
    pids+=("$!")
    wait_listening "$port" "$OUT/$name.log"
    eval "port_$name=$port"
}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
start old "$OLD"
start new "$NEW"

nqn=nqn.2026-11.io.ballast:default
if [ -n "${NULL:-}" ]; then
    nqn=$NULL_NQN
    for name in old new; do
        add_null_subsystem "$OUT/$name.sock" "$(eval echo "\$port_$name")"
    done
fi
target() { echo "trtype:tcp traddr:127.0.0.1 trsvcid:$(eval echo "\$port_$1") subnqn:$nqn"; }
if [ -z "${NULL:-}" ]; then
    for name in old new; do
        $BIN/ballast-perf -c 0x2 -w write -o 131072 -q 8 -t 2 --warmup 0 --quiet \
            -r "$(target "$name")" >/dev/null
    done
fi
run() { $BIN/ballast-perf -c 0x2 -t "$SECS" --json --quiet "$@" | python3 -c \
    'import json,sys; t=json.load(sys.stdin)["total"]; print(int(t["iops"]), t["lat_us"]["p50"])'; }
: >"$OUT/pairs.txt"
for _ in $(seq "$REPS"); do
    o=$(run "$@" -r "$(target old)")
    n=$(run "$@" -r "$(target new)")
    echo "old $o  new $n" | awk '{printf "%s  ratio %.3f\n", $0, $5/$2}' | tee -a "$OUT/pairs.txt"
done
python3 -c "
import statistics as s
r = [float(l.split()[-1]) for l in open('$OUT/pairs.txt')]
print('median ratio new/old %.3f (%.3f-%.3f)' % (s.median(r), min(r), max(r)))"
