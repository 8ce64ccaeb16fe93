#!/usr/bin/env bash
# bench/profile.sh — where the server core's time goes, per I/O: the target against the limit.
#
# Runs, REPS times in turn, (a) ballastd (one reactor, core 0, a null namespace: the target's
# own cost, no data touched) driven by ballast-perf (core 1) and (b) the loopback limit
# (server core 0, client core 1), the same traffic shape each time. During each run it counts
# the server core's socket syscalls (`perf stat` on core 0) and samples it (`perf record -e
# cpu-clock -F 10000 -C 0`), then turns both into per-I/O figures with the run's IOPS:
# syscalls per I/O, ns per I/O in the kernel and in user space, and the largest symbols.
# This VM changes speed between runs (BENCHMARKS.md, "Noise"): compare a target run with the
# limit run beside it, not with one from another round.
#
# Usage: bash bench/profile.sh [REPS] [SECONDS] [ballast-perf workload args...]
#   defaults: 2 4 -w randread -o 4096 -q 32 (the limit gets the matching -w/-o/-q).
# Needs perf (Debian: linux-perf). Raw data in ${OUT:-/tmp/ballast-profile}.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-2}
SECS=${2:-4}
shift $(($# < 2 ? $# : 2))
[ $# -gt 0 ] || set -- -w randread -o 4096 -q 32
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 2; }
(( SECS >= 3 )) || { echo "SECONDS must be at least 3 (1 s warm-up, 1 s stat, 1 s record)" >&2; exit 2; }
# The limit's arguments: the same direction, size and depth.
w=randread o=4096 q=32
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    -w) w=${args[i + 1]} ;;
    -o) o=${args[i + 1]} ;;
    -q) q=${args[i + 1]} ;;
    esac
done
case $w in
*read) ldir=read ;;
*write) ldir=write ;;
*) echo "profile.sh compares reads or writes only (-w $w)" >&2; exit 2 ;;
esac
OUT=${OUT:-/tmp/ballast-profile}
mkdir -p "$OUT"
cargo build --release -q -p ballastd -p ballast-rpc -p ballast-bench --bins
BIN=target/release
. bench/lib.sh

port=$(free_port)
start_ballastd "$port" "$OUT/ballastd.log" -m 0x1 -r "$OUT/ballastd.sock" \
    -l 127.0.0.1:"$port" --default-size-mib 16
add_null_subsystem "$OUT/ballastd.sock" "$port"

EV=syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto
EV=$EV,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_write
# observe NAME: samples core 0 during the run started just before (1 s in, then 1 s of stat,
# then 1 s of samples).
observe() {
    sleep 1
    perf stat -e "$EV" -C 0 -x, -o "$OUT/$1.stat" -- sleep 1 2>/dev/null
    perf record -q -e cpu-clock -F 10000 -C 0 -o "$OUT/$1.data" -- sleep 1 2>/dev/null
    perf report -q -i "$OUT/$1.data" --sort dso,sym 2>/dev/null >"$OUT/$1.report"
}
runs=()
for r in $(seq "$REPS"); do
    $BIN/ballast-perf -c 0x2 -t "$SECS" --json --quiet "$@" \
        -r "$(null_trid "$port")" \
        >"$OUT/target$r.json" &
    observe "target$r"
    wait $!
    $BIN/ballast-loopback-limit -q "$q" -o "$o" -w "$ldir" -t "$SECS" --json >"$OUT/limit$r.json" &
    observe "limit$r"
    wait $!
    runs+=("target$r" "limit$r")
done

python3 - "$OUT" "${runs[@]}" <<'EOF'
import json, re, sys
out, runs = sys.argv[1], sys.argv[2:]
for name in runs:
    j = json.load(open(f"{out}/{name}.json"))
    iops = j["total"]["iops"] if "total" in j else j["iops"]
    calls = {}
    for l in open(f"{out}/{name}.stat"):
        p = l.strip().split(",")
        if len(p) > 2 and p[0].isdigit():
            calls[p[2].split("sys_enter_")[-1]] = int(p[0]) / iops  # 1 s of stat
    rows = []
    for l in open(f"{out}/{name}.report"):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", l)
        if m:
            rows.append((float(m[1]), m[2], m[3], m[4].strip()))
    # perf report's percentages are of the samples taken: 1 s at -F 10000 on one core.
    total = sum(r[0] for r in rows) or 100.0
    per_io = 1e9 / iops  # ns of the core per I/O if it was busy the whole time
    idle_sym = lambda r: r[2] == "k" and re.search(r"halt|idle|poll_idle", r[3])
    kern = sum(r[0] for r in rows if r[2] == "k" and not idle_sym(r)) / total * per_io
    user = sum(r[0] for r in rows if r[2] != "k") / total * per_io
    idle = sum(r[0] for r in rows if idle_sym(r)) / total * per_io
    print(f"\n## {name}: {iops:.0f} IOPS, {per_io:.0f} ns of core 0 per I/O "
          f"(kernel {kern:.0f}, user {user:.0f}, idle {idle:.0f})")
    print("syscalls per I/O: " + ", ".join(f"{k} {v:.3f}" for k, v in calls.items() if v > 0))
    for pct, dso, kind, sym in rows[:12]:
        print(f"  {pct / total * per_io:7.0f} ns  {pct:5.1f} %  [{kind}] {sym[:70]}")
EOF
