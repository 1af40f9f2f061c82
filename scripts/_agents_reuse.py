#!/usr/bin/env python3
"""Socket roles for scripts/scenarios_reuse.py (run inside a namespace with ip netns exec).

server:  listen on --addr:--port; accept --conns connections one after the other; from each read
         the request (--request bytes), answer --answer bytes, close first (the server holds
         TIME-WAIT); records what it accepted and when.
client:  two sockets, A then B, each bound to the same source port --sport (SO_REUSEADDR).
         A connect()s without blocking and prints "pending" (the scenario looks at ss then).
         --mode abandoned: after --abandon-after s A is close()d while still connecting, then
           `nft delete table --unblock` lifts the SYN-ACK drop, and B connect()s (blocking).
         --mode closed: A's connect completes, A exchanges a request and closes after the
           server; then B connect()s from the same port.
         B exchanges a request and reads to EOF. TCP_INFO state of each socket before it is closed;
         the ISNs from the sockets themselves (TCP_REPAIR queue sequences, read before any data is
         sent; A's own ISN only while it connects), repair mode left without a window probe.
Each prints one JSON line with what the application saw. Bounded by --timeout and alarm().
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import struct
import subprocess
import time

TCP_INFO_FMT = "B" * 8 + "I" * 24  # struct tcp_info up to tcpi_total_retrans
STATES = {1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 7: "CLOSE", 8: "CLOSE-WAIT"}
# linux/tcp.h: repair mode, its queue selector and the queue's sequence number
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCP_REPAIR_ON, TCP_REPAIR_OFF_NO_WP = 1, -1
REQUEST = b"GET /reuse HTTP/1.0\r\n\r\n"


def tcp_info(s: socket.socket) -> dict:
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, struct.calcsize(TCP_INFO_FMT))
    v = struct.unpack(TCP_INFO_FMT, raw[: struct.calcsize(TCP_INFO_FMT)])
    return {"state": STATES.get(v[0], str(v[0])), "retransmits": v[2], "backoff": v[4], "total_retrans": v[31]}


def _errno(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e))


def isns(s: socket.socket, peer: bool = True) -> dict:
    """The ISNs of a socket that has sent and read no data, from the kernel's own sequence numbers
    (repair mode: write_seq = own ISN + 1, rcv_nxt = the peer's ISN + 1; ``peer`` False while
    connecting: there is no peer ISN yet). Leaves repair mode without the window probe that
    TCP_REPAIR_OFF would send."""
    try:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    except OSError as e:
        return {"error": _errno(e)}
    out = {}
    for name, queue in (("own_isn", TCP_SEND_QUEUE), ("peer_isn", TCP_RECV_QUEUE))[: 2 if peer else 1]:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        out[name] = (struct.unpack("I", s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0] - 1) & 0xFFFFFFFF
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    out["read_with"] = "TCP_REPAIR on, TCP_REPAIR_QUEUE + getsockopt TCP_QUEUE_SEQ, TCP_REPAIR_OFF_NO_WP (no packet sent)"
    return out


def drain(s: socket.socket) -> int:
    n = 0
    while True:
        d = s.recv(65536)
        if not d:
            return n
        n += len(d)


def server(a: argparse.Namespace) -> dict:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(8)
    ls.settimeout(a.timeout)
    print("ready", flush=True)
    accepted = []
    for _ in range(a.conns):
        try:
            c, peer = ls.accept()
        except OSError as e:
            accepted.append({"accept": _errno(e), "at": time.time()})
            break
        got = {"peer": f"{peer[0]}:{peer[1]}", "accepted_at": time.time()}
        c.settimeout(a.timeout)
        try:
            data = b""
            while len(data) < len(REQUEST):
                d = c.recv(4096)
                if not d:
                    break
                data += d
            got["bytes_received"] = len(data)
            c.sendall(b"y" * a.answer)
            got["bytes_sent"] = a.answer
            got["closed_at"] = time.time()
        except OSError as e:
            got["errno"] = _errno(e)
        c.close()
        accepted.append(got)
    return {"role": "server", "accepted": accepted}


def _bound(a: argparse.Namespace) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.local, a.sport))
    return s


def _exchange(s: socket.socket, out: dict) -> None:
    s.sendall(REQUEST)
    out["bytes_sent"] = len(REQUEST)
    out["bytes_received"] = drain(s)
    out["eof_at"] = time.time()


def client(a: argparse.Namespace) -> dict:
    host = (a.addr, a.port)
    out: dict = {"role": "client", "mode": a.mode, "source_port": a.sport}
    sa = _bound(a)
    info_a: dict = {"bound": f"{a.local}:{a.sport}", "SO_REUSEADDR": 1, "connect_at": time.time()}
    out["A"] = info_a
    if a.mode == "abandoned":
        sa.setblocking(False)
        try:
            sa.connect(host)
            info_a["connect"] = "ok"
        except OSError as e:
            info_a["connect"] = _errno(e)  # EINPROGRESS: the SYN is out
        print("pending", flush=True)
        time.sleep(a.abandon_after)
        info_a["so_error_before_close"] = errno.errorcode.get(sa.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), "0")
        info_a["tcp_info_before_close"] = tcp_info(sa)
        info_a["isn"] = isns(sa, peer=False)
        info_a["closed_at"] = time.time()
        sa.close()
        info_a["closed_with"] = "close() while connect() was in progress"
        r = subprocess.run(["nft", "delete", "table", *a.unblock.split()], capture_output=True, text=True)
        out["unblocked_at"] = time.time()
        out["unblock"] = {"command": f"nft delete table {a.unblock}", "rc": r.returncode, "stderr": r.stderr.strip()}
    else:
        print("pending", flush=True)
        sa.settimeout(a.timeout)
        sa.connect(host)
        info_a["connect"] = "ok"
        info_a["connected_at"] = time.time()
        info_a["isn"] = isns(sa)
        _exchange(sa, info_a)
        info_a["tcp_info_before_close"] = tcp_info(sa)
        info_a["closed_at"] = time.time()
        sa.close()
        info_a["closed_with"] = "close() after the server's FIN (the server closed first)"
        time.sleep(a.abandon_after)
    sb = _bound(a)
    sb.settimeout(a.timeout)
    info_b: dict = {"bound": f"{a.local}:{a.sport}", "SO_REUSEADDR": 1, "connect_at": time.time()}
    out["B"] = info_b
    try:
        sb.connect(host)
        info_b["connect"] = "ok"
        info_b["connected_at"] = time.time()
        info_b["tcp_info_after_connect"] = tcp_info(sb)
        info_b["isn"] = isns(sb)
        _exchange(sb, info_b)
    except OSError as e:
        info_b["connect" if "connected_at" not in info_b else "errno"] = _errno(e)
        info_b["errno_at"] = time.time()
    info_b["closed_at"] = time.time()
    sb.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, default=8082)
    p.add_argument("--local", default="0.0.0.0")
    p.add_argument("--sport", type=int, default=41000)
    p.add_argument("--mode", choices=["abandoned", "closed"], default="abandoned")
    p.add_argument("--abandon-after", type=float, default=0.4)
    p.add_argument("--unblock", default="inet reuse")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--answer", type=int, default=300)
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 15)  # hard upper bound on the life of any agent
    got = server(a) if a.role == "server" else client(a)
    print(json.dumps(got, sort_keys=True), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
