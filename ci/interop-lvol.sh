#!/usr/bin/env bash
# ci/interop-lvol.sh -- logical volumes (issue 20) under the Linux kernel initiator: ext4 on a
# thin lvol, a snapshot of the frozen file system, its clone exported and mounted, an online
# resize, a pool filled up, and a kill -9 of the daemon with a store brought back by examine.
#
# One ballastd (release build, one reactor, no default subsystem) on 127.0.0.1:<free port> =
# the guest's 10.0.2.2, and ONE guest session (ci/guest/ballast-lvol.sh after
# ci/guest/lib-ballast.sh: connects once with ctrl-loss-tmo 120 s, then does what the host
# asks over a tiny HTTP control channel, as ci/interop-mirror.sh's guest does). The guest
# reports each check as "@@LV ok|notok ..." on its console; the host counts them with its own.
# Some RPCs are sent with SPDK's rpc.py (`spdk-rpc` of PyPI's spdk==$SPDK_VERSION, made by
# ensure_venv), the others with ballast-rpc, both as a user types them.
#
#   1 setup    a uring bdev over a sparse 512 MiB file -> bdev_lvol_create_lvstore lvs1 (1 MiB
#              clusters), thin lvol vol1 (256 MiB) = namespace 1 of $NQN; the guest connects.
#   2 snapshot guest: mkfs.ext4, mount, files with known checksums, sync, fsfreeze --freeze;
#              host: bdev_lvol_snapshot; guest: fsfreeze --unfreeze, changes and deletes
#              files. Host: bdev_lvol_clone of the snapshot = namespace 2 (nvmf_subsystem_add_ns
#              on the connected controller); guest: it appears (by the AEN, else after
#              `nvme ns-rescan`: said so), fsck.ext4 -n -f is clean, mounted read-only it holds
#              the files of the snapshot moment with their checksums and none of the changes.
#   3 resize   bdev_lvol_resize vol1 to 384 MiB while mounted: the guest sees the new size in
#              /sys/block within 10 s with no rescan and no reconnect (same cntlid); resize2fs
#              grows the mounted file system (df).
#   4 full     a second store on a 64 MiB file: a thin lvol of 256 MiB and a thick 8 MiB
#              neighbour, namespaces 3 and 4. The guest writes the thin one (dd oflag=direct,
#              1 MiB at a time, each under `timeout 60`) until a write fails with an error;
#              what it took reads back, the neighbour writes and reads; the daemon answers,
#              bdev_lvol_check_lvstore finds both stores consistent.
#   5 kill -9  thin lvol "load" (128 MiB) = namespace 5; save_config; the guest's fio runs
#              (16 KiB random writes + crc32c verify, 32 MiB regions in turn) on it; ballastd
#              killed -9 mid-write (a run on a region not written before has done 1/8 of
#              its writes: bdev_get_iostat), restarted with -c on the saved config on the
#              same port: both stores and their lvols come back by examine
#              (bdev_lvol_get_lvols, sizes), the namespaces too, the guest reconnects by
#              itself, the fio run that spanned the kill completes and verifies, a
#              verify_only pass over every region, the mounted ext4 still reads its files;
#              bdev_lvol_check_lvstore finds both stores consistent.
#   end        guest: umount, fsck.ext4 -n -f of namespace 1 clean, disconnect; the daemon
#              exits 0 on SIGTERM and never panicked.
#
# Each check prints "ok - WHAT" or "not ok - WHAT: DETAIL"; ends with "N passed, M failed",
# exit status 1 if anything failed. Root, QEMU (ci/kernel-initiator-vm.sh setup); ~2-3 min
# on 2 cores under TCG (the guest's I/O is slow there: a few hundred IOPS when busy).
# Logs: $INTEROP_LOG_DIR/interop-lvol/ (default /tmp/ballast-interop/interop-lvol/):
#   ballastd.log (a restart appends), rpc.log (every RPC command and its answer), guest.log +
#   guest.guest.sh (the guest session), saved.json (the config of step 5), ctl/ (the channel).
# Environment: BALLASTD, BALLAST_RPC (binaries; default: cargo build --release, then
#   ${CARGO_TARGET_DIR:-target}/release/), SPDK_VERSION (26.9), BALLAST_LOG (info), and
#   lib-interop.sh's.
# Variables such as NVMF_GUEST_* and VM_* are read by lib-interop.sh (compgen).
# shellcheck disable=SC2034
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. ci/lib-interop.sh
t0=$SECONDS

