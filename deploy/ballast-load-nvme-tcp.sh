#!/usr/bin/env bash
# ballast-load-nvme-tcp — makes sure the host kernel has the NVMe/TCP initiator (nvme-tcp),
# which the node plugin needs for `nvme connect`. The ballast-csi-node DaemonSet runs it as an
# init container (privileged, the host's /lib/modules mounted read-only); installed in the image
# as /usr/local/bin/ballast-load-nvme-tcp. A module already loaded (or built in) is left alone.
set -euo pipefail

log() { printf 'ballast-load-nvme-tcp: %s\n' "$*" >&2; }

if [[ -d /sys/module/nvme_tcp ]]; then
    log "nvme_tcp is loaded"
    exit 0
fi
if modprobe nvme-tcp 2>/dev/null && [[ -d /sys/module/nvme_tcp ]]; then
    log "loaded nvme-tcp ($(uname -r))"
    exit 0
fi
log "error: the host kernel $(uname -r) has no nvme-tcp module that this container can load."
log "On the node: 'modprobe nvme-tcp', and 'echo nvme-tcp > /etc/modules-load.d/nvme-tcp.conf'"
log "to load it at boot; some distributions ship it in an extra package (e.g. linux-modules-extra)."
exit 1
