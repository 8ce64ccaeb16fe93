#!/usr/bin/env bash
# bench/lvol-instructions.sh — user-space instructions per 4 KiB I/O that ballastd spends on a
# thick lvol namespace against a plain malloc namespace (callgrind; see bench/instructions.sh
# for why instruction counts, not timings, compare small data-path costs on this shared VM).
#
# For each of plain / lvol × randread / randwrite, a fresh daemon (one reactor, core 0) under
# `valgrind --tool=callgrind` exports one 256 MiB namespace: Plain (malloc, 512 B blocks) or a
# thick lvol of 256 MiB in a store (4 MiB clusters) on a 320 MiB malloc base (every cluster
# allocated: the overwrite and read path of a written thin lvol). ballast-perf (core 1) runs
# 4K QD32 for SHORT and for LONG seconds against two daemons; instructions per I/O =
# (total_LONG - total_SHORT) / (I/Os_LONG - I/Os_SHORT), which cancels start-up and set-up.
#
# Usage: bash bench/lvol-instructions.sh [SHORT] [LONG]   (defaults 3, 8)
#   env: BALLASTD (the daemon binary; default target/release/ballastd), IDLE_STORES (default 0:
#   that many more stores, each on its own 64 MiB malloc bdev, idle in the same daemon — their
#   committers poll on the same reactor), KINDS (default "plain lvol").
set -euo pipefail
cd "$(dirname "$0")/.."
SHORT=${1:-3}
LONG=${2:-8}
cargo build --release -q -p ballastd -p ballast-rpc -p ballast-bench --bins
BIN=$PWD/target/release
DAEMON=${BALLASTD:-$BIN/ballastd}
IDLE_STORES=${IDLE_STORES:-0}
KINDS=${KINDS:-"plain lvol"}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
OUT=${OUT:-/tmp/ballast-lvol-instructions}
NQN=nqn.2026-12.io.ballast:lvi
. bench/lib.sh
rm -rf "$OUT"
mkdir -p "$OUT"

# one KIND WORKLOAD SECS: prints "total_instructions ios" of one daemon run.
one() {
    local kind=$1 w=$2 secs=$3 tag=$1-$2-$3 port sock vpid bdev
    port=$(free_port)
    sock=$OUT/$tag.sock
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.out" \
        "$DAEMON" -m 0x1 -r "$sock" --default-size-mib 0 >"$OUT/$tag.log" 2>&1 &
    vpid=$!
    local rpc="$BIN/ballast-rpc -s $sock"
    $rpc -r 300 spdk_get_version >/dev/null
    local k
    for k in $(seq "$IDLE_STORES"); do
        $rpc bdev_malloc_create -b Idle$k 64 512 >/dev/null
        $rpc bdev_lvol_create_lvstore Idle$k idle$k -c 1048576 >/dev/null
    done
    if [ "$kind" = plain ]; then
        $rpc bdev_malloc_create -b Plain 256 512 >/dev/null
        bdev=Plain
    else
        $rpc bdev_malloc_create -b Base 320 512 >/dev/null
        $rpc bdev_lvol_create_lvstore Base lvs >/dev/null
        bdev=$($rpc bdev_lvol_create -l lvs vol 256)
    fi
    $rpc nvmf_create_subsystem "$NQN" -a >/dev/null
    $rpc nvmf_subsystem_add_ns "$NQN" "$bdev" >/dev/null
    $rpc nvmf_subsystem_add_listener "$NQN" -t tcp -a 127.0.0.1 -s "$port" >/dev/null
    local r
    r=$("$BIN/ballast-perf" -c 0x2 --json --quiet -w "$w" -o 4096 -q 32 -t "$secs" --warmup 0 \
        -r "trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$NQN")
    kill -INT $vpid
    wait $vpid || true
    local total ios
    total=$(callgrind_annotate "$OUT/$tag.out" 2>/dev/null |
        awk '/PROGRAM TOTALS/ && !n {gsub(",","",$1); print $1; n=1}')
    ios=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["total"]["ios"])' "$r")
    echo "$total $ios"
}

echo "daemon $DAEMON, $IDLE_STORES idle stores"
echo "| workload | plain malloc | thick lvol | lvol − plain |"
echo "|---|---|---|---|"
for w in randread randwrite; do
    declare -A per=([plain]=0 [lvol]=0)
    for kind in $KINDS; do
        read -r t1 n1 < <(one "$kind" "$w" "$SHORT")
        read -r t2 n2 < <(one "$kind" "$w" "$LONG")
        per[$kind]=$(((t2 - t1) / (n2 - n1)))
        echo "$kind $w: $t1 instructions / $n1 I/Os ($SHORT s), $t2 / $n2 ($LONG s)" >>"$OUT/raw.txt"
    done
    if [ "${per[plain]}" -gt 0 ] && [ "${per[lvol]}" -gt 0 ]; then
        echo "| 4K $w QD32 | ${per[plain]} | ${per[lvol]} | $((per[lvol] - per[plain])) |"
    else
        echo "| 4K $w QD32 | ${per[plain]/#0/—} | ${per[lvol]/#0/—} | — |"
    fi
done
echo "(raw counts: $OUT/raw.txt; profiles: callgrind_annotate $OUT/<kind>-<workload>-<secs>.out)"
