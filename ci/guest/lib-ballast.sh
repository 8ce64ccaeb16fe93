# shellcheck shell=dash
# ci/guest/lib-ballast.sh -- guest-side helpers (busybox ash) for the ballast
# interop scripts. ci/interop-ballast.sh prepends this file to each guest
# script; lib-interop.sh's prelude (step/fail/nvmf_ctrl, `set -eo pipefail`)
# comes before it.
#
#   on_fail                  EXIT trap: on a non-zero exit prints the last 40
#                            kernel messages (`dmesg | tail -40`)
#   idf TEXT FIELD           value of "FIELD : value" in nvme-cli output TEXT
#   ctrl_checks CTRL NIOQ    sysfs: transport tcp, state live, address 10.0.2.2:PORT,
#                            queue_count = NIOQ + 1
#   wait_gone DEV            waits up to 10 s for block device DEV to disappear
#   fio_verify DEV QD BASE_MIB MODE
#                            one fio job per block size (512 B .. 128 KiB), each in
#                            its own region from BASE_MIB on, jobs alternately
#                            pinned to CPU 0 and 1 (= I/O queue 1 and 2).
#                            MODE write: randwrite then crc32c read-back verify;
#                            MODE verify: only read back and verify what an
#                            earlier `write` with the same QD/BASE left there.
#                            Asserts per job: no error, every byte written
#                            (write mode) and read back.
#   qid_trace_start / qid_trace_stop
#                            traces the kernel's nvme_setup_cmd events in between;
#                            stop prints "qid1=N qid2=M ..." (commands per queue)
#   lba_io read|write DEV SLBA BYTES FILE   nvme read/write (passthrough) of BYTES
#   zeros BYTES FILE         writes a file of BYTES zero bytes

on_fail() {
    rc=$?
    if [ "$rc" != 0 ]; then
        echo "---- guest dmesg | tail -40 (exit status $rc) ----"
        dmesg | tail -40
        echo "---- end of dmesg ----"
    fi
}
trap on_fail EXIT

idf() { echo "$1" | sed -n "s/^$2[[:space:]]*:[[:space:]]*//p" | head -n1 | sed 's/[[:space:]]*$//'; }

ctrl_checks() {
    local c=$1 nioq=$2 s=/sys/class/nvme/$1
    echo "$c: transport=$(cat $s/transport) state=$(cat $s/state) address=$(cat $s/address) queue_count=$(cat $s/queue_count) sqsize=$(cat $s/sqsize) cntlid=$(cat $s/cntlid)"
    [ "$(cat $s/transport)" = tcp ] || fail "$c: transport is $(cat $s/transport)"
    [ "$(cat $s/state)" = live ] || fail "$c: controller state is $(cat $s/state)"
    case "$(cat $s/address)," in
        "traddr=$NVMF_ADDR,trsvcid=$NVMF_PORT,"*) ;;
        *) fail "$c: controller address is $(cat $s/address)" ;;
    esac
    [ "$(cat $s/queue_count)" = $((nioq + 1)) ] ||
        fail "$c: queue_count=$(cat $s/queue_count), want $((nioq + 1)) (admin + $nioq I/O queues)"
}

wait_gone() {
    local i=0
    while [ -e "$1" ]; do
        i=$((i + 1))
        [ $i -lt 100 ] || return 1
        usleep 100000
    done
}

zeros() { dd if=/dev/zero of="$2" bs="$1" count=1 2>/dev/null; }

lba_io() {
    local op=$1 dev=$2 slba=$3 bytes=$4 file=$5 out
    out=$(nvme "$op" "$dev" --start-block="$slba" --block-count=$((bytes / LBA_SIZE - 1)) \
              --data-size="$bytes" --data="$file" 2>&1) || { echo "$out"; return 1; }
}

qid_trace_start() {
    local t=/sys/kernel/tracing
    [ -d $t/events ] || mount -t tracefs nodev $t
    echo > $t/trace
    echo 1 > $t/events/nvme/nvme_setup_cmd/enable
}
qid_trace_stop() {
    local t=/sys/kernel/tracing
    echo 0 > $t/events/nvme/nvme_setup_cmd/enable
    grep -o 'nvme_setup_cmd: [^ ]* disk=[^ ]* qid=[0-9]*' $t/trace | sed 's/.*qid=//' | sort -n | uniq -c |
        awk '{ printf "%sqid%s=%s", sep, $2, $1; sep = " " } END { print "" }'
}

fio_verify() {
    local dev=$1 qd=$2 mode=$4 f=/tmp/verify-qd$2-$3.fio off=$3 i=0 bs mib out want
    {
        echo "[global]"
        echo "filename=$dev"
        echo "ioengine=libaio"
        echo "direct=1"
        echo "iodepth=$qd"
        echo "rw=randwrite"
        echo "verify=crc32c"
        echo "verify_fatal=1"
        echo "do_verify=1"
        [ "$mode" = verify ] && echo "verify_only=1"
        echo "randrepeat=1"
        echo "runtime=120"
        # 512 B .. 128 KiB: below/at/above the 8 KiB in-capsule size (R2T),
        # up to the 128 KiB maximum transfer size
        for bs in 512:1 4k:2 8k:2 16k:2 64k:4 128k:4; do
            mib=${bs#*:}
            echo "[bs${bs%:*}-qd$qd]"
            echo "bs=${bs%:*}"
            echo "offset=${off}m"
            echo "size=${mib}m"
            echo "cpus_allowed=$((i % 2))"
            off=$((off + mib)); i=$((i + 1))
        done
    } > "$f"
    out=$(fio --output-format=terse --terse-version=3 "$f" 2>&1) ||
        { echo "$out"; fail "fio ($mode, qd $qd) exited non-zero"; }
    # terse v3: $3 job name, $5 error, $6 read KiB (the verify pass), $47 write KiB
    echo "$out" | awk -F';' '
        NF < 80 { print; next }
        { printf "FIO %-14s error=%s written_kib=%s verified_kib=%s\n", $3, $5, $47, $6 }'
    want=$(echo "$out" | awk -F';' -v mode="$mode" '
        BEGIN { split("1 2 2 2 4 4", mib, " ") }
        NF < 80 { next }
        { n++; kib = mib[n] * 1024
          # (verify_only counts the skipped writes as written)
          if ($5 != 0 || $6 != kib || (mode == "write" && $47 != kib)) bad++ }
        END { print (n == 6 && bad == 0) ? "ok" : "bad" }')
    [ "$want" = ok ] || fail "fio $mode qd $qd: a job failed, or not every byte was written and verified"
}
