#!/usr/bin/env bash
# ballast-node-setup — makes a node's ballastd configuration once; the init container of the
# ballast-csi-node DaemonSet runs it before ballastd starts (installed in the image as
# /usr/local/bin/ballast-node-setup).
#
# When $BALLAST_CONFIG exists it does nothing: ballastd replays that file (`ballastd -c`),
# which creates the pool's bdev, and the lvol store comes back by examine (save_config does
# not list lvols; the store's own metadata holds them). Otherwise it
#   1. makes the pool: $BALLAST_POOL is a block device, or a file (created sparse, of
#      $BALLAST_POOL_SIZE_MIB MiB, when missing);
#   2. starts a private ballastd (own RPC socket, no NVMe/TCP listener), creates the io_uring
#      bdev Pool0 over the pool, and either finds the lvol store $BALLAST_LVS on it (a pool
#      kept from an earlier install) or creates it — never over a block device that holds a
#      file system, partition table or other signature (blkid), unless BALLAST_POOL_FORCE=1;
#   3. creates the NVMe/TCP transport, writes the configuration with save_config (mode 0600,
#      renamed into place) and stops that ballastd.
#
# Environment (defaults in brackets; the DaemonSet sets them from ConfigMap ballast-node):
#   BALLAST_STATE_DIR [/var/lib/ballast]   BALLAST_CONFIG [$BALLAST_STATE_DIR/config.json]
#   BALLAST_POOL [$BALLAST_STATE_DIR/pool.img]   BALLAST_POOL_SIZE_MIB [10240]
#   BALLAST_POOL_BLOCK_SIZE [4096]   BALLAST_LVS [lvs0]   BALLAST_LVS_CLUSTER_SIZE [4194304]
#   BALLAST_POOL_FORCE [0]   BALLASTD [ballastd]   BALLAST_RPC [ballast-rpc]
set -euo pipefail

STATE_DIR=${BALLAST_STATE_DIR:-/var/lib/ballast}
CONFIG=${BALLAST_CONFIG:-$STATE_DIR/config.json}
POOL=${BALLAST_POOL:-$STATE_DIR/pool.img}
POOL_SIZE_MIB=${BALLAST_POOL_SIZE_MIB:-10240}
POOL_BLOCK_SIZE=${BALLAST_POOL_BLOCK_SIZE:-4096}
LVS=${BALLAST_LVS:-lvs0}
CLUSTER_SIZE=${BALLAST_LVS_CLUSTER_SIZE:-4194304}
FORCE=${BALLAST_POOL_FORCE:-0}
BALLASTD=${BALLASTD:-ballastd}
RPC=${BALLAST_RPC:-ballast-rpc}

log() { printf 'ballast-node-setup: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [[ -s $CONFIG ]]; then
    log "$CONFIG exists: nothing to do (ballastd replays it; delete it to set the node up again)"
    exit 0
fi
[[ $POOL_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "BALLAST_POOL_SIZE_MIB must be a positive integer, not '$POOL_SIZE_MIB'"
[[ $POOL_BLOCK_SIZE == 512 || $POOL_BLOCK_SIZE == 4096 ]] || die "BALLAST_POOL_BLOCK_SIZE must be 512 or 4096, not '$POOL_BLOCK_SIZE'"
mkdir -p "$STATE_DIR" "$(dirname "$CONFIG")"

device=0
if [[ -b $POOL ]]; then
    device=1
    log "pool: block device $POOL"
elif [[ -e $POOL ]]; then
    [[ -f $POOL ]] || die "$POOL is neither a block device nor a regular file"
    log "pool: existing file $POOL ($(stat -c %s "$POOL") bytes)"
elif [[ $POOL == /dev/* ]]; then
    die "pool device $POOL does not exist on this node"
else
    mkdir -p "$(dirname "$POOL")"
    truncate -s "${POOL_SIZE_MIB}M" "$POOL"
    log "pool: new sparse file $POOL of $POOL_SIZE_MIB MiB"
fi

work=$(mktemp -d)
sock=$work/setup.sock
"$BALLASTD" --default-size-mib 0 --no-pin -r "$sock" >"$work/ballastd.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
rpc() { "$RPC" -s "$sock" "$@"; }
fail() {
    log "ballastd's log:"
    cat "$work/ballastd.log" >&2 || true
    die "$*"
}

rpc -r 150 spdk_get_version >/dev/null || fail "the setup ballastd did not answer on $sock"
rpc bdev_uring_create "$POOL" Pool0 "$POOL_BLOCK_SIZE" >/dev/null || fail "bdev_uring_create $POOL"
rpc bdev_wait_for_examine >/dev/null || fail "bdev_wait_for_examine"

if rpc bdev_lvol_get_lvstores -l "$LVS" >/dev/null 2>&1; then
    log "lvol store $LVS found on $POOL: its volumes are kept"
else
    stores=$(rpc bdev_lvol_get_lvstores) || fail "bdev_lvol_get_lvstores"
    if [[ $(tr -d ' \n' <<<"$stores") != "[]" ]]; then
        die "$POOL holds another lvol store (not $LVS): $stores — set BALLAST_LVS to its name"
    fi
    if [[ $device == 1 && $FORCE != 1 ]] && blkid -p "$POOL" >/dev/null 2>&1; then
        die "$POOL holds data (blkid: $(blkid -p -o export "$POOL" | tr '\n' ' ')); wipe it (wipefs -a) or set BALLAST_POOL_FORCE=1"
    fi
    rpc bdev_lvol_create_lvstore Pool0 "$LVS" -c "$CLUSTER_SIZE" >/dev/null ||
        fail "bdev_lvol_create_lvstore Pool0 $LVS"
    log "lvol store $LVS created on $POOL (clusters of $CLUSTER_SIZE bytes)"
fi

rpc nvmf_create_transport -t TCP >/dev/null || fail "nvmf_create_transport -t TCP"
rpc save_config -o "$CONFIG.tmp" || fail "save_config"
mv -f "$CONFIG.tmp" "$CONFIG"
log "configuration written to $CONFIG"
rpc spdk_kill_instance SIGTERM >/dev/null 2>&1 || true
wait "$pid" 2>/dev/null || true
