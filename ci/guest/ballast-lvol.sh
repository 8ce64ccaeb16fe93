# shellcheck shell=dash
# ci/guest/ballast-lvol.sh -- the guest side of ci/interop-lvol.sh (busybox ash), run after
# ci/guest/lib-ballast.sh. One session: connects once (ctrl-loss-tmo 120 s, reconnect every
# 1 s), then does what the host asks over its control channel (GET /cmd/N on
# 10.0.2.2:$NVMF_GUEST_CTL_PORT, one line "VERB ARGS...") until "exit". Namespaces are found
# by their NVMe UUID (= the lvol's), which the host passes along.
#
# Console markers (the host reads them):
#   @@LV ready ctrl=C cntlid=N              connected
#   @@LV cmd N start|done rc=R              a command (R != 0: it failed in an unexpected place)
#   @@LV ok NAME / @@LV notok NAME: DETAIL  one check, counted by the host
#   @@LV run start|done region=R seed=S [rc=R secs=T]   the background fio load of "load"
# Verbs:
#   fs UUID           mkfs.ext4 on it, mount /mnt/vol, write the files (checksums kept)
#   freeze / thaw     fsfreeze --freeze / --unfreeze /mnt/vol; thaw then changes and deletes
#                     files (the snapshot must not see it)
#   clone UUID        the clone's namespace appears; fsck.ext4 -n -f clean; mounted read-only
#                     it holds the files of the snapshot moment, not the later changes
#   grow BYTES        namespace 1 takes BYTES without a reconnect; resize2fs grows the mounted fs
#   fill THIN THICK   dd oflag=direct 1 MiB at a time to THIN until a write fails; THICK and
#                     what THIN took still read and write
#   load UUID MIB BS / stop / verify   fio write+verify runs on UUID's namespace (regions
#                     0..3 of MIB MiB in turn, BS bytes a write, a new seed each run) / end
#                     them / verify_only every region's last good run
#   files             /mnt/vol still holds what thaw left (page cache dropped first)
#   exit              umount; fsck.ext4 -n -f namespace 1; disconnect
set +e
CTL=http://10.0.2.2:$NVMF_GUEST_CTL_PORT
mark() { echo "@@LV $*"; }
pass() { mark "ok $*"; }
flunk() { mark "notok $*"; }
since() { echo $(($(cut -d. -f1 /proc/uptime) - $1)); }
now() { cut -d. -f1 /proc/uptime; }

# dev_of UUID: the namespace's block device (the multipath head node), if there is one.
dev_of() {
    local d
    for d in /sys/block/nvme*; do
        case ${d##*/} in *c*) continue ;; esac
        if [ "$(cat "$d/uuid" 2>/dev/null)" = "$1" ] && [ -b "/dev/${d##*/}" ]; then
            echo "/dev/${d##*/}"
            return 0
        fi
    done
    return 1
}
# find_ns UUID: DEV = its device; waits 10 s for the kernel to find it by itself (the
# namespace-attribute-changed AEN), then `nvme ns-rescan` and 10 s more. HOW = aen | rescan.
find_ns() {
    local i t0
    t0=$(now) DEV= HOW=aen
    for i in $(seq 1 100); do DEV=$(dev_of "$1") && { WAITED=$(since "$t0"); return 0; }; usleep 100000; done
    HOW=rescan
    nvme ns-rescan "/dev/$CTRL"
    for i in $(seq 1 100); do DEV=$(dev_of "$1") && { WAITED=$(since "$t0"); return 0; }; usleep 100000; done
    HOW=none
    return 1
}
ns_appears() { # NAME UUID: find_ns as a check
    if find_ns "$2"; then
        pass "$1 appears as $DEV ($(blockdev --getsize64 "$DEV") bytes) after ${WAITED} s ($(
            [ $HOW = aen ] && echo "by the AEN, no rescan" || echo "only after nvme ns-rescan"))"
    else
        flunk "$1 appears: no block device with uuid $2, also after nvme ns-rescan"
        return 1
    fi
}
cntlid_same() { # NAME: the controller is still the one connected at the start, and live
    local c s
    c=$(cat "/sys/class/nvme/$CTRL/cntlid") s=$(cat "/sys/class/nvme/$CTRL/state")
    if [ "$c" = "$CNTLID" ] && [ "$s" = live ]; then pass "$1 ($CTRL cntlid $c, $s)"; else
        flunk "$1: $CTRL cntlid $c (was $CNTLID), state $s"; fi
}

