#!/usr/bin/env bash
# bench/lvol.sh — issue 20's data-path benchmarks of logical volumes over NVMe/TCP: 4K QD32
# IOPS of a thin lvol as a ratio to a plain malloc namespace measured in the same repetition
# (A/B interleaved, the order flipped every repetition; medians and spread of the ratios).
#
# One ballastd reactor (core 0), ballast-perf on core 1, one subsystem:
#   ns 1  Plain    malloc, MIB MiB, 512 B blocks                        } written first by a
#   ns 2  Lvol     thin lvol of MIB MiB in store "lvs" (4 MiB clusters)   } 128K sequential pass
#                  on a malloc base "LvsBase" (MIB + 64 MiB)              } (Lvol: every cluster
#                                                                           allocated, checked)
#   ns 3  BigPlain malloc, FT_PLAIN_GIB GiB, --overcommit, new in each repetition (never written)
#   ns 4  FtLvol   thin lvol of FT_GIB GiB in store "lvsft" (64 KiB clusters) on an overcommitted
#                  malloc base "FtBase" (FT_GIB + 1 GiB), new in each repetition
# Each repetition: randread then randwrite (-o 4096 -q 32 -t SECS, 1 s warm-up) on Plain and
# Lvol: (b) reads of written data and (a) overwrite; then (c) first touch: randwrite
# (-t FT_SECS, no warm-up) on BigPlain and on FtLvol. Every FtLvol write whose 64 KiB cluster
# is new allocates one (a Map record made durable before the data is written); the fraction of
# first-touch writes is the lvol's allocated clusters / the writes perf counted (the ≤ 32
# writes still in flight at the end may allocate too: an upper bound, off by < 32 / writes).
# Each new cluster is a never-touched page of FtBase's RAM, so each first-touch write also
# pays a kernel page fault; so does each BigPlain write (its pages are untouched too). The
# lvol's new clusters are consecutive (one written page per 64 KiB over writes × 64 KiB of
# FtBase); BigPlain's default 8 GiB is about that span for 100-130 k writes, so both touch a
# similar number of page-table pages (a 512 GiB BigPlain would need one per write and be
# slower for it). First touch is compared with BigPlain, and also with Plain's randwrite.
#
# Usage: bash bench/lvol.sh [REPS] [SECS] [FT_SECS]   (defaults 5, 5, 2)
#   env: MIB (default 1024), FT_GIB (default 512), FT_PLAIN_GIB (default 8),
#        OUT (default /tmp/ballast-bench-lvol), PROFILE=1: in the last repetition, sample the
#        daemon during each measured run (perf record -F 2999 -p PID, the run's seconds) and
#        write its largest symbols to $OUT/profile-WORKLOAD-VOLUME.txt (needs perf).
# Output: every RPC and perf command in $OUT/commands.log, raw results in $OUT/results.jsonl,
# tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
SECS=${2:-5}
FT_SECS=${3:-2}
MIB=${MIB:-1024}
FT_GIB=${FT_GIB:-512}
FT_PLAIN_GIB=${FT_PLAIN_GIB:-8}
OUT=${OUT:-/tmp/ballast-bench-lvol}
cargo build --release -q -p ballastd -p ballast-rpc -p ballast-bench --bins
BIN=$PWD/target/release
NQN=nqn.2026-12.io.ballast:lvol
. bench/lib.sh
rm -rf "$OUT"
mkdir -p "$OUT"
LOG=$OUT/commands.log
: >"$LOG"
: >"$OUT/results.jsonl"
port=$(free_port)

"$BIN/ballastd" -m 0x1 -r "$OUT/sock" --default-size-mib 0 >"$OUT/ballastd.log" 2>&1 &
dpid=$!
trap 'kill $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
echo "ballastd -m 0x1 -r $OUT/sock --default-size-mib 0 &" >>"$LOG"
"$BIN/ballast-rpc" -r 50 -s "$OUT/sock" spdk_get_version >/dev/null

