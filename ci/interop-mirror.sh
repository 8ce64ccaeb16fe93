#!/usr/bin/env bash
# ci/interop-mirror.sh -- ballast's replicated volume (the raid1 "mirror" bdev, issue 19)
# across nodes on one machine, with real faults, while the Linux kernel initiator in a QEMU
# guest writes and verifies (fio, crc32c) through it the whole time.
#
# Topology (ci/lib-netns.sh; removed on exit, also on failure):
#   replica nodes   network namespaces blmir-r1, blmir-r2, blmir-r3, each a veth pair to the
#                   root namespace (root side 10.251.N.1/30, node side 10.251.N.2/30). In each,
#                   a ballastd exporting one uring bdev over a sparse 128 MiB file as namespace
#                   1 of nqn.2026-11.io.ballast:mirror-ci-rN on 10.251.N.2:4420.
#   mirror node     a ballastd in the root namespace: bdev_nvme_attach_controller to R1 and R2
#                   (ctrlr_loss_timeout_sec 3, reconnect_delay_sec 1), bdev_raid_create mirror0
#                   raid1 over R1n1 R2n1, exported on 127.0.0.1:<free port> (the guest's
#                   10.0.2.2). r3 is the blank replacement of step c.
#   guest           ONE long session: connects with ctrl-loss-tmo 60 s, then does what the host
#                   asks over a tiny HTTP control channel (python http.server on 127.0.0.1:
#                   the guest polls GET /cmd/N): "load R" rewrites 8 MiB region R of the volume
#                   over and over (fio randwrite, every block once per run, a new seed per run,
#                   crc32c verify of the whole run at its end); "stop" ends the load; "verify"
#                   re-reads every region with fio --verify_only against the last run that
#                   completed there. The guest prints @@MIR markers; the host reads them from
#                   the guest's console log.
# Steps (a fault while the load runs, then: the load had 0 errors, a verify pass, and the
# in-sync children's backing files are identical past the first MiB -- the superblock area,
# which differs per member; compared with the load stopped):
#   base   region 0 written and verified with both members in sync.
#   a      kill -9 r1's ballastd -> R1n1 faulted (fio goes on); r1 restarted from its saved
#          config -> the mirror re-adds it by itself and rebuilds it partially
#          (bdev_raid_get_bdevs: last_rebuild {target, kind "partial", bytes_copied much less
#          than the volume, outcome}); all in sync.
#   b      r2's link cut (root side of the veth down) until R2n1 is faulted and for >= 7 s, then
#          restored -> faulted within 20 s (keep-alive + ctrl-loss timeout, well before the
#          guest's 30 s I/O timeout), then re-added by itself and partially rebuilt as in a.
#   c      r1 killed again (a dead node), bdev_raid_remove_base_bdev R1n1, r3 (blank) attached,
#          bdev_raid_add_base_bdev mirror0 R3n1 -> a full rebuild whose `process` (type rebuild,
#          target, progress, kind full, bytes_to_copy, bytes_copied, eta_s) is seen while it runs
#          (capped meanwhile with bdev_raid_set_options process_max_bandwidth_mb_sec so that it
#          lasts a few seconds); then in sync.
#   d      save_config; a member's node killed (faulted), then the mirror node's own ballastd
#          killed -9 mid-write; the member's node restarted, then the mirror node restarted with
#          `ballastd -c` the saved config on the same port -> reassembled from the superblocks
#          with that member not in sync, the guest reconnects, the fio run that spanned the
#          kill completes and verifies, the member comes back in sync with a partial rebuild
#          (by itself within HEAL_SECS, else after bdev_raid_add_base_bdev: either passes).
#   e      one node of two lost -> still serving (a fio run completes); the last lost -> the
#          guest's I/O fails, bdev_raid_get_bdevs says "offline", the daemon still answers RPC.
# When a step cannot bring a member back, its check fails and the script recovers so that the
# next step starts from a healthy mirror (lines "# recover: ..."): bdev_raid_add_base_bdev by
# hand, and if that does not do it (e.g. the member's controller gave up for good), a restart
# of the mirror node from a fresh save_config and the re-add then; the guest's load runs on
# region 14 meanwhile (checked like the others). A step that finds mirror0 offline is skipped
# (a failure).
#
# Each check prints "ok - WHAT" or "not ok - WHAT: DETAIL"; ends with "N passed, M failed",
# exit status 1 if anything failed. Skipped (exit 0, "skipped: ...") only where `ip netns`
# cannot be used (not root). ~6 min on 2 cores under TCG.
# Logs: $INTEROP_LOG_DIR/interop-mirror/ (default /tmp/ballast-interop/interop-mirror/):
#   mirror.log, r1.log..r3.log (daemons; a restart appends), rpc.log (every RPC and its
#   answer), guest.log + guest.guest.sh (the guest session), *.json (saved configs),
#   raid-*.json (bdev_raid_get_bdevs at interesting moments), ctl/ (the control channel).
# Environment: BALLASTD, BALLAST_RPC (binaries; default: cargo build --release, then
#   ${CARGO_TARGET_DIR:-target}/release/), HEAL_SECS (20: how long to wait for a member to come
#   back by itself), MIRROR_IO_QUEUES (num_io_queues of the mirror node's controllers; unset:
#   bdev_nvme_attach_controller's default, one per reactor), REBUILD_CAP_MIB (25: the rebuild
#   bandwidth cap during step c's full rebuild), MIRROR_LOG / REPLICA_LOG (the daemons'
#   BALLAST_LOG), and lib-interop.sh's.
# Variables such as NVMF_GUEST_* and VM_* are read by lib-interop.sh (compgen).
# shellcheck disable=SC2034
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. ci/lib-interop.sh
. ci/lib-netns.sh
t0=$SECONDS

