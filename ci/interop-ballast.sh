#!/usr/bin/env bash
# ci/interop-ballast.sh -- the real-client tests of issue 3: the Linux 6.1
# kernel NVMe/TCP initiator, nvme-cli 2.3 and fio 3.33 in a QEMU guest
# (ci/kernel-initiator-vm.sh, through ci/lib-interop.sh) against ballastd on
# the host's 127.0.0.1 (its embedded default: one RAM namespace in
# nqn.2026-11.io.ballast:default, allow-any-host). One VM boot per group:
#
#   admin-io     (ci/guest/ballast-admin-io.sh) nvme discover; a persistent
#                discovery controller and `nvme get-log` of the discovery log
#                page, decoded; nvme connect -i 2 without digests; sysfs
#                state; id-ctrl, id-ns, list-ns, ns-descs, smart-log,
#                error-log, fw-log, get-feature; nvme write/read,
#                write-zeroes, dsm --ad (zeros, as the target's DLFEAT says),
#                flush, a read past the end (LBA Out of Range); fio randwrite
#                + crc32c verify at 512 B..128 KiB, QD32 and QD1, both I/O
#                queues; nvme disconnect, the device disappears.
#   digests      (ci/guest/ballast-digests.sh) nvme connect -g -G -i 2; the
#                previous host's data verifies; fio randwrite + verify.
#   host side    the daemon negotiated no digests for admin-io, header and
#                data digests for digests (its "ICReq accepted" debug lines).
#   kato-*       (ci/guest/ballast-hold-io.sh) a host connects with
#                keep-alive timeout 5 s and runs fio; the host freezes QEMU
#                (SIGSTOP: TCP connections stay open, the guest goes silent);
#                the daemon must log "keep-alive timeout: freeing controller"
#                and "controller freed" for that host NQN between KATO/2 and
#                KATO + 10 s after the freeze,
#                and the controller must be gone from
#                nvmf_subsystem_get_controllers; then QEMU is killed.
#   kill9-*      the same guest, QEMU killed (SIGKILL) mid-I/O: the daemon
#                frees the controller (connection reset, or KATO at worst).
#   new-host     (ci/guest/nvmf-smoke.sh) a new VM discovers, connects, runs
#                fio verify and disconnects fine.
#   daemon       still alive, no controllers left, never panicked, exits 0 on
#                SIGTERM.
#
# Ends with "N passed, M failed"; exit status 1 if anything failed.
# Usage (root): bash ci/interop-ballast.sh    (~80-100 s under TCG on 2 cores)
# Environment: BALLASTD (the daemon binary; default: cargo build --release -p
#   ballastd, then ${CARGO_TARGET_DIR:-target}/release/ballastd),
#   BALLASTD_CPUMASK (0x3), BALLAST_LOG (info,ballast_nvme::target::tcp=debug),
#   INTEROP_ONLY ("admin-io digests kato kill9 new-host": groups to run),
#   and lib-interop.sh's (VM_TIMEOUT, INTEROP_VERBOSE, INTEROP_LOG_DIR, ...).
# Logs: ${INTEROP_LOG_DIR:-/tmp/ballast-interop}/interop-ballast/ (ballastd.log,
#   one NAME.log + NAME.guest.sh per guest run).
# Variables such as NVMF_GUEST_* and VM_* are read by lib-interop.sh (compgen).
# shellcheck disable=SC2034
set -euo pipefail
cd "$(dirname "$0")/.."
VM_TIMEOUT=${VM_TIMEOUT:-240}
. ci/lib-interop.sh
t0=$SECONDS
ONLY=" ${INTEROP_ONLY:-admin-io digests kato kill9 new-host} "
want() { [[ $ONLY == *" $1 "* ]]; }

interop_setup

if [[ -z ${BALLASTD:-} ]]; then
    cargo build --release -q -p ballastd
    BALLASTD=${CARGO_TARGET_DIR:-target}/release/ballastd