# rpc ARGS...: ballast-rpc (rpc.py's subcommands and flags) on the daemon; logged.
rpc() {
    echo "ballast-rpc -s $OUT/sock $*" >>"$LOG"
    "$BIN/ballast-rpc" -s "$OUT/sock" "$@"
}
bperf() { # nsid, args...
    local ns=$1
    shift
    echo "ballast-perf -c 0x2 --json --quiet $* -r 'trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$NQN ns:$ns'" >>"$LOG"
    "$BIN/ballast-perf" -c 0x2 --json --quiet "$@" \
        -r "trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$NQN ns:$ns"
}
# allocated LVOL: clusters the lvol owns (bdev_lvol_get_lvols' num_allocated_clusters).
allocated() {
    rpc bdev_lvol_get_lvols -l "${1%%/*}" |
        python3 -c 'import json,sys; n=sys.argv[1]; print(next(l["num_allocated_clusters"] for l in json.load(sys.stdin) if l["alias"]==n))' "$1"
}
# measure REP WORKLOAD VOLUME WARMUP SECS NSID ARGS...: one measured ballast-perf run (the
# daemon profiled after the warm-up if PROFILE=1 and REP is the last); prints perf's JSON.
measure() {
    local rep=$1 w=$2 vol=$3 warm=$4 secs=$5 ns=$6 ppid=
    shift 6
    if [ "${PROFILE:-0}" = 1 ] && [ "$rep" = "$REPS" ]; then
        echo "sleep $warm; perf record -F 2999 -p $dpid -o $OUT/$w-$vol.perf -- sleep $secs" >>"$LOG"
        (sleep "$warm"; perf record -F 2999 -p "$dpid" -o "$OUT/$w-$vol.perf" -- sleep "$secs") \
            >/dev/null 2>&1 &
        ppid=$!
    fi
    bperf "$ns" "$@"
    if [ -n "$ppid" ]; then
        wait "$ppid"
        perf report -i "$OUT/$w-$vol.perf" --no-children --sort symbol \
            --percent-limit 0.5 --stdio 2>/dev/null | grep -E '^ +[0-9]' >"$OUT/profile-$w-$vol.txt" || true
    fi
}
# record REP WORKLOAD VOLUME PERF_JSON [EXTRA_JSON]: one line of results.jsonl.
record() {
    python3 -c 'import json,sys; r=json.loads(sys.argv[4])["total"]; x=json.loads(sys.argv[5] or "{}"); x.update({"rep": int(sys.argv[1]), "w": sys.argv[2], "vol": sys.argv[3], "iops": r["iops"], "ios": r["ios"], "p50": r["lat_us"]["p50"], "p99": r["lat_us"]["p99"], "errors": r["errors"]}); print(json.dumps(x))' \
        "$1" "$2" "$3" "$4" "${5:-}" >>"$OUT/results.jsonl"
}

rpc bdev_malloc_create -b Plain "$MIB" 512 >/dev/null
rpc bdev_malloc_create -b LvsBase $((MIB + 64)) 512 >/dev/null
rpc bdev_lvol_create_lvstore LvsBase lvs >/dev/null
rpc bdev_lvol_create -l lvs -t lvol "$MIB" >/dev/null
rpc bdev_malloc_create -b FtBase --overcommit $(((FT_GIB + 1) * 1024)) 512 >/dev/null
rpc bdev_lvol_create_lvstore FtBase lvsft -c 65536 >/dev/null
rpc nvmf_create_subsystem "$NQN" -a >/dev/null
rpc nvmf_subsystem_add_ns "$NQN" Plain -n 1 >/dev/null
rpc nvmf_subsystem_add_ns "$NQN" lvs/lvol -n 2 >/dev/null
rpc nvmf_subsystem_add_listener "$NQN" -t tcp -a 127.0.0.1 -s "$port" >/dev/null

# Fill Lvol until every cluster is allocated (what follows overwrites), then Plain for as long
# (a sequential run starts at the same LBA every time: a longer run covers more).
want=$((MIB / 4))
fill=4
while :; do
    bperf 2 -w write -o 131072 -q 8 -t "$fill" --warmup 0 >/dev/null
    got=$(allocated lvs/lvol)
    [ "$got" = "$want" ] && break
    if [ "$fill" -ge 64 ]; then
        echo "lvs/lvol: $got of $want clusters allocated after a $fill s fill" >&2
        exit 1
    fi
    fill=$((fill * 2))
done
bperf 1 -w write -o 131072 -q 8 -t "$fill" --warmup 0 >/dev/null

for rep in $(seq "$REPS"); do
    if [ $((rep % 2)) = 1 ]; then pair="1:Plain 2:Lvol" ft="3:BigPlain 4:FtLvol"; else
        pair="2:Lvol 1:Plain" ft="4:FtLvol 3:BigPlain"; fi
    for w in randread randwrite; do
        for v in $pair; do
            r=$(measure "$rep" "$w" "${v#*:}" 1 "$SECS" "${v%%:*}" -w "$w" -o 4096 -q 32 -t "$SECS")
            record "$rep" "$w" "${v#*:}" "$r"
        done
    done
    # First touch: a fresh (never written) BigPlain and FtLvol.
    rpc bdev_malloc_create -b BigPlain --overcommit $((FT_PLAIN_GIB * 1024)) 512 >/dev/null
    rpc bdev_lvol_create -l lvsft -t ft "$((FT_GIB * 1024))" >/dev/null
    rpc nvmf_subsystem_add_ns "$NQN" BigPlain -n 3 >/dev/null
    rpc nvmf_subsystem_add_ns "$NQN" lvsft/ft -n 4 >/dev/null
    for v in $ft; do
        r=$(measure "$rep" first-touch "${v#*:}" 0 "$FT_SECS" "${v%%:*}" -w randwrite -o 4096 \
            -q 32 -t "$FT_SECS" --warmup 0)
        extra=
        if [ "${v#*:}" = FtLvol ]; then extra="{\"allocated\": $(allocated lvsft/ft)}"; fi
        record "$rep" first-touch "${v#*:}" "$r" "$extra"
    done
    rpc nvmf_subsystem_remove_ns "$NQN" 3 >/dev/null
    rpc nvmf_subsystem_remove_ns "$NQN" 4 >/dev/null
    rpc bdev_malloc_delete BigPlain >/dev/null
    rpc bdev_lvol_delete lvsft/ft >/dev/null
