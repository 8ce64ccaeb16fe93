# shellcheck shell=dash
# ci/guest/ballast-digests.sh -- guest script (busybox ash) run by
# ci/interop-ballast.sh after ci/guest/lib-ballast.sh, in a fresh VM after
# ballast-admin-io.sh: nvme connect with header and data digests (-g -G) and
# 2 I/O queues, id-ctrl, with NVMF_GUEST_VERIFY_PREV=1 a read-only crc32c
# verify of what ballast-admin-io.sh wrote at QD32 (the data outlived that
# controller), fio randwrite + verify
# 512 B .. 128 KiB at QD32 over digest-protected PDUs, no digest errors in the
# kernel log, disconnect.
step "nvme connect -g -G -i 2 (header + data digests)"
nvmf_connect -i 2 -g -G -l 5
ctrl=$(nvmf_ctrl) || fail "no controller of $NVMF_NQN in /sys/class/nvme"
ctrl_checks "$ctrl" 2

step "nvme id-ctrl /dev/$ctrl"
idc=$(nvme id-ctrl /dev/$ctrl)
[ "$(idf "$idc" subnqn)" = "$NVMF_NQN" ] || fail "id-ctrl subnqn is '$(idf "$idc" subnqn)'"
[ "$(($(idf "$idc" cntlid)))" = "$(cat /sys/class/nvme/$ctrl/cntlid)" ] || fail "id-ctrl cntlid != sysfs"

if [ "${NVMF_GUEST_VERIFY_PREV:-0}" = 1 ]; then
    step "fio verify only: the previous host's QD32 data is intact"
    fio_verify "$NVMF_DEV" 32 32 verify
fi
step "fio randwrite + crc32c verify, bs 512 B..128 KiB, QD32, with digests"
fio_verify "$NVMF_DEV" 32 96 write

step "no digest errors in the kernel log"
if dmesg | grep -Ei 'digest (error|mismatch)|ddgst|hdgst'; then fail "the kernel reported digest errors"; fi

step "nvme disconnect"
dev=$NVMF_DEV
out=$(nvmf_disconnect)
echo "$out"
case $out in *"disconnected 1 controller"*) ;; *) fail "disconnect: expected 1 controller" ;; esac
wait_gone "$dev" || fail "$dev still present after disconnect"
step "digests OK"
