#!/usr/bin/env bash
# ci/interop-csi.sh -- ballast-csi's Node service under the Linux kernel initiator (issue 21):
# the node plugin runs INSIDE the QEMU guest (two of them: "node A" and "node B", each with
# its own host NQN, as two Kubernetes nodes would be), the controller on the host next to
# ballastd. The guest drives every call with `ballast-csi call`, as kubelet and the sidecars
# would: the controller on host 127.0.0.1:<port> is the guest's 10.0.2.2:<port>.
#
#   host   ballastd (one reactor, no default subsystem): a 256 MiB malloc pool, store lvs0;
#          ballast-csi controller over it (node "n1", NVMe/TCP on 127.0.0.1:<free port>,
#          advertised to hosts as 10.0.2.2), serving tcp://127.0.0.1:<port>.
#   guest  1 NodeGetInfo (node id = host NQN), Probe
#          2 CreateVolume 64 MiB ext4; ControllerPublishVolume to node A
#          3 NodeStageVolume on A: connects (ctrl_loss_tmo as the plugin was told), finds the
#            disk by namespace UUID, mkfs, mounts; again: nothing changes
#          4 NodePublishVolume (bind), again; files written with checksums; a read-only
#            publish refuses writes
#          5 NodeGetVolumeStats: bytes and inodes, condition normal
#          6 ControllerExpandVolume 128 MiB + NodeExpandVolume: the mounted ext4 grows
#          7 refusals: unstage while published, publish to B while A has it (single node)
#          8 NodeUnpublish, NodeUnstage on A: unmounted, disconnected; ControllerUnpublish A:
#            A's host NQN can no longer connect (nvme-cli, refused)
#          9 ControllerPublish to B, NodeStage + NodePublish on B: the files are there, same
#            checksums ("restaged on another node")
#         10 NodeUnpublish/NodeUnstage on B, ControllerUnpublish, DeleteVolume, ListVolumes
#         11 a block volume: a pattern written through node B's published device file; on
#            node A in a reader mode it reads back, the disk is read-only in the kernel and a
#            write to it fails
#   host   the volume's subsystem and lvol are gone; ballast-csi and ballastd exit cleanly
#
# Each check prints "ok - WHAT" or "not ok - WHAT: DETAIL"; ends with "N passed, M failed".
# Root, QEMU (ci/kernel-initiator-vm.sh setup); ~1-2 min under TCG.
# Logs: $INTEROP_LOG_DIR/interop-csi/ (ballastd.log, csi-controller.log, guest.log).
# Environment: BALLASTD, BALLAST_RPC, BALLAST_CSI (binaries; default: cargo build --release,
#   then ${CARGO_TARGET_DIR:-target}/release/), and lib-interop.sh's.
# shellcheck disable=SC2034
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. ci/lib-interop.sh
t0=$SECONDS

LOGDIR=$INTEROP_LOG_DIR/interop-csi
INTEROP_TEST=interop-csi
WORK=/var/tmp/ballast-interop-csi
SOCK=$WORK/ballastd.sock
VM_TIMEOUT=400
rm -rf "$LOGDIR" "$WORK"
mkdir -p "$LOGDIR" "$WORK"