LOGDIR=$INTEROP_LOG_DIR/interop-lvol
INTEROP_TEST=interop-lvol
WORK=/var/tmp/ballast-interop-lvol
CTL=$LOGDIR/ctl
SOCK=$WORK/ballastd.sock
DLOG=$LOGDIR/ballastd.log
RPCLOG=$LOGDIR/rpc.log
GLOG=$LOGDIR/guest.log
NQN=nqn.2026-11.io.ballast:lvol-ci
SPDK_VERSION=${SPDK_VERSION:-26.9}
DAEMON_LOG=${BALLAST_LOG:-info}
MIB=1048576
CLUSTER=$MIB
POOL_MIB=512 VOL_MIB=256 GROWN_MIB=384     # store 1, vol1 and its size after step 3
SMALL_MIB=64 BIG_MIB=256 THICK_MIB=8        # store 2 (filled up in step 4)
LOAD_MIB=128 REGION_MIB=32 LOAD_BS=16384    # step 5's lvol, the guest's fio regions in it
RUN_WRITES=$((REGION_MIB * MIB / LOAD_BS))  # writes of one fio run
VM_TIMEOUT=600                              # the one guest session
rm -rf "$LOGDIR" "$WORK"
mkdir -p "$LOGDIR" "$WORK" "$CTL/cmd"
: >"$RPCLOG"

# -------------------------------------------------------------- reporting ----
# ok / notok (ci/lib-interop.sh) count the checks: PASSED, FAILED, FAILED_NAMES.
note() { echo "# $(date +%T) $*"; }
STEP_NAME='' STEP_T0=0 STEP_TIMES=()
step_begin() { # NAME: ends the step before (its time is kept for the summary)
    step_end
    STEP_NAME=$1 STEP_T0=$SECONDS
    echo "# ==== $1"
}
step_end() {
    [[ -n $STEP_NAME ]] && STEP_TIMES+=("${STEP_NAME%%:*}: $((SECONDS - STEP_T0)) s")
    STEP_NAME=
}
summary() {
    step_end
    ((FAILED == 0)) || printf 'failed: %s\n' "${FAILED_NAMES[@]}" | sed '2,$s/^failed: /        /'
    printf '# %s\n' "${STEP_TIMES[@]}"
    echo "# interop-lvol: $((SECONDS - t0)) s, logs in $LOGDIR"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}
fatal() { # NAME DETAIL: a check the rest cannot do without
    notok "$1" "$2"
    summary
    exit 1
}

