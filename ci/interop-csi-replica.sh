#!/usr/bin/env bash
# ci/interop-csi-replica.sh -- a replicated CSI volume (issue 21) mounted and written by the
# Linux kernel initiator while one of its replica nodes is killed and restarted.
#
#   nodes   "p": a ballastd in the root namespace, its store on a sparse file, NVMe/TCP on
#           127.0.0.1:<free port> (the guest's 10.0.2.2); "r1": a ballastd in the network
#           namespace blcsi-r1 (ci/lib-netns.sh: a veth pair, 10.251.41.2; made and removed by
#           this test), its store on a sparse file, NVMe/TCP on 10.251.41.2:4420.
#   host    ballast-csi controller over both (tcp://127.0.0.1:<port>), a control channel
#           (python http.server on 127.0.0.1) the guest polls for "stop".
#   guest   ballast-csi node plugin; CreateVolume replicas=2 (preferred: node p, so p holds
#           the mirror and exports it), ControllerPublish, NodeStage (ext4), NodePublish; then
#           fio runs on a file in the mount, each writing 16 MiB at random and verifying it
#           (crc32c), one after another until the host says stop; any I/O or verify error
#           fails the guest. At the end: unpublish, unstage, ControllerUnpublish, DeleteVolume.
#   faults  while the load runs: ControllerGetVolume normal ("2 of 2 in sync"); kill -9 of
#           r1's ballastd -> ControllerGetVolume abnormal (degraded) while the guest's writes
#           go on; r1 restarted from the configuration it kept (`ballastd --save-config`, as
#           nodes run) -> the mirror heals it by itself
#           and ControllerGetVolume turns normal again; the load completes more runs, all
#           verified. After the guest: nothing of the volume is left on either node.
#
# Each check prints "ok - WHAT" or "not ok - WHAT: DETAIL"; ends with "N passed, M failed".
# Root (network namespaces), QEMU (ci/kernel-initiator-vm.sh setup); ~2-3 min under TCG.
# Skipped (one "ok - skipped" line) when network namespaces cannot be made here.
# Logs: $INTEROP_LOG_DIR/interop-csi-replica/. Environment: BALLASTD, BALLAST_RPC,
#   BALLAST_CSI (binaries; default: cargo build --release), and lib-interop.sh's.
# shellcheck disable=SC2034
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. ci/lib-interop.sh
. ci/lib-netns.sh
t0=$SECONDS

LOGDIR=$INTEROP_LOG_DIR/interop-csi-replica
INTEROP_TEST=interop-csi-replica
WORK=/var/tmp/ballast-interop-csi-replica
NS=blcsi-r1 IDX=41
VM_TIMEOUT=600
rm -rf "$LOGDIR" "$WORK"
mkdir -p "$LOGDIR" "$WORK/ctl"

if ! netns_usable; then
    ok "skipped: network namespaces cannot be made here (root and iproute2 needed)"
    interop_summary
    exit 0
fi

