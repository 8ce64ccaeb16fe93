#!/usr/bin/env bash
# ci/interop-rpc.sh -- JSON-RPC end to end with the real Linux initiator:
#   1. ballastd starts with no subsystem at all (an empty config);
#   2. everything is configured over JSON-RPC with ballast-rpc only: malloc bdevs, a crypto key
#      and an encryption stage, the TCP transport, a subsystem, a namespace, a listener;
#   3. in the guest: nvme discover finds it, nvme connect, fio crc32c verify on namespace 1,
#      which is a compressed, encrypted volume (namespace <- compress (lz4, 16 KiB chunks, so
#      4 KiB writes are read-modify-writes and larger ones straddle chunks) <- crypto
#      (AES-XTS) <- malloc), with incompressible and with compressible data; the host then
#      checks the volume's compression figures over RPC;
#   4. while the guest stays connected, the host adds a second namespace over RPC (triggered
#      when the controller shows up in nvmf_subsystem_get_controllers); the guest sees it in
#      `nvme list-ns` and as a block device without reconnecting (the AEN path), and reads it;
#   5. save_config, restart the daemon with -c on the saved file, save again: identical.
# Ends with "N passed, M failed"; exit status 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib-interop.sh
t0=$SECONDS
interop_setup

cargo build --release -q -p ballastd -p ballast-rpc
BIN=$PWD/target/release
LOGDIR=$INTEROP_LOG_DIR/interop-rpc
mkdir -p "$LOGDIR"
SOCK=$LOGDIR/ballast.sock
NVMF_PORT=$(free_port)
NVMF_NQN=nqn.2026-11.io.ballast:rpc-e2e
rpc() { "$BIN/ballast-rpc" -s "$SOCK" "$@"; }

