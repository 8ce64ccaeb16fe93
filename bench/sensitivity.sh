#!/usr/bin/env bash
# bench/sensitivity.sh — how much of the target's own per-I/O work shows up as IOPS.
#
# Builds a copy of this tree's HEAD with bench/patches/spin-per-io.patch applied (the target
# spins BALLAST_SPIN_NS nanoseconds in every I/O completion; 0 = the patched code path idle),
# starts one such ballastd per spin value (one reactor each on core 0, a null namespace,
# all idle but the one measured), and drives them in turn with ballast-perf (core 1), REPS
# interleaved rounds of SECONDS each: 4K random reads at QD32 by default.
#
# If the target's core is the bottleneck, every nanosecond spun per I/O costs a nanosecond
# per I/O of throughput (1e9 / IOPS grows by the spin); if the target waits on the rest of
# the loop (the host, the kernel's loopback path on the other core), it costs less. This VM
# runs in speed modes that move IOPS by up to 2x between runs (BENCHMARKS.md, "Noise"), so
# the runs are split into two clusters by IOPS (2-means on log IOPS over all runs) and each
# spin value is compared with spin 0 inside a cluster.
#
# Usage: bash bench/sensitivity.sh [REPS] [SECONDS] [SPINS] [ballast-perf args...]
#   defaults: 30 2 "0 100 250" -w randread -o 4096 -q 32   (SPINS must start with 0)
# Raw rounds go to ${OUT:-/tmp/ballast-sensitivity}/rounds.txt; a summary is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-30}
SECS=${2:-2}
SPINS=${3:-"0 100 250"}
shift $(($# < 3 ? $# : 3))
[ $# -gt 0 ] || set -- -w randread -o 4096 -q 32
[ "${SPINS%% *}" = 0 ] || { echo "SPINS must start with 0" >&2; exit 2; }
OUT=${OUT:-/tmp/ballast-sensitivity}
mkdir -p "$OUT"
cargo build --release -q -p ballast-rpc -p ballast-bench --bins
BIN=target/release

# The patched daemon, built from HEAD in a worktree of its own (its own target dir, so
# target/release/ballastd stays the unpatched build).
src=$OUT/src
git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
git worktree prune
git worktree add --detach -q "$src" HEAD
git -C "$src" apply "$PWD/bench/patches/spin-per-io.patch"
CARGO_TARGET_DIR=$OUT/target cargo build --release -q --manifest-path "$src/Cargo.toml" -p ballastd
SPUN=$OUT/target/release/ballastd

. bench/lib.sh
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    git worktree remove --force "$src" 2>/dev/null || true
}
trap cleanup EXIT
declare -A port
for s in $SPINS; do
    port[$s]=$(free_port)
    BALLAST_SPIN_NS=$s "$SPUN" -m 0x1 -r "$OUT/spin$s.sock" -l 127.0.0.1:"${port[$s]}" \
        --default-size-mib 16 >"$OUT/spin$s.log" 2>&1 &
    pids+=("$!")
    wait_listening "${port[$s]}" "$OUT/spin$s.log"
    add_null_subsystem "$OUT/spin$s.sock" "${port[$s]}"
done

: >"$OUT/rounds.txt"
for r in $(seq "$REPS"); do
    line="round $r"
    for s in $SPINS; do
        iops=$($BIN/ballast-perf -c 0x2 -t "$SECS" --json --quiet "$@" \
            -r "$(null_trid "${port[$s]}")" |
            python3 -c 'import json,sys; print(int(json.load(sys.stdin)["total"]["iops"]))')
        line="$line $s:$iops"
    done
    echo "$line" | tee -a "$OUT/rounds.txt"
done

python3 - "$OUT/rounds.txt" <<'EOF'
import math, statistics as st, sys
rounds = [dict(tuple(map(int, f.split(":"))) for f in l.split()[2:]) for l in open(sys.argv[1])]
spins = list(rounds[0])
runs = [(s, r[s]) for r in rounds for s in spins]
# 2-means on log IOPS: the VM's two speed modes.
xs = sorted(math.log(i) for _, i in runs)
lo, hi = xs[0], xs[-1]
for _ in range(50):
    cut = (lo + hi) / 2
    a = [x for x in xs if x < cut] or [lo]
    b = [x for x in xs if x >= cut] or [hi]
    lo, hi = st.mean(a), st.mean(b)
cut = math.exp((lo + hi) / 2)
print(f"\n{len(rounds)} rounds; clusters split at {cut:.0f} IOPS")
print("| cluster | spin ns per I/O | runs | IOPS (median) | ns per I/O (1e9/median) | added ns per I/O vs spin 0 | added / spin |")
print("|---|---|---|---|---|---|---|")
for name, keep in (("fast", lambda i: i >= cut), ("slow", lambda i: i < cut)):
    base = None
    for s in spins:
        v = [i for t, i in runs if t == s and keep(i)]
        if not v:
            print(f"| {name} | {s} | 0 | | | | |")
            continue
        m = st.median(v)
        ns = 1e9 / m
        if s == 0:
            base = ns
            print(f"| {name} | 0 | {len(v)} | {m:.0f} | {ns:.0f} | | |")
        elif base is None:
            print(f"| {name} | {s} | {len(v)} | {m:.0f} | {ns:.0f} | (no spin-0 run) | |")
        else:
            print(f"| {name} | {s} | {len(v)} | {m:.0f} | {ns:.0f} | {ns - base:+.0f} | {(ns - base) / s:.2f} |")
allr = {s: st.median(r[s] / r[0] for r in rounds) for s in spins[1:]}
print("\nMedian per-round ratio to spin 0, all rounds: " +
      ", ".join(f"spin {s}: {v:.3f}" for s, v in allr.items()))
EOF
