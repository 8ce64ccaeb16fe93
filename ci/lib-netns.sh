# shellcheck shell=bash
# ci/lib-netns.sh -- "nodes" on one machine for multi-node tests: a network namespace per
# node, joined to the root namespace by a veth pair on a private /30. Source it (root only).
#
#   netns_usable                  0 if `ip netns` works here (root, iproute2, netns support)
#   netns_node_add NAME IDX       namespace NAME with `lo` up and a veth pair:
#                                   root side  NAME-h  10.251.IDX.1/30  (NETNS_PREFIX)
#                                   node side  NAME-n  10.251.IDX.2/30
#                                 IDX 1-254; names must fit a 15-byte link name with "-h".
#   netns_node_addr IDX           prints the node side's address (10.251.IDX.2)
#   netns_link_down NAME / netns_link_up NAME
#                                 sets the root side of NAME's veth down / up: the node is cut
#                                 off (its TCP connections see nothing, as a pulled cable).
#   netns_node_del NAME           kills what still runs in NAME (by pid: only processes started
#                                 in that namespace, which the caller made), deletes it (the
#                                 veth pair goes with it). Safe to call twice.
#   netns_cleanup                 netns_node_del for every node netns_node_add made, and the
#                                 guard route.
#
# Nothing is routed beyond the /30s: a node reaches the root namespace's end of its link and
# nothing else (no forwarding, no NAT). While a link is down its /30 route is gone, so the
# first netns_node_add also puts an "unreachable" route for the whole /16 in the root
# namespace: connections to a cut-off node fail (EHOSTUNREACH) instead of leaving through the
# default route. NETNS_PREFIX (10.251) picks the /16.

NETNS_PREFIX=${NETNS_PREFIX:-10.251}
NETNS_NODES=()
NETNS_GUARD=

netns_usable() {
    [[ $(id -u) == 0 ]] || return 1
    command -v ip >/dev/null 2>&1 || return 1
    local probe=blnetns-probe-$$
    ip netns add "$probe" >/dev/null 2>&1 || return 1
    ip netns del "$probe" >/dev/null 2>&1 || true
    return 0
}

_netns_exists() { ip netns list 2>/dev/null | awk -v n="$1" '$1 == n { f = 1 } END { exit !f }'; }

netns_node_addr() { echo "$NETNS_PREFIX.$1.2"; }

netns_node_add() {
    local name=$1 idx=$2
    # a namespace left by an earlier run that died without its trap
    if _netns_exists "$name"; then netns_node_del "$name"; fi
    ip link del "$name-h" >/dev/null 2>&1 || true
    if [[ -z $NETNS_GUARD ]]; then
        ip route replace unreachable "$NETNS_PREFIX.0.0/16" || return 1
        NETNS_GUARD=1
    fi
    ip netns add "$name" || return 1
    NETNS_NODES+=("$name")
    ip link add "$name-h" type veth peer name "$name-n" || return 1
    ip link set "$name-n" netns "$name" || return 1
    ip addr add "$NETNS_PREFIX.$idx.1/30" dev "$name-h" || return 1
    ip link set "$name-h" up || return 1
    ip -n "$name" addr add "$NETNS_PREFIX.$idx.2/30" dev "$name-n" || return 1
    ip -n "$name" link set "$name-n" up || return 1
    ip -n "$name" link set lo up || return 1
}

netns_link_down() { ip link set "$1-h" down; }
netns_link_up() { ip link set "$1-h" up; }

netns_node_del() {
    local name=$1 p i
    _netns_exists "$name" || return 0
    for p in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        [[ -z $(ip netns pids "$name" 2>/dev/null) ]] && break
        sleep 0.1
    done
    ip netns del "$name" 2>/dev/null || true
    ip link del "$name-h" >/dev/null 2>&1 || true
}

netns_cleanup() {
    local n
    for n in "${NETNS_NODES[@]}"; do netns_node_del "$n"; done
    NETNS_NODES=()
    if [[ -n $NETNS_GUARD ]]; then
        ip route del unreachable "$NETNS_PREFIX.0.0/16" 2>/dev/null || true
        NETNS_GUARD=
    fi
NETNS_GUARD=
}