# ---------------------------------------------------------------- cleanup ----
DPID='' CTLPID='' GUESTJOB='' QEMU_PIDFILE=$WORK/qemu.pid
cleanup() {
    if [[ -s $QEMU_PIDFILE ]]; then kill -KILL "$(cat "$QEMU_PIDFILE")" 2>/dev/null || true; fi
    if [[ -n $GUESTJOB ]]; then kill "$GUESTJOB" 2>/dev/null || true; wait "$GUESTJOB" 2>/dev/null || true; fi
    if [[ -n $DPID ]]; then kill -KILL "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
    if [[ -n $CTLPID ]]; then kill "$CTLPID" 2>/dev/null || true; wait "$CTLPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ build ----
if [[ -z ${BALLASTD:-} || -z ${BALLAST_RPC:-} ]]; then
    cargo build --release -q --bin ballastd --bin ballast-rpc 2>"$LOGDIR/build.log" ||
        fatal "build ballastd and ballast-rpc" "$(tail -n 20 "$LOGDIR/build.log")"
    BALLASTD=${BALLASTD:-${CARGO_TARGET_DIR:-target}/release/ballastd}
    BALLAST_RPC=${BALLAST_RPC:-${CARGO_TARGET_DIR:-target}/release/ballast-rpc}
fi
BALLASTD=$(readlink -f "$BALLASTD") BALLAST_RPC=$(readlink -f "$BALLAST_RPC")
interop_setup 2>"$LOGDIR/setup.err" || fatal "guest harness setup" "$(tail -n 20 "$LOGDIR/setup.err")"
if ensure_venv "$SPDK_VERSION" "$LOGDIR/venv.log"; then
    SPDK_RPC=$SPDK_VENV_ROOT/$SPDK_VERSION/bin/spdk-rpc
    ok "SPDK's rpc.py: spdk-rpc from spdk==$SPDK_VERSION"
else
    # the test goes on with ballast-rpc, which takes rpc.py's arguments
    notok "SPDK's rpc.py: pip install spdk==$SPDK_VERSION" "$(tail -n 10 "$LOGDIR/venv.log")"
    SPDK_RPC=$BALLAST_RPC
fi

# -------------------------------------------------------------------- RPC ----
# rpc_run CLIENT ARGS...: one command of an RPC client, as a user types it; OUT is what it
# printed, ERR its error output; both go to rpc.log. Returns the client's status.
OUT='' ERR=''
rpc_run() {
    local rc=0
    OUT=$(timeout 60 "$@" 2>"$WORK/rpc.err") || rc=$?
    ERR=$(cat "$WORK/rpc.err")
    {
        echo "\$ [$(date +%T.%3N)] ${1##*/} ${*:4}"
        printf '%s\n' "$OUT" | head -c 3000
        ((rc == 0)) || echo "[status $rc] $ERR"
    } >>"$RPCLOG"
    return "$rc"
}
brpc() { rpc_run "$BALLAST_RPC" -s "$SOCK" "$@"; }   # ballast-rpc
srpc() { rpc_run "$SPDK_RPC" -s "$SOCK" "$@"; }      # SPDK's rpc.py
# rpc_ok NAME CLIENT ARGS...: the command as a check (its output in OUT).
rpc_ok() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else notok "$name" "${ERR:-$OUT}"; return 1; fi
}
# pyj EXPR: EXPR evaluated on the JSON in OUT (`d`); JSON for dicts and lists. Fails (the
# reason on stderr) on bad input or an exception.
pyj() {
    python3 -c '
import json, sys
d = json.loads(sys.argv[2])
r = eval(sys.argv[1])
print(json.dumps(r) if isinstance(r, (dict, list)) else r)
' "$1" "$OUT"
}
bdev_bytes() { # BDEV: its size in bytes, from bdev_get_bdevs
    brpc bdev_get_bdevs -b "$1" && pyj 'd[0]["num_blocks"] * d[0]["block_size"]'
}
write_ops() { # BDEV: its num_write_ops, from bdev_get_iostat
    brpc bdev_get_iostat -b "$1" && pyj 'd["bdevs"][0]["num_write_ops"]'
}
check_store() { # NAME BDEV: bdev_lvol_check_lvstore finds the store on BDEV consistent
    local why
    if ! brpc bdev_lvol_check_lvstore "$2"; then notok "$1" "$ERR"; return; fi
    if why=$(pyj '"%d lvols, %d of %d clusters used, %d log blocks" % (d["lvols"], d["used_clusters"], d["total_clusters"], d["log_blocks"]) if d["consistent"] and not d["errors"] else sys.exit(json.dumps(d))' 2>&1); then
        ok "$1 ($why)"
    else
        notok "$1" "$why"
    fi
}