# ------------------------------------------------------------------ counters --
# ok / notok (ci/lib-interop.sh) count the checks: PASSED, FAILED, FAILED_NAMES.
check() { # NAME DETAIL-IF-FAILED CONDITION-STATUS [INFO-IF-PASSED]: the name stays the same
    if (($3 == 0)); then ok "$1${4:+ ($4)}"; else notok "$1" "$2"; fi
}
note() { echo "# $(date +%T) $*"; }
summary() {
    ((FAILED == 0)) || printf 'failed: %s\n' "${FAILED_NAMES[@]}" | sed '2,$s/^failed: /        /'
    echo "# interop-mirror: $((SECONDS - t0)) s, logs in $LOGDIR"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

if ! netns_usable; then
    echo "skipped: ip netns is not usable here (needs root and iproute2): interop-mirror not run"
    exit 0
fi

# ------------------------------------------------------------------ settings --
LOGDIR=$INTEROP_LOG_DIR/interop-mirror
INTEROP_TEST=interop-mirror
WORK=/var/tmp/ballast-interop-mirror
CTL=$LOGDIR/ctl
NODES=(r1 r2 r3)              # replica nodes: netns blmir-rN, 10.251.N.2
REPLICA_MIB=128
REGION_MIB=8                  # the guest's load regions (16 fit in the volume)
BS=4096
HEAL_SECS=${HEAL_SECS:-20}
MIRROR_IO_QUEUES=${MIRROR_IO_QUEUES:-}
REBUILD_CAP_MIB=${REBUILD_CAP_MIB:-25}
NQN_BASE=nqn.2026-11.io.ballast:mirror-ci
MIRROR_LOG=${MIRROR_LOG:-info,ballast_nvme::remote=debug,ballast_engine::backend::mirror=debug}
REPLICA_LOG=${REPLICA_LOG:-info,ballast_nvme::target::tcp=debug}
MNQN=$NQN_BASE
MSOCK=$WORK/mirror.sock
MLOG=$LOGDIR/mirror.log
RPCLOG=$LOGDIR/rpc.log
VM_TIMEOUT=720                # the one guest session
rm -rf "$LOGDIR" "$WORK"
mkdir -p "$LOGDIR" "$WORK" "$CTL/cmd"
: >"$RPCLOG"

# ------------------------------------------------------------------ cleanup ---
declare -A RPID=()            # replica node -> ballastd pid
MPID='' CTLPID='' GUESTJOB='' QEMU_PIDFILE=$WORK/qemu.pid
cleanup() {
    local n p
    if [[ -s $QEMU_PIDFILE ]]; then kill -KILL "$(cat "$QEMU_PIDFILE")" 2>/dev/null || true; fi
    if [[ -n $GUESTJOB ]]; then kill "$GUESTJOB" 2>/dev/null || true; wait "$GUESTJOB" 2>/dev/null || true; fi
    if [[ -n $MPID ]]; then kill -KILL "$MPID" 2>/dev/null || true; wait "$MPID" 2>/dev/null || true; fi
    for n in "${!RPID[@]}"; do
        p=${RPID[$n]}
        if [[ -n $p ]]; then kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
    done
    if [[ -n $CTLPID ]]; then kill "$CTLPID" 2>/dev/null || true; wait "$CTLPID" 2>/dev/null || true; fi
    netns_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -------------------------------------------------------------------- build ---
if [[ -z ${BALLASTD:-} || -z ${BALLAST_RPC:-} ]]; then
    if ! cargo build --release -q --bin ballastd --bin ballast-rpc 2>"$LOGDIR/build.log"; then
        notok "build ballastd and ballast-rpc" "$(tail -n 20 "$LOGDIR/build.log")"
        summary; exit 1
    fi
    BALLASTD=${BALLASTD:-${CARGO_TARGET_DIR:-target}/release/ballastd}
    BALLAST_RPC=${BALLAST_RPC:-${CARGO_TARGET_DIR:-target}/release/ballast-rpc}
fi
BALLASTD=$(readlink -f "$BALLASTD") BALLAST_RPC=$(readlink -f "$BALLAST_RPC")

if ! interop_setup 2>"$LOGDIR/setup.err"; then
    notok "guest harness setup" "$(tail -n 20 "$LOGDIR/setup.err")"
    summary; exit 1
fi

# --------------------------------------------------------------------- RPC ----
# rpc SOCK METHOD [PARAMS_JSON]: ballast-rpc's raw mode; the result on stdout, the error on
# stderr (status != 0). Everything goes to rpc.log.
# Called in $(...) too: rpc_err prints the last error from a file.
RPC_ERR=
rpc_err() { cat "$WORK/rpc.err" 2>/dev/null; }
rpc() {
    local sock=$1 method=$2 params=${3:-} out rc=0 err
    err=$(mktemp)
    if [[ -n $params ]]; then
        out=$("$BALLAST_RPC" -s "$sock" -t 15 call "$method" "$params" 2>"$err") || rc=$?
    else
        out=$("$BALLAST_RPC" -s "$sock" -t 15 call "$method" 2>"$err") || rc=$?
    fi
    RPC_ERR=$(cat "$err")
    rm -f "$err"
    {
        echo "\$ [$(date +%T.%3N) ${sock##*/}] $method ${params}"
        if ((rc)); then echo "ERROR (rc=$rc): $RPC_ERR"; else printf '%s\n' "$out" | head -c 4000; echo; fi
    } >>"$RPCLOG"
    if ((rc)); then printf '%s\n' "$RPC_ERR" | tee "$WORK/rpc.err" >&2; return "$rc"; fi
    printf '%s\n' "$out"
}
mrpc() { rpc "$MSOCK" "$@"; }
nsock() { echo "$WORK/$1.sock"; }

# jpy EXPR: evaluates the Python expression EXPR on the JSON on stdin (`d`), prints the result
# (JSON for dicts/lists, plain otherwise); prints nothing and fails on bad input.
jpy() {
    python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    r = eval(sys.argv[1])
except Exception as e:
    print("jpy: %s" % e, file=sys.stderr); sys.exit(1)
print(json.dumps(r) if isinstance(r, (dict, list)) else r)
' "$1"
}

# rq EXPR: one bdev_raid_get_bdevs on the mirror node in one python process (the polls run on a
# machine busy with TCG: one process per poll); EXPR sees `r`, mirror0's entry (None if it is
# not listed). Prints the result (JSON for dicts/lists); fails if the RPC fails (why on stderr).
rq() {
    python3 "$WORK/rq.py" "$MSOCK" "$1"
}
cat >"$WORK/rq.py" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "bdev_raid_get_bdevs",
                          "params": {"category": "all"}}).encode())
    dec, buf = json.JSONDecoder(), b""
    while True:
        c = s.recv(1 << 16)
        if not c:
            sys.exit("connection closed")
        buf += c
        try:
            resp, _ = dec.raw_decode(buf.decode())
            break
        except ValueError:
            continue
except OSError as e:
    sys.exit("rpc: %s" % e)
if "error" in resp:
    sys.exit("rpc error: %s" % resp["error"])
r = next((m for m in resp["result"] if m["name"] == "mirror0"), None)
try:
    v = eval(sys.argv[2])
except Exception as e:
    sys.exit("rq: %s: %s" % (type(e).__name__, e))
print(json.dumps(v) if isinstance(v, (dict, list)) else v)
PY

# raid_json: mirror0's entry of bdev_raid_get_bdevs (an object), or fails.
raid_json() { rq 'r if r else sys.exit("mirror0 not listed")' 2>"$WORK/rpc.err"; }
# raid_brief: one line: state, generation, members and their states, process, last rebuild.
raid_brief() {
    rq '"%s gen=%s members=%s%s%s" % (r["state"], r.get("generation"), " ".join("%s:%s" % (b["name"] or "(empty)", b.get("state")) for b in r["base_bdevs_list"]), (" process=%s" % json.dumps(r["process"])) if r.get("process") else "", (" last_rebuild=%s" % json.dumps(r["last_rebuild"])) if r.get("last_rebuild") else "") if r else "mirror0 not listed"' 2>&1
}
snap() { raid_json >"$LOGDIR/raid-$1.json" 2>/dev/null || true; }
member_state() { # NAME: in_sync | faulted | rebuilding | absent | ? (RPC failed)
    rq 'next((b.get("state", "?") for b in r["base_bdevs_list"] if b["name"] == "'"$1"'"), "absent") if r else "absent"' 2>/dev/null || echo "?"
}
members() { # the member names, space-separated (an empty slot has none)
    rq '" ".join(b["name"] for b in r["base_bdevs_list"] if b.get("name"))' 2>/dev/null
}
all_in_sync() {
    [[ $(rq 'bool(r) and r["state"] == "online" and all(b.get("state") == "in_sync" for b in r["base_bdevs_list"])' 2>/dev/null) == True ]]
}
# wait_state NAME STATE SECS: polls until then; WAITED is the time it took (s, one decimal).
WAITED=
wait_state() {
    local name=$1 want=$2 end=$((SECONDS + $3)) start=$EPOCHREALTIME
    while ((SECONDS < end)); do
        if [[ $(member_state "$name") == "$want" ]]; then
            WAITED=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
            return 0
        fi
        sleep 0.2
    done
    WAITED=$3
    return 1
}