echo '{"subsystems": []}' >"$LOGDIR/empty.json"
start_daemon() { # $1: config file
    "$BIN/ballastd" -m 0x1 -r "$SOCK" -c "$1" >>"$LOGDIR/ballastd.log" 2>&1 &
    DPID=$!
    for _ in $(seq 100); do
        [[ -S $SOCK ]] && rpc framework_wait_init >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
stop_daemon() {
    rpc spdk_kill_instance SIGTERM >/dev/null 2>&1 || kill "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
}
trap 'kill $DPID 2>/dev/null || true' EXIT

if start_daemon "$LOGDIR/empty.json"; then interop_pass daemon-start; else
    interop_fail daemon-start "ballastd did not come up"; interop_summary; exit 1; fi
if [[ $(rpc nvmf_get_subsystems | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') == 1 ]]; then
    interop_pass empty-config
else
    interop_fail empty-config "expected only the discovery subsystem"
fi

if rpc bdev_malloc_create -b Rpc0 64 512 >/dev/null &&
    rpc bdev_malloc_create -b Rpc1 32 4096 >/dev/null &&
    rpc nvmf_create_transport -t TCP -c 8192 -i 131072 >/dev/null &&
    rpc nvmf_create_subsystem "$NVMF_NQN" -a -s RPC0000001 -d ballast-rpc-e2e >/dev/null &&
    rpc accel_crypto_key_create -c AES_XTS -n k0 \
        -k 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff \
        -e f0e0d0c0b0a090807060504030201000f0e0d0c0b0a090807060504030201000 >/dev/null &&
    rpc bdev_crypto_create Rpc0 Crypt0 -n k0 >/dev/null &&
    rpc bdev_compress_create -b Crypt0 -n Comp0 --chunk-size 16384 >/dev/null &&
    rpc nvmf_subsystem_add_ns "$NVMF_NQN" Comp0 >/dev/null &&
    rpc nvmf_subsystem_add_listener "$NVMF_NQN" -t tcp -a 127.0.0.1 -s "$NVMF_PORT" -f ipv4 >/dev/null; then
    interop_pass configure-over-rpc
else
    interop_fail configure-over-rpc "an RPC failed (see above)"
fi
# Deleting a bdev in use fails clearly, and changes nothing.
if out=$(rpc bdev_crypto_delete Crypt0 2>&1); then   # claimed by compress
    interop_fail delete-in-use "deleting an exported bdev succeeded"
elif grep -q "claimed" <<<"$out"; then
    interop_pass delete-in-use
else
    interop_fail delete-in-use "unexpected message: $out"
fi
wait_port "$NVMF_PORT"

# Host side of step 4: once the guest's controller is there, add namespace 2.
(
    for _ in $(seq 600); do
        n=$(rpc nvmf_subsystem_get_controllers "$NVMF_NQN" 2>/dev/null |
            python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
        if [[ $n -ge 1 ]]; then
            sleep 2
            rpc nvmf_subsystem_add_ns "$NVMF_NQN" Rpc1 -n 2 >"$LOGDIR/add-ns.out" 2>&1
            exit 0
        fi
        sleep 0.2
    done
) &
adder=$!

FIO_RUNTIME=3
assert_guest_ok rpc-configured-fio-and-live-ns - <<'GUEST'
step "discover"
nvmf_discover | grep -q "subnqn:.*$NVMF_NQN" || fail "subsystem not in the discovery log"
step "connect"
nvmf_connect -l 5
ctrl=$(nvmf_ctrl) || fail "no controller"
[ "$(cat /sys/class/nvme/$ctrl/model | sed 's/ *$//')" = ballast-rpc-e2e ] || fail "model number"
step "fio crc32c verify on namespace 1 (compress <- crypto <- malloc): 4k random writes"
fio --name=v --filename=$NVMF_DEV --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=8 --size=4m --verify=crc32c --do_verify=1 --verify_fatal=1 >/tmp/fio.out 2>&1 \
    || { cat /tmp/fio.out; fail "fio verify"; }
step "fio crc32c verify, compressible data, 512 B..40 KiB writes straddling chunks"
fio --name=c --filename=$NVMF_DEV --ioengine=libaio --direct=1 --rw=randwrite \
    --bsrange=512-40k --iodepth=8 --offset=8m --size=8m --buffer_compress_percentage=70 \
    --refill_buffers --verify=crc32c --do_verify=1 --verify_fatal=1 >/tmp/fio.out 2>&1 \
    || { cat /tmp/fio.out; fail "fio verify (compressible)"; }
step "wait for namespace 2 (added over RPC while connected)"
i=0
until nvme list-ns /dev/$ctrl 2>/dev/null | grep -Eq '\]:0x2$|:2$|0x2'; do
    i=$((i + 1)); [ $i -lt 120 ] || { nvme list-ns /dev/$ctrl; dmesg | tail -20; fail "namespace 2 never appeared"; }
    sleep 0.5
done
nvme list-ns /dev/$ctrl
step "namespace 2 appears as a block device (AEN -> rescan), no reconnect"
ns2=${NVMF_DEV%n1}n2
i=0
until [ -b $ns2 ]; do
    i=$((i + 1)); [ $i -lt 60 ] || { ls /dev/nvme*; dmesg | tail -20; fail "no $ns2"; }
    sleep 0.5
done
[ "$(cat /sys/block/${ns2#/dev/}/queue/logical_block_size)" = 4096 ] || fail "ns 2 block size"
dd if=$ns2 of=/dev/null bs=4096 count=16 || fail "read ns 2"
[ "$(nvmf_ctrl)" = "$ctrl" ] || fail "the controller changed (reconnected?)"
step "disconnect"
nvmf_disconnect
GUEST
wait "$adder" 2>/dev/null || true

# The volume holds data, compressed (fio's 70 %-compressible buffers): figures over RPC.
if st=$(rpc bdev_compress_get_stats -n Comp0) &&
    python3 -c 'import json,sys; s=json.load(sys.stdin)[0]; assert s["mapped_bytes"] >= 8<<20 and s["compression_ratio"] > 1.2, s' <<<"$st"; then
    interop_pass compress-stats
else
    interop_fail compress-stats "unexpected: $st"
fi

# save → restart with -c → save must be identical.
rpc save_config >"$LOGDIR/saved1.json"
stop_daemon
if start_daemon "$LOGDIR/saved1.json"; then
    rpc save_config >"$LOGDIR/saved2.json"
    if cmp -s "$LOGDIR/saved1.json" "$LOGDIR/saved2.json"; then
        interop_pass save-restart-save
    else
        interop_fail save-restart-save "$(diff "$LOGDIR/saved1.json" "$LOGDIR/saved2.json" | head -20)"
    fi
else
    interop_fail save-restart-save "daemon did not start from the saved config"
fi
stop_daemon
if grep -q "panicked" "$LOGDIR/ballastd.log"; then
    interop_fail no-panic "$(grep -m3 panicked "$LOGDIR/ballastd.log")"
else
    interop_pass no-panic
fi
echo "# interop-rpc: $((SECONDS - t0)) s, logs in $LOGDIR"
interop_summary
