# shellcheck shell=dash disable=SC3040
# ci/guest/nvmf-smoke.sh -- guest script (busybox ash; run through
# ci/lib-interop.sh's guest_run/assert_guest_ok, whose prelude provides
# step/fail/nvmf_ctrl and `set -eo pipefail`). Against the target at
# $NVMF_ADDR:$NVMF_PORT (10.0.2.2 = host 127.0.0.1), subsystem $NVMF_NQN:
#   nvme discover -> nvme connect -> controller sysfs checks -> nvme id-ctrl
#   -> fio 4k randwrite + crc32c read-back verify -> nvme disconnect
# each step asserted; the first failure ends the guest with a non-zero status.
# Knobs (host-side NVMF_GUEST_* variables reach the guest verbatim):
#   NVMF_GUEST_CONNECT_OPTS ("-l 5")  extra nvme-connect options, e.g. "-g -G -l 5"
#   NVMF_GUEST_MN ()                  id-ctrl model number must start with this
#   NVMF_GUEST_VERIFY_MIB (4)         bytes written and verified by fio (MiB)
set -eo pipefail
: "${NVMF_GUEST_CONNECT_OPTS=-l 5}" "${NVMF_GUEST_VERIFY_MIB:=4}"

step "nvme discover $NVMF_ADDR:$NVMF_PORT"
out=$(nvmf_discover)
echo "$out"
echo "$out" | grep -Eq "^trtype:[[:space:]]+tcp[[:space:]]*\$" || fail "discovery log: no tcp entry"
echo "$out" | grep -Eq "^subnqn:[[:space:]]+${NVMF_NQN}[[:space:]]*\$" || fail "discovery log: no entry for $NVMF_NQN"

step "nvme connect $NVMF_ADDR:$NVMF_PORT $NVMF_NQN $NVMF_GUEST_CONNECT_OPTS"
nvmf_connect $NVMF_GUEST_CONNECT_OPTS
[ -b "$NVMF_DEV" ] || fail "no namespace block device"
ctrl=$(nvmf_ctrl) || fail "no controller of $NVMF_NQN in /sys/class/nvme"
s=/sys/class/nvme/$ctrl
echo "$ctrl: transport=$(cat $s/transport) state=$(cat $s/state) address=$(cat $s/address) queue_count=$(cat $s/queue_count) sqsize=$(cat $s/sqsize)"
[ "$(cat $s/transport)" = tcp ] || fail "transport is $(cat $s/transport)"
[ "$(cat $s/state)" = live ] || fail "controller state is $(cat $s/state)"
case "$(cat $s/address)," in
    "traddr=$NVMF_ADDR,trsvcid=$NVMF_PORT,"*) ;;
    *) fail "controller address is $(cat $s/address)" ;;
esac
[ "$(cat $s/queue_count)" -ge 2 ] || fail "no I/O queue (queue_count=$(cat $s/queue_count))"
[ "$(cat /sys/block/${NVMF_DEV#/dev/}/size)" -gt 0 ] || fail "$NVMF_DEV has size 0"

step "nvme id-ctrl /dev/$ctrl"
idc=$(nvme id-ctrl /dev/$ctrl)
echo "$idc" | grep -E '^(vid|sn|mn|fr|mdts|cntlid|ver|kas|sgls|subnqn|ioccsz|iorcsz|nn|maxcmd) '
idf() { echo "$idc" | sed -n "s/^$1 *: *//p" | head -n1 | sed 's/ *$//'; }
[ "$(idf subnqn)" = "$NVMF_NQN" ] || fail "id-ctrl subnqn is '$(idf subnqn)'"
[ "$(($(idf cntlid)))" = "$(cat $s/cntlid)" ] || fail "id-ctrl cntlid $(idf cntlid) != sysfs $(cat $s/cntlid)"
[ -n "$(idf sn)" ] || fail "id-ctrl: empty serial number"
[ "$(idf nn)" -ge 1 ] || fail "id-ctrl: nn=$(idf nn)"
[ "$(idf ioccsz)" -ge 4 ] || fail "id-ctrl: ioccsz=$(idf ioccsz) (< 4, i.e. 64-byte SQEs)"
if [ -n "${NVMF_GUEST_MN:-}" ]; then
    case "$(idf mn)" in "$NVMF_GUEST_MN"*) ;; *) fail "id-ctrl mn is '$(idf mn)', want '$NVMF_GUEST_MN...'" ;; esac
fi

step "fio 4k randwrite ${NVMF_GUEST_VERIFY_MIB} MiB QD16 + crc32c read-back verify on $NVMF_DEV"
out=$(fio --name=verify --filename="$NVMF_DEV" --rw=randwrite --bs=4k \
          --size="${NVMF_GUEST_VERIFY_MIB}m" --ioengine=libaio --direct=1 --iodepth=16 \
          --verify=crc32c --do_verify=1 --verify_fatal=1 --runtime=60 \
          --output-format=terse --terse-version=3 2>&1) || { echo "$out"; fail "fio exited non-zero"; }
# terse v3: $5 error, $6 read KiB (the verify pass), $47 write KiB
echo "$out" | awk -F';' -v want=$((NVMF_GUEST_VERIFY_MIB * 1024)) '
    NF < 80 { print; next }
    { n++; e = $5; r = $6; w = $47
      printf "FIO verify: error=%s written_kib=%s verified_kib=%s\n", e, w, r }
    END { exit !(n == 1 && e == 0 && w == want && r == want) }' \
    || fail "fio verify: error, or not all ${NVMF_GUEST_VERIFY_MIB} MiB written and read back"

step "nvme disconnect $NVMF_NQN"
out=$(nvmf_disconnect)
echo "$out"
case $out in *"disconnected 1 controller"*) ;; *) fail "disconnect: expected 1 controller" ;; esac
if nvmf_ctrl >/dev/null; then fail "controller still present after disconnect"; fi
step "smoke OK"
