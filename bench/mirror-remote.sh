#!/usr/bin/env bash
# bench/mirror-remote.sh — issue 19's replicated-volume benchmarks: a mirror (raid1) whose
# children are remote replicas attached over NVMe/TCP, against one remote child exported the
# same way (same node, same network hop). Everything runs on 127.0.0.1.
#
#   replica daemons r1 r2 r3 (one reactor each, --default-size-mib 0), each exporting uring
#   bdevs on files in $SHM (/dev/shm: a replica killed with -9 and started again finds its data)
#       r1: one, m2a, m3a        r2: m2b, m3b (+ blank members for the rebuilds)   r3: m3c
#   mirror node daemon "node": attaches every child (bdev_nvme_attach_controller,
#   ctrlr_loss_timeout_sec 2, reconnect_delay_sec 1) and exports, on its own port, three
#   subsystems: M2 = raid1(m2a, m2b), M3 = raid1(m3a, m3b, m3c) and ONE = the child "one" as is.
#   ballast-perf drives the node's exports.
#
# Parts (PARTS="io rebuild partial", the default, runs all three, in this order):
#   io       4K randwrite QD32, 4K randread QD32, 128K sequential write QD8: ONE, M2, M3 one
#            after the other inside each of REPS repetitions of SECS s; ratio = mirror / ONE in
#            the same repetition; medians.
#   rebuild  REPS times, alternating: a full rebuild idle and one under foreground 4K randwrite
#            QD32 (ballast-perf, 1 s runs back to back until the rebuild ends). Each: a blank
#            member (a new file) exported by r2 and attached; M2's second member removed
#            (bdev_raid_remove_base_bdev), the blank one added (bdev_raid_add_base_bdev); time
#            until last_rebuild names it. Before each, ONE's 128K sequential write rate (SECS s,
#            QD8), the rebuild's yardstick.
#   partial  REPS times, alternating two write patterns: a ballast-perf writer is connected to
#            M2, the replica holding M2's second member (r2) is killed with -9 (its config saved
#            first) 1 s into the run; ctrlr_loss_timeout_sec (2) later the member's I/O fails and
#            it is faulted; the writes go on to the degraded mirror (dirty_regions counts the
#            64 KiB regions they touched); r2 is started again on its saved config (same files,
#            same port) and the mirror re-adds the member by itself (self_heal); time until the
#            member is in sync (last_rebuild: kind, seconds, bytes). ballast-perf has no
#            offset/range option; its sequential workloads start at LBA 0 on core 0:
#              narrow:    -w write -o 4096 -q 1 -t 14     (contiguous from LBA 0: 0.2-1 % of 1 GiB)
#              scattered: -w randwrite -o 4096 -q 32 -t 14 (most 64 KiB regions get dirty)
#
# Usage: bash bench/mirror-remote.sh [REPS] [SECS]   (defaults 3, 3)
#   env: PARTS, MIB (child size, default 1024), OUT (logs; default /tmp/ballast-bench-mirror-remote),
#        SHM (backing files; default /dev/shm/ballast-bench-mirror-remote), DAEMON_ARGS (default
#        "-m 0x1": every daemon's reactor on core 0), PERF_CORES (default 0x2).
# Output: every RPC and perf command in $OUT/commands.log, raw results in $OUT/results.jsonl,
# tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-3}
PARTS=${PARTS:-"io rebuild partial"}
MIB=${MIB:-1024}
OUT=${OUT:-/tmp/ballast-bench-mirror-remote}
SHM=${SHM:-/dev/shm/ballast-bench-mirror-remote}
DAEMON_ARGS=${DAEMON_ARGS:-"-m 0x1"}
PERF_CORES=${PERF_CORES:-0x2}
NQN=nqn.2026-12.io.ballast:mr
cargo build --release -q -p ballastd -p ballast-rpc -p ballast-bench --bins
BIN=$PWD/target/release
. bench/lib.sh
rm -rf "$OUT" "$SHM"
mkdir -p "$OUT" "$SHM"
: >"$OUT/results.jsonl"
LOG=$OUT/commands.log
: >"$LOG"
now() { date +%s.%N; }
note() { echo "# $(date +%T) $*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------ daemons --
declare -A PID PORT
cleanup() {
    local n
    for n in "${!PID[@]}"; do kill "${PID[$n]}" 2>/dev/null || true; done
    for n in "${!PID[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
    [ -n "${LOADPID:-}" ] && kill "$LOADPID" 2>/dev/null
    rm -rf "$SHM"
}
trap cleanup EXIT

# start NAME [ARGS...]: ballastd NAME on its socket $OUT/NAME.sock; PORT[NAME] is the port its
# subsystems listen on (kept across restarts).
start() {
    local n=$1
    shift
    [ -n "${PORT[$n]:-}" ] || PORT[$n]=$(free_port)
    # shellcheck disable=SC2086
    "$BIN/ballastd" $DAEMON_ARGS -r "$OUT/$n.sock" "$@" >>"$OUT/$n.log" 2>&1 &
    PID[$n]=$!
    echo "ballastd $DAEMON_ARGS -r $OUT/$n.sock $* &   # pid ${PID[$n]}" >>"$LOG"
    "$BIN/ballast-rpc" -r 50 -s "$OUT/$n.sock" spdk_get_version >/dev/null
}

# rpc DAEMON METHOD [JSON]: ballast-rpc's raw call; the command goes to the log.
rpc() {
    local s=$OUT/$1.sock
    echo "ballast-rpc -s $s call $2 ${3:+'$3'}" >>"$LOG"
    "$BIN/ballast-rpc" -s "$s" call "$2" ${3:+"$3"}
}
listener() { # NQN PORT
    echo "\"nqn\":\"$1\",\"listen_address\":{\"trtype\":\"TCP\",\"adrfam\":\"IPv4\",\"traddr\":\"127.0.0.1\",\"trsvcid\":\"$2\"}"
}
# export_bdev DAEMON SUBSYS BDEV: subsystem $NQN:SUBSYS with BDEV as namespace 1.
export_bdev() {
    rpc "$1" nvmf_create_subsystem "{\"nqn\":\"$NQN:$2\",\"allow_any_host\":true}" >/dev/null
    rpc "$1" nvmf_subsystem_add_ns "{\"nqn\":\"$NQN:$2\",\"namespace\":{\"bdev_name\":\"$3\"}}" >/dev/null
    rpc "$1" nvmf_subsystem_add_listener "{$(listener "$NQN:$2" "${PORT[$1]}")}" >/dev/null
}
# child REPLICA NAME [fill]: a MIB-sized file in $SHM (preallocated with "fill", else sparse:
# blank), a uring bdev NAME on it exported by REPLICA, attached by the node as controller NAME
# (bdev NAMEn1).
child() {
    local r=$1 n=$2 f=$SHM/$2.img
    if [ "${3:-}" = fill ]; then fallocate -l "${MIB}M" "$f"; else truncate -s "${MIB}M" "$f"; fi
    rpc "$r" bdev_uring_create "{\"name\":\"$n\",\"filename\":\"$f\"}" >/dev/null
    export_bdev "$r" "$n" "$n"
    rpc node bdev_nvme_attach_controller "{\"name\":\"$n\",\"trtype\":\"tcp\",\"adrfam\":\"ipv4\",\"traddr\":\"127.0.0.1\",\"trsvcid\":\"${PORT[$r]}\",\"subnqn\":\"$NQN:$n\",\"ctrlr_loss_timeout_sec\":2,\"reconnect_delay_sec\":1}" >/dev/null
}
# drop_child REPLICA NAME: the node detaches it; the replica deletes it; the file goes.
drop_child() {
    rpc node bdev_nvme_detach_controller "{\"name\":\"$2\"}" >/dev/null
    rpc "$1" nvmf_delete_subsystem "{\"nqn\":\"$NQN:$2\"}" >/dev/null
    rpc "$1" bdev_uring_delete "{\"name\":\"$2\"}" >/dev/null
    rm -f "$SHM/$2.img"
}

# raid JQ: the filter applied to M2's bdev_raid_get_bdevs entry.
# (polled: not logged)
raid() {
    "$BIN/ballast-rpc" -s "$OUT/node.sock" call bdev_raid_get_bdevs '{"category":"all"}' |
        jq -c ".[] | select(.name==\"M2\") | $1"
}
member_state() { raid ".base_bdevs_list[] | select(.name==\"$1\") | .state" | tr -d '"'; }

# perf EXPORT ARGS...: ballast-perf against the node's export, JSON summary on stdout.
perf() {
    local e=$1
    shift
    echo "ballast-perf -c $PERF_CORES --json --quiet $* -r 'trtype:tcp traddr:127.0.0.1 trsvcid:${PORT[node]} subnqn:$NQN:$e'" >>"$LOG"
    "$BIN/ballast-perf" -c "$PERF_CORES" --json --quiet "$@" \
        -r "trtype:tcp traddr:127.0.0.1 trsvcid:${PORT[node]} subnqn:$NQN:$e"
}
record() { # JSON object text
    echo "$1" >>"$OUT/results.jsonl"
}
perf_rec() { # PART REP W EXPORT ARGS...
    local part=$1 rep=$2 w=$3 e=$4 r
    shift 4
    r=$(perf "$e" "$@")
    record "$(jq -c --arg p "$part" --arg w "$w" --arg e "$e" --argjson rep "$rep" \
        '{part: $p, rep: $rep, w: $w, vol: $e, iops: .total.iops, mib_s: .total.mib_s, p50: .total.lat_us.p50, errors: .total.errors}' <<<"$r")"
}

# ------------------------------------------------------------------ topology --
note "starting r1 r2 r3 node (ballastd $DAEMON_ARGS --default-size-mib 0)"
for d in r1 r2 r3 node; do
    start "$d" --default-size-mib 0
    rpc "$d" nvmf_create_transport '{"trtype":"TCP"}' >/dev/null
done
child r1 one fill
child r1 m2a fill
child r2 m2b fill
child r1 m3a fill
child r2 m3b fill
child r3 m3c fill
rpc node bdev_raid_create '{"name":"M2","raid_level":"raid1","base_bdevs":["m2an1","m2bn1"]}' >/dev/null
rpc node bdev_raid_create '{"name":"M3","raid_level":"raid1","base_bdevs":["m3an1","m3bn1","m3cn1"]}' >/dev/null
export_bdev node one onen1
export_bdev node m2 M2
export_bdev node m3 M3
note "exports on 127.0.0.1:${PORT[node]}: $NQN:one (child 'one'), $NQN:m2 (M2), $NQN:m3 (M3)"

# ---------------------------------------------------------------------- io ----
if [[ " $PARTS " == *" io "* ]]; then
    note "io: $REPS reps x $SECS s; ONE, M2, M3 inside each rep"
    for rep in $(seq "$REPS"); do
        for w in write128k randwrite randread; do
            for e in one m2 m3; do
                case $w in
                write128k) perf_rec io "$rep" "$w" "$e" -w write -o 131072 -q 8 -t "$SECS" --warmup 1 ;;
                *) perf_rec io "$rep" "$w" "$e" -w "$w" -o 4096 -q 32 -t "$SECS" --warmup 1 ;;
                esac
            done
        done
        note "io rep $rep done"
    done
