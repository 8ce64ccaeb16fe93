#!/usr/bin/env bash
# ci/interop-host.sh -- ballast's NVMe/TCP *host* library against a target that is not
# ours: the Linux kernel's nvmet-tcp target in the QEMU guest (brd RAM disk), reached from the
# host through a slirp port forward (host 127.0.0.1:PORT -> guest 10.0.2.15:4420). The host
# side runs nvme/tests/external.rs (discovery, connect with and without digests, Identify,
# keep-alive, in-capsule and R2T writes of 512 B-128 KiB verified by read-back, flush, an
# out-of-range read). A second forward lets the host tell the guest it is done.
# Ends with "N passed, M failed"; exit status 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib-interop.sh
t0=$SECONDS
interop_setup
LOGDIR=$INTEROP_LOG_DIR/interop-host
mkdir -p "$LOGDIR"
cargo test -q -p ballast-nvme --test external --no-run >/dev/null 2>&1
NVMF_NQN=nqn.2026-11.io.ballast:kernel-target
NVMF_PORT=$(free_port)
DONE_PORT=$(free_port)
VM_HOSTFWD="tcp:127.0.0.1:$NVMF_PORT-10.0.2.15:4420,hostfwd=tcp:127.0.0.1:$DONE_PORT-10.0.2.15:5555"

(
    # Wait for the guest's target to answer through the forward, then run the host tests.
    ok=0
    for _ in $(seq 600); do
        if python3 - "$NVMF_PORT" <<'PY' 2>/dev/null; then ok=1; break; fi
import socket, sys
# A real ICReq; a live nvmet answers with an ICResp (slirp alone would just close).
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(bytes([0, 0, 128, 0]) + (128).to_bytes(4, "little") + bytes(120))
s.settimeout(3)
d = s.recv(8)
sys.exit(0 if len(d) > 0 and d[0] == 1 else 1)
PY
        sleep 0.5
    done
    if [[ $ok == 1 ]]; then
        BALLAST_EXT_TARGET=127.0.0.1:$NVMF_PORT BALLAST_EXT_NQN=$NVMF_NQN \
            cargo test -p ballast-nvme --test external -- --ignored --nocapture \
            >"$LOGDIR/host-tests.log" 2>&1 && echo pass >"$LOGDIR/host-result" ||
            echo fail >"$LOGDIR/host-result"
    else
        echo "kernel target never answered" >"$LOGDIR/host-result"
    fi
    # Release the guest.
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()" \
        "$DONE_PORT" 2>/dev/null || true
) &
host_side=$!

assert_guest_ok kernel-target-up - <<'GUEST'
step "kernel nvmet-tcp target on 10.0.2.15:4420 (host 127.0.0.1:$NVMF_PORT)"
kt_start 4420 "$NVMF_NQN" brd 64 10.0.2.15
step "waiting for the host side to finish (it connects to port 5555 when done)"
timeout 240 nc -l -p 5555 </dev/null >/dev/null || fail "host never signalled completion"
kt_stop "$NVMF_NQN"
GUEST
wait "$host_side" || true
r=$(cat "$LOGDIR/host-result" 2>/dev/null || echo "no result")
if [[ $r == pass ]]; then
    interop_pass host-library-vs-kernel-target
else
    interop_fail host-library-vs-kernel-target "$r; log $LOGDIR/host-tests.log"
    tail -40 "$LOGDIR/host-tests.log" 2>/dev/null || true
fi
echo "# interop-host: $((SECONDS - t0)) s, logs in $LOGDIR"
interop_summary
