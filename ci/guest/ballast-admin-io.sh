# shellcheck shell=dash
# ci/guest/ballast-admin-io.sh -- guest script (busybox ash) run by
# ci/interop-ballast.sh after ci/guest/lib-ballast.sh. Against the target at
# $NVMF_ADDR:$NVMF_PORT, subsystem $NVMF_NQN, no digests, 2 I/O queues:
#   discovery (nvme discover; a persistent discovery controller and
#   `nvme get-log` of the discovery log page, decoded), connect, sysfs checks,
#   id-ctrl, id-ns, list-ns, ns-descs, smart-log, error-log, fw-log,
#   get-feature, nvme write/read, write-zeroes, dsm --ad, flush, an
#   out-of-range read, fio crc32c verify (512 B .. 128 KiB, QD32 and QD1, both
#   I/O queues), disconnect.
# Every check fails the script (fail/errexit); dmesg is printed on failure.
# Knobs: NVMF_GUEST_MN (id-ctrl model number must start with it),
#        NVMF_GUEST_SN (serial number must equal it).
DISC_NQN=nqn.2014-08.org.nvmexpress.discovery

# ------------------------------------------------------------ discovery ----
step "nvme discover $NVMF_ADDR:$NVMF_PORT"
out=$(nvmf_discover)
echo "$out"
# the entry of our subsystem, as "trtype adrfam subtype trsvcid" (one line)
ent=$(echo "$out" | awk -v nqn="$NVMF_NQN" '
    /^=====Discovery Log Entry/ { t = a = st = s = "" }
    /^trtype:/  { t = $2 }
    /^adrfam:/  { a = $2 }
    /^subtype:/ { st = $2 " " $3 }
    /^trsvcid:/ { s = $2 }
    /^subnqn:/ && $2 == nqn { print t, a, st, s; exit }')
[ -n "$ent" ] || fail "discovery log: no entry for $NVMF_NQN"
[ "$ent" = "tcp ipv4 nvme subsystem $NVMF_PORT" ] ||
    fail "discovery entry of $NVMF_NQN is '$ent', want 'tcp ipv4 nvme subsystem $NVMF_PORT'"

step "persistent discovery controller + nvme get-log --log-id=0x70 (discovery log page)"
nvme discover -t tcp -a "$NVMF_ADDR" -s "$NVMF_PORT" --persistent > /dev/null
dctrl=$(nvmf_ctrl $DISC_NQN) || fail "no persistent discovery controller in /sys/class/nvme"
echo "discovery controller: $dctrl state=$(cat /sys/class/nvme/$dctrl/state)"
[ "$(cat /sys/class/nvme/$dctrl/state)" = live ] || fail "discovery controller not live"
nvme get-log /dev/$dctrl --log-id=0x70 --log-len=4096 --raw-binary > /tmp/disc.bin
[ "$(wc -c < /tmp/disc.bin)" = 4096 ] || fail "get-log returned $(wc -c < /tmp/disc.bin) bytes"
u64() { od -An -tu8 -j "$2" -N 8 "$1" | tr -d ' '; }
u8() { od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' '; }
str() { dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null | tr -d '\000' | sed 's/ *$//'; }
numrec=$(u64 /tmp/disc.bin 8)
echo "discovery log: genctr=$(u64 /tmp/disc.bin 0) numrec=$numrec"
[ "$numrec" -ge 1 ] && [ "$numrec" -le 3 ] || fail "discovery log: numrec=$numrec"
found=0 i=0
while [ $i -lt "$numrec" ]; do
    o=$((1024 + i * 1024))
    e_nqn=$(str /tmp/disc.bin $((o + 256)) 256)
    e_svc=$(str /tmp/disc.bin $((o + 32)) 32)
    e_addr=$(str /tmp/disc.bin $((o + 512)) 256)
    echo "  entry $i: trtype=$(u8 /tmp/disc.bin $o) adrfam=$(u8 /tmp/disc.bin $((o + 1))) subtype=$(u8 /tmp/disc.bin $((o + 2))) trsvcid=$e_svc traddr=$e_addr subnqn=$e_nqn"
    if [ "$e_nqn" = "$NVMF_NQN" ]; then
        [ "$(u8 /tmp/disc.bin $o)" = 3 ] || fail "entry $i: trtype $(u8 /tmp/disc.bin $o), want 3 (TCP)"
        [ "$(u8 /tmp/disc.bin $((o + 1)))" = 1 ] || fail "entry $i: adrfam, want 1 (IPv4)"
        [ "$(u8 /tmp/disc.bin $((o + 2)))" = 2 ] || fail "entry $i: subtype, want 2 (NVM subsystem)"
        [ "$e_svc" = "$NVMF_PORT" ] || fail "entry $i: trsvcid '$e_svc'"
        [ "$e_addr" = 127.0.0.1 ] || fail "entry $i: traddr '$e_addr'"
        found=1
    fi
    i=$((i + 1))
done
[ $found = 1 ] || fail "discovery log page has no entry for $NVMF_NQN"
nvme disconnect -d "$dctrl"
wait_gone /sys/class/nvme/$dctrl || fail "discovery controller $dctrl still present after disconnect"

# ------------------------------------------------------------- connect ----
step "nvme connect -i 2 (no digests)"
nvmf_connect -i 2 -l 5
ctrl=$(nvmf_ctrl) || fail "no controller of $NVMF_NQN in /sys/class/nvme"
ctrl_checks "$ctrl" 2
[ "$(cat /sys/block/${NVMF_DEV#/dev/}/size)" -gt 0 ] || fail "$NVMF_DEV has size 0"

# ---------------------------------------------------------------- admin ----
step "nvme id-ctrl /dev/$ctrl"
idc=$(nvme id-ctrl /dev/$ctrl)
echo "$idc" | grep -E '^(vid|sn|mn|fr|mdts|cntlid|ver|kas|oncs|vwc|sgls|subnqn|ioccsz|iorcsz|nn|maxcmd|sqes|cqes) '
[ "$(idf "$idc" subnqn)" = "$NVMF_NQN" ] || fail "id-ctrl subnqn is '$(idf "$idc" subnqn)'"
[ -n "$(idf "$idc" mn)" ] || fail "id-ctrl: empty model number"
[ -n "$(idf "$idc" sn)" ] || fail "id-ctrl: empty serial number"
[ -n "$(idf "$idc" fr)" ] || fail "id-ctrl: empty firmware revision"
[ "$(($(idf "$idc" cntlid)))" = "$(cat /sys/class/nvme/$ctrl/cntlid)" ] ||
    fail "id-ctrl cntlid $(idf "$idc" cntlid) != sysfs $(cat /sys/class/nvme/$ctrl/cntlid)"
[ "$(idf "$idc" mn)" = "$(sed 's/ *$//' /sys/class/nvme/$ctrl/model)" ] || fail "id-ctrl mn != sysfs model"
[ "$(idf "$idc" nn)" -ge 1 ] || fail "id-ctrl: nn=$(idf "$idc" nn)"
[ "$(idf "$idc" ioccsz)" -ge 4 ] || fail "id-ctrl: ioccsz=$(idf "$idc" ioccsz)"
[ "$(idf "$idc" iorcsz)" -ge 1 ] || fail "id-ctrl: iorcsz=$(idf "$idc" iorcsz)"
[ $(($(idf "$idc" oncs) & 0xc)) = 12 ] || fail "id-ctrl: oncs=$(idf "$idc" oncs) lacks DSM and/or Write Zeroes"
[ $(($(idf "$idc" ver))) -ge $((0x10300)) ] || fail "id-ctrl: ver=$(idf "$idc" ver)"
[ $(($(idf "$idc" sgls))) != 0 ] || fail "id-ctrl: sgls=0 (fabrics needs SGLs)"
if [ -n "${NVMF_GUEST_MN:-}" ]; then
    case "$(idf "$idc" mn)" in "$NVMF_GUEST_MN"*) ;; *) fail "id-ctrl mn is '$(idf "$idc" mn)', want '$NVMF_GUEST_MN...'" ;; esac
