# bench/lib.sh — shared by the bench scripts (source it).

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_listening PORT LOG: waits (up to 10 s) until 127.0.0.1:PORT accepts; fails naming LOG.
wait_listening() {
    local port=$1 log=$2
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "ballastd did not listen on 127.0.0.1:$port (see $log)" >&2
    return 1
}

# start_ballastd PORT LOG ARGS...: starts ballastd (from $BIN) with ARGS, logging to LOG; sets
# dpid, stops the daemon when the script exits, and waits (up to 10 s) until PORT accepts.
start_ballastd() {
    local port=$1 log=$2
    shift 2
    "$BIN/ballastd" "$@" >"$log" 2>&1 &
    dpid=$!
    trap 'kill $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
    wait_listening "$port" "$log"
}

NULL_NQN=nqn.2026-11.io.ballast:null

# null_trid PORT: ballast-perf's -r transport ID of the null subsystem on 127.0.0.1:PORT.
null_trid() {
    echo "trtype:tcp traddr:127.0.0.1 trsvcid:$1 subnqn:$NULL_NQN"
}

# add_null_subsystem SOCK PORT: a 256 MiB null bdev exported as $NULL_NQN on 127.0.0.1:PORT
# by the daemon whose RPC socket is SOCK (the target with no data touched).
add_null_subsystem() {
    local rpc="$BIN/ballast-rpc -s $1" port=$2 nqn=$NULL_NQN
    $rpc bdev_null_create Null0 256 512 >/dev/null
    $rpc nvmf_create_subsystem "$nqn" -a >/dev/null
    $rpc nvmf_subsystem_add_ns "$nqn" Null0 >/dev/null
    $rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" >/dev/null
}