fi

# ----------------------------------------------------------------- rebuild ----
CUR=m2b # M2's second member (on r2)
K=0
if [[ " $PARTS " == *" rebuild "* ]]; then
    for rep in $(seq "$REPS"); do
        for mode in idle load; do
            K=$((K + 1))
            sp=blank$K
            perf_rec rebuild "$rep" write128k one -w write -o 131072 -q 8 -t "$SECS" --warmup 1
            child r2 "$sp"
            rpc node bdev_raid_remove_base_bdev "{\"name\":\"${CUR}n1\"}" >/dev/null
            LOADPID=
            if [ "$mode" = load ]; then
                rm -f "$OUT/stop" "$OUT/load.jsonl"
                (
                    while [ ! -e "$OUT/stop" ]; do
                        perf m2 -w randwrite -o 4096 -q 32 -t 1 --warmup 0 |
                            jq -c '{iops: .total.iops, errors: .total.errors}' >>"$OUT/load.jsonl" || true
                    done
                ) &
                LOADPID=$!
                sleep 1.5
            fi
            t0=$(now)
            rpc node bdev_raid_add_base_bdev "{\"raid_bdev\":\"M2\",\"base_bdev\":\"${sp}n1\"}" >/dev/null
            for _ in $(seq 3000); do # 10 min at most
                [ "$(raid '.last_rebuild.target' 2>/dev/null)" = "\"${sp}n1\"" ] && break
                sleep 0.2
            done
            t1=$(now)
            last=$(raid '.last_rebuild')
            load='null'
            if [ -n "$LOADPID" ]; then
                touch "$OUT/stop"
                wait "$LOADPID" || true
                LOADPID=
                load=$(jq -s -c '{runs: length, iops: [.[].iops], errors: ([.[].errors] | add)}' "$OUT/load.jsonl")
            fi
            record "$(jq -c -n --argjson rep "$rep" --arg mode "$mode" --argjson last "$last" \
                --argjson wall "$(echo "$t1 - $t0" | bc)" --argjson load "$load" \
                '{part: "rebuild", rep: $rep, mode: $mode, wall_s: $wall, last: $last, load: $load}')"
            note "rebuild rep $rep $mode: $last"
            drop_child r2 "$CUR"
            CUR=$sp
        done
    done
