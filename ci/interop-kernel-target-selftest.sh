#!/usr/bin/env bash
# ci/interop-kernel-target-selftest.sh -- proves the interop harness itself
# (ci/lib-interop.sh + ci/kernel-initiator-vm.sh + ci/guest/nvmf-smoke.sh)
# with the Linux kernel's own nvmet-tcp target, no ballast involved:
#   harness-errexit        a failing command inside a function aborts the guest
#                          script and its exit status (3) reaches the host;
#   kernel-target-smoke    kt_start in the guest on 10.0.2.15:4420, exposed by
#                          a slirp hostfwd on host 127.0.0.1:$port, so the guest
#                          initiator goes guest -> 10.0.2.2:$port -> host
#                          loopback -> guest: the very path to a ballast target
#                          on the host. Then nvmf-smoke.sh: discover, connect,
#                          sysfs + id-ctrl checks, fio crc32c verify, disconnect;
#   kernel-target-digests  the same with header + data digests (-g -G).
# Ends with "N passed, M failed"; exit status 1 if anything failed.
# Usage (root): bash ci/interop-kernel-target-selftest.sh     (~1 min under TCG)
# Logs: ${INTEROP_LOG_DIR:-/tmp/ballast-interop}/interop-kernel-target-selftest/
set -euo pipefail
cd "$(dirname "$0")/.."
VM_TIMEOUT=${VM_TIMEOUT:-180}
. ci/lib-interop.sh
t0=$SECONDS

interop_setup

assert_guest_rc harness-errexit 3 - <<'GUEST'
step "a failing command inside a function must end the script with its status"
f() { sh -c 'exit 3'; echo "NOT REACHED: errexit did not abort"; }
f
exit 0
GUEST

NVMF_NQN=nqn.2024-01.io.ballast:interop-selftest
kt_guest() {
    echo 'step "kernel nvmet-tcp target on 10.0.2.15:4420 = host 127.0.0.1:$NVMF_PORT (hostfwd)"'
    echo 'kt_start 4420 "$NVMF_NQN" brd 64 10.0.2.15'
    cat ci/guest/nvmf-smoke.sh
    echo 'kt_stop "$NVMF_NQN"'
}
for t in "kernel-target-smoke:-l 5" "kernel-target-digests:-g -G -l 5"; do
    NVMF_PORT=$(free_port)
    VM_HOSTFWD=tcp:127.0.0.1:$NVMF_PORT-10.0.2.15:4420
    NVMF_GUEST_CONNECT_OPTS=${t#*:}
    assert_guest_ok "${t%%:*}" <(kt_guest)
done

echo "# interop-kernel-target-selftest: $((SECONDS - t0)) s, logs in $INTEROP_LOG_DIR/$INTEROP_TEST"
interop_summary