DPID='' CPID=''
cleanup() {
    [[ -n $CPID ]] && { kill "$CPID" 2>/dev/null; wait "$CPID" 2>/dev/null; }
    [[ -n $DPID ]] && { kill -KILL "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null; }
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fatal() { notok "$1" "$2"; interop_summary; exit 1; }

# ------------------------------------------------------------------ build ----
csi_interop_setup   # ci/lib-interop.sh: binaries and the guest harness
B() { "$BALLAST_RPC" -s "$SOCK" "$@"; }

# ------------------------------------------------------------------- host ----
BALLAST_LOG=info "$BALLASTD" -m 0x1 -r "$SOCK" --default-size-mib 0 >"$LOGDIR/ballastd.log" 2>&1 &
DPID=$!
for _ in $(seq 300); do B -t 2 spdk_get_version >/dev/null 2>&1 && break; sleep 0.1; done
B bdev_malloc_create -b Pool0 256 4096 >/dev/null &&
    B bdev_lvol_create_lvstore Pool0 lvs0 -c 4194304 >/dev/null ||
    fatal "ballastd with a store" "$(tail -n 20 "$LOGDIR/ballastd.log")"
NVMF_PORT=$(free_port)
CSI_PORT=$(free_port)
while [[ $CSI_PORT == "$NVMF_PORT" ]]; do CSI_PORT=$(free_port); done
cat >"$WORK/nodes.json" <<EOF
{"nodes": [{"id": "n1", "rpc_socket": "$SOCK", "lvs": "lvs0",
            "nvmf": {"addr": "127.0.0.1", "port": $NVMF_PORT, "advertise": "10.0.2.2"}}]}
EOF
BALLAST_LOG=info "$BALLAST_CSI" controller --endpoint "tcp://127.0.0.1:$CSI_PORT" \
    --config "$WORK/nodes.json" >"$LOGDIR/csi-controller.log" 2>&1 &
CPID=$!
wait_port "$CSI_PORT" 20 || fatal "ballast-csi controller serving" "$(cat "$LOGDIR/csi-controller.log")"
ok "host: ballastd with lvs0, ballast-csi controller on tcp://127.0.0.1:$CSI_PORT"

# ------------------------------------------------------------------ guest ----
VM_GUEST_BINS=$BALLAST_CSI
NVMF_GUEST_CSI_PORT=$CSI_PORT
NVMF_GUEST_HOST_A=nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-00000000000a
NVMF_GUEST_HOST_B=nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-00000000000b
assert_guest_ok node-service - <<'EOF'
CTRL=tcp://10.0.2.2:$NVMF_GUEST_CSI_PORT
NA=unix:///run/csi-a.sock NB=unix:///run/csi-b.sock
HA=$NVMF_GUEST_HOST_A HB=$NVMF_GUEST_HOST_B
pass() { echo "@@CSI ok $*"; }
fail() {
    echo "GUEST FAIL: $*"
    for n in a b; do echo "---- node plugin $n"; cat /tmp/node-$n.log 2>/dev/null; done
    exit 1
}
# c ENDPOINT METHOD JSON: the call must succeed; its answer in OUT.
c() { OUT=$(ballast-csi call --endpoint "$1" "$2" "$3" 2>/tmp/call.err) || {
        cat /tmp/call.err; fail "$2 failed"; }; }
# refused ENDPOINT METHOD JSON CODE: the call must fail with gRPC code CODE.
refused() {
    if ballast-csi call --endpoint "$1" "$2" "$3" >/tmp/call.out 2>/tmp/call.err; then
        fail "$2 succeeded: $(cat /tmp/call.out)"
    fi
    grep -q "$4" /tmp/call.err || { cat /tmp/call.err; fail "$2: not $4"; }
}
jf() { echo "$OUT" | sed -n 's/.*"'"$1"'":"\([^"]*\)".*/\1/p'; }
CAP='{"access_type":{"mount":{"fs_type":"ext4"}},"access_mode":{"mode":1}}'

step "1 node plugins A and B"
modprobe nvme-tcp
ballast-csi node --endpoint $NA --node-name guest-a --host-nqn $HA --ctrl-loss-tmo 60 \
    >/tmp/node-a.log 2>&1 &
ballast-csi node --endpoint $NB --node-name guest-b --host-nqn $HB --ctrl-loss-tmo 60 \
    >/tmp/node-b.log 2>&1 &
i=0; while [ ! -S /run/csi-a.sock ] || [ ! -S /run/csi-b.sock ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "node plugins did not start"; sleep 0.1; done
c $NA NodeGetInfo '{}'
echo "$OUT" | grep -q "\"node_id\":\"$HA\"" || fail "node id: $OUT"
echo "$OUT" | grep -q '"topology.csi.ballast.io/node":"guest-a"' || fail "topology: $OUT"
c $NA Probe '{}'
echo "$OUT" | grep -q '"value":true' || fail "probe: $OUT"
pass "NodeGetInfo: node id = host NQN, topology; Probe ready"

step "2 create and publish to A"
c $CTRL CreateVolume '{"name":"pvc-guest","capacity_range":{"required_bytes":67108864},"volume_capabilities":['"$CAP"']}'
VOL=$(jf volume_id)
[ -n "$VOL" ] || fail "no volume id: $OUT"
c $CTRL ControllerPublishVolume '{"volume_id":"'"$VOL"'","node_id":"'"$HA"'","volume_capability":'"$CAP"'}'
CTX=$(echo "$OUT" | sed -n 's/.*"publish_context":\({[^}]*}\).*/\1/p')
NQN=$(jf nqn)
echo "$CTX" | grep -q '"traddr":"10.0.2.2"' || fail "publish_context: $OUT"
pass "CreateVolume + ControllerPublishVolume: $NQN"

step "3 stage on A"
STAGE='{"volume_id":"'"$VOL"'","publish_context":'"$CTX"',"staging_target_path":"/mnt/a/stage","volume_capability":'"$CAP"'}'
c $NA NodeStageVolume "$STAGE"
grep -q " /mnt/a/stage ext4 " /proc/mounts || fail "not mounted: $(cat /proc/mounts)"
DEV=$(awk '$2 == "/mnt/a/stage" {print $1}' /proc/mounts)
CTRLR=$(nvmf_ctrl "$NQN")
# the plugin takes a disk only of the volume's subsystem: sysfs names it here
[ "$(cat /sys/block/${DEV#/dev/}/device/subsysnqn)" = "$NQN" ] || fail "subsysnqn of $DEV"
# and refuses a publish_context naming another subsystem (no connect, INVALID_ARGUMENT)
refused $NA NodeStageVolume '{"volume_id":"'"$VOL"'","publish_context":'"$(echo "$CTX" | sed 's/"nqn":"[^"]*"/"nqn":"nqn.2026-11.io.ballast:other"/')"',"staging_target_path":"/mnt/a/other","volume_capability":'"$CAP"'}' InvalidArgument
[ "$(cat /sys/class/nvme/$CTRLR/state)" = live ] || fail "controller not live"
if [ -f /sys/class/nvme/$CTRLR/ctrl_loss_tmo ]; then
    [ "$(cat /sys/class/nvme/$CTRLR/ctrl_loss_tmo)" = 60 ] || fail "ctrl_loss_tmo $(cat /sys/class/nvme/$CTRLR/ctrl_loss_tmo)"
fi
c $NA NodeStageVolume "$STAGE"
[ "$(grep -c ' /mnt/a/stage ' /proc/mounts)" = 1 ] || fail "staged twice"
[ "$(ls /sys/class/nvme | wc -l)" = 1 ] || fail "connected twice: $(ls /sys/class/nvme)"
pass "NodeStageVolume: connected ($CTRLR), $DEV formatted and mounted; idempotent"

step "4 publish on A, write"
PUB='{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/a/stage","target_path":"/mnt/a/pod/vol","volume_capability":'"$CAP"'}'
c $NA NodePublishVolume "$PUB"
c $NA NodePublishVolume "$PUB"
[ "$(grep -c ' /mnt/a/pod/vol ' /proc/mounts)" = 1 ] || fail "published twice"
dd if=/dev/urandom of=/mnt/a/pod/vol/data bs=1M count=8 2>/dev/null
echo hello >/mnt/a/pod/vol/hello
sync
SUM=$(sha256sum /mnt/a/pod/vol/data | cut -d' ' -f1)
RO='{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/a/stage","target_path":"/mnt/a/pod/ro","volume_capability":'"$CAP"',"readonly":true}'
c $NA NodePublishVolume "$RO"
[ "$(cat /mnt/a/pod/ro/hello)" = hello ] || fail "read-only view"
if touch /mnt/a/pod/ro/x 2>/dev/null; then fail "read-only publish took a write"; fi
pass "NodePublishVolume: bind mount (idempotent), files written; read-only publish refuses writes"

step "5 stats"
c $NA NodeGetVolumeStats '{"volume_id":"'"$VOL"'","volume_path":"/mnt/a/pod/vol"}'
echo "$OUT" | grep -q '"unit":1' && echo "$OUT" | grep -q '"unit":2' || fail "usage: $OUT"
echo "$OUT" | grep -q '"abnormal":false' || fail "condition: $OUT"
pass "NodeGetVolumeStats: bytes + inodes, condition normal"

step "6 expand"
KB0=$(df -k /mnt/a/pod/vol | awk 'NR == 2 {print $2}')
c $CTRL ControllerExpandVolume '{"volume_id":"'"$VOL"'","capacity_range":{"required_bytes":134217728},"volume_capability":'"$CAP"'}'
echo "$OUT" | grep -q '"node_expansion_required":true' || fail "expand: $OUT"
c $NA NodeExpandVolume '{"volume_id":"'"$VOL"'","volume_path":"/mnt/a/pod/vol","capacity_range":{"required_bytes":134217728},"volume_capability":'"$CAP"'}'
echo "$OUT" | grep -q '"capacity_bytes":134217728' || fail "node expand: $OUT"
KB1=$(df -k /mnt/a/pod/vol | awk 'NR == 2 {print $2}')
[ "$KB1" -gt $((KB0 + 50000)) ] || fail "ext4 not grown: $KB0 -> $KB1 KiB"
pass "ControllerExpandVolume + NodeExpandVolume: ext4 $KB0 -> $KB1 KiB while mounted"

step "7 refusals"
refused $NA NodeUnstageVolume '{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/a/stage"}' FailedPrecondition
grep -q " /mnt/a/stage " /proc/mounts || fail "unstaged anyway"
refused $CTRL ControllerPublishVolume '{"volume_id":"'"$VOL"'","node_id":"'"$HB"'","volume_capability":'"$CAP"'}' FailedPrecondition
pass "refused: unstage while published, a second node for a single-node volume"

step "8 unpublish, unstage, unpublish from A"
for t in vol ro; do
    c $NA NodeUnpublishVolume '{"volume_id":"'"$VOL"'","target_path":"/mnt/a/pod/'$t'"}'
    [ ! -e /mnt/a/pod/$t ] || fail "target $t left"
done
c $NA NodeUnstageVolume '{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/a/stage"}'
c $NA NodeUnstageVolume '{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/a/stage"}'
grep -q " /mnt/a/" /proc/mounts && fail "still mounted"
if nvmf_ctrl "$NQN" >/dev/null; then fail "still connected"; fi
c $CTRL ControllerUnpublishVolume '{"volume_id":"'"$VOL"'","node_id":"'"$HA"'"}'
if nvme connect -t tcp -a 10.0.2.2 -s "$NVMF_PORT" -n "$NQN" --hostnqn "$HA" -l 5 2>/tmp/conn.err; then
    fail "host A connected after ControllerUnpublish"
fi
pass "NodeUnpublish/NodeUnstage (idempotent): unmounted, disconnected; A refused after ControllerUnpublish"

step "9 restage on B"
c $CTRL ControllerPublishVolume '{"volume_id":"'"$VOL"'","node_id":"'"$HB"'","volume_capability":'"$CAP"'}'
CTX=$(echo "$OUT" | sed -n 's/.*"publish_context":\({[^}]*}\).*/\1/p')
c $NB NodeStageVolume '{"volume_id":"'"$VOL"'","publish_context":'"$CTX"',"staging_target_path":"/mnt/b/stage","volume_capability":'"$CAP"'}'
c $NB NodePublishVolume '{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/b/stage","target_path":"/mnt/b/pod/vol","volume_capability":'"$CAP"'}'
[ "$(cat /mnt/b/pod/vol/hello)" = hello ] || fail "hello missing on B"
[ "$(sha256sum /mnt/b/pod/vol/data | cut -d' ' -f1)" = "$SUM" ] || fail "data differs on B"
[ "$(cat /sys/class/nvme/$(nvmf_ctrl "$NQN")/hostnqn)" = "$HB" ] || fail "not connected as B"
pass "restaged on node B: files and checksums as written on A"

step "10 clean up"
c $NB NodeUnpublishVolume '{"volume_id":"'"$VOL"'","target_path":"/mnt/b/pod/vol"}'
c $NB NodeUnstageVolume '{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/b/stage"}'
c $CTRL ControllerUnpublishVolume '{"volume_id":"'"$VOL"'","node_id":"'"$HB"'"}'
c $CTRL DeleteVolume '{"volume_id":"'"$VOL"'"}'
c $CTRL ListVolumes '{}'
echo "$OUT" | grep -q "$VOL" && fail "still listed: $OUT"
pass "NodeUnpublish/NodeUnstage on B, ControllerUnpublish, DeleteVolume"

step "11 a block volume: written on B, read-only on A"
BW='{"access_type":{"block":{}},"access_mode":{"mode":1}}'
BR='{"access_type":{"block":{}},"access_mode":{"mode":3}}'
c $CTRL CreateVolume '{"name":"pvc-blk","capacity_range":{"required_bytes":16777216},"volume_capabilities":['"$BW"']}'
BVOL=$(jf volume_id)
c $CTRL ControllerPublishVolume '{"volume_id":"'"$BVOL"'","node_id":"'"$HB"'","volume_capability":'"$BW"'}'
CTX=$(echo "$OUT" | sed -n 's/.*"publish_context":\({[^}]*}\).*/\1/p')
c $NB NodeStageVolume '{"volume_id":"'"$BVOL"'","publish_context":'"$CTX"',"staging_target_path":"/mnt/b/bstage","volume_capability":'"$BW"'}'
c $NB NodePublishVolume '{"volume_id":"'"$BVOL"'","staging_target_path":"/mnt/b/bstage","target_path":"/mnt/b/blk","volume_capability":'"$BW"'}'
printf 'ballast-block' >/tmp/pattern
dd if=/tmp/pattern of=/mnt/b/blk bs=512 count=1 conv=notrunc,fsync 2>/tmp/dd.err || {
    cat /tmp/dd.err; fail "writing the block volume on B"; }
c $NB NodeUnpublishVolume '{"volume_id":"'"$BVOL"'","target_path":"/mnt/b/blk"}'
c $NB NodeUnstageVolume '{"volume_id":"'"$BVOL"'","staging_target_path":"/mnt/b/bstage"}'
c $CTRL ControllerUnpublishVolume '{"volume_id":"'"$BVOL"'","node_id":"'"$HB"'"}'
c $CTRL ControllerPublishVolume '{"volume_id":"'"$BVOL"'","node_id":"'"$HA"'","volume_capability":'"$BR"'}'
CTX=$(echo "$OUT" | sed -n 's/.*"publish_context":\({[^}]*}\).*/\1/p')
c $NA NodeStageVolume '{"volume_id":"'"$BVOL"'","publish_context":'"$CTX"',"staging_target_path":"/mnt/a/bstage","volume_capability":'"$BR"'}'
c $NA NodePublishVolume '{"volume_id":"'"$BVOL"'","staging_target_path":"/mnt/a/bstage","target_path":"/mnt/a/blk","volume_capability":'"$BR"'}'
[ "$(head -c 13 /mnt/a/blk)" = ballast-block ] || fail "block data: $(head -c 13 /mnt/a/blk | od -c | head -2)"
BU=${BVOL##*:}
BDISK=''
for d in /sys/block/nvme*n*; do
    case ${d##*/} in nvme*c*) continue ;; esac   # a multipath path device, not the disk
    if [ "$(cat "$d/uuid" 2>/dev/null)" = "$BU" ]; then BDISK=${d##*/}; break; fi
done
[ -n "$BDISK" ] && [ "$(cat /sys/block/$BDISK/ro)" = 1 ] || fail "disk $BDISK not read-only"
if dd if=/dev/zero of=/mnt/a/blk bs=512 count=1 conv=notrunc,fsync 2>/dev/null; then
    fail "a write went to a read-only block volume"
fi
[ "$(head -c 13 /mnt/a/blk)" = ballast-block ] || fail "block data changed"
c $NA NodeUnpublishVolume '{"volume_id":"'"$BVOL"'","target_path":"/mnt/a/blk"}'
c $NA NodeUnstageVolume '{"volume_id":"'"$BVOL"'","staging_target_path":"/mnt/a/bstage"}'
c $CTRL ControllerUnpublishVolume '{"volume_id":"'"$BVOL"'","node_id":"'"$HA"'"}'
c $CTRL DeleteVolume '{"volume_id":"'"$BVOL"'"}'
pass "block volume: written through B's device file, read on A in a reader mode: the disk read-only in the kernel ($BDISK), a write refused"
EOF
GLOG=$LOGDIR/guest.log
cp "$GUEST_LOG" "$GLOG" 2>/dev/null || true
while read -r line; do ok "guest: ${line#@@CSI ok }"; done < <(grep '^@@CSI ok ' "$GLOG" 2>/dev/null)

# ------------------------------------------------------------------- host ----
if [[ $(B nvmf_get_subsystems 2>/dev/null | grep -c 'nqn.2026-11.io.ballast:csi-') == 0 ]]; then
    ok "host: no export subsystem left"
else
    notok "host: no export subsystem left" "$(B nvmf_get_subsystems)"
fi
if B bdev_lvol_get_lvols -l lvs0 2>/dev/null | grep -q csi-pvc-guest; then
    notok "host: the lvol is deleted" "$(B bdev_lvol_get_lvols -l lvs0)"
else
    ok "host: the lvol is deleted"
fi
kill "$CPID"
if wait "$CPID"; then ok "ballast-csi controller exits 0 on SIGTERM"
else notok "ballast-csi controller exits 0 on SIGTERM" "$(tail -n 20 "$LOGDIR/csi-controller.log")"; fi
CPID=''
if grep -q panicked "$LOGDIR/ballastd.log" "$LOGDIR/csi-controller.log"; then
    notok "no panics" "$(grep -h panicked "$LOGDIR"/*.log)"
else
    ok "no panics"
fi
echo "# interop-csi: $((SECONDS - t0)) s, logs in $LOGDIR"
interop_summary