fi

# ----------------------------------------------------------------- partial ----
# The writer is connected before the kill: a host connecting to M2 while one of its remote
# children is unreachable gets every I/O failed with Invalid Namespace or Format (the mirror's
# channel cannot be created: it opens a channel on every child, the lost one included), so the
# writes that fault the member and dirty the bitmap come from a ballast-perf run that spans
# the kill: 1 s before it, then the ~2-3 s until ctrlr_loss_timeout_sec (2) fails the member's
# I/O and faults it, then ~10 s of writes to the degraded mirror.
if [[ " $PARTS " == *" partial "* ]]; then
    for rep in $(seq "$REPS"); do
        for pat in narrow scattered; do
            rpc r2 save_config >"$OUT/r2-config.json"
            case $pat in
            narrow) args=(-w write -o 4096 -q 1 -t 14 --warmup 0) ;;
            scattered) args=(-w randwrite -o 4096 -q 32 -t 14 --warmup 0) ;;
            esac
            perf m2 "${args[@]}" >"$OUT/partial-writes.json" &
            wpid=$!
            sleep 1
            note "partial rep $rep $pat: kill -9 r2 (pid ${PID[r2]}) under ballast-perf ${args[*]}; member ${CUR}n1"
            kill -9 "${PID[r2]}"
            wait "${PID[r2]}" 2>/dev/null || true
            unset 'PID[r2]'
            t0=$(now)
            tf=null
            while kill -0 "$wpid" 2>/dev/null; do
                if [ "$tf" = null ] && [ "$(member_state "${CUR}n1")" = faulted ]; then
                    tf=$(echo "$(now) - $t0" | bc)
                fi
                sleep 0.1
            done
            wait "$wpid" || true
            wr=$(jq -c '{iops: .total.iops, errors: .total.errors}' "$OUT/partial-writes.json" 2>/dev/null || echo null)
            dirty=$(raid '{dirty_regions, dirty_bytes, region_size_kb}')
            st=$(member_state "${CUR}n1")
            note "member ${CUR}n1 '$st' (faulted after ${tf} s); writes $wr; bitmap $dirty"
            t2=$(now)
            start r2 -c "$OUT/r2-config.json"
            for _ in $(seq 3000); do # 5 min at most
                [ "$(member_state "${CUR}n1")" = in_sync ] && break
                sleep 0.1
            done
            t3=$(now)
            last=$(raid '.last_rebuild')
            record "$(jq -c -n --argjson rep "$rep" --arg pat "$pat" --argjson last "$last" \
                --argjson dirty "$dirty" --arg st "$st" --argjson tf "$tf" --argjson wr "$wr" \
                --arg cmd "ballast-perf ${args[*]}" --argjson wall "$(echo "$t3 - $t2" | bc)" \
                '{part: "partial", rep: $rep, pattern: $pat, cmd: $cmd, writes: $wr, fault_s: $tf,
                  state_after_writes: $st, dirty: $dirty, restart_to_in_sync_s: $wall, last: $last}')"
            note "partial rep $rep $pat: restart -> in sync $(echo "$t3 - $t2" | bc) s; $last"
        done
    done