done
for b in LvsBase FtBase; do
    rpc bdev_lvol_check_lvstore "$b" >"$OUT/check-$b.json"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert not r["errors"], r["errors"]' \
        "$OUT/check-$b.json"
done

python3 - "$OUT/results.jsonl" "$REPS" "$SECS" "$FT_SECS" "$MIB" "$FT_GIB" "$FT_PLAIN_GIB" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
reps, secs, ft_secs, mib, ft_gib, ft_plain_gib = sys.argv[2:8]
errs = sum(r["errors"] for r in rows)
print(f"4K QD32, {reps} reps; {secs} s (+1 s warm-up) for read/overwrite, {ft_secs} s (no warm-up) "
      f"for first touch; {mib} MiB Plain/Lvol, {ft_gib} GiB FtLvol, {ft_plain_gib} GiB BigPlain; "
      f"I/O errors: {errs}\n")
def by(w, vol):
    return {r["rep"]: r for r in rows if r["w"] == w and r["vol"] == vol}
def line(label, w, a, b, target):
    A, B = by(w, a), by(w, b)
    ratios = [A[k]["iops"] / B[k]["iops"] for k in A if k in B and B[k]["iops"] > 0]
    m = st.median(ratios)
    print(f"| {label} | {st.median(r['iops'] for r in A.values())/1000:.0f} k "
          f"(p50 {st.median(r['p50'] for r in A.values()):.0f} µs) | {b}: "
          f"{st.median(r['iops'] for r in B.values())/1000:.0f} k "
          f"(p50 {st.median(r['p50'] for r in B.values()):.0f} µs) | **{m:.2f}×** "
          f"({min(ratios):.2f}–{max(ratios):.2f}) | ≥ {target}×: {'met' if m >= target else 'not met'} |")
print("| workload | lvol IOPS (median) | base IOPS (median) | ratio (median, spread) | target |")
print("|---|---|---|---|---|")
line("(b) 4K randread, written data", "randread", "Lvol", "Plain", 0.95)
line("(a) 4K randwrite, overwrite", "randwrite", "Lvol", "Plain", 0.95)
line("(c) 4K randwrite, first touch", "first-touch", "FtLvol", "BigPlain", 0.7)
ft = by("first-touch", "FtLvol")
plain_w = by("randwrite", "Plain")
r2 = [ft[k]["iops"] / plain_w[k]["iops"] for k in ft if k in plain_w]
print(f"\n(c) against Plain's randwrite (written pages, no page faults) in the same rep: "
      f"{st.median(r2):.2f}× ({min(r2):.2f}–{max(r2):.2f})")
# Writes counted that were first touch: at least allocated - 32 (the writes in flight at the
# end may have allocated too), at most min(allocated, counted).
lo = [max(r["allocated"] - 32, 0) / r["ios"] for r in ft.values() if r["ios"]]
hi = [min(r["allocated"], r["ios"]) / r["ios"] for r in ft.values() if r["ios"]]
print(f"(c) first-touch writes among those counted: {min(lo):.2%}–{max(hi):.2%} over the runs "
      f"(allocated clusters {min(r['allocated'] for r in ft.values())}–"
      f"{max(r['allocated'] for r in ft.values())}, writes counted "
      f"{min(r['ios'] for r in ft.values())}–{max(r['ios'] for r in ft.values())})")
print("\nruns (rep: lvol / base IOPS):")
for w, a, b in (("randread", "Lvol", "Plain"), ("randwrite", "Lvol", "Plain"),
                ("first-touch", "FtLvol", "BigPlain")):
    A, B = by(w, a), by(w, b)
    print(f"- {w}: " + ", ".join(f"{k}: {A[k]['iops']/1000:.0f}/{B[k]['iops']/1000:.0f} k" for k in sorted(A)))
PY
