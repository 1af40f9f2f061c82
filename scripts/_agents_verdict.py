#!/usr/bin/env python3
"""Socket roles for scripts/scenarios_verdict.py (run inside a namespace with ip netns exec).

connect: one connect() to --addr:--port, optionally an HTTP/1.0 GET; prints one JSON line with
what the application saw (errno name or null, seconds connect() took, bytes received).
Bounded in time by --timeout (socket timeout) and alarm().
"""

import argparse
import errno
import json
import signal
import socket
import time

REQUEST = b"GET / HTTP/1.0\r\nHost: synscope.test\r\n\r\n"


def connect(a: argparse.Namespace) -> dict:
    fam = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    t0 = time.monotonic()
    out = {"addr": a.addr, "port": a.port, "errno": None, "connect_s": None, "bytes_received": 0}
    try:
        s.connect((a.addr, a.port))
    except OSError as e:
        out["errno"] = errno.errorcode.get(e.errno or 0, "timeout") if e.errno else "timeout"
        out["connect_s"] = round(time.monotonic() - t0, 6)
        s.close()
        return out
    out["connect_s"] = round(time.monotonic() - t0, 6)
    out["local_port"] = s.getsockname()[1]
    if a.http:
        s.sendall(REQUEST)
        n = 0
        while True:
            b = s.recv(65536)
            if not b:
                break
            n += len(b)
        out["bytes_received"] = n
    s.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["connect"])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--http", action="store_true")
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 10)
    print(json.dumps(connect(a)), flush=True)


if __name__ == "__main__":
    main()
