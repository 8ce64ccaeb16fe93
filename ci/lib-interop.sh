# shellcheck shell=bash
# ci/lib-interop.sh -- helpers for interop tests that drive the real Linux
# NVMe/TCP initiator (kernel 6.1, in a QEMU guest) via ci/kernel-initiator-vm.sh.
# Source it from a bash test script:
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib-interop.sh"
#   interop_setup                            # apt packages + guest cache (cached)
#   NVMF_PORT=$(free_port) NVMF_NQN=nqn.2024-01.io.ballast:t1
#   ... start the target on host 127.0.0.1:$NVMF_PORT ...
#   assert_guest_ok smoke - <<'EOF'          # guest script on stdin ("-")
#   nvmf_discover; nvmf_connect -l 5; fio_one "$NVMF_DEV" randread 1 2; nvmf_disconnect
#   EOF
#   interop_summary                          # "N passed, M failed"; rc != 0 if any failed
#
# ---------------------------------------------------------------- host side --
#   interop_setup               kernel-initiator-vm.sh setup (idempotent; ~1 s
#                               when cached, ~10-30 s on a fresh machine).
#   free_port                   prints a free TCP port on 127.0.0.1 (random,
#                               20000-32767: below the kernel's ephemeral range).
#   wait_port PORT [SECS]       waits (default 20 s) until 127.0.0.1:PORT accepts
#                               TCP connections (e.g. the target under test).
#   guest_run SCRIPT [NAME]     boots a guest, runs SCRIPT in it, returns its exit
#                               status. SCRIPT is a file, a <(...) or "-" (stdin).
#                               Prints the console log on failure only.
#   assert_guest_ok NAME SCRIPT       guest_run + "ok NAME (12 s)" or "FAIL NAME
#                                     (why; log FILE)" followed by the log;
#                                     counts it. Returns 0 either way (so a
#                                     `set -e` test reaches interop_summary);
#                                     INTEROP_LAST_OK=1/0 tells the outcome.
#   assert_guest_rc NAME RC SCRIPT    same, but the guest must exit with RC (a
#                                     negative test); RC must be reported by the
#                                     guest itself: a timeout or a guest that
#                                     never booted is always FAIL (unless RC=124).
#   interop_pass NAME, interop_fail NAME [WHY]   count a host-side check.
#   interop_summary             prints "N passed, M failed" (the list of failed
#                               names first), returns 1 if anything failed.
#   ensure_venv VERSION LOG     SPDK's rpc.py as $SPDK_VENV_ROOT/VERSION/bin/spdk-rpc
#                               (PyPI's spdk==VERSION in a venv; default root
#                               /var/tmp/ballast-spdk-venvs): reused if complete,
#                               else made (~10 s; pip's output to LOG). Non-zero
#                               if it cannot be made.
# After guest_run: GUEST_RC (status), GUEST_LOG (log file), GUEST_SECS (wall s).
#
# Do not pipe into assert_* / guest_run (`cat x | assert_guest_ok ...`): the
# pipeline runs them in a subshell and the pass/fail counters are lost. Use a
# file, `- <<'EOF'` or `<(...)`.
#
# Environment (set them as plain shell variables; guest_run passes them on,
# no export needed):
#   NVMF_PORT (4420)   target port on host 127.0.0.1 = guest 10.0.2.2
#   NVMF_NQN           subsystem NQN (guest default nqn.2014-08.org.nvmexpress:nvmf-test)
#   FIO_RUNTIME        default seconds for fio_one/fio_std in the guest (15)
#   VM_TIMEOUT (300)   per guest run, boot included; then the guest is killed
#                      (status 124). A backstop `timeout` VM_TIMEOUT+120 s also
#                      covers a cache rebuild and kills the whole process group.
#   VM_HOSTFWD, VM_CPUS, VM_MEM, VM_KLOG, VM_ACCEL, NVMF_HOSTNQN, NVMF_GUEST_*,
#   KT_*               see ci/kernel-initiator-vm.sh's header; NVMF_GUEST_* and
#                      KT_* reach the guest's environment verbatim.
#   NVMF_GUEST_XTRACE=1  `set -x` in the guest script (commands on the console).
#   INTEROP_LOG_DIR (/tmp/ballast-interop)  logs go to
#                      $INTEROP_LOG_DIR/<test script name>/NAME.log, with the
#                      exact guest script next to it as NAME.guest.sh
#                      (re-run by hand: ci/kernel-initiator-vm.sh run-file it).
#   INTEROP_VERBOSE=1  also stream the console live (default: only on failure).
#   INTEROP_LOG_TAIL (400)  lines of the log printed on failure.
#
# How a guest run ends (GUEST_RC / the status guest_run returns):
#   N    the guest script's own exit status (the guest printed "@@NVMF_VM rc=N")
#   124  VM_TIMEOUT expired (guest or I/O hung; e.g. a target that died while
#        the kernel keeps reconnecting: pass -l N to nvmf_connect)
#   125  the guest died without reporting a status (kernel panic, qemu crash)
#   other, with no "@@NVMF_VM rc=" in the log: the harness itself failed
#        (missing packages, cache build) -- assert_* says "harness error".
#
# ---------------------------------------------------------------- guest side --
# The guest is Debian's 6.1 kernel + a busybox initramfs: PID 1 brings up
# eth0 (10.0.2.15/24, slirp), then runs
#     sh -c ". /etc/nvmf-lib.sh; . /cmd.sh" < /dev/null
# under busybox ash (NOT bash: no arrays, no [[ ]]; `local`, $(( )) and
# `set -o pipefail` work). /cmd.sh is guest_run's prelude (below) + SCRIPT.
# The script's exit status -- `exit N`, or the status of its last command if
# it falls off the end -- is the guest's status; then the guest powers off.
# Output (stdout+stderr) goes to the serial console = the log; kernel messages
# of level <= 3 (errors) are interleaved, VM_KLOG=1 shows all of them.
#
# Asserting: the prelude runs `set -eo pipefail`, so any command that exits
# non-zero ends the script with that status. Checks must therefore be commands
# that fail:   [ "$x" = y ] || fail "x is $x"     grep -q ... || fail ...
# Pitfalls of errexit (busybox ash = POSIX):
#   * it is OFF inside anything run as a condition: `if f`, `f || ...`,
#     `f && ...`, `! f`. Then a function runs to its end and returns the status
#     of its LAST command: `kt_start || fail` does not notice a failed mkdir
#     inside kt_start, `fio_std DEV || fail` only checks the last fio job. Call
#     helpers bare (errexit then aborts at the first failing command inside).
#   * `local v=$(cmd)` hides cmd's failure (the status is local's); write
#     `v=$(cmd)` (a plain assignment fails with cmd).
#   * `cmd | grep -q X` can fail spuriously with pipefail (grep exits early,
#     cmd gets SIGPIPE): capture first, `out=$(cmd); echo "$out" | grep -q X`.
#   * functions that set variables (nvmf_connect sets NVMF_DEV) must run in the
#     current shell: not in $(...), not in a pipeline.
#
# Guest environment: NVMF_ADDR=10.0.2.2 (= host 127.0.0.1), NVMF_PORT, NVMF_NQN,
# FIO_RUNTIME, NVMF_GUEST_*, KT_*, NVMF_HOSTNQN if set. Host NQN/ID: a random
# uuid per boot in /etc/nvme/hostnqn, /etc/nvme/hostid (or NVMF_HOSTNQN).
# Tools: nvme (nvme-cli 2.3), fio 3.33 (libaio), iperf3, mkfs.ext4, fsck.ext4,
# resize2fs (e2fsprogs 1.47), busybox applets (wget, ip, timeout, dd, sha256sum,
# df, fsfreeze --freeze/--unfreeze, ...; an applet wins over a binary of the same
# name on PATH). Kernel modules: nvme-tcp, nvmet-tcp, null_blk, brd, ext4,
# crc32c (nothing else: no rdma, no nvme-loop). /etc/mtab is /proc/self/mounts.
# VM_CPUS vCPUs (2) -> that many
# nvme-tcp I/O queues (+ the admin queue, one TCP connection each). No NVMe/TCP
# TLS in 6.1. The target sees the guest as 127.0.0.1 (slirp's host socket);
# the guest's controller sysfs address is "traddr=10.0.2.2,trsvcid=P,src_addr=10.0.2.15".
#
# Helpers from /etc/nvmf-lib.sh (GUEST_LIB in kernel-initiator-vm.sh):
#   nvmf_discover [ADDR [PORT]]
#       modprobe nvme-tcp; nvme discover -t tcp -a ADDR(NVMF_ADDR) -s PORT(NVMF_PORT).
#       Prints the discovery log, returns nvme's status; takes no extra options.
#       The log lists the target's own traddr (127.0.0.1 for a host target =
#       the guest itself): never `nvme connect-all`, connect to 10.0.2.2.
#   nvmf_connect [ADDR [PORT [NQN]]] [nvme-connect options...]
#       nvme connect -t tcp -a ADDR -s PORT -n NQN (defaults NVMF_ADDR/PORT/NQN)
#       OPTIONS, then waits up to ~10 s for the namespace block device of that
#       subsystem and sets NVMF_DEV to it (e.g. /dev/nvme0n1: the multipath head
#       node; the first namespace if there are several). Positional arguments
#       are taken only while they do not start with "-": to give NQN give ADDR
#       and PORT too. Returns 1 if the connect fails or no namespace appears --
#       in the latter case the controller STAYS connected (disconnect it).
#       Prints "connected NQN at ADDR:PORT -> NVMF_DEV (N MiB)". Options:
#         -g header digest, -G data digest (crc32c)     e.g. nvmf_connect -g -G -l 5
#         -l SECS ctrl-loss-tmo (default 600: if the target dies, I/O hangs while
#            the kernel reconnects every -c SECS (10) -- use -l 5 in tests)
#         -k SECS keep-alive-tmo (default ~5 s), -c SECS reconnect-delay,
#         -i N I/O queues, -Q N queue size (128), -q NQN host NQN, -D duplicate
#   nvmf_disconnect [NQN]
#       nvme disconnect -n NQN(NVMF_NQN): all controllers of the subsystem.
#       Prints "NQN:... disconnected N controller(s)".
#   kt_start [PORT(4420) [NQN(NVMF_NQN) [null|brd(null) [SIZE_MIB(1024) [ADDR(127.0.0.1)]]]]]
#       Linux nvmet-tcp target in the guest, namespace 1 on null_blk (reads
#       return zeros, writes are dropped: NO verify possible) or brd (RAM disk
#       in the guest's VM_MEM, keeps data). ADDR 10.0.2.15 + a VM_HOSTFWD rule
#       tcp:127.0.0.1:HP-10.0.2.15:PORT exposes it on host 127.0.0.1:HP, so the
#       guest reaches it as 10.0.2.2:HP -- the same path as a host target.
#       Always configfs port 1: one kt_start at a time (kt_stop first).
#       Only the modprobes are checked; the configfs steps rely on errexit.
#   kt_stop [NQN]      removes the port link, port 1, namespace 1, subsystem;
#       non-zero if an rmdir failed. Modules stay loaded.
#   fio_one DEV RW QD [RUNTIME(FIO_RUNTIME) [BS(4k)]]
#       one libaio O_DIRECT time-based job (+1 s ramp), prints
#       "FIO <rw> bs= qd= iops= MiBps= lat_us: mean= p50= p99=" (total latency);
#       non-zero on a fio error (its message is printed) or no result. No verify.
#   fio_std DEV       fio_one randread/randwrite at QD32 and QD1; returns the
#       status of the last job only (see errexit above).
# Helpers from guest_run's prelude (this file):
#   step MSG          prints "== [uptime s] MSG": a failure report names the
#                     last step reached.
#   fail MSG          prints "GUEST FAIL: MSG" and exits 1.
#   nvmf_ctrl [NQN]   prints the controller name (e.g. nvme0) of the first
#                     controller of subsystem NQN(NVMF_NQN) in /sys/class/nvme;
#                     returns 1 if none. Its sysfs dir has transport, state
#                     (live/connecting/...), address, cntlid, model, serial,
#                     firmware_rev, queue_count, sqsize; `nvme id-ctrl /dev/nvme0`
#                     (or on NVMF_DEV) sends Identify Controller.

