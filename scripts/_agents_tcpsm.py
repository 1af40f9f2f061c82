#!/usr/bin/env python3
"""Socket programs for the TCP state-machine scenarios (scripts/scenarios_tcpsm.py).

Run inside a network namespace with `ip netns exec`. Each role prints "ready" when set up
and, at the end, one JSON line with what the application saw (errno, bytes, times); the
scenario script puts that into the capture's truth file.

roles:
  peer      bind to --local, connect() to --remote at --start (epoch seconds): one half of a
            simultaneous open; then send --size bytes, read the peer's, close at --close-at
  listen    accept one connection; --then close|abort|hold|shutdown-at
  dial      connect; --then connect|shutdown-at|stream|keepalive
  hold      L2 relay between two interfaces that holds the first frame matching --hold
            (syn|fin) from each direction until one from each side is held, then sends both:
            the two cross on the wire
"""

import argparse
import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time

from _pcap_agents import drain  # (scripts/ is this script's directory, first on sys.path)

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT = 4, 5, 6


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ready():
    print("ready", flush=True)


def result(**kw):
    print(json.dumps(kw, sort_keys=True), flush=True)


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def wait_until(t):
    left = t - time.time()
    if left > 0:
        time.sleep(left)


def err_name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__


# ------------------------------------------------------------------ simultaneous open
def peer(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(hostport(a.local))
    s.settimeout(a.timeout)
    ready()
    wait_until(a.start)
    out = {"role": "peer", "local": a.local, "remote": a.remote, "connect_at": time.time()}
    try:
        s.connect(hostport(a.remote))
        out["connect"] = "ok"
        out["connected_at"] = time.time()
        s.sendall(b"x" * a.size)
        out["bytes_sent"] = a.size
        out["bytes_received"] = drain(s, a.size)
        wait_until(a.close_at)
        s.shutdown(socket.SHUT_WR)
        out["shutdown_at"] = time.time()
        out["eof_after_shutdown"] = drain(s) == 0
    except OSError as e:
        out["errno"] = err_name(e)
    s.close()
    result(**out)


# ------------------------------------------------------------------ listener / dialer
def listen(a):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(hostport(a.local))
    ls.listen(4)
    ls.settimeout(a.timeout)
    ready()
    out = {"role": "listen", "then": a.then}
    try:
        c, peer_addr = ls.accept()
    except OSError as e:
        out["accept"] = err_name(e)
        result(**out)
        return
    out["accepted"] = f"{peer_addr[0]}:{peer_addr[1]}"
    c.settimeout(a.timeout)
    try:
        if a.then == "abort":
            # read a little, then close with SO_LINGER 0 while the client keeps sending:
            # the kernel sends RST and forgets the socket
            got = 0
            while got < a.size:
                b = c.recv(min(65536, a.size - got))
                if not b:
                    break
                got += len(b)
            out["bytes_received"] = got
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            out["closed_with"] = "close() with SO_LINGER 0 (RST)"
            out["closed_at"] = time.time()
            c.close()
        elif a.then == "shutdown-at":
            c.sendall(b"y" * a.size)
            out["bytes_sent"] = a.size
            out["bytes_received"] = drain(c, a.size)
            wait_until(a.close_at)
            c.shutdown(socket.SHUT_WR)
            out["shutdown_at"] = time.time()
            out["eof_after_shutdown"] = drain(c) == 0
            c.close()
        else:  # hold: echo what comes, never close first (the dead-peer case cuts the path)
            got = 0
            while True:
                b = c.recv(65536)
                if not b:
                    break
                got += len(b)
                c.sendall(b)
            out["bytes_received"] = got
            c.close()
    except OSError as e:
        out["errno"] = err_name(e)
    result(**out)


def dial(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if a.then == "keepalive":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, TCP_KEEPIDLE, a.keepidle)
        s.setsockopt(socket.IPPROTO_TCP, TCP_KEEPINTVL, a.keepintvl)
        s.setsockopt(socket.IPPROTO_TCP, TCP_KEEPCNT, a.keepcnt)
    s.settimeout(a.timeout)
    out = {"role": "dial", "then": a.then, "connect_at": time.time()}
    try:
        s.connect(hostport(a.remote))
        out["connect"] = "ok"
        out["local"] = "{}:{}".format(*s.getsockname())
        if a.then == "shutdown-at":
            s.sendall(b"x" * a.size)
            out["bytes_sent"] = a.size
            out["bytes_received"] = drain(s, a.size)
            wait_until(a.close_at)
            s.shutdown(socket.SHUT_WR)
            out["shutdown_at"] = time.time()
            out["eof_after_shutdown"] = drain(s) == 0
        elif a.then == "stream":
            # keep sending small segments (TCP_NODELAY) until the peer's RST stops us
            sent = 0
            chunk = b"z" * a.chunk
            deadline = time.monotonic() + a.timeout
            while time.monotonic() < deadline and sent < a.size:
                sent += s.send(chunk)
                out["bytes_sent"] = sent
        elif a.then == "keepalive":
            s.sendall(b"ping\n")
            b = s.recv(64)
            out["bytes_received"] = len(b)
            ready()  # the script now cuts the path; recv() waits for the keep-alive verdict
            out["idle_from"] = time.time()
            b = s.recv(64)
            out["recv_after_cut"] = len(b)
    except OSError as e:
        out["errno"] = err_name(e)
        out["errno_at"] = time.time()
    s.close()
    result(**out)


# ------------------------------------------------------------------ crossing relay
def _tcp_flags(frame):
    """TCP flags of an untagged IPv4 frame, or None."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    return frame[14 + ihl + 13]


def _wanted(frame, kind):
    fl = _tcp_flags(frame)
    if fl is None:
        return False
    if kind == "syn":
        return fl & 0x12 == 0x02  # SYN without ACK
    return bool(fl & 0x01)  # FIN


def hold(a):
    socks = []
    for name in (a.left, a.right):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        socks.append(s)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ready()
    held = [None, None]  # first matching frame from left (0) and from right (1)
    held_at = [0.0, 0.0]
    done = False
    events = []
    deadline = time.monotonic() + a.timeout
    while not stop and time.monotonic() < deadline:
        try:
            r, _, _ = select.select(socks, [], [], 0.01)
        except InterruptedError:
            continue
        now = time.monotonic()
        # never hold one side's frame forever: after --max-hold it goes alone
        for i in (0, 1):
            if held[i] is not None and now - held_at[i] > a.max_hold:
                socks[1 - i].send(held[i])
                events.append({"event": "released alone", "from": (a.left, a.right)[i], "at": time.time()})
                held[i] = None
                done = True
        for s in r:
            i = socks.index(s)
            frame, addr = s.recvfrom(65535)
            if addr[2] == PACKET_OUTGOING:
                continue
            if not done and held[i] is None and _wanted(frame, a.hold):
                held[i], held_at[i] = frame, now
                events.append({"event": "held", "from": (a.left, a.right)[i], "at": time.time()})
                if held[1 - i] is not None:
                    socks[1].send(held[0])
                    socks[0].send(held[1])
                    events.append({"event": "released both", "at": time.time()})
                    held = [None, None]
                    done = True
                continue
            socks[1 - i].send(frame)
    result(role="hold", hold=a.hold, events=events)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["peer", "listen", "dial", "hold"])
    p.add_argument("--local")
    p.add_argument("--remote")
    p.add_argument("--start", type=float, default=0.0)
    p.add_argument("--close-at", type=float, default=0.0)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--chunk", type=int, default=200)
    p.add_argument("--then", default="hold")
    p.add_argument("--keepidle", type=int, default=1)
    p.add_argument("--keepintvl", type=int, default=1)
    p.add_argument("--keepcnt", type=int, default=3)
    p.add_argument("--left")
    p.add_argument("--right")
    p.add_argument("--hold", choices=["syn", "fin"], default="syn")
    p.add_argument("--max-hold", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 15)  # hard upper bound on the life of any agent
    {"peer": peer, "listen": listen, "dial": dial, "hold": hold}[a.role](a)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