c_fs() {
    find_ns "$1" || { flunk "namespace 1 found: no device with uuid $1"; return 1; }
    echo "$DEV" >/tmp/dev1
    blockdev --getsize64 "$DEV" >/tmp/size1
    modprobe ext4
    mkfs.ext4 -q -F -b 4096 -E nodiscard,lazy_itable_init=1 -L lvol "$DEV"
    mkdir -p /mnt/vol /mnt/clone
    # noinit_itable: no background zeroing of inode tables (it would allocate the thin
    # volume's clusters at a time of its own)
    mount -o noinit_itable "$DEV" /mnt/vol
    cd /mnt/vol
    mkdir dir
    dd if=/dev/urandom of=keep bs=1M count=2 2>/dev/null
    dd if=/dev/urandom of=changed bs=1M count=2 2>/dev/null
    dd if=/dev/urandom of=deleted bs=1M count=3 2>/dev/null
    dd if=/dev/urandom of=dir/small bs=4k count=3 2>/dev/null
    echo "written before the snapshot" >dir/note
    sha256sum keep changed deleted dir/small dir/note >/tmp/sums.snap
    cd /
    sync
    pass "mkfs.ext4 on namespace 1 ($DEV, $(($(blockdev --getsize64 "$DEV") >> 20)) MiB), mounted, 5 files written and synced"
}
c_freeze() {
    fsfreeze --freeze /mnt/vol
    pass "fsfreeze --freeze /mnt/vol"
}
c_thaw() {
    fsfreeze --unfreeze /mnt/vol
    cd /mnt/vol
    dd if=/dev/urandom of=changed bs=1M count=2 conv=notrunc 2>/dev/null
    rm deleted
    dd if=/dev/urandom of=added bs=1M count=1 2>/dev/null
    echo "appended after the snapshot" >>dir/note
    sha256sum keep changed added dir/small dir/note >/tmp/sums.now
    cd /
    sync
    pass "fsfreeze --unfreeze; after the snapshot: 'changed' rewritten, 'deleted' removed, 'added' created, dir/note appended"
}
c_clone() {
    local out rc=0
    ns_appears "namespace 2 (the clone)" "$1" || return 0
    out=$(fsck.ext4 -n -f "$DEV" 2>&1) || rc=$?
    if [ $rc = 0 ]; then pass "fsck.ext4 -n -f on the clone: clean ($(echo "$out" | tail -n 1))"; else
        flunk "fsck.ext4 -n -f on the clone: status $rc
$out"; fi
    if ! mount -o ro "$DEV" /mnt/clone; then flunk "the clone mounts read-only"; return 0; fi
    if out=$(cd /mnt/clone && sha256sum -c /tmp/sums.snap 2>&1); then
        pass "the clone holds the files of the snapshot moment with their checksums ($(wc -l </tmp/sums.snap) files)"
    else
        flunk "the clone holds the files of the snapshot moment: $out"
    fi
    if [ ! -e /mnt/clone/added ] && ! grep -q after /mnt/clone/dir/note; then
        pass "the changes made after the snapshot are not in the clone"
    else
        flunk "the changes made after the snapshot are not in the clone: $(ls -l /mnt/clone; cat /mnt/clone/dir/note)"
    fi
    umount /mnt/clone
    if out=$(cd /mnt/vol && sha256sum -c /tmp/sums.now 2>&1) && [ ! -e /mnt/vol/deleted ]; then
        pass "the origin keeps its changes made after the snapshot"
    else
        flunk "the origin keeps its changes made after the snapshot: $out"
    fi
}
c_grow() {
    local want=$1 dev n t0 i got df0 df1 out rescan=
    dev=$(cat /tmp/dev1) n=${dev#/dev/}
    t0=$(now) got=
    for i in $(seq 1 100); do
        [ $(($(cat "/sys/block/$n/size") * 512)) = "$want" ] && { got=$(since "$t0"); break; }
        usleep 100000
    done
    if [ -n "$got" ]; then
        pass "namespace 1 ($dev) is $want bytes ($((want >> 20)) MiB) in /sys/block/$n/size ${got} s after the resize, no rescan"
    else
        got=$(cat "/sys/block/$n/size")
        nvme ns-rescan "/dev/$CTRL"
        sleep 2
        [ $(($(cat "/sys/block/$n/size") * 512)) = "$want" ] && rescan="; nvme ns-rescan made it so"
        flunk "namespace 1 takes the new size by itself: /sys/block/$n/size still $got sectors after 10 s, want $((want / 512))${rescan:-; nvme ns-rescan did not help either}"
        [ -n "$rescan" ] || return 0
    fi
    cntlid_same "the resize needed no reconnect"
    df0=$(df -k /mnt/vol | awk 'NR == 2 { print $2 }')
    if out=$(resize2fs "$dev" 2>&1); then
        df1=$(df -k /mnt/vol | awk 'NR == 2 { print $2 }')
        # at least 90 % of what the namespace grew by
        if [ $((df1 - df0)) -ge $(((want - $(cat /tmp/size1)) / 1024 * 9 / 10)) ]; then
            pass "resize2fs grew the mounted file system: df $df0 -> $df1 KiB"
        else
            flunk "resize2fs grew the mounted file system: df $df0 -> $df1 KiB
$out"
        fi
    else
        flunk "resize2fs $dev (online): $out"
    fi
    if dd if=/dev/urandom of=/mnt/vol/grown bs=1M count=8 2>/dev/null && sync; then
        pass "8 MiB written to the grown file system"
    else
        flunk "8 MiB written to the grown file system: $(df -k /mnt/vol | tail -n 1)"
    fi
}
c_fill() {
    local thin thick i rc t0 err sum mib bad=0
    ns_appears "namespace 3 (thin lvol larger than its pool)" "$1" || return 0
    thin=$DEV
    ns_appears "namespace 4 (its thick neighbour)" "$2" || return 0
    thick=$DEV
    mib=$(($(blockdev --getsize64 "$thin") >> 20))
    dd if=/dev/urandom of=/tmp/chunk bs=1M count=1 2>/dev/null
    sum=$(sha256sum </tmp/chunk)
    i=0 rc=0
    while [ $i -lt "$mib" ]; do
        t0=$(now)
        timeout 60 dd if=/tmp/chunk of="$thin" bs=1M seek=$i count=1 oflag=direct conv=notrunc 2>/tmp/dd.err || rc=$?
        [ $rc = 0 ] || break
        i=$((i + 1))
    done
    err=$(grep -v 'records\|copied' /tmp/dd.err | head -n 2)
    if [ $rc = 124 ] || [ $rc = 143 ]; then
        flunk "a write to the full thin lvol fails (no hang): dd at MiB $i did not end within 60 s"
        return 0
    elif [ $rc = 0 ]; then
        flunk "writes to the thin lvol fail once its pool is full: all $mib MiB were written"
        return 0
    elif [ $i -lt 8 ]; then
        flunk "writes to the thin lvol fail once its pool is full, not before: the write at MiB $i failed: $err"
        return 0
    fi
    pass "writes to the thin lvol fail once its pool is full: at MiB $i of $mib, in $(since "$t0") s: $err"
    t0=$(now) rc=0
    timeout 60 dd if=/tmp/chunk of="$thin" bs=1M seek=$((mib - 1)) count=1 oflag=direct conv=notrunc 2>/tmp/dd.err || rc=$?
    if [ $rc != 0 ] && [ $rc != 124 ] && [ $rc != 143 ]; then
        pass "a second write to the full pool fails too, in $(since "$t0") s"
    else
        flunk "a second write to the full pool fails: dd status $rc"
    fi
    for j in $(seq 0 $((i - 1))); do
        [ "$(timeout 60 dd if="$thin" bs=1M skip="$j" count=1 iflag=direct 2>/dev/null | sha256sum)" = "$sum" ] || bad=$((bad + 1))
    done
    if [ $bad = 0 ]; then pass "the $i MiB the thin lvol took read back"; else
        flunk "the $i MiB the thin lvol took read back: $bad MiB differ"; fi
    if [ "$(timeout 60 dd if="$thin" bs=1M skip=$((mib - 1)) count=1 iflag=direct 2>/dev/null | sha256sum)" = \
        "$(dd if=/dev/zero bs=1M count=1 2>/dev/null | sha256sum)" ]; then
        pass "its unwritten last MiB reads zeros"
    else
        flunk "its unwritten last MiB reads zeros"
    fi
    bad=0
    for j in $(seq 0 $(($(blockdev --getsize64 "$thick") / 1048576 - 1))); do
        timeout 60 dd if=/tmp/chunk of="$thick" bs=1M seek="$j" count=1 oflag=direct conv=notrunc 2>/tmp/dd.err || bad=$((bad + 1))
        [ "$(timeout 60 dd if="$thick" bs=1M skip="$j" count=1 iflag=direct 2>/dev/null | sha256sum)" = "$sum" ] || bad=$((bad + 1))
    done
    if [ $bad = 0 ]; then pass "the thick neighbour in the full pool writes and reads back ($(($(blockdev --getsize64 "$thick") >> 20)) MiB)"; else
        flunk "the thick neighbour in the full pool writes and reads back: $bad failures; $(cat /tmp/dd.err)"; fi
    cntlid_same "the full pool cost no reconnect"
}

# fio_run write|verify REGION SEED: one pass over the region, every block once.
fio_run() {
    local extra=--do_verify=1
    [ "$1" = verify ] && extra=--verify_only
    local mib bs
    read -r mib bs </tmp/loadshape
    fio --name="r$2" --filename="$(cat /tmp/loaddev)" --ioengine=libaio --direct=1 --rw=randwrite \
        --bs="$bs" --iodepth=16 --offset="$(($2 * mib))m" --size="${mib}m" --randrepeat=1 \
        --randseed="$3" --verify=crc32c --verify_fatal=1 --verify_dump=0 $extra \
        --output=/tmp/fio.out
}
fio_err() { grep -iE 'err=|error|verify|bad|mismatch' /tmp/fio.out | head -n 6 | sed 's/^/    fio| /'; }
# load: fio_run write over regions 0..3 in turn, a new seed each run, until /tmp/stop exists.
load() {
    local i=0 errs=0 r s t0
    while [ ! -e /tmp/stop ]; do
        i=$((i + 1)) r=$(((i - 1) % 4)) s=$((1000 + i)) t0=$(now)
        mark "run start region=$r seed=$s"
        if fio_run write $r $s >/dev/null 2>&1; then
            echo $s >/tmp/good.$r
            rm -f /tmp/dirty.$r
            mark "run done region=$r seed=$s rc=0 secs=$(since "$t0")"
        else
            errs=$((errs + 1))
            touch /tmp/dirty.$r
            mark "run done region=$r seed=$s rc=1 secs=$(since "$t0")"
            fio_err
            sleep 0.5
        fi
    done
    echo "$i $errs" >/tmp/load.res
}
c_load() {
    find_ns "$1" || { flunk "namespace 5 found: no device with uuid $1"; return 1; }
    echo "$DEV" >/tmp/loaddev
    echo "$2 $3" >/tmp/loadshape
    rm -f /tmp/stop /tmp/load.res
    load &
    echo $! >/tmp/load.pid
}
c_stop() {
    local runs errs
    touch /tmp/stop
    wait "$(cat /tmp/load.pid)"
    read -r runs errs </tmp/load.res
    if [ "$errs" = 0 ]; then pass "fio load: $runs runs, none failed"; else
        flunk "fio load: $errs of $runs runs failed"; fi
}
c_verify() {
    local f r s n=0 bad=0
    for f in /tmp/good.*; do
        r=${f#/tmp/good.} s=$(cat "$f")
        [ -e /tmp/dirty.$r ] && { mark "region $r skipped (its last run failed)"; continue; }
        n=$((n + 1))
        fio_run verify "$r" "$s" >/dev/null 2>&1 || { bad=$((bad + 1)); fio_err; }
    done
    if [ $n -gt 0 ] && [ $bad = 0 ]; then pass "fio verify_only of every region's last good run ($n regions)"; else
        flunk "fio verify_only of every region's last good run: $bad of $n failed"; fi
}
c_files() {
    local out s
    s=$(cat "/sys/class/nvme/$CTRL/state")
    if [ "$s" = live ]; then pass "$CTRL is live again after the restart (it reconnected by itself)"; else
        flunk "$CTRL is live again after the restart: state $s"; fi
    sync
    echo 3 >/proc/sys/vm/drop_caches
    if out=$(cd /mnt/vol && sha256sum -c /tmp/sums.now 2>&1); then
        pass "the mounted ext4 on namespace 1 still holds its files (read after dropping caches)"
    else
        flunk "the mounted ext4 on namespace 1 still holds its files: $out"
    fi
}
c_exit() {
    local dev out rc=0
    dev=$(cat /tmp/dev1)
    umount /mnt/vol
    out=$(fsck.ext4 -n -f "$dev" 2>&1) || rc=$?
    if [ $rc = 0 ]; then pass "fsck.ext4 -n -f on namespace 1 after everything: clean ($(echo "$out" | tail -n 1))"; else
        flunk "fsck.ext4 -n -f on namespace 1 after everything: status $rc
$out"; fi
    timeout 60 nvme disconnect -n "$NVMF_NQN"
}

step "connect"
nvmf_connect -l 120 -c 1 || { mark "connect-failed"; exit 1; }
CTRL=$(nvmf_ctrl) || { mark "connect-failed"; exit 1; }
CNTLID=$(cat "/sys/class/nvme/$CTRL/cntlid")
mark "ready ctrl=$CTRL cntlid=$CNTLID dev=$NVMF_DEV"
n=1
while :; do
    cmd=$(wget -q -O - "$CTL/cmd/$n" 2>/dev/null) || { usleep 300000; continue; }
    mark "cmd $n start $cmd"
    # shellcheck disable=SC2086
    set -- $cmd
    verb=$1
    shift
    case $verb in
    # the load runs in the background of this shell (stop waits for it)
    load | stop) "c_$verb" "$@"; rc=$? ;;
    # a subshell with errexit: a step that fails somewhere unexpected ends there (rc != 0)
    fs | freeze | thaw | clone | grow | fill | verify | files | exit) (set -e; "c_$verb" "$@"); rc=$? ;;
    *) rc=2 ;;
    esac
    mark "cmd $n done rc=$rc"
    [ "$verb" = exit ] && break
    n=$((n + 1))
done
exit 0