_INTEROP_CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INTEROP_VM=${INTEROP_VM:-$_INTEROP_CI_DIR/kernel-initiator-vm.sh}
INTEROP_LOG_DIR=${INTEROP_LOG_DIR:-/tmp/ballast-interop}
INTEROP_TEST=${INTEROP_TEST:-$(basename "$0" .sh)}
VM_TIMEOUT=${VM_TIMEOUT:-300}
INTEROP_PASSED=0
INTEROP_FAILED=0
INTEROP_FAILED_NAMES=()
INTEROP_LAST_OK=
GUEST_RC= GUEST_LOG= GUEST_SECS=

# Prepended to every guest script (busybox ash).
INTEROP_GUEST_PRELUDE='# ---- prelude from ci/lib-interop.sh ----
set -eo pipefail
[ "${NVMF_GUEST_XTRACE:-0}" = 1 ] && set -x
step() { echo "== [$(cut -d" " -f1 /proc/uptime)s] $*"; }
fail() { echo "GUEST FAIL: $*"; exit 1; }
nvmf_ctrl() {
    local n=${1:-$NVMF_NQN} c
    for c in /sys/class/nvme/nvme*; do
        if [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$n" ]; then echo "${c##*/}"; return 0; fi
    done
    return 1
}
# ---- test script ----'

_interop_log() { printf '[interop] %s\n' "$*" >&2; }

interop_setup() {
    mkdir -p "$INTEROP_LOG_DIR/$INTEROP_TEST"
    local log=$INTEROP_LOG_DIR/$INTEROP_TEST/setup.log t0=$SECONDS rc=0
    timeout -k 10 "${INTEROP_SETUP_TIMEOUT:-900}" bash "$INTEROP_VM" setup > "$log" 2>&1 || rc=$?
    if ((rc)); then
        _interop_log "setup failed (rc=$rc, $((SECONDS - t0)) s); $log:"
        sed 's/^/  | /' "$log" >&2
        return "$rc"
    fi
    _interop_log "setup ok ($((SECONDS - t0)) s)"
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - <<'EOF'
import random, socket, sys
for _ in range(500):
    p = random.randint(20000, 32767)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p); sys.exit(0)
sys.exit(1)
EOF
    else
        local p i
        for ((i = 0; i < 500; i++)); do
            p=$((20000 + RANDOM % 12768))
            # nothing accepts a connection there -> assume free
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
        done
        return 1
    fi
}

wait_port() {
    local port=$1 secs=${2:-20} i
    for ((i = 0; i < secs * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    _interop_log "nothing listening on 127.0.0.1:$port after ${secs} s"
    return 1
}

# _interop_run SCRIPT NAME: runs the guest, sets GUEST_RC/GUEST_LOG/GUEST_SECS,
# prints nothing about the outcome.
_interop_run() {
    local script=$1 name=$2 dir gscript t0=$SECONDS v
    dir=$INTEROP_LOG_DIR/$INTEROP_TEST
    mkdir -p "$dir"
    name=$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_')
    GUEST_LOG=$dir/$name.log
    gscript=$dir/$name.guest.sh
    GUEST_RC=0 GUEST_SECS=0
    {
        printf '%s\n' "$INTEROP_GUEST_PRELUDE"
        if [[ $script == - ]]; then cat; else cat -- "$script"; fi
    } > "$gscript" || { echo "guest_run: cannot read guest script '$script'" > "$GUEST_LOG"; GUEST_RC=2; return 2; }
    # Pass the harness's variables on explicitly: callers need not export them.
    local env=(NVMF_PORT="${NVMF_PORT:-4420}" VM_TIMEOUT="$VM_TIMEOUT")
    for v in NVMF_NQN FIO_RUNTIME NVMF_HOSTNQN NVMF_VM_CACHE $(compgen -v VM_ || true) \
             $(compgen -v NVMF_GUEST_ || true) $(compgen -v KT_ || true); do
        if [[ -n ${!v+set} && $v != VM_TIMEOUT ]]; then env+=("$v=${!v}"); fi
    done
    local qenv; qenv=$(printf '%q ' "${env[@]}")
    {
        echo "# $(date -u +%FT%TZ) $INTEROP_TEST/$name"
        echo "# reproduce: $qenv$INTEROP_VM run-file $gscript"
    } > "$GUEST_LOG"
    # Backstop on top of VM_TIMEOUT (which the VM script enforces on qemu):
    # timeout(1) signals its whole process group, qemu included.
    local cmd=(env "${env[@]}" timeout -k 10 $((VM_TIMEOUT + 120)) bash "$INTEROP_VM" run-file "$gscript")
    if [[ ${INTEROP_VERBOSE:-0} == 1 ]]; then
        { "${cmd[@]}" 2>&1 | tee -a "$GUEST_LOG"; GUEST_RC=${PIPESTATUS[0]}; } || true
    else
        "${cmd[@]}" >> "$GUEST_LOG" 2>&1 || GUEST_RC=$?
    fi
    GUEST_SECS=$((SECONDS - t0))
    return "$GUEST_RC"
}

# _interop_why: one line describing how the last guest run ended.
_interop_why() {
    local last
    last=$(grep '^== \[' "$GUEST_LOG" 2>/dev/null | tail -n1 | sed 's/^== \[[^]]*\] //' || true)
    last=${last:+, last step: $last}
    if grep -q '^@@NVMF_VM rc=' "$GUEST_LOG" 2>/dev/null; then
        echo "guest script exited $GUEST_RC$last"
    elif ((GUEST_RC == 124)); then
        echo "timeout after VM_TIMEOUT=${VM_TIMEOUT}s$last"
    elif ! grep -q '^@@NVMF_VM booted' "$GUEST_LOG" 2>/dev/null; then
        echo "harness error: guest never booted (rc=$GUEST_RC)"
    elif ((GUEST_RC == 125)); then
        echo "guest died without a status (panic? qemu crash?)$last"
    else
        echo "harness error (rc=$GUEST_RC)$last"
    fi
}

_interop_dump() {
    echo "---- $GUEST_LOG (last ${INTEROP_LOG_TAIL:-400} lines) ----"
    tail -n "${INTEROP_LOG_TAIL:-400}" "$GUEST_LOG" | sed 's/^/  | /'
    echo "---- end of $GUEST_LOG ----"
}

guest_run() {
    local script=${1:?guest_run SCRIPT [NAME]} name=${2:-}
    [[ -n $name ]] || { [[ $script == - ]] && name=stdin || name=$(basename "$script" .sh); }
    _interop_run "$script" "$name" && return 0
    _interop_log "guest_run $name: $(_interop_why) ($GUEST_SECS s)"
    _interop_dump >&2
    return "$GUEST_RC"
}

assert_guest_rc() {
    local name=${1:?assert_guest_rc NAME RC SCRIPT} want=${2:?} script=${3:?} ok=0
    _interop_run "$script" "$name" || true
    if [[ $GUEST_RC == "$want" ]]; then
        # a non-zero status only counts if the guest itself reported it
        if ((want == 0 || want == 124)) || grep -q '^@@NVMF_VM rc=' "$GUEST_LOG"; then ok=1; fi
    fi
    INTEROP_LAST_OK=$ok
    if ((ok)); then
        INTEROP_PASSED=$((INTEROP_PASSED + 1))
        echo "ok $name ($GUEST_SECS s)"
    else
        INTEROP_FAILED=$((INTEROP_FAILED + 1))
        INTEROP_FAILED_NAMES+=("$name")
        echo "FAIL $name ($(_interop_why); wanted $want; $GUEST_SECS s; log $GUEST_LOG)"
        _interop_dump
    fi
    return 0      # recorded: a `set -e` test script goes on to interop_summary
}

assert_guest_ok() {
    assert_guest_rc "${1:?assert_guest_ok NAME SCRIPT}" 0 "${2:?assert_guest_ok NAME SCRIPT}"
}

# ok NAME / notok NAME DETAIL: TAP-style host-side checks for scripts that run many
# ("ok - NAME", "not ok - NAME: DETAIL", further DETAIL lines indented), counted in PASSED,
# FAILED and FAILED_NAMES (each script prints its own summary).
PASSED=0 FAILED=0 FAILED_NAMES=()
ok() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
notok() { # NAME DETAIL (DETAIL may span lines: printed indented)
    FAILED=$((FAILED + 1)) FAILED_NAMES+=("$1")
    local first rest
    first=${2%%$'\n'*}
    echo "not ok - $1: $first"
    if [[ $2 == *$'\n'* ]]; then rest=${2#*$'\n'}; printf '%s\n' "$rest" | head -n 40 | sed 's/^/    | /'; fi
}

# interop_pass NAME / interop_fail NAME [WHY]: record a host-side check (e.g.
# "the target did not start") in the same counters.
interop_pass() {
    INTEROP_PASSED=$((INTEROP_PASSED + 1)) INTEROP_LAST_OK=1
    echo "ok $1"
}
interop_fail() {
    INTEROP_FAILED=$((INTEROP_FAILED + 1)) INTEROP_LAST_OK=0
    INTEROP_FAILED_NAMES+=("$1")
    echo "FAIL $1${2:+ ($2)}"
}

# csi_interop_setup: BALLASTD, BALLAST_RPC, BALLAST_CSI (absolute paths; built with cargo
# --release unless all three are given) and interop_setup; `fatal NAME DETAIL` on failure
# (the caller defines fatal; build output in $LOGDIR/build.log).
csi_interop_setup() {
    if [[ -z ${BALLASTD:-} || -z ${BALLAST_RPC:-} || -z ${BALLAST_CSI:-} ]]; then
        cargo build --release -q --bin ballastd --bin ballast-rpc --bin ballast-csi \
            2>"$LOGDIR/build.log" || fatal "build" "$(tail -n 20 "$LOGDIR/build.log")"
        BALLASTD=${BALLASTD:-${CARGO_TARGET_DIR:-target}/release/ballastd}
        BALLAST_RPC=${BALLAST_RPC:-${CARGO_TARGET_DIR:-target}/release/ballast-rpc}
        BALLAST_CSI=${BALLAST_CSI:-${CARGO_TARGET_DIR:-target}/release/ballast-csi}
    fi
    BALLASTD=$(readlink -f "$BALLASTD") BALLAST_RPC=$(readlink -f "$BALLAST_RPC")
    BALLAST_CSI=$(readlink -f "$BALLAST_CSI")
    interop_setup 2>"$LOGDIR/setup.err" ||
        fatal "guest harness setup" "$(tail -n 20 "$LOGDIR/setup.err")"
}

# Counts both kinds of checks: assert_*/interop_pass/interop_fail and ok/notok.
interop_summary() {
    local passed=$((INTEROP_PASSED + PASSED)) failed=$((INTEROP_FAILED + FAILED))
    ((failed == 0)) || printf 'failed: %s\n' "${INTEROP_FAILED_NAMES[@]}" "${FAILED_NAMES[@]}"
    echo "$passed passed, $failed failed"
    ((failed == 0))
}

# ensure_venv VERSION LOG: see the header. A marker file says a venv is complete; a lock
# keeps concurrent scripts from making the same one twice.
SPDK_VENV_ROOT=${SPDK_VENV_ROOT:-/var/tmp/ballast-spdk-venvs}
ensure_venv() {
    local v=$1 dir=$SPDK_VENV_ROOT/$1 log=$2
    mkdir -p "$SPDK_VENV_ROOT"
    (
        flock 9 2>/dev/null || true
        if [[ -x $dir/bin/spdk-rpc && $(cat "$dir/.ballast-spdk-version" 2>/dev/null) == "$v" ]]; then
            exit 0
        fi
        rm -rf "$dir"
        if ! python3 -m venv "$dir" >>"$log" 2>&1; then
            # Debian splits ensurepip out of python3
            apt-get install -y -q python3-venv >>"$log" 2>&1 || true
            rm -rf "$dir"
            python3 -m venv "$dir" >>"$log" 2>&1 || exit 1
        fi
        timeout 300 "$dir/bin/pip" install -q --disable-pip-version-check "spdk==$v" >>"$log" 2>&1 || exit 1
        "$dir/bin/spdk-rpc" --help >/dev/null 2>>"$log" || exit 1
        echo "$v" >"$dir/.ballast-spdk-version"
    ) 9>"$SPDK_VENV_ROOT/.lock"
}
