#!/usr/bin/env bash
# kernel-initiator-vm.sh -- run the Linux kernel NVMe/TCP *initiator* (and, for
# a baseline, the kernel nvmet-tcp *target*) inside a throw-away QEMU guest.
#
# This is ballast's own copy (ci/kernel-initiator-vm.sh), adopted from the
# shared tools/kernel-initiator-vm.sh; the project owns and maintains it now.
# Interop tests use it through ci/lib-interop.sh (see that file's header for
# how guest scripts assert and report); ci/interop-kernel-target-selftest.sh
# is the smallest end-to-end example.
#
# Why: the development/CI host kernel (a small VM kernel) ships no nvme-tcp module and no
# /lib/modules, so the real Linux initiator can only be exercised in a nested
# guest. Everything here comes from Debian 12 packages; nothing else is fetched.
#
# What it builds (once, cached under $NVMF_VM_CACHE, default
# /var/tmp/ballast-nvmf-vm):
#   * the Debian 6.1 kernel (linux-image-amd64's dependency), unpacked from the
#     .deb without installing it on the host; the bzImage's xz payload is
#     extracted to an ELF vmlinux so QEMU can boot it through the PVH entry
#     point (skips BIOS real-mode setup and in-guest decompression: ~4 s faster
#     under TCG);
#   * a minimal initramfs: busybox-static, nvme-cli, fio, iperf3, e2fsprogs'
#     mkfs.ext4/fsck.ext4/resize2fs (+ their shared libraries, found with ldd)
#     and the kernel modules nvme-tcp/nvme-fabrics/nvme-core, nvmet/nvmet-tcp,
#     null_blk, brd, ext4, virtio-net (+ dependencies, resolved with modprobe
#     --show-depends, then depmod'ed so the guest's busybox modprobe works).
#
# Networking: QEMU user-mode networking (slirp). The guest is 10.0.2.15/24 and
# reaches the HOST's 127.0.0.1 as 10.0.2.2 (slirp opens the host-side socket
# to 127.0.0.1 itself). No tap device, no bridge, no host address other than
# loopback is involved.
#
# Acceleration: on these machines /dev/kvm is backed by kvm_pvm (PVM, nested
# "pagetable-based VM"). It cannot run an unmodified Debian guest kernel: the
# bzImage hangs in the decompressor, and a PVH-booted vmlinux crawls (~30 s to
# reach the kernel command line) and dies with "KVM internal error ...
# emulation failure" on cmpxchg16b / xrstor. So VM_ACCEL=auto picks TCG when
# kvm_pvm is loaded, KVM when a usable kvm_intel/kvm_amd is present.
#
# Usage (as root; first call installs packages and builds the cache, ~20 s):
#   kernel-initiator-vm.sh setup [--force]   install apt packages, build cache
#   kernel-initiator-vm.sh run 'GUEST SHELL CMDS'
#   kernel-initiator-vm.sh run-file SCRIPT   same, commands read from a file
#   kernel-initiator-vm.sh baseline          in-guest kernel nvmet-tcp + fio
#   kernel-initiator-vm.sh selftest          slirp reachability/throughput +
#                                            discover/connect/fio/disconnect
#   kernel-initiator-vm.sh shell             interactive guest (serial console)
#
# The guest command runs under busybox sh after networking is up, with
#   NVMF_ADDR=10.0.2.2 (host 127.0.0.1)  NVMF_PORT  NVMF_NQN  FIO_RUNTIME
# in its environment, and the helper functions from /etc/nvmf-lib.sh (see
# GUEST_LIB below): nvmf_discover, nvmf_connect, nvmf_disconnect, kt_start,
# kt_stop, fio_one, fio_std. Its output goes to the serial console (this
# script's stdout, CRs stripped); the script exits with the command's exit
# status (or 124 on timeout, 125 if the guest died without reporting one).
#
# Example, with the project's target listening on host 127.0.0.1:4420:
#   NVMF_PORT=4420 NVMF_NQN=nqn.2024-01.io.example:t1 kernel-initiator-vm.sh run '
#       set -e; nvmf_discover; nvmf_connect -l 5; fio_std $NVMF_DEV; nvmf_disconnect'
#   (nvmf_connect -g -G adds header/data digests; FIO_RUNTIME=5 shortens fio)
#
# Pitfalls:
#   * A host target's discovery log reports its own traddr (127.0.0.1), which
#     in the guest is the guest itself: never `nvme connect-all`; connect to
#     10.0.2.2 explicitly (nvmf_connect does). The target sees the initiator
#     as 127.0.0.1 (slirp's host-side socket), one TCP connection per queue
#     (admin + VM_CPUS I/O queues).
#   * Kernel defaults: keep-alive every ~5 s, ctrl-loss-tmo 600 s with
#     reconnects every 10 s. If the target dies, I/O hangs while the kernel
#     reconnects: pass -l N (ctrl-loss-tmo) for tests that kill the target.
#   * Linux 6.1 has no NVMe/TCP TLS (kernel >= 6.7).
#   * TCG emulation: ~4 s boot, ~2-3k IOPS and ~0.3-0.5 ms QD1 latency even
#     with the in-guest kernel target; p99 tails of several ms (timer ticks).
#     Good for protocol/functional testing with the real initiator, not for
#     judging the target's performance. Through slirp, each guest<->host TCP
#     round trip costs ~0.8 ms and throughput tops out at ~150-300 Mbit/s.
#
# Host-side environment:
#   NVMF_PORT   (4420)   port of the target on host 127.0.0.1
#   NVMF_NQN    (nqn.2014-08.org.nvmexpress:nvmf-test)  subsystem NQN
#   NVMF_VM_CACHE (/var/tmp/ballast-nvmf-vm)  build cache. Not the shared
#               tool's /var/tmp/nvmf-vm: the two copies differ, and sharing
#               one cache would make each rebuild it for the other.
#   VM_ACCEL    (auto)   auto | kvm | tcg
#   VM_CPUS     (2)      guest vCPUs (= number of nvme-tcp I/O queues)
#   VM_MEM      (1024)   guest MiB
#   VM_TIMEOUT  (900)    seconds before the guest is killed
#   VM_BOOT_TIMEOUT (60) seconds for the guest's init to start (it prints
#                        "@@NVMF_VM booted"); if it has not, QEMU is killed and
#                        the guest booted again, up to VM_BOOT_TRIES (2) times
#                        (rc 126 if none booted). VM_TIMEOUT counts per try.
#   VM_KLOG     (0)      1: show kernel messages (loglevel 7) on the console
#   FIO_RUNTIME (15)     seconds per fio job in fio_std / baseline
#   KERNEL_PKG  ()       e.g. linux-image-6.1.0-56-amd64; default: whatever
#                        linux-image-amd64 currently depends on
#   VM_LOG      ()       also keep the raw console log in this file
#   VM_HOSTFWD  ()       optional slirp hostfwd rule, e.g.
#                        tcp:127.0.0.1:14420-10.0.2.15:4420 (host loopback port
#                        -> guest port); used by selftest for the hairpin test
#   NVMF_GUEST_*, KT_* () exported into the guest as is (e.g. KT_BACKEND=brd
#                        for `baseline`)
#   NVMF_HOSTNQN ()      host NQN of the guest initiator (default: random uuid)
#   VM_CPU_MODEL ()      QEMU -cpu (default: max under TCG, host under KVM)
#   VM_QEMU_ARGS ()      extra QEMU arguments (word-split)
#   VM_GUEST_BINS ()     host binaries (space-separated paths) put in the guest's
#                        /usr/bin for this run only (debug info stripped; their
#                        shared libraries copied too), e.g. target/release/ballast-csi
set -euo pipefail

