#!/usr/bin/env bash
# bench/run.sh — the NVMe/TCP target benchmark table for BENCHMARKS.md.
#
# ballastd (1 reactor, core 0, 1 GiB malloc namespace) driven by ballast-perf (1 core, core 1)
# vs the loopback limit (bench/src/bin/loopback_limit.rs: same message sizes, no storage
# logic, same cores), for 4K randread/randwrite at QD1 and QD32 and 128K sequential read/
# write, each against the malloc namespace and against a null one (same daemon: the target's
# own cost). Target and limit runs are interleaved (malloc, limit, null) for REPS
# repetitions; the table shows medians of the per-repetition ratios and the min–max spread.
# Also reports the daemon's idle CPU (10 s) and RSS.
#
# Usage: bash bench/run.sh [REPS] [SECONDS]      (defaults 3 and 5)
#   ONLY=SUBSTRING runs only the cases whose name contains it (e.g. ONLY=QD32).
# The limit itself flips between a fast and a slow mode on this VM (BENCHMARKS.md, "Noise"):
# many short repetitions (e.g. 9 × 2 s) pair target and limit runs in the same mode more often.
# Prints a markdown table on stdout; raw JSON lines go to ${OUT:-/tmp/ballast-bench}/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-5}
OUT=${OUT:-/tmp/ballast-bench}
mkdir -p "$OUT"
cargo build --release -q -p ballastd -p ballast-rpc -p ballast-bench --bins
BIN=target/release

. bench/lib.sh
port=$(free_port)
sock=$OUT/ballast-bench.sock
start_ballastd "$port" "$OUT/ballastd.log" -m 0x1 -r "$sock" -l 127.0.0.1:"$port" --default-size-mib 1024
rss0_kib=$(awk '/VmRSS/{print $2}' "/proc/$dpid/status")
target="trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:nqn.2026-11.io.ballast:default"
# A null namespace in its own subsystem on the same daemon and port: the same target code with
# no data touched on the target, so its rows show what the target itself costs; the malloc
# rows add what reading and writing random RAM costs (see BENCHMARKS.md).
add_null_subsystem "$sock" "$port"
null_target=$(null_trid "$port")
# Write the whole namespace first: reads of never-written RAM would copy the kernel's zero
# page (always cached) instead of random memory.
$BIN/ballast-perf -c 0x2 -w write -o 131072 -q 8 -t 3 --warmup 0 --json --quiet -r "$target" >/dev/null

# name | perf args | loopback args
cases=(
    "4K randread QD1|-w randread -o 4096 -q 1|-w read -o 4096 -q 1"
    "4K randread QD32|-w randread -o 4096 -q 32|-w read -o 4096 -q 32"
    "4K randwrite QD1|-w randwrite -o 4096 -q 1|-w write -o 4096 -q 1"
    "4K randwrite QD32|-w randwrite -o 4096 -q 32|-w write -o 4096 -q 32"
    "128K read QD8|-w read -o 131072 -q 8|-w read -o 131072 -q 8"
    "128K write QD8|-w write -o 131072 -q 8|-w write -o 131072 -q 8"
)
if [ -n "${ONLY:-}" ]; then
    keep=()
    for c in "${cases[@]}"; do [[ "${c%%|*}" == *"$ONLY"* ]] && keep+=("$c"); done
    cases=("${keep[@]}")
fi

: >"$OUT/results.jsonl"
for rep in $(seq "$REPS"); do
    for c in "${cases[@]}"; do
        IFS='|' read -r name pargs largs <<<"$c"
        # shellcheck disable=SC2086
        t=$($BIN/ballast-perf -c 0x2 -t "$SECS" --json --quiet $pargs -r "$target")
        # shellcheck disable=SC2086
        l=$($BIN/ballast-loopback-limit --server-core 0 --client-core 1 -t "$SECS" --json $largs)
        # shellcheck disable=SC2086
        n=$($BIN/ballast-perf -c 0x2 -t "$SECS" --json --quiet $pargs -r "$null_target")
        python3 - "$name" "$rep" "$t" "$l" "$n" >>"$OUT/results.jsonl" <<'EOF'
import json, sys
name, rep = sys.argv[1], int(sys.argv[2])
t, l, n = (json.loads(a) for a in sys.argv[3:6])
tt, nt = t["total"], n["total"]
print(json.dumps({"case": name, "rep": rep,
    "t_iops": tt["iops"], "t_p50": tt["lat_us"]["p50"], "t_p99": tt["lat_us"]["p99"],
    "n_iops": nt["iops"], "n_p50": nt["lat_us"]["p50"], "n_p99": nt["lat_us"]["p99"],
    "l_iops": l["iops"], "l_p50": l["lat_us"]["p50"], "l_p99": l["lat_us"]["p99"]}))
EOF
    done
done

# Idle CPU of the daemon over 10 s (no connections), and its RSS.
pid_ticks() { awk '{print $14+$15}' "/proc/$dpid/stat"; }
sleep 1
a=$(pid_ticks); sleep 10; b=$(pid_ticks)
hz=$(getconf CLK_TCK)
idle_pct=$(python3 -c "print(round(($b-$a)/$hz/10*100, 2))")
rss_kib=$(awk '/VmRSS/{print $2}' "/proc/$dpid/status")

python3 - "$OUT/results.jsonl" "$idle_pct" "$rss_kib" "$REPS" "$SECS" "$rss0_kib" <<'EOF'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
idle, rss, reps, secs, rss0 = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
cases = []
for r in rows:
    if r["case"] not in cases:
        cases.append(r["case"])
def med(xs): return st.median(xs)
def spread(xs): return f"{min(xs):.0f}–{max(xs):.0f}"
print("| case | namespace | ballast IOPS (median, spread) | limit IOPS (median, spread) | ratio | ballast p50 / p99 µs | limit p50 / p99 µs | p50 ratio |")
print("|---|---|---|---|---|---|---|---|")
for c in cases:
    rs = [r for r in rows if r["case"] == c]
    li = [r["l_iops"] for r in rs]
    for ns, k in (("malloc 1 GiB", "t"), ("null", "n")):
        ti = [r[k + "_iops"] for r in rs]
        # Each target run is paired with the limit run next to it (same speed mode, mostly).
        ratios = [r[k + "_iops"] / r["l_iops"] for r in rs if r["l_iops"]]
        p50r = [r[k + "_p50"] / r["l_p50"] for r in rs if r["l_p50"]]
        print(f"| {c} | {ns} | {med(ti):.0f} ({spread(ti)}) | {med(li):.0f} ({spread(li)}) | {med(ratios):.2f} "
              f"| {med([r[k + '_p50'] for r in rs]):.1f} / {med([r[k + '_p99'] for r in rs]):.1f} "
              f"| {med([r['l_p50'] for r in rs]):.1f} / {med([r['l_p99'] for r in rs]):.1f} | {med(p50r):.2f} |")
print()
print(f"Daemon idle CPU over 10 s (after the runs, no connections): {idle} % of a core. "
      f"RSS at start {rss0/1024:.1f} MiB (before the namespace is written); after the runs "
      f"{rss/1024:.1f} MiB (includes the touched part of the 1 GiB RAM namespace). "
      f"{reps} interleaved repetitions of {secs} s each.")
EOF