fi
if [ -n "${NVMF_GUEST_SN:-}" ]; then
    [ "$(idf "$idc" sn)" = "$NVMF_GUEST_SN" ] || fail "id-ctrl sn is '$(idf "$idc" sn)', want '$NVMF_GUEST_SN'"
fi

step "nvme id-ns $NVMF_DEV"
idn=$(nvme id-ns "$NVMF_DEV")
echo "$idn" | grep -E '^(nsze|ncap|nuse|nsfeat|nlbaf|flbas|dlfeat|nmic|nguid|eui64) |^lbaf'
nsze=$(($(idf "$idn" nsze)))
[ "$nsze" -gt 0 ] || fail "id-ns: nsze=$nsze"
[ $(($(idf "$idn" ncap))) -gt 0 ] && [ $(($(idf "$idn" ncap))) -le "$nsze" ] || fail "id-ns: ncap=$(idf "$idn" ncap)"
fmt=$(($(idf "$idn" flbas) & 0xf))
inuse=$(echo "$idn" | grep -E "^lbaf +$fmt :.*in use" | head -n1)
[ -n "$inuse" ] || fail "id-ns: lbaf $fmt (flbas) is not marked in use"
lbads=$(echo "$inuse" | sed -n 's/.*lbads:\([0-9]*\).*/\1/p')
[ -n "$lbads" ] && [ "$lbads" -ge 9 ] && [ "$lbads" -le 12 ] || fail "id-ns: lbads='$lbads'"
LBA_SIZE=$((1 << lbads))
[ $((nsze * LBA_SIZE / 512)) = "$(cat /sys/block/${NVMF_DEV#/dev/}/size)" ] ||
    fail "id-ns: nsze*lba size != block device size"
