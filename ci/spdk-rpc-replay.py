#!/usr/bin/env python3
"""ci/spdk-rpc-replay.py -- send ONE raw JSON-RPC request to a Unix socket, print the reply.

    spdk-rpc-replay.py SOCKET 'JSON'        (or '-' / no JSON: the request is read from stdin)

The request text is sent byte for byte as given (no "jsonrpc" or "id" added: the point is to
send exactly what a test wants, malformed or not). Reads until one complete JSON value has
arrived and prints it, compact, on one line. Exit status: 0 if a JSON value came back (error
reply or not; the caller asserts on it), 2 on a usage error, 3 if the socket could not be
reached, the peer closed without a complete value, or nothing came within --timeout seconds
(default 10). Python standard library only.
"""
import argparse
import json
import socket
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("socket")
    ap.add_argument("request", nargs="?", default="-")
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    req = sys.stdin.read() if a.request == "-" else a.request
    deadline = time.monotonic() + a.timeout
    dec = json.JSONDecoder()
    buf = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(a.timeout)
            s.connect(a.socket)
            s.sendall(req.encode())
            while True:
                text = buf.decode("utf-8", errors="replace").lstrip()
                if text:
                    try:
                        value, _ = dec.raw_decode(text)
                        print(json.dumps(value, sort_keys=True))
                        return 0
                    except json.JSONDecodeError:
                        pass  # incomplete: read more
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    print(f"spdk-rpc-replay: connection closed; received {buf!r}", file=sys.stderr)
                    return 3
                buf += chunk
    except socket.timeout:
        print(f"spdk-rpc-replay: no complete JSON reply within {a.timeout} s; received {buf!r}",
              file=sys.stderr)
        return 3
    except OSError as e:
        print(f"spdk-rpc-replay: {a.socket}: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