CACHE=${NVMF_VM_CACHE:-/var/tmp/ballast-nvmf-vm}
NVMF_PORT=${NVMF_PORT:-4420}
NVMF_NQN=${NVMF_NQN:-nqn.2014-08.org.nvmexpress:nvmf-test}
VM_ACCEL=${VM_ACCEL:-auto}
VM_CPUS=${VM_CPUS:-2}
VM_MEM=${VM_MEM:-1024}
VM_TIMEOUT=${VM_TIMEOUT:-900}
VM_BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-60}
VM_BOOT_TRIES=${VM_BOOT_TRIES:-2}
VM_KLOG=${VM_KLOG:-0}
FIO_RUNTIME=${FIO_RUNTIME:-15}

# Host packages. busybox-static is only downloaded and unpacked (installing it
# would replace the host's busybox); the kernel likewise.
HOST_PKGS=(qemu-system-x86 nvme-cli fio iperf3 cpio kmod xz-utils e2fsprogs)
# ext4 on a namespace (ci/interop-lvol.sh): e2fsprogs' tools under the names they are
# called by (busybox's own applets, e.g. fsfreeze --freeze, win over PATH in the guest).
GUEST_BINS=(/usr/sbin/nvme /usr/bin/fio /usr/bin/iperf3
            /usr/sbin/mkfs.ext4 /usr/sbin/fsck.ext4 /usr/sbin/resize2fs)
GUEST_MODS=(virtio_pci virtio_net nvme-tcp nvmet-tcp null_blk brd configfs
            crc32c_generic crc32c-intel ext4)