fi

# ----------------------------------------------------------------- summary ----
python3 - "$OUT/results.jsonl" "$REPS" "$SECS" "$MIB" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
reps, secs, mib = sys.argv[2:5]
med = st.median
def spread(xs):
    return f"{min(xs):.2f}–{max(xs):.2f}"
io = [r for r in rows if r["part"] == "io"]
if io:
    print(f"\n## io: {reps} reps × {secs} s, ratio = mirror / ONE in the same rep (median, spread)\n")
    print("| workload | ONE | M2 (2-way) | ratio | M3 (3-way) | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    for w, unit, tgt in (("randwrite", "iops", 0.8), ("randread", "iops", 1.0), ("write128k", "mib_s", 0.8)):
        by = {e: {r["rep"]: r[unit] for r in io if r["w"] == w and r["vol"] == e} for e in ("one", "m2", "m3")}
        fmt = (lambda v: f"{v/1000:.1f} k IOPS") if unit == "iops" else (lambda v: f"{v:.0f} MiB/s")
        cells = [fmt(med(by["one"].values()))]
        for e in ("m2", "m3"):
            ratios = [by[e][k] / by["one"][k] for k in by[e] if by["one"].get(k)]
            cells += [fmt(med(by[e].values())), f"{med(ratios):.2f}× ({spread(ratios)}) {'met' if med(ratios) >= tgt else 'NOT met'}"]
        print(f"| {w} | " + " | ".join(cells) + f" | ≥ {tgt}× |")
    errs = sum(r.get("errors") or 0 for r in io)
    print(f"\nI/O errors in the io runs: {errs}")
    for w in ("randwrite", "randread", "write128k"):
        u = "iops" if w != "write128k" else "mib_s"
        print(f"- {w} runs ({u}): " + "; ".join(
            e + " " + "/".join(f"{r[u]:.0f}" for r in io if r["w"] == w and r["vol"] == e) for e in ("one", "m2", "m3")))
rb = [r for r in rows if r["part"] == "rebuild" and "mode" in r]
yard = [r for r in rows if r["part"] == "rebuild" and r.get("w") == "write128k"]
full_idle_s = None
if rb:
    print(f"\n## full rebuild of M2's second member ({mib} MiB children)\n")
    print("| mode | rep | kind | bytes copied | seconds | MiB/s | wall s (add → last_rebuild seen) | ONE 128K seq write MiB/s just before | ratio | foreground randwrite IOPS during |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratios = {"idle": [], "load": []}
    rates = {"idle": [], "load": []}
    secs_ = {"idle": [], "load": []}
    for i, r in enumerate(rb):
        l = r["last"]
        rate = l["bytes_copied"] / 2**20 / l["seconds"] if l["seconds"] else float("nan")
        y = yard[i]["mib_s"] if i < len(yard) else float("nan")
        ratios[r["mode"]].append(rate / y)
        rates[r["mode"]].append(rate)
        secs_[r["mode"]].append(l["seconds"])
        ld = r["load"]
        fg = f"median {med(ld['iops'])/1000:.1f} k over {ld['runs']} × 1 s runs, {ld['errors']} errors" if ld else "—"
        print(f"| {r['mode']} | {r['rep']} | {l['kind']} ({l['outcome']}) | {l['bytes_copied'] >> 20} MiB | {l['seconds']:.2f} | {rate:.0f} | {r['wall_s']:.2f} | {y:.0f} | {rate / y:.2f}× | {fg} |")
    print()
    for m in ("idle", "load"):
        if rates[m]:
            print(f"- {m}: median {med(rates[m]):.0f} MiB/s, {med(secs_[m]):.2f} s; ratio to ONE's 128K write "
                  f"{med(ratios[m]):.2f}× ({spread(ratios[m])}) — target ≥ 0.7×: {'met' if med(ratios[m]) >= 0.7 else 'NOT met'}")
    full_idle_s = med(secs_["idle"]) if secs_["idle"] else None
pa = [r for r in rows if r["part"] == "partial"]
if pa:
    print("\n## partial rebuild after kill -9 / restart of the replica of M2's second member\n")
    print("| pattern | rep | member faulted after (s from kill) | writes (whole run) | dirty regions (64 KiB) | kind | bytes copied | seconds | restart → in_sync s | vs full idle |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in pa:
        l, d, wr = r["last"], r["dirty"], r["writes"]
        wtxt = f"{wr['iops']:.0f} IOPS, {wr['errors']} errors" if wr else "?"
        vs = "—"
        if full_idle_s and l["seconds"]:
            x = full_idle_s / l["seconds"]
            vs = f"1/{x:.0f}" if x >= 2 else f"{1 / x:.2f}×"
        ft = f"{r['fault_s']:.1f}" if r["fault_s"] is not None else "not faulted"
        print(f"| {r['pattern']} | {r['rep']} | {ft} | {wtxt} | {d['dirty_regions']} ({d['dirty_bytes'] >> 20} MiB) | {l['kind']} ({l['outcome']}) | {l['bytes_copied'] / 2**20:.1f} MiB | {l['seconds']:.3f} | {r['restart_to_in_sync_s']:.2f} | {vs} |")
    print()
    for pat in ("narrow", "scattered"):
        s = [r["last"]["seconds"] for r in pa if r["pattern"] == pat]
        if s and full_idle_s:
            print(f"- {pat} ({[r['cmd'] for r in pa if r['pattern'] == pat][0]}): median {med(s):.3f} s = {med(s) / full_idle_s:.3f}× the idle full rebuild ({full_idle_s:.2f} s) — "
                  f"target ≤ 1/20: {'met' if med(s) * 20 <= full_idle_s else 'NOT met'}; kinds: {sorted(set(r['last']['kind'] for r in pa if r['pattern'] == pat))}")
PY
