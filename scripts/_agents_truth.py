#!/usr/bin/env python3
"""Socket roles for scripts/scenarios_truth.py (run inside a namespace with ip netns exec).

server:  listen on --addr:--port, print "ready", accept one connection, print "accepted"; read the
         request (--request bytes), answer --answer bytes in --chunks pieces 20 ms apart; then
         --ending server-closes: close() first (FIN) and read nothing more;
         --ending client-closes: read to EOF (the client's FIN), then close();
         --ending client-resets: recv() again until the client's RST (ECONNRESET) or EOF.
client:  connect() (blocking, bound to --sport), print "connected <port>", then wait until the
         file --go exists (the scenario creates it once tcpdump listens: the capture starts after
         the handshake); send the request in --chunks pieces 20 ms apart, read the answer, then
         server-closes: read to EOF, wait 50 ms, close();  client-closes: shutdown(SHUT_WR) (FIN),
         read to EOF, close();  client-resets: SO_LINGER {1, 0} and close() (RST, no FIN).
Each prints one JSON line with what the application saw: bytes sent and received, every errno,
and the time of each step (time.time(), the clock tcpdump stamps frames with).
Bounded by --timeout on every socket and alarm().
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import struct
import time

ENDINGS = ("server-closes", "client-closes", "client-resets")
GAP = 0.02  # s between the pieces of a request or an answer


def _errno(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e)) if e.errno else type(e).__name__


def _send_pieces(s: socket.socket, total: int, pieces: int, fill: bytes) -> int:
    size, sent = total // pieces, 0
    for i in range(pieces):
        n = size if i < pieces - 1 else total - sent
        s.sendall(fill * n)
        sent += n
        time.sleep(GAP)
    return sent


def _read_exactly(s: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        d = s.recv(min(65536, n - got))
        if not d:
            break
        got += len(d)
    return got


def _read_to_eof(s: socket.socket) -> int:
    got = 0
    while True:
        d = s.recv(65536)
        if not d:
            return got
        got += len(d)


def server(a: argparse.Namespace) -> dict:
    family = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    ls = socket.socket(family, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(4)
    ls.settimeout(a.timeout)
    print("ready", flush=True)
    out: dict = {"role": "server", "ending": a.ending}
    try:
        c, peer = ls.accept()
    except OSError as e:
        out["accept"] = _errno(e)
        return out
    print("accepted", flush=True)
    out.update(peer=f"{peer[0]}:{peer[1]}", accepted_at=time.time(), bytes_received=0, bytes_sent=0)
    c.settimeout(a.timeout)
    try:
        out["bytes_received"] = _read_exactly(c, a.request)
        out["bytes_sent"] = _send_pieces(c, a.answer, a.chunks, b"s")
        if a.ending == "server-closes":
            out["closed_at"] = time.time()
            c.close()
            out["closed_with"] = "close() after the answer, before the client closed"
            return out
        more = _read_to_eof(c)  # client-closes: its FIN; client-resets: its RST raises ECONNRESET
        out["bytes_received"] += more
        out["eof_at"] = time.time()
    except OSError as e:
        out["errno"] = _errno(e)
        out["errno_at"] = time.time()
    out["closed_at"] = time.time()
    c.close()
    out["closed_with"] = "close() after " + ("the client's RST" if "errno" in out else "the client's FIN (EOF)")
    return out


def client(a: argparse.Namespace) -> dict:
    family = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", a.sport))
    s.settimeout(a.timeout)
    out: dict = {"role": "client", "ending": a.ending, "connect_at": time.time(), "bytes_sent": 0, "bytes_received": 0}
    try:
        s.connect((a.addr, a.port))
    except OSError as e:
        out["connect"] = _errno(e)
        return out
    out["connect"] = "ok"
    out["connected_at"] = time.time()
    out["local"] = "{}:{}".format(*s.getsockname()[:2])
    print(f"connected {s.getsockname()[1]}", flush=True)
    deadline = time.monotonic() + a.timeout
    while not os.path.exists(a.go):  # the capture starts now, after the handshake
        if time.monotonic() > deadline:
            out["go"] = "timed out"
            s.close()
            return out
        time.sleep(0.01)
    out["go_seen_at"] = time.time()
    try:
        out["bytes_sent"] = _send_pieces(s, a.request, a.chunks, b"c")
        out["bytes_received"] = _read_exactly(s, a.answer)
        if a.ending == "server-closes":
            out["bytes_received"] += _read_to_eof(s)
            out["eof_at"] = time.time()
            time.sleep(0.05)
            out["closed_with"] = "close() 50 ms after the server's FIN (EOF)"
        elif a.ending == "client-closes":
            out["shutdown_at"] = time.time()
            s.shutdown(socket.SHUT_WR)
            out["bytes_received"] += _read_to_eof(s)
            out["eof_at"] = time.time()
            out["closed_with"] = "shutdown(SHUT_WR) first (FIN), then close() after the server's FIN"
        else:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            out["closed_with"] = "SO_LINGER {1, 0} + close(): RST, no FIN"
    except OSError as e:
        out["errno"] = _errno(e)
        out["errno_at"] = time.time()
    out["closed_at"] = time.time()
    s.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, default=8084)
    p.add_argument("--sport", type=int, default=0)
    p.add_argument("--ending", choices=ENDINGS, default="server-closes")
    p.add_argument("--request", type=int, default=1500)
    p.add_argument("--answer", type=int, default=4000)
    p.add_argument("--chunks", type=int, default=3)
    p.add_argument("--go", default="/nonexistent")
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 15)  # hard upper bound on the life of any agent
    got = server(a) if a.role == "server" else client(a)
    print(json.dumps(got, sort_keys=True), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