dlfeat=$(($(idf "$idn" dlfeat)))
echo "namespace 1: $nsze blocks of $LBA_SIZE bytes, dlfeat=$dlfeat"

step "nvme list-ns /dev/$ctrl"
out=$(nvme list-ns /dev/$ctrl)
echo "$out"
echo "$out" | grep -Eq '^\[ *0\]:0x1$' || fail "list-ns: namespace 1 is not the first active namespace"

step "nvme ns-descs /dev/$ctrl -n 1"
out=$(nvme ns-descs /dev/$ctrl --namespace-id=1)
echo "$out"
for t in eui64 nguid uuid; do
    echo "$out" | grep -Eq "^$t +: *[0-9a-f-]+" || fail "ns-descs: no $t descriptor"
done

step "nvme smart-log /dev/$ctrl"
smart=$(nvme smart-log /dev/$ctrl)
echo "$smart" | grep -E '^(critical_warning|temperature|available_spare|data_units_written|host_write_commands)'
[ "$(idf "$smart" critical_warning)" = 0 ] || fail "smart-log: critical_warning=$(idf "$smart" critical_warning)"
writes0=$(idf "$smart" host_write_commands | tr -d ',')
[ -n "$writes0" ] || fail "smart-log: no host_write_commands"

step "nvme error-log / fw-log / get-feature /dev/$ctrl"
nvme error-log /dev/$ctrl --log-entries=4 > /tmp/errlog || fail "error-log failed"
head -n 3 /tmp/errlog
nvme fw-log /dev/$ctrl || fail "fw-log failed"
out=$(nvme get-feature /dev/$ctrl --feature-id=0x0f)
echo "$out"
case $out in *"Current value:0x001388"* | *"Current value:0x00001388"* | *"Current value: 0x1388"* | *"value:0x1388"*) ;;
    *) fail "get-feature keep-alive timer: want 5000 ms (the kernel's default KATO)" ;; esac
out=$(nvme get-feature /dev/$ctrl --feature-id=0x07)
echo "$out"
# Number of Queues: NSQA/NCQA are 0-based, at least the 2 I/O queues granted
nq=$(echo "$out" | sed -n 's/.*Current value:\(0x[0-9a-fA-F]*\).*/\1/p')
[ -n "$nq" ] && [ $((nq & 0xffff)) -ge 1 ] && [ $(((nq >> 16) & 0xffff)) -ge 1 ] ||
    fail "get-feature number of queues: '$nq'"