log() { printf '[kernel-initiator-vm] %s\n' "$*" >&2; }
TMPS=()
trap 'rm -rf "${TMPS[@]}"' EXIT
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- setup ----

install_host_pkgs() {
    local missing=() p
    for p in "${HOST_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$p")
    done
    command -v python3 >/dev/null || missing+=(python3)   # selftest only
    ((${#missing[@]})) || return 0
    [[ $EUID == 0 ]] || die "missing packages ${missing[*]}: run '$0 setup' as root"
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have empty package lists: update once on failure.
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update >/dev/null
             apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

# apt-get download PKG into $1 (prints the .deb path).
download_deb() {
    local dir=$1 pkg=$2
    mkdir -p "$dir"
    ( cd "$dir" && rm -f "${pkg}"_*.deb
      apt-get download "$pkg" >/dev/null 2>&1 \
        || { apt-get update >/dev/null; apt-get download "$pkg" >/dev/null; } )
    ls "$dir/${pkg}"_*.deb | head -n1
}

kernel_pkg() {
    if [[ -n ${KERNEL_PKG:-} ]]; then echo "$KERNEL_PKG"; return; fi
    local p
    p=$(apt-cache depends linux-image-amd64 2>/dev/null \
          | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    if [[ -z $p ]]; then
        apt-get update >/dev/null
        p=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    fi
    [[ -n $p ]] || die "cannot resolve linux-image-amd64"
    echo "$p"
}

# Everything that determines the cached artefacts; a change forces a rebuild.
# (Only the parts of this script that go into the cache, so that editing docs,
# selftest or run_guest does not cost a rebuild.)
build_stamp() {
    {
        echo cache-format-1
        declare -f build_cache copy_with_libs download_deb
        printf '%s\n' "$GUEST_INIT" "$GUEST_LIB" "${GUEST_BINS[*]}" "${GUEST_MODS[*]}"
        kernel_pkg
        dpkg-query -W -f='${Package} ${Version}\n' nvme-cli fio iperf3 e2fsprogs libc6 2>/dev/null
    } | sha256sum | cut -d' ' -f1
}

# Copy binary $2 (and, recursively via ldd, its libraries) into root $1, at the
# same path or at $3.
copy_with_libs() {
    local root=$1 bin=$2 dest=${3:-/usr/${2#/usr/}} lib name
    install -D -m755 "$(readlink -f "$bin")" "$root$dest"
    # "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux..."
    while read -r lib; do
        [[ -n $lib ]] || continue
        name=${lib#/usr}            # /lib/x86_64-linux-gnu/libc.so.6
        [[ -e $root/usr$name ]] && continue
        install -D -m755 "$(readlink -f "$lib")" "$root/usr$name"
    done < <(ldd "$bin" | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

build_cache() {
    local force=${1:-}
    install_host_pkgs
    mkdir -p "$CACHE"
    # Serialise concurrent builders (parallel CI jobs sharing the cache).
    exec 9> "$CACHE/.lock"
    flock 9
    local stamp; stamp=$(build_stamp)
    if [[ -z $force && -f $CACHE/stamp && $(cat "$CACHE/stamp") == "$stamp" \
          && -f $CACHE/initramfs.cpio && -e $CACHE/kernel ]]; then
        exec 9>&-; return 0
    fi
    log "building guest kernel + initramfs in $CACHE (one-off, ~1 min)"
    local kpkg deb kroot kver stage
    kpkg=$(kernel_pkg)
    deb=$(download_deb "$CACHE/debs" "$kpkg")
    kroot=$CACHE/kroot
    rm -rf "$kroot"; mkdir -p "$kroot"
    dpkg-deb -x "$deb" "$kroot"
    kver=$(ls "$kroot/lib/modules" | head -n1)
    echo "$kver" > "$CACHE/kver.new"
    depmod -b "$kroot" "$kver"      # the .deb ships no modules.dep

    # Kernel image. Prefer the uncompressed ELF (PVH boot); fall back to bzImage.
    # Every cached file is written as *.new and renamed into place, so a run
    # that reads the cache while another process rebuilds it never sees a
    # half-written file.
    local vmlinuz=$kroot/boot/vmlinuz-$kver off kimg=bzImage
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n1 | cut -d: -f1 || true)
    rm -f "$CACHE/vmlinux.new" "$CACHE/kernel.new"
    if [[ -n $off ]]; then
        tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream > "$CACHE/vmlinux.new" 2>/dev/null || true
        if [[ $(head -c4 "$CACHE/vmlinux.new" | od -An -tx1 | tr -d ' ') == 7f454c46 ]]; then
            kimg=vmlinux
        fi
    fi
    if [[ $kimg == vmlinux ]]; then
        mv -f "$CACHE/vmlinux.new" "$CACHE/vmlinux"
    else
        rm -f "$CACHE/vmlinux.new"
        cp "$vmlinuz" "$CACHE/bzImage.new"; mv -f "$CACHE/bzImage.new" "$CACHE/bzImage"
    fi

    # ---- initramfs staging tree (merged-/usr layout like Debian 12) ----
    stage=$CACHE/stage
    rm -rf "$stage"
    mkdir -p "$stage"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/nvme,proc,sys,dev,tmp,run,root,mnt}
    ln -s usr/bin "$stage/bin"; ln -s usr/sbin "$stage/sbin"
    ln -s usr/lib "$stage/lib"; ln -s usr/lib64 "$stage/lib64"

    # busybox-static from its .deb (not installed on the host).
    local bbroot=$CACHE/busybox
    rm -rf "$bbroot"; mkdir -p "$bbroot"
    dpkg-deb -x "$(download_deb "$CACHE/debs" busybox-static)" "$bbroot"
    install -m755 "$bbroot/bin/busybox" "$stage/usr/bin/busybox"

    local b
    for b in "${GUEST_BINS[@]}"; do copy_with_libs "$stage" "$b"; done

    # Kernel modules + their dependencies, at their original relative paths.
    local m line
    for m in "${GUEST_MODS[@]}"; do
        modprobe -d "$kroot" -S "$kver" --show-depends "$m" \
          | while read -r line; do
                set -- $line
                [[ $1 == insmod ]] || continue
                install -D -m644 "$2" "$stage/${2#"$kroot"/}"
            done
    done
    cp "$kroot/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$stage/lib/modules/$kver/"
    depmod -b "$stage" "$kver"

    printf '%s\n' "$GUEST_LIB" > "$stage/etc/nvmf-lib.sh"
    printf '%s\n' "$GUEST_INIT" > "$stage/init"
    chmod 755 "$stage/init"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$stage/etc/passwd"
    echo 'root:x:0:' > "$stage/etc/group"
    ln -s /proc/self/mounts "$stage/etc/mtab"   # e2fsck/resize2fs look for mounts there

    # Uncompressed: unpacking ~100 MiB of cpio is faster than any decompressor
    # under TCG, and QEMU's fw_cfg DMA loads it in well under a second.
    ( cd "$stage" && find . -print0 | LC_ALL=C sort -z \
        | cpio --null -o -H newc -R 0:0 --quiet ) > "$CACHE/initramfs.cpio.new"
    mv -f "$CACHE/initramfs.cpio.new" "$CACHE/initramfs.cpio"
    ln -sfn "$kimg" "$CACHE/kernel.new"; mv -Tf "$CACHE/kernel.new" "$CACHE/kernel"
    mv -f "$CACHE/kver.new" "$CACHE/kver"
    echo "$stamp" > "$CACHE/stamp"
    rm -rf "$kroot" "$stage"          # ~500 MiB; rebuilt from debs/ if needed
    log "cache ready: $(du -sh "$CACHE/initramfs.cpio" | cut -f1) initramfs, kernel $kver"
    exec 9>&-
}

# ------------------------------------------------------------ guest side ----

# /init (PID 1 in the guest). Brings up the minimum, runs /cmd.sh from the
# per-run cpio, prints a status marker and powers off.
GUEST_INIT='#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
modprobe configfs && mount -t configfs configfs /sys/kernel/config
# Kernel-initiated module loads (request_module) use this path.
echo /bin/modprobe > /proc/sys/kernel/modprobe
# crc32c for NVMe/TCP header/data digests (-g/-G); -intel needs SSE4.2.
for m in virtio_pci virtio_net crc32c_generic crc32c-intel; do modprobe $m 2>/dev/null; done
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 50000; i=$((i+1)); done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
[ -f /etc/nvmf-env ] && . /etc/nvmf-env
uuid=$(cat /proc/sys/kernel/random/uuid)
echo "${NVMF_HOSTNQN:-nqn.2014-08.org.nvmexpress:uuid:$uuid}" > /etc/nvme/hostnqn
echo "$uuid" > /etc/nvme/hostid
echo "@@NVMF_VM booted uptime=$(cut -d" " -f1 /proc/uptime)s cpus=$(nproc) kernel=$(uname -r)"
if [ -n "$NVMF_VM_SHELL" ]; then
    setsid cttyhack sh -l
    rc=$?
else
    sh -c ". /etc/nvmf-lib.sh; . /cmd.sh" < /dev/null
    rc=$?
fi
echo; echo "@@NVMF_VM rc=$rc uptime=$(cut -d" " -f1 /proc/uptime)s"
sync
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
'

# Helper library sourced before the guest command.
GUEST_LIB='# /etc/nvmf-lib.sh -- helpers for guest commands (busybox sh).
: "${NVMF_ADDR:=10.0.2.2}" "${NVMF_PORT:=4420}" "${FIO_RUNTIME:=15}"
: "${NVMF_NQN:=nqn.2014-08.org.nvmexpress:nvmf-test}"

# nvmf_discover [ADDR [PORT]]
nvmf_discover() {
    modprobe nvme-tcp
    nvme discover -t tcp -a "${1:-$NVMF_ADDR}" -s "${2:-$NVMF_PORT}"
}

# nvmf_connect [ADDR [PORT [NQN]]] [extra nvme-connect options]
# e.g. nvmf_connect -g -G -l 10   (defaults, header+data digest, ctrl-loss-tmo)
# Connects and waits for the namespace; sets NVMF_DEV (e.g. /dev/nvme0n1).
nvmf_connect() {
    local a=$NVMF_ADDR p=$NVMF_PORT n=$NVMF_NQN i d
    case $1 in -*|"") ;; *) a=$1; shift
        case $1 in -*|"") ;; *) p=$1; shift
            case $1 in -*|"") ;; *) n=$1; shift ;; esac ;; esac ;; esac
    modprobe nvme-tcp
    nvme connect -t tcp -a "$a" -s "$p" -n "$n" "$@" || return 1
    NVMF_DEV=
    for i in $(seq 1 100); do
        for d in /sys/block/nvme*; do
            case ${d##*/} in *c*) continue ;; esac   # hidden per-path nodes
            # sysfs entry can precede the devtmpfs node: wait for both
            if [ "$(cat $d/device/subsysnqn 2>/dev/null)" = "$n" ] && [ -b /dev/${d##*/} ]; then
                NVMF_DEV=/dev/${d##*/}; break 2
            fi
        done
        usleep 100000
    done
    [ -b "$NVMF_DEV" ] || { echo "nvmf_connect: no namespace block device for $n" >&2; return 1; }
    echo "connected $n at $a:$p -> $NVMF_DEV ($(( $(cat /sys/block/${NVMF_DEV#/dev/}/size) / 2048 )) MiB)"
}

# nvmf_disconnect [NQN]
nvmf_disconnect() { nvme disconnect -n "${1:-$NVMF_NQN}"; }

# kt_start [PORT [NQN [null|brd [SIZE_MIB [ADDR]]]]] -- Linux kernel nvmet-tcp
# target listening on ADDR (default 127.0.0.1; 10.0.2.15 to be reachable through
# a VM_HOSTFWD rule), backed by null_blk (no data kept) or brd (RAM disk).
kt_start() {
    local port=${1:-4420} nqn=${2:-$NVMF_NQN} be=${3:-null} mb=${4:-1024} addr=${5:-127.0.0.1} dev
    local cfg=/sys/kernel/config/nvmet
    case $be in
      null) modprobe null_blk nr_devices=1 gb=$(( (mb + 1023) / 1024 )) queue_mode=2 \
                submit_queues=$(nproc) || return 1; dev=/dev/nullb0 ;;
      brd)  modprobe brd rd_nr=1 rd_size=$((mb * 1024)) max_part=0 || return 1; dev=/dev/ram0 ;;
      *)    echo "kt_start: backend $be?" >&2; return 1 ;;
    esac
    modprobe nvmet-tcp || return 1
    mkdir $cfg/subsystems/$nqn
    echo 1 > $cfg/subsystems/$nqn/attr_allow_any_host
    mkdir $cfg/subsystems/$nqn/namespaces/1
    echo -n $dev > $cfg/subsystems/$nqn/namespaces/1/device_path
    echo 1 > $cfg/subsystems/$nqn/namespaces/1/enable
    mkdir $cfg/ports/1
    echo tcp > $cfg/ports/1/addr_trtype
    echo ipv4 > $cfg/ports/1/addr_adrfam
    echo $addr > $cfg/ports/1/addr_traddr
    echo $port > $cfg/ports/1/addr_trsvcid
    ln -s $cfg/subsystems/$nqn $cfg/ports/1/subsystems/$nqn
    echo "kernel nvmet-tcp target: $nqn on $addr:$port backed by $dev"
}

# kt_stop [NQN]
kt_stop() {
    local nqn=${1:-$NVMF_NQN} cfg=/sys/kernel/config/nvmet
    rm -f $cfg/ports/1/subsystems/$nqn
    rmdir $cfg/ports/1 $cfg/subsystems/$nqn/namespaces/1 $cfg/subsystems/$nqn 2>/dev/null
}

# fio_one DEV RW QD [RUNTIME [BS]] -- one libaio job, prints a one-line summary:
# FIO <rw> bs=4k qd=32 iops=... MiBps=... lat_us: mean=... p50=... p99=...
# (total latency, submission included). Non-terse fio output (errors) is shown;
# returns non-zero if fio reported an error or produced no result.
fio_one() {
    local dev=$1 rw=$2 qd=$3 rt=${4:-$FIO_RUNTIME} bs=${5:-4k}
    fio --name=j --filename="$dev" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --numjobs=1 --ioengine=libaio --direct=1 --time_based --runtime="$rt" \
        --ramp_time=1 --norandommap --randrepeat=0 --group_reporting --lat_percentiles=1 \
        --output-format=terse --terse-version=3 2>&1 |
    awk -F";" -v rw="$rw" -v bs="$bs" -v qd="$qd" "
        NF < 80 { print; next }
        \$5 != 0 { print \"FIO \" rw \" error=\" \$5; next }
        { ok = 1
          r = (rw ~ /read/) ? 0 : 41   # read fields, or write fields (+41)
          p50 = \$(24 + r); sub(/.*=/, \"\", p50)
          p99 = \$(30 + r); sub(/.*=/, \"\", p99)
          printf \"FIO %-9s bs=%s qd=%-3s iops=%-7d MiBps=%-7.1f lat_us: mean=%-8.1f p50=%-7s p99=%s\n\",
                 rw, bs, qd, \$(8 + r), \$(7 + r) / 1024, \$(40 + r), p50, p99 }
        END { exit !ok }"
}

# fio_std DEV -- 4k randread/randwrite at QD32 and QD1, $FIO_RUNTIME s each.
fio_std() {
    fio_one "$1" randread 32
    fio_one "$1" randwrite 32
    fio_one "$1" randread 1
    fio_one "$1" randwrite 1
}
'

# ------------------------------------------------------------- run guest ----

pick_accel() {
    case $VM_ACCEL in
      kvm|tcg) echo "$VM_ACCEL" ;;
      auto)
        if [[ -d /sys/module/kvm_pvm ]]; then echo tcg      # see header
        elif [[ -r /dev/kvm && -w /dev/kvm ]] && { [[ -d /sys/module/kvm_intel ]] || [[ -d /sys/module/kvm_amd ]]; }; then
            echo kvm
        else echo tcg; fi ;;
      *) die "VM_ACCEL=$VM_ACCEL (want auto|kvm|tcg)" ;;
    esac
}

# run_guest CMDFILE [shell]
run_guest() {
    local cmdfile=$1 shell=${2:-}
    build_cache
    local tmp; tmp=$(mktemp -d /tmp/nvmf-vm.XXXXXX); TMPS+=("$tmp")
    # Per-run overlay cpio (command + environment), appended to the cached one:
    # the kernel unpacks concatenated newc archives in order.
    mkdir -p "$tmp/ov/etc"
    cp "$cmdfile" "$tmp/ov/cmd.sh"
    {
        printf 'export NVMF_ADDR=10.0.2.2 NVMF_PORT=%q NVMF_NQN=%q FIO_RUNTIME=%q\n' \
            "$NVMF_PORT" "$NVMF_NQN" "$FIO_RUNTIME"
        [[ -n $shell ]] && echo 'NVMF_VM_SHELL=1'
        [[ -n ${NVMF_HOSTNQN:-} ]] && printf 'export NVMF_HOSTNQN=%q\n' "$NVMF_HOSTNQN"
        # Pass through NVMF_GUEST_* and KT_* variables verbatim.
        local v
        for v in $(compgen -v NVMF_GUEST_ || true) $(compgen -v KT_ || true); do
            printf 'export %s=%q\n' "$v" "${!v}"
        done
    } > "$tmp/ov/etc/nvmf-env"
    local gb
    for gb in ${VM_GUEST_BINS:-}; do
        [[ -x $gb ]] || die "VM_GUEST_BINS: $gb is not an executable"
        copy_with_libs "$tmp/ov" "$gb" "/usr/bin/$(basename "$gb")"
        strip --strip-debug "$tmp/ov/usr/bin/$(basename "$gb")" 2>/dev/null || true
    done
    ( cd "$tmp/ov" && find . | cpio -o -H newc -R 0:0 --quiet ) > "$tmp/ov.cpio"
    # Snapshot kernel + initramfs under a shared lock (no rebuild in between,
    # so they always match); hard link when /tmp is on the same filesystem.
    local kver
    exec 9< "$CACHE/.lock"; flock -s 9
    cat "$CACHE/initramfs.cpio" "$tmp/ov.cpio" > "$tmp/initrd"
    ln "$(readlink -f "$CACHE/kernel")" "$tmp/kernel" 2>/dev/null \
        || cp "$(readlink -f "$CACHE/kernel")" "$tmp/kernel"
    kver=$(cat "$CACHE/kver")
    exec 9<&-

    local accel cpu loglevel=3
    accel=$(pick_accel)
    if [[ $accel == kvm ]]; then cpu=(-accel kvm -cpu "${VM_CPU_MODEL:-host}")
    else cpu=(-accel tcg,thread=multi,tb-size=512 -cpu "${VM_CPU_MODEL:-max}"); fi
    [[ $VM_KLOG == 1 ]] && loglevel=7
    local qemu=(qemu-system-x86_64 -nodefaults -no-user-config -machine pc
        "${cpu[@]}" -smp "$VM_CPUS" -m "$VM_MEM" -display none -no-reboot
        -kernel "$tmp/kernel" -initrd "$tmp/initrd"
        -append "console=ttyS0 panic=-1 loglevel=$loglevel rdinit=/init mitigations=off nokaslr tsc=reliable"
        -netdev "user,id=n0${VM_HOSTFWD:+,hostfwd=$VM_HOSTFWD}"
        -device virtio-net-pci,netdev=n0,romfile=
        ${VM_QEMU_ARGS:-})
    log "booting $kver accel=$accel cpus=$VM_CPUS mem=${VM_MEM}M (host 127.0.0.1:$NVMF_PORT = guest 10.0.2.2:$NVMF_PORT)"

    if [[ -n $shell ]]; then
        "${qemu[@]}" -serial mon:stdio || true
        rm -rf "$tmp"; return 0
    fi
    local t0=$SECONDS rc=0 log=$tmp/console.log try=1 wd
    while :; do
        rc=0
        : > "$log"; rm -f "$tmp/no-boot"
        # Boot watchdog: a guest boots in ~5 s under TCG; now and then one
        # hangs before its init runs (no console output at all). Nothing has
        # run in it yet then, so it is killed and booted again, and says so.
        (
            for ((i = 0; i < VM_BOOT_TIMEOUT; i++)); do
                sleep 1
                grep -q '^@@NVMF_VM booted' "$log" 2>/dev/null && exit 0
            done
            touch "$tmp/no-boot"
            pkill -TERM -f -- "-kernel $tmp/kernel" || true
        ) &
        wd=$!
        # stdin from /dev/null: works without a terminal (CI). Console -> stdout,
        # line-buffered (stdbuf) so that whoever watches it sees each line as the
        # guest prints it (e.g. a marker before the host kills the VM).
        timeout --foreground -k 10 "$VM_TIMEOUT" "${qemu[@]}" -serial stdio < /dev/null \
            | stdbuf -oL tr -d '\r' | tee "$log" || rc=$?
        kill "$wd" 2>/dev/null || true
        wait "$wd" 2>/dev/null || true
        [[ -f $tmp/no-boot ]] || break
        if ((try >= VM_BOOT_TRIES)); then
            log "guest did not boot within ${VM_BOOT_TIMEOUT}s, $try tries: giving up"
            rm -rf "$tmp"; return 126
        fi
        log "guest did not boot within ${VM_BOOT_TIMEOUT}s (try $try of $VM_BOOT_TRIES): killed, booting again"
        try=$((try + 1)); t0=$SECONDS
    done
    [[ -n ${VM_LOG:-} ]] && cp "$log" "$VM_LOG"
    local grc
    grc=$(sed -n 's/^@@NVMF_VM rc=\([0-9]*\).*/\1/p' "$log" | tail -n1)
    log "guest finished in $((SECONDS - t0)) s (wall, incl. boot)"
    rm -rf "$tmp"
    if [[ -n $grc ]]; then return "$grc"; fi
    [[ $rc == 124 ]] && { log "timeout after ${VM_TIMEOUT}s"; return 124; }
    log "guest exited without a status (qemu rc=$rc)"; return 125
}

run_cmd() {
    local f; f=$(mktemp /tmp/nvmf-cmd.XXXXXX); TMPS+=("$f")
    printf '%s\n' "$1" > "$f"
    local rc=0; run_guest "$f" || rc=$?
    rm -f "$f"; return $rc
}

# (c) baseline: kernel nvmet-tcp on 127.0.0.1 in the guest, kernel initiator.
BASELINE_CMD='
set -eo pipefail
kt_start 4420 nqn.2014-08.org.nvmexpress:kt ${KT_BACKEND:-null} 1024
nvmf_discover 127.0.0.1 4420 | grep -E "^(trtype|subnqn|traddr|trsvcid)"
nvmf_connect 127.0.0.1 4420 nqn.2014-08.org.nvmexpress:kt
fio_std $NVMF_DEV
nvmf_disconnect nqn.2014-08.org.nvmexpress:kt
kt_stop nqn.2014-08.org.nvmexpress:kt
'

# selftest:
#  (a) guest -> host 127.0.0.1 reachability (wget from a python http.server),
#      slirp TCP throughput (iperf3 both ways) and round-trip time (fio's net
#      engine in ping-pong mode against a python echo server);
#  (b) the full initiator path through the host loopback: a kernel nvmet-tcp
#      target in the guest listens on 10.0.2.15:4420, QEMU's hostfwd exposes it
#      on host 127.0.0.1:$SELFTEST_PORT (14420), and the guest initiator takes
#      the same path as to a host-side target: nvme discover/connect -a 10.0.2.2
#      -s 14420 (slirp -> host 127.0.0.1:14420 -> hostfwd -> guest), then
#      fio (incl. a crc32c verify pass) and nvme disconnect.
selftest() {
    local http_port=18080 iperf_port=15201 echo_port=15300 hp=${SELFTEST_PORT:-14420}
    local pids=() rc=0 dir
    dir=$(mktemp -d /tmp/nvmf-st.XXXXXX); TMPS+=("$dir")
    echo "hello-from-host-$$" > "$dir/hello.txt"
    python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$http_port" >/dev/null 2>&1 &
    pids+=($!)
    iperf3 -s -B 127.0.0.1 -p "$iperf_port" >/dev/null 2>&1 &
    pids+=($!)
    python3 -c '
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
def echo(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while (d := c.recv(1 << 16)): c.sendall(d)
    except OSError: pass
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
' "$echo_port" >/dev/null 2>&1 &
    pids+=($!)
    sleep 1
    NVMF_PORT=$hp NVMF_NQN=nqn.2014-08.org.nvmexpress:selftest \
    VM_HOSTFWD=tcp:127.0.0.1:$hp-10.0.2.15:4420 run_cmd "
set -eo pipefail
echo '== (a) wget http://10.0.2.2:$http_port/hello.txt (host 127.0.0.1)'
wget -q -O - http://10.0.2.2:$http_port/hello.txt
echo '== slirp throughput guest->host (iperf3 -c 10.0.2.2, 5 s)'
iperf3 -c 10.0.2.2 -p $iperf_port -t 5 -f m | grep -E 'sender|receiver'
echo '== slirp throughput host->guest (iperf3 -R, 5 s)'
iperf3 -c 10.0.2.2 -p $iperf_port -t 5 -f m -R | grep -E 'sender|receiver'
echo '== slirp TCP round trip guest->host echo (fio net ping-pong, 5 s each)'
for bs in 512 4k; do
  fio --name=pp --ioengine=net --hostname=10.0.2.2 --port=$echo_port --protocol=tcp \
      --nodelay=1 --rw=write --bs=\$bs --size=1g --pingpong=1 --time_based --runtime=5 \
      --output-format=terse | awk -F';' -v bs=\$bs '{printf \"RTT bs=%s round_trips/s=%d mean_us=%.0f\\n\", bs, \$49, \$81}'
done
echo '== (b) kernel target exposed on host 127.0.0.1:'\$NVMF_PORT', initiator -> 10.0.2.2:'\$NVMF_PORT
kt_start 4420 \$NVMF_NQN brd 256 10.0.2.15
nvmf_discover | grep -E '^(trtype|subnqn|traddr|trsvcid)'
nvmf_connect
fio_one \$NVMF_DEV randwrite 32 3
fio_one \$NVMF_DEV randread 32 3
fio_one \$NVMF_DEV randread 1 3
fio --name=verify --filename=\$NVMF_DEV --rw=write --bs=64k --size=32m --direct=1 \
    --ioengine=libaio --iodepth=8 --verify=crc32c --do_verify=1 --output-format=terse \
    | awk -F';' '{e = \$5; print \"FIO verify write+readback crc32c errors=\" e} END {exit (e == \"\" || e != 0)}'
nvmf_disconnect
kt_stop
echo '== selftest OK'
" || rc=$?
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
    return $rc
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

case ${1:-help} in
  setup)    if [[ ${2:-} == --force ]]; then build_cache force; else build_cache; fi ;;
  run)      [[ $# -ge 2 ]] || die "usage: $0 run 'guest commands'"; run_cmd "$2" ;;
  run-file) [[ -f ${2:-} ]] || die "usage: $0 run-file SCRIPT"; run_guest "$2" ;;
  baseline) run_cmd "$BASELINE_CMD" ;;
  selftest) selftest ;;
  shell)    f=$(mktemp); TMPS+=("$f"); echo true > "$f"; run_guest "$f" shell ;;
  help|-h|--help) usage ;;
  *) usage; exit 2 ;;
esac