# ------------------------------------------------------------ replica nodes ---
node_idx() { echo "${1#r}"; }
node_ns() { echo "blmir-$1"; }
node_addr() { netns_node_addr "$(node_idx "$1")"; }
node_nqn() { echo "$NQN_BASE-$1"; }
node_ctrl() { echo "R$(node_idx "$1")"; }   # the mirror node's controller name for it
node_bdev() { echo "R$(node_idx "$1")n1"; }  # ... and the bdev of its namespace 1
node_of_bdev() { local b=${1#R}; echo "r${b%n1}"; }

# wait_rpc SOCK SECS: the daemon answers spdk_get_version.
wait_rpc() {
    local end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        [[ -S $1 ]] && "$BALLAST_RPC" -s "$1" -t 2 spdk_get_version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
# wait_tcp ADDR PORT SECS: something accepts TCP connections there (from the root namespace).
wait_tcp() {
    local end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# node_start N fresh|config: ballastd in N's namespace. fresh: no default subsystem, then the
# uring bdev over N's file (created sparse), the subsystem, namespace 1, the listener; its
# save_config goes to N.json. config: `ballastd -c N.json` (the same file, the same listener). Not in $(...): it
# records the pid (RPID); NODE_ERR says why it failed.
node_start() {
    NODE_ERR=
    local n=$1 how=$2 sock ns addr nqn args
    sock=$(nsock "$n") ns=$(node_ns "$n") addr=$(node_addr "$n") nqn=$(node_nqn "$n")
    rm -f "$sock"
    if [[ $how == fresh ]]; then args=(--default-size-mib 0); else args=(-c "$LOGDIR/$n.json"); fi
    echo "---- $(date +%T) ballastd ${args[*]}" >>"$LOGDIR/$n.log"
    BALLAST_LOG=$REPLICA_LOG ip netns exec "$ns" "$BALLASTD" -m 0x1 -r "$sock" "${args[@]}" >>"$LOGDIR/$n.log" 2>&1 &
    RPID[$n]=$!
    wait_rpc "$sock" 15 || { NODE_ERR="$n: no RPC answer on $sock"; return 1; }
    if [[ $how == fresh ]]; then
        truncate -s "${REPLICA_MIB}M" "$WORK/$n.img" || return 1
        if ! { rpc "$sock" bdev_uring_create "{\"filename\": \"$WORK/$n.img\", \"name\": \"D$n\", \"block_size\": $BS}" >/dev/null &&
            rpc "$sock" nvmf_create_transport '{"trtype": "TCP"}' >/dev/null &&
            rpc "$sock" nvmf_create_subsystem "{\"nqn\": \"$nqn\", \"allow_any_host\": true}" >/dev/null &&
            rpc "$sock" nvmf_subsystem_add_ns "{\"nqn\": \"$nqn\", \"namespace\": {\"bdev_name\": \"D$n\", \"nsid\": 1}}" >/dev/null &&
            rpc "$sock" nvmf_subsystem_add_listener "{\"nqn\": \"$nqn\", \"listen_address\": {\"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"$addr\", \"trsvcid\": \"4420\"}}" >/dev/null; }; then
            NODE_ERR="$n: configuring it failed: $RPC_ERR"; return 1
        fi
        rpc "$sock" save_config >"$LOGDIR/$n.json" || { NODE_ERR="$n: save_config failed: $RPC_ERR"; return 1; }
    fi
    wait_tcp "$addr" 4420 10 || { NODE_ERR="$n: nothing listens on $addr:4420"; return 1; }
}
node_kill() { # N: kill -9 its ballastd
    local p=${RPID[$1]:-}
    [[ -n $p ]] || return 0
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    RPID[$1]=
    echo "---- $(date +%T) killed -9" >>"$LOGDIR/$1.log"
}
node_alive() { [[ -n ${RPID[$1]:-} ]] && kill -0 "${RPID[$1]}" 2>/dev/null; }

# attach_json N [QUEUES]: bdev_nvme_attach_controller's params for node N.
attach_json() {
    local q=${2:-}
    echo "{\"name\": \"$(node_ctrl "$1")\", \"trtype\": \"tcp\", \"adrfam\": \"ipv4\", \"traddr\": \"$(node_addr "$1")\", \"trsvcid\": \"4420\", \"subnqn\": \"$(node_nqn "$1")\", \"ctrlr_loss_timeout_sec\": 3, \"reconnect_delay_sec\": 1${q:+, \"num_io_queues\": $q}}"
}

# ------------------------------------------------------------- mirror node ----
mirror_start() { # [CONFIG]: ballastd on 2 reactors; with CONFIG: -c CONFIG
    local args=(--default-size-mib 0)
    [[ -n ${1:-} ]] && args=(-c "$1")
    rm -f "$MSOCK"
    echo "---- $(date +%T) ballastd ${args[*]}" >>"$MLOG"
    BALLAST_LOG=$MIRROR_LOG "$BALLASTD" -m 0x3 -r "$MSOCK" "${args[@]}" >>"$MLOG" 2>&1 &
    MPID=$!
    wait_rpc "$MSOCK" 30
}
mirror_kill() {
    [[ -n $MPID ]] || return 0
    kill -KILL "$MPID" 2>/dev/null || true
    wait "$MPID" 2>/dev/null || true
    MPID=
    echo "---- $(date +%T) killed -9" >>"$MLOG"
}

# --------------------------------------------------------------- the guest ----
GUEST_SCRIPT=$LOGDIR/guest.in.sh
cat >"$GUEST_SCRIPT" <<'GUEST'
# The guest side of ci/interop-mirror.sh (busybox ash). Commands come from the host's
# control channel (GET /cmd/N); every step is reported as an "@@MIR ..." console line.
set +e
CTL=http://10.0.2.2:$NVMF_GUEST_CTL_PORT
REG=$NVMF_GUEST_REGION_MIB
mark() { echo "@@MIR $*"; }
step "connect"
nvmf_connect -l 60 -c 1 || { mark "connect-failed"; exit 1; }
mark "ready dev=$NVMF_DEV"
# fio_run write|verify REGION SEED: one pass over the region, every 4 KiB block once.
fio_run() {
    local extra=--do_verify=1
    [ "$1" = verify ] && extra=--verify_only
    fio --name="r$2" --filename="$NVMF_DEV" --ioengine=libaio --direct=1 --rw=randwrite \
        --bs=4k --iodepth=16 --offset="$(($2 * REG))m" --size="${REG}m" --randrepeat=1 \
        --randseed="$3" --verify=crc32c --verify_fatal=1 --verify_dump=0 $extra \
        --output=/tmp/fio.out
}
fio_err() { grep -iE 'err=|error|verify|bad|mismatch' /tmp/fio.out | head -n 6 | sed 's/^/    fio| /'; }
# load REGION: fio_run write over and over, a new seed each time, until /tmp/stop exists.
load() {
    local r=$1 i=0 errs=0 s
    while [ ! -e /tmp/stop ]; do
        i=$((i + 1)) s=$((r * 1000 + i))
        if fio_run write "$r" "$s" >/dev/null 2>&1; then
            echo "$s" >"/tmp/good.$r"; rm -f "/tmp/dirty.$r"
            mark "run region=$r seed=$s rc=0"
        else
            errs=$((errs + 1)); touch "/tmp/dirty.$r"
            mark "run region=$r seed=$s rc=1"
            fio_err
            sleep 0.5
        fi
    done
    echo "$i $errs" >/tmp/load.res
}
n=1 LOADPID=
while :; do
    cmd=$(wget -q -O - "$CTL/cmd/$n" 2>/dev/null) || { sleep 0.3; continue; }
    mark "cmd $n start $cmd"
    set -- $cmd
    res=
    case $1 in
    load)
        rm -f /tmp/stop /tmp/load.res
        load "$2" &
        LOADPID=$! res="rc=0" ;;
    stop)
        touch /tmp/stop
        [ -n "$LOADPID" ] && wait "$LOADPID"
        LOADPID=
        read -r runs errs </tmp/load.res
        res="rc=0 runs=$runs errors=$errs" ;;
    verify)
        bad=0 done_=""
        for f in /tmp/good.*; do
            [ -e "$f" ] || continue
            r=${f#/tmp/good.}
            if [ -e "/tmp/dirty.$r" ]; then mark "verify region=$r skipped (its last run failed)"; continue; fi
            s=$(cat "$f")
            if fio_run verify "$r" "$s" >/dev/null 2>&1; then mark "verify region=$r seed=$s rc=0"
            else bad=$((bad + 1)); mark "verify region=$r seed=$s rc=1"; fio_err; fi
            done_="$done_ $r"
        done
        res="rc=$bad regions=${done_# }" ;;
    exit)
        mark "cmd $n done rc=0"
        break ;;
    *) res="rc=2 unknown command" ;;
    esac
    mark "cmd $n done $res"
    n=$((n + 1))
