# shellcheck shell=dash
# ci/guest/ballast-hold-io.sh -- guest script (busybox ash) run by
# ci/interop-ballast.sh after ci/guest/lib-ballast.sh, for the keep-alive
# tests: connects with keep-alive timeout $NVMF_GUEST_KATO s and 2 I/O queues,
# starts fio (randrw QD32 on both queues) in the background, prints
# "@@BALLAST io-running" and waits. The host then freezes (SIGSTOP) or kills
# (SIGKILL) QEMU mid-I/O; this script never ends on its own.
: "${NVMF_GUEST_KATO:=5}"
step "nvme connect -k $NVMF_GUEST_KATO -i 2 as $(cat /etc/nvme/hostnqn)"
nvmf_connect -i 2 -k "$NVMF_GUEST_KATO" -l 5
ctrl=$(nvmf_ctrl) || fail "no controller of $NVMF_NQN in /sys/class/nvme"
ctrl_checks "$ctrl" 2
step "fio randrw QD32 x 2 jobs (one per CPU/queue) in the background"
fio --name=hold --filename="$NVMF_DEV" --ioengine=libaio --direct=1 --rw=randrw --bs=4k \
    --iodepth=32 --size=32m --time_based --runtime=3600 --numjobs=2 \
    --cpus_allowed=0-1 --cpus_allowed_policy=split > /tmp/fio.out 2>&1 &
fio_pid=$!
sleep 3
kill -0 $fio_pid 2>/dev/null || { cat /tmp/fio.out; fail "fio is not running"; }
echo "@@BALLAST io-running"
wait $fio_pid || true
cat /tmp/fio.out
fail "fio ended: the host should have stopped or killed this VM"