# ----------------------------------------------------------------- daemon ----
# daemon_start [CONFIG]: ballastd on one reactor; with CONFIG, `ballastd -c CONFIG`. Waits
# for its RPC socket (30 s).
daemon_start() {
    local args=(--default-size-mib 0) end=$((SECONDS + 30))
    [[ -n ${1:-} ]] && args=(-c "$1")
    rm -f "$SOCK"
    echo "---- $(date +%T) ballastd -m 0x1 ${args[*]}" >>"$DLOG"
    BALLAST_LOG=$DAEMON_LOG "$BALLASTD" -m 0x1 -r "$SOCK" "${args[@]}" >>"$DLOG" 2>&1 &
    DPID=$!
    while ((SECONDS < end)); do
        "$BALLAST_RPC" -s "$SOCK" -t 2 spdk_get_version >/dev/null 2>&1 && return 0
        kill -0 "$DPID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
daemon_kill() {
    kill -KILL "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
    DPID=
    echo "---- $(date +%T) killed -9" >>"$DLOG"
}

# ------------------------------------------------------------ the guest ----
CMDN=0
glines() { wc -l <"$GLOG" 2>/dev/null || echo 0; }
guest_tail() { grep -a -v '^\[ *[0-9]' "$GLOG" | tail -n "${1:-15}"; }
# relay SINCE: counts the guest's check markers after line SINCE of its log. A notok's detail
# is the rest of its line and the console lines after it (kernel messages left out).
relay() {
    local kind name detail
    while IFS=$'\t' read -r kind name detail; do
        if [[ $kind == ok ]]; then ok "$name"; else notok "$name" "${detail//$'\x1f'/$'\n'}"; fi
    done < <(tail -n +"$(($1 + 1))" "$GLOG" | awk '
        function flush() { if (nk) print "notok\t" nk "\t" det; nk = "" }
        /^@@/ { flush() }
        /^@@LV ok / { sub(/^@@LV ok /, ""); print "ok\t" $0; next }
        /^@@LV notok / { sub(/^@@LV notok /, ""); i = index($0, ": ")
                         if (i) { nk = substr($0, 1, i - 1); det = substr($0, i + 2) } else { nk = $0; det = "" }
                         next }
        nk && !/^\[ *[0-9]+\.[0-9]+\]/ && n++ < 40 { det = det "\x1f" $0 }
        END { flush() }')
}
# gcmd SECS VERB ARGS...: the guest's next command; waits for it to end, then counts the
# checks it reported. A command that ended with a status != 0 (it failed where nothing was
# to fail) is a failed check of its own. Returns 1 if the guest did not answer in time.
gcmd() {
    local secs=$1 since line end
    shift
    since=$(glines) end=$((SECONDS + secs))
    CMDN=$((CMDN + 1))
    printf '%s\n' "$*" >"$CTL/cmd/.$CMDN" && mv "$CTL/cmd/.$CMDN" "$CTL/cmd/$CMDN"
    while :; do
        line=$(grep -a -m1 "^@@LV cmd $CMDN done " "$GLOG")
        [[ -n $line ]] && break
        if ((SECONDS >= end)) || ! kill -0 "$GUESTJOB" 2>/dev/null; then
            relay "$since"
            notok "guest: $1 answers" "no answer to '$*' in $secs s"$'\n'"$(guest_tail 25)"
            return 1
        fi
        sleep 0.2
    done
    relay "$since"
    [[ $line == *" rc=0" ]] || notok "guest: '$*' runs to its end" "${line#@@LV }"$'\n'"$(guest_tail 25)"
}
# wait_marker SINCE PATTERN SECS: MARKER = the first line after line SINCE of the guest's
# log that matches PATTERN, MARKER_AT its line number.
MARKER='' MARKER_AT=0
wait_marker() {
    local end=$((SECONDS + $3)) m
    while ((SECONDS < end)); do
        m=$(tail -n +"$(($1 + 1))" "$GLOG" 2>/dev/null | grep -a -n -m1 "$2")
        if [[ -n $m ]]; then
            MARKER=${m#*:} MARKER_AT=$(($1 + ${m%%:*}))
            return 0
        fi
        kill -0 "$GUESTJOB" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# ================================================================ 1 setup ====
step_begin "1 setup: a thin lvol on a file store, exported; the guest connects"
truncate -s "${POOL_MIB}M" "$WORK/pool1.img"
daemon_start || fatal "ballastd starts" "$(tail -n 15 "$DLOG")"
NVMF_PORT=$(free_port)
NVMF_NQN=$NQN
{
    rpc_ok "bdev_uring_create D1 over a sparse ${POOL_MIB} MiB file" brpc bdev_uring_create "$WORK/pool1.img" D1 4096 &&
        rpc_ok "rpc.py bdev_lvol_create_lvstore D1 lvs1 -c $CLUSTER" srpc bdev_lvol_create_lvstore D1 lvs1 -c "$CLUSTER" &&
        rpc_ok "rpc.py bdev_lvol_create -l lvs1 -t vol1 $VOL_MIB" srpc bdev_lvol_create -l lvs1 -t vol1 "$VOL_MIB" &&
        VOL1=$OUT &&
        brpc nvmf_create_transport -t TCP &&
        brpc nvmf_create_subsystem "$NQN" -a -s BLLVOL0001 &&
        rpc_ok "rpc.py nvmf_subsystem_add_ns -n 1 (vol1)" srpc nvmf_subsystem_add_ns -n 1 "$NQN" "$VOL1" &&
        brpc nvmf_subsystem_add_listener "$NQN" -t tcp -a 127.0.0.1 -s "$NVMF_PORT" &&
        wait_port "$NVMF_PORT" 10
} || fatal "vol1 exported as namespace 1 of $NQN on 127.0.0.1:$NVMF_PORT" "$ERR"
note "vol1 = $VOL1, listening on 127.0.0.1:$NVMF_PORT"

CTL_PORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$CTL" "$CTL_PORT" >"$LOGDIR/ctl.log" 2>&1 &
CTLPID=$!
wait_port "$CTL_PORT" 10 || fatal "control channel on 127.0.0.1:$CTL_PORT" "$(cat "$LOGDIR/ctl.log")"
cat ci/guest/lib-ballast.sh ci/guest/ballast-lvol.sh >"$LOGDIR/guest.in.sh"
(
    NVMF_GUEST_CTL_PORT=$CTL_PORT
    VM_QEMU_ARGS="-pidfile $QEMU_PIDFILE"
    _interop_run "$LOGDIR/guest.in.sh" guest
    exit "$GUEST_RC"
) &
GUESTJOB=$!
if wait_marker 0 '^@@LV \(ready\|connect-failed\)' 180 && [[ $MARKER == *ready* ]]; then
    ok "guest connected ($(grep -a -m1 '^connected ' "$GLOG"); ${MARKER#@@LV ready })"
else
    fatal "guest connects" "$(guest_tail 30)"
fi

# ============================================================= 2 snapshot ====
step_begin "2 snapshot: ext4 frozen, snapshot, clone exported and mounted"
gcmd 180 fs "$VOL1"
gcmd 60 freeze
rpc_ok "rpc.py bdev_lvol_snapshot lvs1/vol1 snap1 (file system frozen)" srpc bdev_lvol_snapshot lvs1/vol1 snap1
gcmd 60 thaw
if rpc_ok "rpc.py bdev_lvol_clone lvs1/snap1 clone1" srpc bdev_lvol_clone lvs1/snap1 clone1; then
    CLONE1=$OUT
    if rpc_ok "rpc.py nvmf_subsystem_add_ns -n 2 (clone1, the host connected)" srpc nvmf_subsystem_add_ns -n 2 "$NQN" "$CLONE1"; then
        gcmd 180 clone "$CLONE1"
    fi
fi
if srpc bdev_lvol_get_lvols -l lvs1 && why=$(pyj '(lambda l: l["snap1"]["is_snapshot"] and l["vol1"]["is_clone"]
    and l["vol1"]["is_thin_provisioned"] and l["clone1"]["is_clone"] or sys.exit("not so: " + json.dumps(d)))({l["name"]: l for l in d})' 2>&1); then
    ok "rpc.py bdev_lvol_get_lvols: snap1 a snapshot, vol1 and clone1 its clones"
else
    notok "rpc.py bdev_lvol_get_lvols: snap1 a snapshot, vol1 and clone1 its clones" "${why:-$ERR}"
fi

# =============================================================== 3 resize ====
step_begin "3 resize: vol1 grows while mounted"
if rpc_ok "bdev_lvol_resize lvs1/vol1 $GROWN_MIB (mounted in the guest)" brpc bdev_lvol_resize lvs1/vol1 "$GROWN_MIB"; then
    b=$(bdev_bytes "$VOL1")
    if [[ $b == $((GROWN_MIB * MIB)) ]]; then ok "bdev_get_bdevs: vol1 is $GROWN_MIB MiB"; else
        notok "bdev_get_bdevs: vol1 is $GROWN_MIB MiB" "${b:-$ERR} bytes"; fi
    gcmd 180 grow $((GROWN_MIB * MIB))
fi

# ================================================================= 4 full ====
step_begin "4 full: a thin lvol larger than its pool is written until the pool is full"
truncate -s "${SMALL_MIB}M" "$WORK/pool2.img"
if {
    rpc_ok "bdev_uring_create D2 over a sparse ${SMALL_MIB} MiB file" brpc bdev_uring_create "$WORK/pool2.img" D2 4096 &&
        rpc_ok "bdev_lvol_create_lvstore D2 lvs2 -c $CLUSTER" brpc bdev_lvol_create_lvstore D2 lvs2 -c "$CLUSTER" &&
        rpc_ok "bdev_lvol_create -l lvs2 -t big $BIG_MIB (thin, larger than the pool)" brpc bdev_lvol_create -l lvs2 -t big "$BIG_MIB" &&
        BIG=$OUT &&
        rpc_ok "bdev_lvol_create -l lvs2 nb $THICK_MIB (thick)" brpc bdev_lvol_create -l lvs2 nb "$THICK_MIB" &&
        NB=$OUT &&
        srpc nvmf_subsystem_add_ns -n 3 "$NQN" "$BIG" && srpc nvmf_subsystem_add_ns -n 4 "$NQN" "$NB"
}; then
    srpc bdev_lvol_get_lvstores -l lvs2 && note "lvs2 before: $(pyj '"%d of %d clusters free" % (d[0]["free_clusters"], d[0]["total_data_clusters"])')"
    gcmd 600 fill "$BIG" "$NB"
    if "$BALLAST_RPC" -s "$SOCK" -t 5 spdk_get_version >/dev/null 2>&1 && kill -0 "$DPID" 2>/dev/null; then
        ok "the daemon still answers RPC"
    else
        notok "the daemon still answers RPC" "$(tail -n 10 "$DLOG")"
    fi
    if srpc bdev_lvol_get_lvstores -l lvs2 && [[ $(pyj 'd[0]["free_clusters"]') == 0 ]]; then
        ok "rpc.py bdev_lvol_get_lvstores: lvs2 has no free cluster left"
    else
        notok "rpc.py bdev_lvol_get_lvstores: lvs2 has no free cluster left" "${ERR:-$OUT}"
    fi
    check_store "bdev_lvol_check_lvstore D2 (the full store): consistent" D2
    check_store "bdev_lvol_check_lvstore D1: consistent" D1
else
    notok "store 2 and its lvols exported as namespaces 3 and 4" "$ERR"
fi

# ============================================================== 5 kill -9 ====
step_begin "5 kill -9: the daemon killed mid-write, restarted from its saved config"
LOADV=
rpc_ok "rpc.py bdev_lvol_create -l lvs1 -t load $LOAD_MIB" srpc bdev_lvol_create -l lvs1 -t load "$LOAD_MIB" &&
    LOADV=$OUT && srpc nvmf_subsystem_add_ns -n 5 "$NQN" "$LOADV" || LOADV=
if [[ -n $LOADV ]] && rpc_ok "save_config" brpc save_config -o "$LOGDIR/saved.json"; then
    before=$(glines)
    gcmd 60 load "$LOADV" "$REGION_MIB" "$LOAD_BS"
    if wait_marker "$before" '^@@LV run done .* rc=0' 120; then
        note "load running (${MARKER#@@LV })"
        # mid-write: the next run (on a region not written yet) has done at least 1/8 of its
        # writes, not all (the first run's writes are all done: it is verifying or over)
        w0=$(write_ops "$LOADV") w=$w0
        wait_marker "$MARKER_AT" '^@@LV run start' 60
        run=${MARKER#@@LV run start }
        end=$((SECONDS + 120))
        while ((SECONDS < end)); do
            w=$(write_ops "$LOADV") || w=$w0
            ((w - w0 >= RUN_WRITES / 8)) && break
            sleep 0.1
        done
        note "kill -9 ballastd (pid $DPID) during the run on $run, after $((w - w0)) of its $RUN_WRITES writes"
        since_kill=$(glines) t_kill=$SECONDS
        daemon_kill
        if ((w - w0 >= RUN_WRITES / 8 && w - w0 < RUN_WRITES)); then
            ok "ballastd killed -9 mid-write ($((w - w0)) of the run's $RUN_WRITES writes done)"
        else
            notok "ballastd killed -9 mid-write" "$((w - w0)) of the run's $RUN_WRITES writes done"
        fi
        if daemon_start "$LOGDIR/saved.json" && wait_port "$NVMF_PORT" 20; then
            ok "ballastd restarted with -c saved.json, listening on 127.0.0.1:$NVMF_PORT again ($((SECONDS - t_kill)) s after the kill)"
        else
            fatal "ballastd restarts with -c saved.json" "$(tail -n 15 "$DLOG")"
        fi
        want="clone1 lvs1 load lvs1 snap1 lvs1 vol1 lvs1 big lvs2 nb lvs2"
        if brpc bdev_lvol_get_lvols && got=$(pyj '" ".join("%s %s" % (l["name"], l["lvs"]["name"]) for l in sorted(d, key=lambda l: (l["lvs"]["name"], l["name"])))') &&
            [[ $got == "$want" ]]; then
            ok "bdev_lvol_get_lvols after the restart: both stores' lvols came back by examine"
        else
            notok "bdev_lvol_get_lvols after the restart: both stores' lvols came back by examine" "got '${got:-$ERR}', want '$want'"
        fi
        sizes="$(bdev_bytes "$VOL1") $(bdev_bytes "$BIG") $(bdev_bytes "$LOADV")"
        want="$((GROWN_MIB * MIB)) $((BIG_MIB * MIB)) $((LOAD_MIB * MIB))"
        if [[ $sizes == "$want" ]]; then ok "vol1 (resized), big and load have their sizes after the restart"; else
            notok "vol1 (resized), big and load have their sizes after the restart" "$sizes, want $want"; fi
        if brpc nvmf_get_subsystems && got=$(pyj '" ".join("%d=%s" % (n["nsid"], n["bdev_name"]) for s in d if s["nqn"] == "'"$NQN"'" for n in sorted(s["namespaces"], key=lambda n: n["nsid"]))') &&
            [[ $got == "1=$VOL1 2=$CLONE1 3=$BIG 4=$NB 5=$LOADV" ]]; then
            ok "nvmf_get_subsystems after the restart: namespaces 1-5 on the same lvols"
        else
            notok "nvmf_get_subsystems after the restart: namespaces 1-5 on the same lvols" "${got:-$ERR}"
        fi
        if wait_marker "$since_kill" '^@@LV run done' 180; then
            if [[ $MARKER == *" rc=0 "* ]]; then
                ok "the guest reconnected; the fio run that spanned the kill completed and verified (${MARKER#@@LV run done }, $((SECONDS - t_kill)) s after the kill)"
            else
                notok "the fio run that spanned the kill completes and verifies" "$MARKER"$'\n'"$(guest_tail 20)"
            fi
        else
            notok "the guest reconnects and the fio run that spanned the kill completes" "$(guest_tail 25)"
        fi
        line=$(sed -n '/^---- .* ballastd .* -c /,$p' "$DLOG" | grep -a -m1 'controller created')
        if [[ -n $line ]]; then ok "the guest's controller connected to the restarted daemon (${line##*INFO })"; else
            notok "the guest's controller connects to the restarted daemon" "no 'controller created' in $DLOG since the restart"; fi
    else
        notok "the guest's fio load runs" "$(guest_tail 25)"
    fi
    gcmd 180 stop
    gcmd 300 verify
    gcmd 120 files
    check_store "bdev_lvol_check_lvstore D1 after kill -9 and the restart: consistent" D1
    check_store "bdev_lvol_check_lvstore D2 after kill -9 and the restart: consistent" D2
else
    notok "lvol 'load' exported as namespace 5 and the config saved" "$ERR"
fi

# ================================================================== the end ===
step_begin "end: the guest leaves, the daemon stops"
if gcmd 180 exit; then
    wait "$GUESTJOB"
    grc=$?
    GUESTJOB=
    if ((grc == 0)); then ok "guest session ends with status 0"; else notok "guest session ends with status 0" "status $grc"$'\n'"$(guest_tail 20)"; fi
fi
if [[ -n $DPID ]]; then
    kill -TERM "$DPID" 2>/dev/null
    for ((i = 0; i < 150; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$DPID" 2>/dev/null; then
        notok "ballastd exits within 15 s of SIGTERM" "$(tail -n 5 "$DLOG")"
    else
        wait "$DPID"
        rc=$?
        if ((rc == 0)); then ok "ballastd exits 0 on SIGTERM"; else notok "ballastd exits 0 on SIGTERM" "status $rc"$'\n'"$(tail -n 5 "$DLOG")"; fi
    fi
    DPID=
fi
if grep -aq panicked "$DLOG"; then notok "ballastd never panicked" "$(grep -a -A3 panicked "$DLOG" | head -n 12)"; else ok "ballastd never panicked"; fi
summary