done
step "disconnect"
timeout 60 nvme disconnect -n "$NVMF_NQN"
mark "bye"
exit 0
GUEST

CMDN=0 CMD_RESULT=
# gcmd SECS COMMAND...: posts the next command; waits until the guest reports it done;
# CMD_RESULT is the rest of its "done" line. Fails on a timeout or a dead guest session.
gcmd() {
    local secs=$1 end=$((SECONDS + $1)) line
    shift
    CMDN=$((CMDN + 1))
    printf '%s\n' "$*" >"$CTL/cmd/.$CMDN" && mv "$CTL/cmd/.$CMDN" "$CTL/cmd/$CMDN"
    while ((SECONDS < end)); do
        line=$(grep -a "^@@MIR cmd $CMDN done " "$GUEST_LOG_FILE" 2>/dev/null | tail -n 1)
        if [[ -n $line ]]; then CMD_RESULT=${line#"@@MIR cmd $CMDN done "}; return 0; fi
        kill -0 "$GUESTJOB" 2>/dev/null || { CMD_RESULT="guest session ended"; return 1; }
        sleep 0.2
    done
    CMD_RESULT="no answer to '$*' within $secs s"
    return 1
}
glines() { wc -l <"$GUEST_LOG_FILE" 2>/dev/null || echo 0; }
# wait_run SINCE SECS [RC]: a "run" marker with status RC (0) after guest log line SINCE.
RUN_LINE=
wait_run() {
    local since=$1 end=$((SECONDS + $2)) want=${3:-0}
    while ((SECONDS < end)); do
        RUN_LINE=$(tail -n +"$((since + 1))" "$GUEST_LOG_FILE" 2>/dev/null | grep -a -m1 "^@@MIR run .* rc=$want\$")
        [[ -n $RUN_LINE ]] && return 0
        kill -0 "$GUESTJOB" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
# runs_since SINCE: "N ok, M failed" of the run markers after line SINCE.
runs_since() {
    local s=$1
    echo "$(tail -n +"$((s + 1))" "$GUEST_LOG_FILE" | grep -ac '^@@MIR run .* rc=0$') ok, $(tail -n +"$((s + 1))" "$GUEST_LOG_FILE" | grep -ac '^@@MIR run .* rc=1$') failed"
}
guest_tail() { grep -a -v '^\[ *[0-9]' "$GUEST_LOG_FILE" | tail -n "${1:-15}"; }

# load_start STEP REGION: starts the load and waits for its first run to complete (else the
# load is stopped again and it fails).
LOAD_ON=
load_start() {
    local since
    since=$(glines)
    if ! gcmd 30 load "$2"; then notok "$1: guest load on region $2 starts" "$CMD_RESULT"$'\n'"$(guest_tail)"; return 1; fi
    LOAD_ON=$2
    if ! wait_run "$since" 90; then
        notok "$1: first fio run on region $2 completes" "$(runs_since "$since")"$'\n'"$(guest_tail)"
        gcmd 180 stop && LOAD_ON=
        return 1
    fi
    note "$1: load running on region $2 ($RUN_LINE)"
}
# load_stop STEP [EXPECT_ERRORS]: stops the load; checks it had no errors (or had some).
load_stop() {
    local step=$1 expect=${2:-0} errs
    if ! gcmd 180 stop; then notok "$step: guest load stops" "$CMD_RESULT"$'\n'"$(guest_tail)"; return 1; fi
    LOAD_ON=
    errs=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$CMD_RESULT")
    [[ $errs =~ ^[0-9]+$ ]] || errs=999
    if ((expect == 0)); then
        check "$step: fio load had 0 errors" "$CMD_RESULT"$'\n'"$(grep -a -A6 '^@@MIR run .* rc=1$' "$GUEST_LOG_FILE" | tail -n 14)" "$((errs != 0))" "$CMD_RESULT"
    fi
}
# verify_all STEP: every region written so far reads back as its last completed run wrote it.
verify_all() {
    if ! gcmd 300 verify; then notok "$1: verify pass" "$CMD_RESULT"$'\n'"$(guest_tail)"; return 1; fi
    check "$1: verify pass over every region written so far" \
        "$CMD_RESULT"$'\n'"$(grep -a -A6 '^@@MIR verify .* rc=1$' "$GUEST_LOG_FILE" | tail -n 20)" \
        "$([[ $CMD_RESULT == rc=0* ]]; echo $?)" "$CMD_RESULT"
}

# compare_children STEP: with the load stopped, the in-sync members' backing files are equal
# past the first MiB (the data area; the superblock area differs per member).
compare_children() {
    local step=$1 m first='' firstn n out
    if ! all_in_sync; then notok "$step: children identical" "not all members in sync: $(raid_brief)"; return 1; fi
    for m in $(members); do
        n=$(node_of_bdev "$m")
        if [[ -z $first ]]; then first=$n firstn=$m; continue; fi
        if out=$(cmp -i 1048576 "$WORK/$first.img" "$WORK/$n.img" 2>&1); then
            ok "$step: $firstn and $m hold identical data (cmp of $first.img and $n.img past 1 MiB)"
        else
            notok "$step: $firstn and $m hold identical data" "$out"
        fi
    done
}

# check_last_rebuild STEP MEMBER KIND: bdev_raid_get_bdevs' last_rebuild names MEMBER, KIND,
# a successful outcome; a partial one copied less than a quarter of the volume.
check_last_rebuild() {
    local step=$1 m=$2 kind=$3 j why
    j=$(raid_json) || { notok "$step: last_rebuild" "bdev_raid_get_bdevs failed: $(rpc_err)"; return; }
    if why=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1]); m, kind, vol = sys.argv[2], sys.argv[3], int(sys.argv[4])
lr = d.get("last_rebuild")
if not isinstance(lr, dict): sys.exit("no last_rebuild object in bdev_raid_get_bdevs: %s" % sorted(d))
miss = {"target", "kind", "bytes_copied", "bytes_to_copy", "seconds", "outcome"} - set(lr)
if miss: sys.exit("last_rebuild lacks %s: %s" % (sorted(miss), json.dumps(lr)))
if lr["target"] != m: sys.exit("target is %s, not %s: %s" % (lr["target"], m, json.dumps(lr)))
if lr["kind"] != kind: sys.exit("kind is %s, not %s: %s" % (lr["kind"], kind, json.dumps(lr)))
if str(lr["outcome"]).lower() not in ("done", "ok", "success", "succeeded", "completed", "complete", "in_sync"):
    sys.exit("outcome is %r: %s" % (lr["outcome"], json.dumps(lr)))
if kind == "partial" and not (0 < lr["bytes_copied"] <= vol // 4):
    sys.exit("bytes_copied %s is not in (0, volume/4 = %d]: %s" % (lr["bytes_copied"], vol // 4, json.dumps(lr)))
if kind == "full" and lr["bytes_copied"] < vol:
    sys.exit("a full rebuild copied %s < the volume %d: %s" % (lr["bytes_copied"], vol, json.dumps(lr)))
print("%s rebuild of %s: %.1f of %.1f MiB copied in %ss" % (lr["kind"], m, lr["bytes_copied"] / 2**20, lr["bytes_to_copy"] / 2**20, lr["seconds"]))
' "$j" "$m" "$kind" "$VOL_BYTES" 2>&1); then
        ok "$step: last_rebuild: $why"
    else
        notok "$step: last_rebuild of $m is $kind and succeeded" "$why"
    fi
}

# wait_heal STEP MEMBER: after the member's node is back, the mirror brings it back by itself
# (HEAL_SECS) with a partial rebuild. Returns 0 if it is in sync.
wait_heal() {
    local step=$1 m=$2 st start=$SECONDS end=$((SECONDS + HEAL_SECS)) seen=''
    while ((SECONDS < end)); do
        st=$(member_state "$m")
        [[ $st == rebuilding ]] && seen=1
        [[ $st == in_sync ]] && break
        sleep 0.2
    done
    snap "$step-heal"
    if [[ $st == in_sync ]]; then
        ok "$step: $m re-added by the mirror itself and in sync $((SECONDS - start)) s after its node came back${seen:+ (seen rebuilding)}"
        check_last_rebuild "$step" "$m" partial
        return 0
    fi
    notok "$step: $m re-added by the mirror itself within ${HEAL_SECS} s of its node coming back" "still $st: $(raid_brief)"$'\n'"$(grep -a "$(node_ctrl "$(node_of_bdev "$m")")\|mirror0\|raid" "$MLOG" | tail -n 6)"
    return 1
}

# bring_back STEP MEMBER: the member (its node back) comes back in sync -- by itself within
# HEAL_SECS (self-healing), else by bdev_raid_add_base_bdev -- with a partial rebuild.
bring_back() {
    local step=$1 m=$2 st how="by itself" end=$((SECONDS + HEAL_SECS))
    while ((SECONDS < end)); do
        st=$(member_state "$m")
        [[ $st == in_sync ]] && break
        sleep 0.3
    done
    if [[ $st == faulted ]]; then
        how="after bdev_raid_add_base_bdev"
        if ! mrpc bdev_raid_add_base_bdev "{\"raid_bdev\": \"mirror0\", \"base_bdev\": \"$m\"}" >/dev/null 2>&1; then
            notok "$step: bdev_raid_add_base_bdev mirror0 $m" "$RPC_ERR"
            return 1
        fi
    fi
    [[ $st != in_sync ]] && wait_rebuild "$m" 120
    snap "$step-back"
    st=$(member_state "$m")
    if [[ $st == in_sync ]]; then
        ok "$step: $m back in sync ($how)"
        check_last_rebuild "$step" "$m" partial
    else
        notok "$step: $m back in sync ($how)" "$st: $(raid_brief)"
    fi
}

# step_ready STEP: mirror0 is online (else the step is skipped, as a failure).
step_ready() {
    local st
    st=$(rq 'r["state"]' 2>&1)
    [[ $st == online ]] && return 0
    notok "$1: skipped: mirror0 is not online" "$st: $(raid_brief)"
    return 1
}

# wait_rebuild MEMBER SECS: until MEMBER is in sync (0), or faulted with no rebuild running
# (1, the rebuild failed), or SECS.
wait_rebuild() {
    local m=$1 end=$((SECONDS + $2)) v
    sleep 0.5
    while ((SECONDS < end)); do
        v=$(rq 'next((b.get("state") for b in r["base_bdevs_list"] if b["name"] == "'"$m"'"), "absent") + ("+process" if r.get("process") else "")' 2>/dev/null)
        [[ $v == in_sync ]] && return 0
        [[ $v == faulted || $v == absent ]] && return 1
        sleep 0.3
    done
    return 1
}

# recover STEP: brings every member of mirror0 back in sync for the next step: members' nodes
# started and links up; a faulted member re-added by hand (bdev_raid_add_base_bdev: a full
# rebuild); if that fails (its controller gave up), the mirror node is restarted from a fresh
# save_config and the member re-added then. The guest's load runs on region RECOVER_REGION
# meanwhile (checked like any load), so that the mirror has its I/O channels open as in use.
RECOVER_REGION=14
recover() {
    local step=$1 m n st tries loaded='' rc=1
    all_in_sync && return 0
    for m in $(members); do
        n=$(node_of_bdev "$m")
        ip link set "$(node_ns "$n")-h" up 2>/dev/null
        if ! node_alive "$n"; then
            note "recover: starting $n again"
            node_start "$n" config || note "recover: $n did not start: $NODE_ERR"
        fi
    done
    if [[ $(rq 'r["state"]' 2>/dev/null) == online ]] && load_start "$step-recover" "$RECOVER_REGION"; then loaded=1; fi
    for tries in 1 2; do
        for m in $(members); do
            st=$(member_state "$m")
            [[ $st == rebuilding ]] && wait_rebuild "$m" 120
            st=$(member_state "$m")
            [[ $st == faulted ]] || continue
            note "recover: bdev_raid_add_base_bdev mirror0 $m (state $st)"
            if mrpc bdev_raid_add_base_bdev "{\"raid_bdev\": \"mirror0\", \"base_bdev\": \"$m\"}" >/dev/null 2>&1; then
                wait_rebuild "$m" 120 || note "recover: $m not in sync after the re-add: $(raid_brief)"
            else
                note "recover: re-add of $m refused: $RPC_ERR"
            fi
        done
        if all_in_sync; then note "recover: all in sync: $(raid_brief)"; rc=0; break; fi
        ((tries == 1)) || break
        note "recover: restarting the mirror node from a fresh save_config (state: $(raid_brief))"
        mrpc save_config >"$LOGDIR/mirror-recover-$step.json" || { note "recover: save_config failed"; break; }
        mirror_kill
        if ! mirror_start "$LOGDIR/mirror-recover-$step.json"; then
            notok "$step: recovery: the mirror node restarts from its saved config" "$(tail -n 10 "$MLOG")"
            break
        fi
        wait_port "$NVMF_PORT" 20 2>/dev/null
        note "recover: mirror node restarted: $(raid_brief)"
        # the guest reconnects: wait for its load to run again before re-adding
        if [[ -n $loaded ]] && ! wait_run "$(glines)" 90; then note "recover: the guest's load did not resume"; fi
    done
    ((rc == 0)) || notok "$step: recovery: every member in sync before the next step" "$(raid_brief)"
    [[ -n $loaded && -n $LOAD_ON ]] && load_stop "$step-recover"
    return "$rc"
}

# ==================================================================== setup ====
note "nodes: ${NODES[*]} (netns blmir-rN, 10.251.N.2), mirror node in the root namespace"
setup_ok=1
for n in "${NODES[@]}"; do
    if ! netns_node_add "$(node_ns "$n")" "$(node_idx "$n")" 2>"$LOGDIR/netns-$n.err"; then
        notok "node $n: network namespace and veth" "$(cat "$LOGDIR/netns-$n.err")"; setup_ok=0; break
    fi
    if node_start "$n" fresh; then
        ok "node $n: ballastd in netns $(node_ns "$n") exports $WORK/$n.img as $(node_nqn "$n") ns 1 on $(node_addr "$n"):4420"
    else
        notok "node $n: ballastd exports its file" "$NODE_ERR"$'\n'"$(tail -n 10 "$LOGDIR/$n.log")"; setup_ok=0; break
    fi
done
if ((setup_ok)) && mirror_start; then
    ok "mirror node: ballastd up (no default subsystem)"
else
    ((setup_ok)) && notok "mirror node: ballastd up" "$(tail -n 10 "$MLOG")"
    summary; exit 1
fi

# --- mirror0
setup_ok=1
for n in r1 r2; do
    if ! out=$(mrpc bdev_nvme_attach_controller "$(attach_json "$n" "$MIRROR_IO_QUEUES")" 2>&1) || [[ $out != *"$(node_bdev "$n")"* ]]; then
        notok "mirror node attaches $n ($(node_ctrl "$n"))" "$out"; setup_ok=0
    fi
done
if ((setup_ok)) && out=$(mrpc bdev_raid_create '{"name": "mirror0", "raid_level": "raid1", "base_bdevs": ["R1n1", "R2n1"]}' 2>&1); then
    ok "bdev_raid_create mirror0 raid1 over R1n1 R2n1"
else
    ((setup_ok)) && notok "bdev_raid_create mirror0 raid1 over R1n1 R2n1" "$out"
    summary; exit 1
fi
snap created
b=$(mrpc bdev_get_bdevs '{"name": "mirror0"}')
VOL_BYTES=$(jpy 'd[0]["num_blocks"] * d[0]["block_size"]' <<<"$b")
st=$(raid_brief)
check "mirror0 online, both members in sync" "$st" "$(all_in_sync; echo $?)" "$st; $((VOL_BYTES >> 20)) MiB"

NVMF_PORT=$(free_port)
NVMF_NQN=$MNQN
if mrpc nvmf_create_transport '{"trtype": "TCP"}' >/dev/null &&
    mrpc nvmf_create_subsystem "{\"nqn\": \"$MNQN\", \"allow_any_host\": true, \"serial_number\": \"BLMIR0001\"}" >/dev/null &&
    mrpc nvmf_subsystem_add_ns "{\"nqn\": \"$MNQN\", \"namespace\": {\"bdev_name\": \"mirror0\"}}" >/dev/null &&
    mrpc nvmf_subsystem_add_listener "{\"nqn\": \"$MNQN\", \"listen_address\": {\"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$NVMF_PORT\"}}" >/dev/null &&
    wait_port "$NVMF_PORT" 10; then
    ok "mirror0 exported as $MNQN on 127.0.0.1:$NVMF_PORT"
else
    notok "mirror0 exported on 127.0.0.1:$NVMF_PORT" "$RPC_ERR"
    summary; exit 1
fi
if mrpc save_config >"$LOGDIR/mirror-setup.json"; then ok "mirror node: save_config"; else notok "mirror node: save_config" "$RPC_ERR"; fi

# --- the control channel and the guest session
CTL_PORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$CTL" "$CTL_PORT" >"$LOGDIR/ctl.log" 2>&1 &
CTLPID=$!
wait_port "$CTL_PORT" 10 || { notok "control channel on 127.0.0.1:$CTL_PORT" "$(cat "$LOGDIR/ctl.log")"; summary; exit 1; }
GUEST_LOG_FILE=$LOGDIR/guest.log
(
    NVMF_GUEST_CTL_PORT=$CTL_PORT NVMF_GUEST_REGION_MIB=$REGION_MIB
    VM_QEMU_ARGS="-pidfile $QEMU_PIDFILE"
    _interop_run "$GUEST_SCRIPT" guest
    exit "$GUEST_RC"
) &
GUESTJOB=$!
note "guest session started (log $GUEST_LOG_FILE)"
ready=
end=$((SECONDS + 180))
while ((SECONDS < end)); do
    if grep -aq '^@@MIR ready' "$GUEST_LOG_FILE" 2>/dev/null; then ready=1; break; fi
    grep -aq '^@@MIR connect-failed' "$GUEST_LOG_FILE" 2>/dev/null && break
    kill -0 "$GUESTJOB" 2>/dev/null || break
    sleep 0.2
done
if [[ -n $ready ]]; then
    ok "guest connected to mirror0 ($(grep -a -m1 '^connected ' "$GUEST_LOG_FILE"))"
else
    notok "guest connects to mirror0" "$(guest_tail 30)"
    summary; exit 1
fi

# baseline: region 0 written with both members in sync
if load_start base 0; then
    wait_run "$(glines)" 60 >/dev/null
    load_stop base
    verify_all base
fi

# =============================================================== a: kill -9 ====
step_a() {
    local m=R1n1 n=r1 since
    step_ready a || return
    load_start a 1 || return
    since=$(glines)
    note "a: kill -9 r1's ballastd (pid ${RPID[r1]})"
    node_kill r1
    if wait_state "$m" faulted 30; then
        ok "a: $m faulted ${WAITED} s after kill -9 of $n ($(raid_brief))"
    else
        notok "a: $m faulted after kill -9 of $n" "after 30 s: $(raid_brief)"
    fi
    snap a-faulted
    st=$(rq 'r["state"]' 2>&1)
    check "a: mirror0 still online with $m faulted" "state $st" "$([[ $st == online ]]; echo $?)"
    if wait_run "$since" 60; then ok "a: a fio run completed while $m was out ($RUN_LINE)"; else
        notok "a: a fio run completes while $m is out" "$(runs_since "$since")"$'\n'"$(guest_tail)"; fi
    if node_start r1 config; then ok "a: r1 restarted from its saved config"; else
        notok "a: r1 restarts from its saved config" "$NODE_ERR"$'\n'"$(tail -n 10 "$LOGDIR/r1.log")"; fi
    wait_heal a "$m"
    load_stop a
    recover a
    verify_all a
    compare_children a
}
step_a

# ============================================================ b: link cut ======
step_b() {
    local m=R2n1 n=r2 since t_down
    step_ready b || return
    load_start b 2 || return
    since=$(glines)
    note "b: link of r2 down ($(node_ns r2)-h)"
    netns_link_down "$(node_ns r2)"
    t_down=$SECONDS
    # keep-alive notices the silence, then ctrlr_loss_timeout_sec (3 s): the member must be out
    # well before the guest's own 30 s I/O timeout
    if wait_state "$m" faulted 40; then
        check "b: $m faulted within 20 s of its link going down" \
            "writes waited ${WAITED} s for the cut-off member"$'\n'"$(grep -a 'name=R2\|R2n1' "$MLOG" | tail -n 6)" \
            "$(awk -v w="$WAITED" 'BEGIN { exit !(w <= 20) }'; echo $?)" "${WAITED} s: $(raid_brief)"
    else
        notok "b: $m faulted after its link went down" "after 40 s: $(raid_brief)"$'\n'"$(grep -a 'name=R2\|R2n1' "$MLOG" | grep -v 'reconnect.*failed' | tail -n 5)"
    fi
    snap b-faulted
    while ((SECONDS - t_down < 7)); do sleep 0.5; done
    if wait_run "$since" 30; then ok "b: a fio run completed while $m was cut off ($RUN_LINE)"; else
        notok "b: a fio run completes while $m is cut off" "$(runs_since "$since")"$'\n'"$(grep -a -A2 '^@@MIR run .* rc=1$' "$GUEST_LOG_FILE" | tail -n 3)"; fi
    note "b: link of r2 up after $((SECONDS - t_down)) s"
    netns_link_up "$(node_ns r2)"
    wait_heal b "$m"
    load_stop b
    recover b
    verify_all b
    compare_children b
}
step_b

# ===================================================== c: blank replacement ====
step_c() {
    local old=R1n1 new=R3n1 since out end j p pct seen='' maxpct=-1 first_p='' last_p='' started ended
    step_ready c || return
    load_start c 3 || return
    since=$(glines)
    note "c: r1 is lost for good (kill -9); it is replaced by the blank r3"
    node_kill r1
    if wait_state "$old" faulted 30; then ok "c: $old faulted after kill -9 of r1"; else
        notok "c: $old faulted after kill -9 of r1" "$(raid_brief)"; fi
    if out=$(mrpc bdev_raid_remove_base_bdev "{\"name\": \"$old\"}" 2>&1); then
        ok "c: bdev_raid_remove_base_bdev $old"
    else
        notok "c: bdev_raid_remove_base_bdev $old" "$out"
    fi
    sleep 1
    snap c-removed
    st=$(members)
    check "c: $old no longer a member" "members: $st; $(raid_brief)" "$([[ " $st " != *" $old "* ]]; echo $?)" "members: $st"
    if out=$(mrpc bdev_nvme_attach_controller "$(attach_json r3 "$MIRROR_IO_QUEUES")" 2>&1) && [[ $out == *$new* ]]; then
        ok "c: mirror node attaches the blank r3 ($new)"
    else
        notok "c: mirror node attaches the blank r3" "$out"
    fi
    # the rebuild's bandwidth cap makes the full copy last a few seconds: its progress is seen
    if out=$(mrpc bdev_raid_set_options "{\"process_max_bandwidth_mb_sec\": $REBUILD_CAP_MIB}" 2>&1); then
        ok "c: bdev_raid_set_options process_max_bandwidth_mb_sec $REBUILD_CAP_MIB"
    else
        notok "c: bdev_raid_set_options process_max_bandwidth_mb_sec $REBUILD_CAP_MIB" "$out"
    fi
    started=$SECONDS
    if out=$(mrpc bdev_raid_add_base_bdev "{\"raid_bdev\": \"mirror0\", \"base_bdev\": \"$new\"}" 2>&1); then
        ok "c: bdev_raid_add_base_bdev mirror0 $new (a new, blank member)"
        : >"$LOGDIR/c-progress.log"
        end=$((SECONDS + 300))
        while ((SECONDS < end)); do
            # "STATE|PERCENT|PROCESS-JSON" of the new member, in one poll
            j=$(rq '(lambda p, st: "%s|%s|%s" % (st, int(p["progress"]["percent"]) if p else -1, json.dumps(p) if p else ""))(r.get("process"), next((b.get("state") for b in r["base_bdevs_list"] if b["name"] == "'"$new"'"), "absent"))' 2>/dev/null) ||
                { sleep 0.1; continue; }
            IFS='|' read -r st pct p <<<"$j"
            if [[ -n $p ]]; then
                echo "$(date +%T.%1N) $p" >>"$LOGDIR/c-progress.log"
                [[ -z $first_p ]] && first_p=$p
                last_p=$p
                ((pct > maxpct)) && maxpct=$pct
                seen=1
            fi
            [[ $st == in_sync ]] && break
            [[ $st == faulted && -z $p ]] && break
            sleep 0.1
        done
        ended=$SECONDS
        snap c-rebuilt
        if [[ -n $seen ]] && why=$(python3 -c '
import json, sys
p = json.loads(sys.argv[1]); new = sys.argv[2]; vol = int(sys.argv[3])
miss = {"type", "target", "progress", "kind", "bytes_to_copy", "bytes_copied", "eta_s"} - set(p)
if miss: sys.exit("process lacks %s: %s" % (sorted(miss), json.dumps(p)))
assert p["type"] == "rebuild", p
assert p["target"] == new, p
assert p["kind"] == "full", p
assert {"blocks", "percent"} <= set(p["progress"]), p
assert p["bytes_to_copy"] >= vol, ("bytes_to_copy < volume", vol, p)
assert 0 <= p["bytes_copied"] <= p["bytes_to_copy"], p
print("%s of %s, %s%%, %s MiB of %s MiB, eta %s s" % (p["kind"], p["target"], p["progress"]["percent"], p["bytes_copied"] >> 20, p["bytes_to_copy"] >> 20, p["eta_s"]))
' "$last_p" "$new" "$VOL_BYTES" 2>&1); then
            ok "c: rebuild progress seen in bdev_raid_get_bdevs while it ran ($(grep -c . "$LOGDIR/c-progress.log") samples, up to $maxpct %; last: $why)"
        else
            notok "c: rebuild progress seen in bdev_raid_get_bdevs while it ran" "${why:-no process object seen in $((ended - started)) s}"$'\n'"first: $first_p"$'\n'"last: $last_p"
        fi
        if [[ $(member_state "$new") == in_sync ]]; then
            ok "c: $new in sync after a full rebuild ($((ended - started)) s, capped at $REBUILD_CAP_MIB MiB/s)"
            check_last_rebuild c "$new" full
        else
            notok "c: $new in sync after a full rebuild" "$(raid_brief)"
        fi
    else
        notok "c: bdev_raid_add_base_bdev mirror0 $new (a new, blank member)" "$out"
    fi
    mrpc bdev_raid_set_options '{"process_max_bandwidth_mb_sec": 0}' >/dev/null 2>&1 || note "c: removing the cap: $RPC_ERR"
    if wait_run "$since" 60; then ok "c: fio runs went on during the replacement ($(runs_since "$since"))"; else
        notok "c: fio runs go on during the replacement" "$(runs_since "$since")"; fi
    load_stop c
    # the old member's controller goes (not in the config saved for d) if it is no member any more
    if [[ " $(members) " != *" $old "* ]]; then
        mrpc bdev_nvme_detach_controller '{"name": "R1"}' >/dev/null 2>&1 || note "c: detach R1: $RPC_ERR"
    else
        note "c: $old is still a member (remove/add not done): r1 comes back for the next steps"
    fi
    recover c
    verify_all c
    compare_children c
}
step_c

# ================================================= d: mirror node kill -9 ======
step_d() {
    local victim survivor vn since cfg=$LOGDIR/mirror-d.json out st i since_kill line j
    step_ready d || return
    if ! all_in_sync; then notok "d: starts with every member in sync" "$(raid_brief)"; return; fi
    read -r victim survivor _ <<<"$(members)"
    vn=$(node_of_bdev "$victim")
    if mrpc save_config >"$cfg"; then ok "d: save_config of the mirror node (members $victim $survivor)"; else
        notok "d: save_config" "$RPC_ERR"; return; fi
    load_start d 4 || return
    since=$(glines)
    note "d: kill -9 $vn (member $victim)"
    node_kill "$vn"
    if wait_state "$victim" faulted 30; then ok "d: $victim faulted after kill -9 of $vn"; else
        notok "d: $victim faulted after kill -9 of $vn" "$(raid_brief)"; fi
    wait_run "$since" 60 || notok "d: a fio run completes with $victim out" "$(runs_since "$since")"
    # mid-write: a run has just completed, the next one is writing
    wait_run "$(glines)" 60 >/dev/null
    sleep 1
    since_kill=$(glines)
    note "d: kill -9 the mirror node's ballastd (pid $MPID) mid-write"
    mirror_kill
    sleep 2
    if node_start "$vn" config; then ok "d: $vn restarted from its saved config (the mirror node is down)"; else
        notok "d: $vn restarts from its saved config" "$NODE_ERR"; fi
    if mirror_start "$cfg" && wait_port "$NVMF_PORT" 20; then
        ok "d: mirror node restarted with ballastd -c mirror-d.json, listening on 127.0.0.1:$NVMF_PORT"
    else
        notok "d: mirror node restarts with ballastd -c mirror-d.json" "$(tail -n 15 "$MLOG")"
        return
    fi
    snap d-reassembled
    j=$(cat "$LOGDIR/raid-d-reassembled.json")
    st=$(jpy 'next((b.get("state") for b in d["base_bdevs_list"] if b["name"] == "'"$victim"'"), "absent")' <<<"$j")
    lt=$(jpy '(d.get("last_rebuild") or {}).get("target", "")' <<<"$j")
    if [[ $st == faulted || $st == rebuilding || ($st == in_sync && $lt == "$victim") ]]; then
        ok "d: reassembled from the superblocks; $victim (faulted before the kill) not taken as in sync ($(raid_brief))"
    else
        notok "d: reassembled with $victim (faulted before the kill) not in sync" "$victim is $st: $(raid_brief)"
    fi
    st=$(jpy 'd["state"] + " " + next((b.get("state") for b in d["base_bdevs_list"] if b["name"] == "'"$survivor"'"), "absent")' <<<"$j")
    check "d: mirror0 online on $survivor after the restart" "$st" "$([[ $st == "online in_sync" ]]; echo $?)"
    # the run that spanned the kill completes (the guest reconnected) and verified what it wrote
    if wait_run "$since_kill" 120 '[01]'; then
        check "d: the fio run that spanned the mirror node's kill completed and verified" \
            "$RUN_LINE"$'\n'"$(guest_tail 20)" "$([[ $RUN_LINE == *rc=0 ]]; echo $?)" "$RUN_LINE"
    else
        notok "d: the fio run that spanned the mirror node's kill completes" "$(guest_tail 25)"
    fi
    line=$(grep -a 'controller created' "$MLOG" | tail -n 1)
    note "d: guest reconnected: ${line:-(no 'controller created' in the mirror log)}"
    bring_back d "$victim"
    load_stop d
    recover d
    verify_all d
    compare_children d
}
step_d

# ======================================================== e: lose them all =====
step_e() {
    local first last fn ln since st end
    step_ready e || return
    if ! all_in_sync; then notok "e: starts with every member in sync" "$(raid_brief)"; return; fi
    read -r first last _ <<<"$(members)"
    fn=$(node_of_bdev "$first") ln=$(node_of_bdev "$last")
    load_start e 5 || return
    note "e: kill -9 $fn ($first)"
    node_kill "$fn"
    if wait_state "$first" faulted 30; then ok "e: $first faulted"; else notok "e: $first faulted" "$(raid_brief)"; fi
    since=$(glines)
    if wait_run "$since" 60; then ok "e: still serving on $last alone (a fio run completed: $RUN_LINE)"; else
        notok "e: still serving on $last alone" "$(runs_since "$since")"$'\n'"$(guest_tail)"; fi
    since=$(glines)
    note "e: kill -9 $ln ($last), the last one"
    node_kill "$ln"
    st=
    end=$((SECONDS + 30))
    while ((SECONDS < end)); do
        st=$(rq 'r["state"]' 2>&1)
        [[ $st == offline ]] && break
        sleep 0.2
    done
    snap e-offline
    check "e: bdev_raid_get_bdevs says offline after the last member's loss" "state '$st': $(raid_brief)" "$([[ $st == offline ]]; echo $?)" "$(raid_brief)"
    if wait_run "$since" 60 1; then ok "e: the guest's I/O fails ($RUN_LINE)"; else
        notok "e: the guest's I/O fails" "no failed fio run within 60 s: $(runs_since "$since")"$'\n'"$(guest_tail)"; fi
    if kill -0 "$MPID" 2>/dev/null && "$BALLAST_RPC" -s "$MSOCK" -t 5 spdk_get_version >/dev/null 2>&1 && raid_json >/dev/null; then
        ok "e: the mirror node still answers RPC (no hang)"
    else
        notok "e: the mirror node still answers RPC (no hang)" "$(tail -n 10 "$MLOG")"
    fi
    load_stop e 1
}
step_e

# ================================================================= the end =====
if gcmd 120 exit; then
    wait "$GUESTJOB"; grc=$?
    GUESTJOB=
    check "guest session ends with status 0" "status $grc"$'\n'"$(guest_tail 20)" "$grc"
else
    notok "guest session ends" "$CMD_RESULT"$'\n'"$(guest_tail 20)"
fi
if [[ -n $MPID ]]; then
    kill -TERM "$MPID" 2>/dev/null
    for ((i = 0; i < 150; i++)); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$MPID" 2>/dev/null; then
        notok "mirror node exits within 15 s of SIGTERM" "$(tail -n 5 "$MLOG")"
    else
        wait "$MPID"; rc=$?
        check "mirror node exits 0 within 15 s of SIGTERM" "status $rc"$'\n'"$(tail -n 5 "$MLOG")" "$rc"
    fi
    MPID=
fi
mapfile -t panicked < <(grep -a -l 'panicked' "$LOGDIR"/mirror.log "$LOGDIR"/r[0-9].log 2>/dev/null)
if ((${#panicked[@]})); then
    notok "no daemon panicked" "${panicked[*]}"$'\n'"$(grep -a -h -A3 panicked "${panicked[@]}" | head -n 12)"
else
    ok "no daemon panicked"
fi
summary
