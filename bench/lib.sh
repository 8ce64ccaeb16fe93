# bench/lib.sh — shared by the bench scripts (source it).

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_ballastd PORT LOG ARGS...: starts ballastd (from $BIN) with ARGS, logging to LOG; sets
# dpid, stops the daemon when the script exits, and waits (up to 10 s) until PORT accepts.
start_ballastd() {
    local port=$1 log=$2
    shift 2
    "$BIN/ballastd" "$@" >"$log" 2>&1 &
    dpid=$!
    trap 'kill $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "ballastd did not listen on 127.0.0.1:$port (see $log)" >&2
    return 1
}
