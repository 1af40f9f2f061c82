#!/usr/bin/env python3
"""Traffic programs for bench/make-big-capture, run inside its network namespaces.

Every loop here is bounded twice: by a count and by a deadline (seconds since
start), so nothing can run away.  Only the addresses given on the command line
(198.18.0.0/15, chosen by make-big-capture) are ever contacted.

  server SHORT_PORTS BULK_PORTS --deadline S
      short ports: read a 100-byte request, answer 1000 bytes, close after the
      client does (selectors/epoll, one thread); bulk ports: read a 12-byte
      request (bytes, pacing rate), send that many bytes paced, close (a thread
      per connection).
  short ADDR PORTS --src IP,IP --count N --threads T [--duration S] --deadline S
      N short connections, T at a time: connect, send 100 B, read 1000 B, close;
      with --duration, started at an even rate over that many seconds.
  hold ADDR PORT --src IP --count N --deadline S
      opens N connections and keeps them all open, then request/response on
      each, then closes them all: thousands of connections open at once.
  bulk ADDR PORTS --src IP --flows F --bytes B --rate R --deadline S
      F parallel downloads of B bytes each, the server paced at R bytes/s.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import resource
import selectors
import socket
import struct
import sys
import threading
import time
from typing import cast

REQ_LEN = 100
RESP_LEN = 1000
REQ = b"G" * (REQ_LEN - 1) + b"\n"
RESP = b"R" * (RESP_LEN - 1) + b"\n"
BULK_REQ = struct.Struct("!QI")  # bytes wanted, pacing rate (bytes/s)
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
T0 = time.monotonic()


def log(*a: object) -> None:
    print(*a, flush=True)


def raise_nofile() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        pass


def left(deadline: float) -> float:
    return deadline - (time.monotonic() - T0)


# ------------------------------------------------------------------ server
def serve(a: argparse.Namespace) -> None:
    raise_nofile()
    short_ports = [int(p) for p in a.short_ports.split(",") if p]
    bulk_ports = [int(p) for p in a.bulk_ports.split(",") if p]
    sel = selectors.DefaultSelector()
    listeners = []
    for port in short_ports + bulk_ports:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.addr, port))
        ls.listen(4096)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, ("listen", port in bulk_ports))
        listeners.append(ls)
    stats = {"short": 0, "bulk": 0, "errors": 0}
    log("ready")
    conns: dict[int, list] = {}  # fd -> [sock, received, answered]
    while left(a.deadline) > 0:
        for key, _ev in sel.select(timeout=0.5):
            kind = key.data
            if kind[0] == "listen":
                for _ in range(64):  # bounded accept burst
                    try:
                        s, _peer = cast(socket.socket, key.fileobj).accept()  # only sockets are registered
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        stats["errors"] += 1
                        break
                    if kind[1]:
                        stats["bulk"] += 1
                        s.setblocking(True)
                        threading.Thread(target=bulk_send, args=(s, a.deadline), daemon=True).start()
                    else:
                        stats["short"] += 1
                        s.setblocking(False)
                        conns[s.fileno()] = [s, 0, False]
                        sel.register(s, selectors.EVENT_READ, ("conn",))
                continue
            s = cast(socket.socket, key.fileobj)
            st = conns.get(s.fileno())
            if st is None:
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
                stats["errors"] += 1
            if not data:
                sel.unregister(s)
                del conns[s.fileno()]
                s.close()
                continue
            st[1] += len(data)
            if st[1] >= REQ_LEN and not st[2]:
                st[2] = True
                try:
                    s.send(RESP)  # 1000 bytes always fit in an empty send buffer
                except OSError:
                    stats["errors"] += 1
    for st in conns.values():
        st[0].close()
    for ls in listeners:
        ls.close()
    log(f"server: {stats['short']} short, {stats['bulk']} bulk connections, {stats['errors']} errors")


def bulk_send(s: socket.socket, deadline: float) -> None:
    try:
        s.settimeout(10)
        req = b""
        while len(req) < BULK_REQ.size:
            d = s.recv(BULK_REQ.size - len(req))
            if not d:
                return
            req += d
        want, rate = BULK_REQ.unpack(req)
        if rate:
            s.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, rate)
        chunk = b"B" * 65536
        sent = 0
        while sent < want and left(deadline) > 0:
            n = s.send(chunk[: min(len(chunk), want - sent)])
            sent += n
    except OSError:
        pass
    finally:
        s.close()


# ------------------------------------------------------------------ clients
def client_socket(src: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    # pick the port at connect() time, per 4-tuple, not at bind() time per address
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((src, 0))
    return s


def recv_exact(s: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        d = s.recv(65536)
        if not d:
            break
        got += len(d)
    return got


def short(a: argparse.Namespace) -> None:
    raise_nofile()
    ports = [int(p) for p in a.ports.split(",")]
    srcs = a.src.split(",")
    counter = itertools.count()
    res = {"ok": 0, "fail": 0}
    lock = threading.Lock()

    def worker() -> None:
        ok = fail = 0
        while left(a.deadline) > 0:
            i = next(counter)
            if i >= a.count:
                break
            if a.duration:  # spread the connections evenly over the duration
                wait = i * a.duration / a.count - (time.monotonic() - start)
                if wait > 0:
                    time.sleep(min(wait, max(left(a.deadline), 0)))
            try:
                s = client_socket(srcs[i % len(srcs)], a.timeout)
                try:
                    s.connect((a.addr, ports[i % len(ports)]))
                    s.sendall(REQ)
                    if recv_exact(s, RESP_LEN) == RESP_LEN:
                        ok += 1
                    else:
                        fail += 1
                finally:
                    s.close()
            except OSError:
                fail += 1
        with lock:
            res["ok"] += ok
            res["fail"] += fail

    start = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(left(a.deadline) + a.timeout + 1, 0.1))
    log(f"short: {res['ok']} ok, {res['fail']} failed in {time.monotonic() - T0:.1f} s")


def hold(a: argparse.Namespace) -> None:
    raise_nofile()
    socks = []
    fail = 0
    for _ in range(a.count):
        if left(a.deadline) <= 0:
            break
        try:
            s = client_socket(a.src, a.timeout)
            s.connect((a.addr, a.port))
            socks.append(s)
        except OSError as e:
            fail += 1
            if e.errno == errno.EMFILE:
                break
    log(f"hold: {len(socks)} connections open at once")
    time.sleep(min(a.pause, max(left(a.deadline), 0)))
    ok = 0
    for s in socks:
        try:
            s.sendall(REQ)
        except OSError:
            fail += 1
    for s in socks:
        try:
            if recv_exact(s, RESP_LEN) == RESP_LEN:
                ok += 1
        except OSError:
            fail += 1
    for s in socks:
        s.close()
    log(f"hold: {ok} ok, {fail} failed")


def bulk(a: argparse.Namespace) -> None:
    ports = [int(p) for p in a.ports.split(",")]
    res: list[int] = []

    def one(i: int) -> None:
        got = 0
        try:
            s = client_socket(a.src, 10)
            try:
                s.connect((a.addr, ports[i % len(ports)]))
                s.sendall(BULK_REQ.pack(a.bytes, a.rate))
                while left(a.deadline) > 0:
                    d = s.recv(1 << 18)
                    if not d:
                        break
                    got += len(d)
            finally:
                s.close()
        except OSError:
            pass
        res.append(got)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(a.flows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(left(a.deadline) + 11, 0.1))
    log(f"bulk: {len(res)} flows, {sum(res) / 1e6:.1f} MB received")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("addr")
    s.add_argument("short_ports")
    s.add_argument("bulk_ports")
    s.add_argument("--deadline", type=float, default=300)
    c = sub.add_parser("short")
    c.add_argument("addr")
    c.add_argument("ports")
    c.add_argument("--src", required=True)
    c.add_argument("--count", type=int, default=1000)
    c.add_argument("--threads", type=int, default=16)
    c.add_argument("--timeout", type=float, default=10)
    c.add_argument("--duration", type=float, default=0, help="spread the connections over this many seconds (0: as fast as possible)")
    c.add_argument("--deadline", type=float, default=120)
    h = sub.add_parser("hold")
    h.add_argument("addr")
    h.add_argument("port", type=int)
    h.add_argument("--src", required=True)
    h.add_argument("--count", type=int, default=5000)
    h.add_argument("--pause", type=float, default=2.0)
    h.add_argument("--timeout", type=float, default=10)
    h.add_argument("--deadline", type=float, default=120)
    b = sub.add_parser("bulk")
    b.add_argument("addr")
    b.add_argument("ports")
    b.add_argument("--src", required=True)
    b.add_argument("--flows", type=int, default=8)
    b.add_argument("--bytes", type=int, default=10_000_000)
    b.add_argument("--rate", type=int, default=0)
    b.add_argument("--deadline", type=float, default=120)
    a = p.parse_args()
    {"server": serve, "short": short, "hold": hold, "bulk": bulk}[a.role](a)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