PPID_D='' RPID='' CPID='' HPID='' GJOB=''
cleanup() {
    [[ -n $GJOB ]] && { kill -- -"$GJOB" 2>/dev/null; wait "$GJOB" 2>/dev/null; }
    for p in $CPID $HPID; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for p in $PPID_D $RPID; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    netns_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fatal() { notok "$1" "$2"; interop_summary; exit 1; }

csi_interop_setup   # ci/lib-interop.sh: binaries and the guest harness

# ------------------------------------------------------------------ nodes ----
netns_node_add "$NS" "$IDX" || fatal "network namespace $NS" "ip netns failed"
R1_ADDR=$(netns_node_addr "$IDX")
R() { "$BALLAST_RPC" -s "$WORK/$1.sock" "${@:2}"; }
wait_rpc() { # NODE: waits 30 s for its RPC socket
    local i
    for i in $(seq 300); do R "$1" -t 2 spdk_get_version >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
# start NODE [CONFIG]: ballastd of node p (root namespace) or r1 (in $NS)
start() {
    local n=$1 args=(--default-size-mib 0) pre=()
    [[ -n ${2:-} ]] && args=(-c "$2")
    args+=(--save-config "$WORK/$n.json")   # every change kept on disk, as a node runs
    [[ $n == r1 ]] && pre=(ip netns exec "$NS")
    rm -f "$WORK/$n.sock"
    echo "---- $(date +%T) start ${args[*]}" >>"$LOGDIR/$n.log"
    BALLAST_LOG=info "${pre[@]}" "$BALLASTD" -m 0x1 -r "$WORK/$n.sock" "${args[@]}" \
        >>"$LOGDIR/$n.log" 2>&1 &
    if [[ $n == p ]]; then PPID_D=$!; else RPID=$!; fi
    wait_rpc "$n"
}
for n in p r1; do
    truncate -s 256M "$WORK/$n.img"
    start "$n" || fatal "ballastd $n" "$(tail -n 20 "$LOGDIR/$n.log")"
    R "$n" bdev_uring_create "$WORK/$n.img" Pool0 4096 >/dev/null &&
        R "$n" bdev_lvol_create_lvstore Pool0 lvs0 -c 4194304 >/dev/null ||
        fatal "store on $n" "$(tail -n 20 "$LOGDIR/$n.log")"
done
NVMF_PORT=$(free_port)
CSI_PORT=$(free_port)
CTL_PORT=$(free_port)
cat >"$WORK/nodes.json" <<EOF
{"nodes": [
  {"id": "p", "rpc_socket": "$WORK/p.sock", "lvs": "lvs0",
   "nvmf": {"addr": "127.0.0.1", "port": $NVMF_PORT, "advertise": "10.0.2.2"}},
  {"id": "r1", "rpc_socket": "$WORK/r1.sock", "lvs": "lvs0",
   "nvmf": {"addr": "$R1_ADDR", "port": 4420}}]}
EOF
BALLAST_LOG=info "$BALLAST_CSI" controller --endpoint "tcp://127.0.0.1:$CSI_PORT" \
    --config "$WORK/nodes.json" >"$LOGDIR/csi-controller.log" 2>&1 &
CPID=$!
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/ctl" "$CTL_PORT" \
    >"$LOGDIR/ctl.log" 2>&1 &
HPID=$!
wait_port "$CSI_PORT" 20 && wait_port "$CTL_PORT" 20 ||
    fatal "controller and control channel" "$(cat "$LOGDIR/csi-controller.log" "$LOGDIR/ctl.log")"
ok "host: nodes p (root namespace) and r1 ($NS, $R1_ADDR) with stores; ballast-csi controller"

# ------------------------------------------------------------------ guest ----
VM_GUEST_BINS=$BALLAST_CSI
NVMF_GUEST_CSI_PORT=$CSI_PORT
NVMF_GUEST_CTL_PORT=$CTL_PORT
NVMF_GUEST_HOST_A=nqn.2014-08.org.nvmexpress:uuid:cccccccc-0000-4000-8000-00000000000c
cat >"$WORK/guest.sh" <<'EOF'
CTRL=tcp://10.0.2.2:$NVMF_GUEST_CSI_PORT
NA=unix:///run/csi-a.sock HA=$NVMF_GUEST_HOST_A
fail() { echo "GUEST FAIL: $*"; echo "---- node plugin"; cat /tmp/node-a.log; exit 1; }
c() { OUT=$(ballast-csi call --endpoint "$1" "$2" "$3" 2>/tmp/call.err) || {
        cat /tmp/call.err; fail "$2 failed"; }; }
jf() { echo "$OUT" | sed -n 's/.*"'"$1"'":"\([^"]*\)".*/\1/p'; }
CAP='{"access_type":{"mount":{"fs_type":"ext4"}},"access_mode":{"mode":1}}'
modprobe nvme-tcp
ballast-csi node --endpoint $NA --node-name guest --host-nqn $HA --ctrl-loss-tmo 120 \
    >/tmp/node-a.log 2>&1 &
i=0; while [ ! -S /run/csi-a.sock ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "node plugin did not start"; sleep 0.1; done

step "create replicas=2, publish, stage, publish"
c $CTRL CreateVolume '{"name":"pvc-repl","capacity_range":{"required_bytes":100663296},"volume_capabilities":['"$CAP"'],"parameters":{"replicas":"2"},"accessibility_requirements":{"preferred":[{"segments":{"topology.csi.ballast.io/node":"p"}}]}}'
VOL=$(jf volume_id)
case "$VOL" in v1:p:*) ;; *) fail "not on node p: $OUT" ;; esac
echo "$OUT" | grep -q '"replicas":"2"' || fail "volume_context: $OUT"
echo "@@CSI vol $VOL"
c $CTRL ControllerPublishVolume '{"volume_id":"'"$VOL"'","node_id":"'"$HA"'","volume_capability":'"$CAP"'}'
CTX=$(echo "$OUT" | sed -n 's/.*"publish_context":\({[^}]*}\).*/\1/p')
c $NA NodeStageVolume '{"volume_id":"'"$VOL"'","publish_context":'"$CTX"',"staging_target_path":"/mnt/stage","volume_capability":'"$CAP"'}'
c $NA NodePublishVolume '{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/stage","target_path":"/mnt/pod","volume_capability":'"$CAP"'}'
echo "@@CSI ok replicated volume created on p (+r1), published, staged, mounted"

step "load until the host says stop"
echo "@@CSI load"
n=0
while ! wget -q -O /dev/null "http://10.0.2.2:$NVMF_GUEST_CTL_PORT/stop" 2>/dev/null; do
    fio --name=load --filename=/mnt/pod/load --size=16m --rw=randwrite --bs=4k \
        --ioengine=libaio --direct=1 --iodepth=8 --verify=crc32c --do_verify=1 \
        --randrepeat=0 --verify_fatal=1 --output=/tmp/fio.out >/dev/null 2>&1 || {
        cat /tmp/fio.out; fail "fio run $((n + 1)): error"; }
    n=$((n + 1))
    echo "@@CSI run $n done"
done
[ $n -ge 3 ] || fail "only $n load runs"
echo "@@CSI ok $n fio runs (16 MiB random writes each, crc32c verified) through the fault, 0 errors"

step "clean up"
c $NA NodeUnpublishVolume '{"volume_id":"'"$VOL"'","target_path":"/mnt/pod"}'
c $NA NodeUnstageVolume '{"volume_id":"'"$VOL"'","staging_target_path":"/mnt/stage"}'
c $CTRL ControllerUnpublishVolume '{"volume_id":"'"$VOL"'","node_id":"'"$HA"'"}'
c $CTRL DeleteVolume '{"volume_id":"'"$VOL"'"}'
echo "@@CSI ok unpublished, unstaged, deleted"
EOF
set -m   # the guest job in a process group of its own: cleanup kills QEMU with it
(
    guest_run "$WORK/guest.sh" replica-fault >/dev/null 2>&1
    echo "$GUEST_RC" >"$WORK/guest.rc"
) &
GJOB=$!
set +m
GLOG=$INTEROP_LOG_DIR/$INTEROP_TEST/replica-fault.log

# wait_log PATTERN SECS: until the guest's console log has a line matching PATTERN
wait_log() {
    local end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        grep -q "$1" "$GLOG" 2>/dev/null && return 0
        [[ -f $WORK/guest.rc ]] && return 1
        sleep 1
    done
    return 1
}
# condition: prints ControllerGetVolume's volume_condition (abnormal flag and message)
condition() {
    "$BALLAST_CSI" call --endpoint "tcp://127.0.0.1:$CSI_PORT" ControllerGetVolume \
        "{\"volume_id\":\"$VOL\"}" 2>&1 |
        python3 -c 'import json,sys; c=json.load(sys.stdin)["status"]["volume_condition"]; print(("abnormal" if c["abnormal"] else "normal") + ": " + c["message"])' 2>&1
}
# wait_condition WANT SECS: until the condition starts with WANT; every new one is logged
wait_condition() {
    local end=$((SECONDS + $2)) last='' c
    while ((SECONDS < end)); do
        c=$(condition)
        [[ $c != "$last" ]] && { note "ControllerGetVolume: $c"; last=$c; }
        [[ $c == "$1"* ]] && { COND=$c; return 0; }
        sleep 1
    done
    COND=$last
    return 1
}
note() { echo "# $(date +%T) $*"; }

if wait_log '^@@CSI load' 300; then
    VOL=$(sed -n 's/^@@CSI vol //p' "$GLOG" | head -n1)
    ok "guest: volume $VOL mounted, load running"
    # r1's ballastd kept its configuration (--save-config) as the controller changed it.
    if grep -q 'nqn.2026-11.io.ballast:csi-replica-' "$WORK/r1.json" 2>/dev/null; then
        ok "r1's saved configuration has the replica's subsystem (--save-config)"
    else
        notok "r1's saved configuration has the replica's subsystem" "$(head -c 2000 "$WORK/r1.json" 2>&1)"
    fi
    if wait_condition normal 30; then ok "ControllerGetVolume before the fault: $COND"
    else notok "ControllerGetVolume before the fault" "$COND"; fi
    wait_log '^@@CSI run 1 done' 120 || true
    kill -KILL "$RPID"; wait "$RPID" 2>/dev/null; RPID=''
    note "r1's ballastd killed (-9)"
    if wait_condition abnormal 60; then ok "ControllerGetVolume after kill -9 of r1: $COND"
    else notok "ControllerGetVolume turns abnormal after kill -9 of r1" "$COND"; fi
    runs=$(grep -c '^@@CSI run .* done' "$GLOG")
    wait_log "^@@CSI run $((runs + 1)) done" 180 &&
        ok "guest: a load run completed and verified while r1 was down" ||
        notok "guest: a load run completes while r1 is down" "$(tail -n 20 "$GLOG")"
    if start r1 "$WORK/r1.json"; then ok "r1 restarted from its saved configuration"
    else notok "r1 restarted from its saved configuration" "$(tail -n 20 "$LOGDIR/r1.log")"; fi
    if wait_condition normal 180; then ok "ControllerGetVolume after r1's return (healed): $COND"
    else notok "ControllerGetVolume turns normal after r1 returns" "$COND"; fi
    runs=$(grep -c '^@@CSI run .* done' "$GLOG")
    wait_log "^@@CSI run $((runs + 1)) done" 180 || true
else
    notok "guest: volume mounted and load running" "$(tail -n 40 "$GLOG" 2>/dev/null)"
fi
touch "$WORK/ctl/stop"
wait "$GJOB"
GJOB=''
rc=$(cat "$WORK/guest.rc" 2>/dev/null || echo '?')
while read -r line; do ok "guest: ${line#@@CSI ok }"; done < <(grep '^@@CSI ok ' "$GLOG" 2>/dev/null)
if [[ $rc == 0 ]]; then ok "guest session (rc 0)"
else notok "guest session (rc $rc)" "$(tail -n 60 "$GLOG" 2>/dev/null)"; fi

# ------------------------------------------------------------------- host ----
for n in p r1; do
    left=$(R "$n" bdev_get_bdevs 2>/dev/null | grep -o '"lvs0/cs[a-z]*-pvc-repl"' | sort -u)
    subs=$(R "$n" nvmf_get_subsystems 2>/dev/null | grep -o 'nqn.2026-11.io.ballast:csi-[a-z0-9-]*' | sort -u)
    if [[ -z $left$subs ]]; then ok "$n: nothing of the volume left"
    else notok "$n: nothing of the volume left" "$left $subs"; fi
done
grep -q panicked "$LOGDIR"/*.log && notok "no panics" "$(grep -h panicked "$LOGDIR"/*.log)" || ok "no panics"
echo "# interop-csi-replica: $((SECONDS - t0)) s, logs in $LOGDIR"
interop_summary
