#!/usr/bin/env bash
# bench/mirror.sh [REPS] [SECONDS] — the mirror stage against one child, in process (no
# network): ballast-perf on one core against a malloc bdev, a 2-way and a 3-way mirror over
# malloc children, interleaved run by run; prints the median IOPS of each and the ratios.
#   4K random write QD32 (every write goes to every child) and 4K random read QD32.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
SECS=${2:-3}
cargo build --release -q -p ballast-bench --bin ballast-perf
P=target/release/ballast-perf
run() { # kind workload -> IOPS
    "$P" -c 0x2 --no-pin --bdev "$1" --bdev-size-mib 256 -w "$2" -q 32 -o 4096 \
        -t "$SECS" --warmup 1 --quiet --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["iops"])'
}
for w in randwrite randread; do
    declare -A r=()
    for ((i = 0; i < REPS; i++)); do
        for k in malloc mirror2 mirror3; do
            r[$k]+="$(run "$k" "$w") "
        done
    done
    python3 - "$w" "${r[malloc]}" "${r[mirror2]}" "${r[mirror3]}" <<'PY'
import statistics, sys
w, *runs = sys.argv[1:]
med = [statistics.median(map(float, r.split())) for r in runs]
print(f"{w:9s} QD32 4K  malloc {med[0]/1e3:7.0f} k  mirror2 {med[1]/1e3:7.0f} k ({med[1]/med[0]:.2f}x)"
      f"  mirror3 {med[2]/1e3:7.0f} k ({med[2]/med[0]:.2f}x)   runs: {' | '.join(runs)}")
PY
    unset r
done