fi
LOGDIR=$INTEROP_LOG_DIR/$INTEROP_TEST
mkdir -p "$LOGDIR"
rm -f "$LOGDIR"/*.log "$LOGDIR"/*.guest.sh "$LOGDIR"/*.pid
DLOG=$LOGDIR/ballastd.log
SOCK=$LOGDIR/ballastd.sock
NVMF_PORT=$(free_port)
NVMF_NQN=nqn.2026-11.io.ballast:default
KATO=5
DPID=
QPID=

cleanup() {
    if [[ -n $QPID ]]; then kill -KILL "$QPID" 2>/dev/null || true; fi
    if [[ -n $DPID ]]; then kill "$DPID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# rpc METHOD [PARAMS_JSON]: JSON-RPC 2.0 over the daemon's Unix socket; prints
# the result as JSON, exits 1 (error on stderr) on an error response.
rpc() {
    python3 - "$SOCK" "$@" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
req = {"jsonrpc": "2.0", "id": 1, "method": sys.argv[2]}
if len(sys.argv) > 3:
    req["params"] = json.loads(sys.argv[3])
s.sendall(json.dumps(req).encode())
buf = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    buf += d
    try:
        resp = json.loads(buf)
        break
    except ValueError:
        continue
if "error" in resp:
    print(json.dumps(resp["error"]), file=sys.stderr)
    sys.exit(1)
print(json.dumps(resp["result"]))
EOF
}

# ctrl_of HOSTNQN: "cntlid=N io_qpairs=N kato_ms=N" of that host's controller
# in the default subsystem, or "none".
ctrl_of() {
    rpc nvmf_subsystem_get_controllers "{\"nqn\": \"$NVMF_NQN\"}" | python3 -c '
import json, sys
cs = [c for c in json.load(sys.stdin) if c["hostnqn"] == sys.argv[1]]
print(" ".join("cntlid=%d io_qpairs=%d kato_ms=%d" % (c["cntlid"], c["num_io_qpairs"], c["kato_ms"]) for c in cs) or "none")
' "$1"
}
ctrl_count() {
    rpc nvmf_subsystem_get_controllers "{\"nqn\": \"$NVMF_NQN\"}" |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'
}

# Daemon log lines since line $1.
log_lines() { wc -l < "$DLOG"; }
log_since() { tail -n +"$(($1 + 1))" "$DLOG"; }

# wait_log SINCE SECS PATTERN...: waits until a daemon log line after line
# SINCE matches every (fixed-string) PATTERN; prints it.
wait_log() {
    local since=$1 secs=$2 i line
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        line=$(log_since "$since" | {
            l=
            while IFS= read -r l; do
                ok=1
                for p in "$@"; do [[ $l == *"$p"* ]] || { ok=0; break; }; done
                if ((ok)); then printf '%s\n' "$l"; break; fi
            done
        })
        if [[ -n $line ]]; then printf '%s\n' "$line"; return 0; fi
        sleep 0.1
    done
    return 1
}

daemon_dump() {
    echo "---- $DLOG (last ${1:-60} lines) ----"
    tail -n "${1:-60}" "$DLOG" | sed 's/^/  | /'
    echo "---- end of $DLOG ----"
}

guest_script() { # guest_script FILE...: lib-ballast.sh + the given guest scripts
    cat ci/guest/lib-ballast.sh "$@"
}

# ---------------------------------------------------------------- daemon ----
: > "$DLOG"
BALLAST_LOG=${BALLAST_LOG:-info,ballast_nvme::target::tcp=debug} \
    "$BALLASTD" -m "${BALLASTD_CPUMASK:-0x3}" -l "127.0.0.1:$NVMF_PORT" \
    --default-size-mib 128 -r "$SOCK" >> "$DLOG" 2>&1 &
DPID=$!
echo "# ballastd pid $DPID on 127.0.0.1:$NVMF_PORT (guest 10.0.2.2:$NVMF_PORT), log $DLOG"
if wait_port "$NVMF_PORT" 20 && kill -0 "$DPID" 2>/dev/null; then
    interop_pass daemon-start
else
    interop_fail daemon-start "ballastd did not listen on 127.0.0.1:$NVMF_PORT"
    daemon_dump
    interop_summary
    exit 1
fi

# ------------------------------------------------------------ admin + I/O ----
if want admin-io; then
    l0=$(log_lines)
    NVMF_GUEST_MN=ballast
    assert_guest_ok admin-io <(guest_script ci/guest/ballast-admin-io.sh)
    unset NVMF_GUEST_MN
    # its fio data, for the digests group's read-only verify
    if ((INTEROP_LAST_OK)); then NVMF_GUEST_VERIFY_PREV=1; fi
    icreq=$(log_since "$l0" | grep 'ICReq accepted' || true)
    n=$(grep -c . <<<"$icreq" || true)
    # discover + persistent discovery controller + admin + 2 I/O queues
    if ((n >= 5)) && ! grep -q 'hdgst=true\|ddgst=true' <<<"$icreq"; then
        interop_pass admin-io-no-digests-negotiated
    else
        interop_fail admin-io-no-digests-negotiated "want >= 5 ICReqs without digests, daemon log has:"
        printf '%s\n' "$icreq" | sed 's/^/  | /'
    fi
fi

# --------------------------------------------------------------- digests ----
if want digests; then
    l0=$(log_lines)
    assert_guest_ok digests <(guest_script ci/guest/ballast-digests.sh)
    unset NVMF_GUEST_VERIFY_PREV
    icreq=$(log_since "$l0" | grep 'ICReq accepted' || true)
    n=$(grep -c 'hdgst=true ddgst=true' <<<"$icreq" || true)
    if ((n >= 3)) && ! grep -q 'hdgst=false\|ddgst=false' <<<"$icreq"; then
        interop_pass digests-negotiated
    else
        interop_fail digests-negotiated "want >= 3 ICReqs with hdgst=true ddgst=true, daemon log has:"
        printf '%s\n' "$icreq" | sed 's/^/  | /'
    fi
fi

# ------------------------------------------------------ keep-alive / kill ----
# hold_vm NAME HOSTNQN: boots ballast-hold-io.sh in the background as host
# HOSTNQN and waits until its fio runs. Sets QPID (QEMU) and HOLD_JOB.
hold_vm() {
    local name=$1 hostnqn=$2 pidf=$LOGDIR/$1.qemu.pid glog=$LOGDIR/$1.log i
    guest_script ci/guest/ballast-hold-io.sh > "$LOGDIR/$name.in.sh"
    (
        VM_QEMU_ARGS="-pidfile $pidf" NVMF_HOSTNQN=$hostnqn NVMF_GUEST_KATO=$KATO
        _interop_run "$LOGDIR/$name.in.sh" "$name"
    ) &
    HOLD_JOB=$!
    QPID=
    for ((i = 0; i < VM_TIMEOUT * 10; i++)); do
        if [[ -z $QPID && -s $pidf ]]; then QPID=$(cat "$pidf"); fi
        if grep -q '^@@BALLAST io-running' "$glog" 2>/dev/null; then
            [[ -n $QPID ]] && return 0
        fi
        kill -0 "$HOLD_JOB" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}
# end_vm: kills QEMU (if still there) and reaps the background guest run.
end_vm() {
    if [[ -n $QPID ]]; then kill -KILL "$QPID" 2>/dev/null || true; fi
    wait "$HOLD_JOB" 2>/dev/null || true
    QPID=
}
hold_failed() { # TEST VM WHY: records a failure, shows the guest's log, ends the VM
    interop_fail "$1" "$3"
    end_vm
    GUEST_LOG=$LOGDIR/$2.log _interop_dump
}

kato_test() {
    local name=kato hostnqn c l0 t t1 dt line
    hostnqn=nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)
    if ! hold_vm "$name" "$hostnqn"; then
        hold_failed kato-host-io-running "$name" "guest did not get to running fio"
        return
    fi
    interop_pass kato-host-io-running
    c=$(ctrl_of "$hostnqn" 2>&1) || c="rpc failed: $c"
    if [[ $c == *"io_qpairs=2 kato_ms=$((KATO * 1000))" ]]; then
        interop_pass kato-controller-listed
    else
        interop_fail kato-controller-listed "nvmf_subsystem_get_controllers for $hostnqn: $c (want io_qpairs=2 kato_ms=$((KATO * 1000)))"
    fi
    sleep 2
    l0=$(log_lines)
    if ! kill -STOP "$QPID"; then
        hold_failed kato-sigstop "$name" "QEMU $QPID is gone before SIGSTOP"
        return
    fi
    t=$SECONDS t1=$EPOCHREALTIME
    echo "# $(date +%T) QEMU $QPID frozen (SIGSTOP) mid-I/O; waiting for the daemon's keep-alive timeout"
    if line=$(wait_log "$l0" $((KATO + 10)) "keep-alive timeout: freeing controller" "hostnqn=$hostnqn"); then
        echo "  | $line"
        # the host sent its last keep-alive at most KATO/2 before the freeze
        # (Linux 6.1 sends one every KATO/2): expiry earlier than that is wrong
        dt=$(awk -v a="$t1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
        if awk -v dt="$dt" -v k="$KATO" 'BEGIN { exit !(dt >= k / 2 - 0.5) }'; then
            interop_pass "kato-expired ($dt s after SIGSTOP)"
        else
            interop_fail kato-expired "controller freed only $dt s after the host went silent (KATO ${KATO} s)"
        fi
    else
        interop_fail kato-expired "no 'keep-alive timeout: freeing controller' for $hostnqn within $((KATO + 10)) s of SIGSTOP"
        log_since "$l0" | tail -n 30 | sed 's/^/  | /'
    fi
    if line=$(wait_log "$l0" 10 "controller freed" "hostnqn=$hostnqn"); then
        echo "  | $line"
        interop_pass "kato-controller-freed ($((SECONDS - t)) s after SIGSTOP)"
    else
        interop_fail kato-controller-freed "no 'controller freed' for $hostnqn"
    fi
    c=$(ctrl_of "$hostnqn" 2>&1) || c="rpc failed: $c"
    if [[ $c == none ]]; then interop_pass kato-controller-gone; else
        interop_fail kato-controller-gone "still listed: $c"; fi
    end_vm
}

kill9_test() {
    local name=kill9 hostnqn c l0 t line
    hostnqn=nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)
    if ! hold_vm "$name" "$hostnqn"; then
        hold_failed kill9-host-io-running "$name" "guest did not get to running fio"
        return
    fi
    interop_pass kill9-host-io-running
    sleep 2
    l0=$(log_lines)
    if ! kill -KILL "$QPID"; then
        hold_failed kill9-sigkill "$name" "QEMU $QPID is gone before SIGKILL"
        return
    fi
    t=$SECONDS
    echo "# $(date +%T) QEMU $QPID killed (SIGKILL) mid-I/O"
    if line=$(wait_log "$l0" $((KATO + 10)) "controller freed" "hostnqn=$hostnqn"); then
        echo "  | $line"
        interop_pass "kill9-controller-freed ($((SECONDS - t)) s after SIGKILL)"
    else
        interop_fail kill9-controller-freed "no 'controller freed' for $hostnqn within $((KATO + 10)) s of SIGKILL"
        log_since "$l0" | tail -n 30 | sed 's/^/  | /'
    fi
    c=$(ctrl_of "$hostnqn" 2>&1) || c="rpc failed: $c"
    if [[ $c == none ]]; then interop_pass kill9-controller-gone; else
        interop_fail kill9-controller-gone "still listed: $c"; fi
    end_vm
}

if want kato; then kato_test; fi
if want kill9; then kill9_test; fi

# -------------------------------------------------------------- new host ----
if want new-host; then
    NVMF_GUEST_CONNECT_OPTS="-i 2 -l 5" NVMF_GUEST_MN=ballast
    assert_guest_ok new-host-after-kill <(guest_script ci/guest/nvmf-smoke.sh)
    unset NVMF_GUEST_CONNECT_OPTS NVMF_GUEST_MN
fi

# ---------------------------------------------------------------- daemon ----
if kill -0 "$DPID" 2>/dev/null; then interop_pass daemon-alive; else
    interop_fail daemon-alive "ballastd exited"; fi
n=$(ctrl_count 2>/dev/null || echo "?")
if [[ $n == 0 ]]; then interop_pass no-controllers-left; else
    interop_fail no-controllers-left "nvmf_subsystem_get_controllers lists $n"; fi
kill -TERM "$DPID" 2>/dev/null || true
rc=0
for ((i = 0; i < 150; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DPID" 2>/dev/null; then
    interop_fail clean-shutdown "ballastd still running 15 s after SIGTERM"
    kill -KILL "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
else
    wait "$DPID" || rc=$?
    if ((rc == 0)) && grep -q 'ballastd stopped' "$DLOG"; then interop_pass clean-shutdown; else
        interop_fail clean-shutdown "exit status $rc"; fi
fi
DPID=
if grep -q 'panicked' "$DLOG"; then
    interop_fail no-panic "$(grep -m3 -A3 panicked "$DLOG")"
else
    interop_pass no-panic
fi
((INTEROP_FAILED == 0)) || daemon_dump 80
echo "# interop-ballast: $((SECONDS - t0)) s, logs in $LOGDIR"
interop_summary