# ------------------------------------------------------------ I/O cmds ----
# Three 64 KiB extents A B C from LBA $base: write random data, read back,
# then write-zeroes B / deallocate B and check A and C are untouched.
CH=65536 nlb=$((65536 / LBA_SIZE)) base=$((16 * 1048576 / LBA_SIZE))
dd if=/dev/urandom of=/tmp/pat bs=$CH count=3 2>/dev/null
for i in 0 1 2; do dd if=/tmp/pat of=/tmp/p$i bs=$CH skip=$i count=1 2>/dev/null; done
zeros $CH /tmp/zero
write_abc() {
    for i in 0 1 2; do lba_io write "$NVMF_DEV" $((base + i * nlb)) $CH /tmp/p$i || fail "nvme write extent $i"; done
}
check() { # check EXTENT WANTFILE WHAT
    lba_io read "$NVMF_DEV" $((base + $1 * nlb)) $CH /tmp/r || fail "nvme read extent $1"
    cmp -s /tmp/r "$2" || fail "extent $1: $3"
}

step "nvme write / nvme read 3 x 64 KiB at LBA $base"
write_abc
for i in 0 1 2; do check $i /tmp/p$i "read back differs from what was written"; done

step "nvme write-zeroes (extent B) + read back zeros, neighbours intact"
out=$(nvme write-zeroes "$NVMF_DEV" --start-block=$((base + nlb)) --block-count=$((nlb - 1)) 2>&1) ||
    { echo "$out"; fail "write-zeroes failed"; }
echo "$out"
check 1 /tmp/zero "not zero after write-zeroes"
check 0 /tmp/p0 "changed by a write-zeroes of its neighbour"
check 2 /tmp/p2 "changed by a write-zeroes of its neighbour"

step "nvme dsm --ad (extent B) after rewriting it"
write_abc
out=$(nvme dsm "$NVMF_DEV" --ad --slbs=$((base + nlb)) --blocks=$nlb 2>&1) ||
    { echo "$out"; fail "dsm --ad failed"; }
echo "$out"
if [ $((dlfeat & 7)) = 1 ]; then
    # DLFEAT bits 2:0 = 001b: the target documents deallocated blocks read as zeros
    check 1 /tmp/zero "not zero after deallocate although id-ns dlfeat=$dlfeat says it reads as zeros"
else
    echo "dlfeat=$dlfeat: deallocated blocks' contents unspecified, not checked"
fi
check 0 /tmp/p0 "changed by a deallocate of its neighbour"
check 2 /tmp/p2 "changed by a deallocate of its neighbour"

step "nvme flush"
out=$(nvme flush "$NVMF_DEV" 2>&1) || { echo "$out"; fail "flush failed"; }
echo "$out"

step "nvme read past the end must fail with LBA Out of Range"
if out=$(nvme read "$NVMF_DEV" --start-block="$nsze" --block-count=0 --data-size=$LBA_SIZE --data=/tmp/r 2>&1); then
    echo "$out"; fail "a read of LBA $nsze (= nsze) succeeded"
fi
echo "$out"
echo "$out" | grep -qi 'out of range' || fail "read past the end: not an LBA Out of Range status"

step "smart-log host_write_commands increased"
writes1=$(idf "$(nvme smart-log /dev/$ctrl)" host_write_commands | tr -d ',')
echo "host_write_commands: $writes0 -> $writes1"
[ "$writes1" -gt "$writes0" ] || fail "smart-log host_write_commands did not increase"

# ------------------------------------------------------------------ fio ----
step "fio randwrite + crc32c verify, bs 512 B..128 KiB, QD32, jobs on both CPUs/queues"
qid_trace_start
fio_verify "$NVMF_DEV" 32 32 write
q=$(qid_trace_stop)
echo "commands per queue during that fio run: $q"
for i in 1 2; do
    n=$(echo "$q" | tr ' ' '\n' | sed -n "s/^qid$i=//p")
    [ "${n:-0}" -ge 100 ] || fail "I/O queue $i carried ${n:-0} fio commands"
done
step "fio randwrite + crc32c verify, bs 512 B..128 KiB, QD1"
fio_verify "$NVMF_DEV" 1 64 write

# ----------------------------------------------------------- disconnect ----
step "nvme disconnect"
dev=$NVMF_DEV
out=$(nvmf_disconnect)
echo "$out"
case $out in *"disconnected 1 controller"*) ;; *) fail "disconnect: expected 1 controller" ;; esac
wait_gone "$dev" || fail "$dev still present after disconnect"
wait_gone /sys/class/nvme/$ctrl || fail "$ctrl still present after disconnect"
step "admin-io OK"
