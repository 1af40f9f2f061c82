#!/usr/bin/env python3
"""Socket roles for scripts/scenarios_rst.py (run inside a namespace with ip netns exec).

server own-fin:   accept; read nothing; after --fin-after s shutdown(SHUT_WR) (FIN); after
                  --close-after s close() with the client's data unread (the kernel sends RST).
server sink:      accept; read everything until EOF or reset (for the stalled path).
server no-read:   accept; never read until --close-after s, then close (zero window meanwhile).
client own-fin:   connect, send 1000 B, read EOF (the server's FIN), send 500 B more, then after
                  the server's close() send again: what send() returns (ECONNRESET / EPIPE).
client stall:     connect, stream; print "streaming"; keep sending (non-blocking) until no byte
                  was acknowledged for --stall s (TCP_INFO), then abort with SO_LINGER 0.
client fill:      connect, send until the send buffer stays full (the server does not read) for
                  --stall s, then abort with SO_LINGER 0.
Each prints one JSON line with what the application saw. Bounded by --timeout and alarm().
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import termios
import time

TCP_INFO_FMT = "B" * 8 + "I" * 24  # struct tcp_info up to tcpi_total_retrans


def tcp_info(s: socket.socket) -> dict:
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, struct.calcsize(TCP_INFO_FMT))
    v = struct.unpack(TCP_INFO_FMT, raw[: struct.calcsize(TCP_INFO_FMT)])
    # 0 state, 1 ca_state, 2 retransmits, 3 probes, 4 backoff; ints from 8: rto, ato, snd_mss, rcv_mss,
    # unacked, sacked, lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv, last_ack_recv, ...
    return {"retransmits": v[2], "probes": v[3], "backoff": v[4], "rto_us": v[8], "unacked": v[12], "last_ack_recv_ms": v[20], "total_retrans": v[31]}


def _errno(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e))


def abort(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def server(a: argparse.Namespace) -> dict:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(4)
    print("ready", flush=True)
    ls.settimeout(a.timeout)
    c, _ = ls.accept()
    t0 = time.monotonic()
    out: dict = {"role": f"server {a.mode}"}
    if a.mode == "own-fin":
        time.sleep(a.fin_after)
        c.shutdown(socket.SHUT_WR)
        out["shutdown_wr_at_s"] = round(time.monotonic() - t0, 3)
        time.sleep(max(0.0, a.close_after - (time.monotonic() - t0)))
        out["unread_bytes_at_close"] = struct.unpack("i", fcntl.ioctl(c.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        c.close()
        out["closed_at_s"] = round(time.monotonic() - t0, 3)
        out["close"] = "close() with unread data (no SO_LINGER)"
    elif a.mode == "sink":
        got = 0
        c.settimeout(a.timeout)
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    out["end"] = "EOF"
                    break
                got += len(d)
        except OSError as e:
            out["end"] = _errno(e)
        out["received"] = got
        c.close()
    else:  # no-read
        time.sleep(a.close_after)
        out["unread_bytes_at_close"] = struct.unpack("i", fcntl.ioctl(c.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        try:
            c.recv(1)
            out["after"] = "data"
        except OSError as e:
            out["after"] = _errno(e)
        c.close()
    return out


def client(a: argparse.Namespace) -> dict:
    s = socket.create_connection((a.addr, a.port), timeout=5)
    out: dict = {"role": f"client {a.mode}", "local_port": s.getsockname()[1]}
    t0 = time.monotonic()
    if a.mode == "own-fin":
        s.sendall(b"r" * 1000)
        s.settimeout(a.timeout)
        out["recv_after_request"] = "EOF" if s.recv(4096) == b"" else "data"
        out["eof_at_s"] = round(time.monotonic() - t0, 3)
        time.sleep(0.1)
        s.sendall(b"m" * 500)
        out["sent_after_eof"] = 500
        # (the socket stays open past the server's close(): closed first, it would take the server's
        # socket to TIME-WAIT and close() would have nothing to reset)
        time.sleep(a.close_after + 0.3 - (time.monotonic() - t0))
        try:
            s.send(b"x")
            out["send_after_server_close"] = "ok"
            time.sleep(0.2)
            s.send(b"x")
            out["send_after_server_close"] = "ok twice"
        except OSError as e:
            out["send_after_server_close_errno"] = _errno(e)
        s.close()
        return out
    s.setblocking(False)
    chunk = b"d" * 16384
    sent = 0
    streaming_said = False
    stuck_since = None
    while time.monotonic() - t0 < a.timeout:
        try:
            sent += s.send(chunk)
            stuck_since = None
        except BlockingIOError:
            if stuck_since is None:
                stuck_since = time.monotonic()
            select.select([], [s], [], 0.05)
        if a.mode == "stall" and not streaming_said and sent > 200_000:
            print("streaming", flush=True)
            streaming_said = True
        info = tcp_info(s)
        if a.mode == "stall" and streaming_said and info["last_ack_recv_ms"] >= a.stall * 1000:
            break
        if a.mode == "fill" and stuck_since is not None and time.monotonic() - stuck_since >= a.stall:
            break
        time.sleep(0.002)
    out["sent_bytes_accepted_by_kernel"] = sent
    out["tcp_info_before_abort"] = tcp_info(s)
    out["aborted_at_s"] = round(time.monotonic() - t0, 3)
    out["abort"] = "SO_LINGER 0 then close(): RST"
    abort(s)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--mode", required=True, choices=["own-fin", "sink", "no-read", "stall", "fill"])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--fin-after", type=float, default=0.1)
    p.add_argument("--close-after", type=float, default=0.6)
    p.add_argument("--stall", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=15.0)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 20)
    print(json.dumps(server(a) if a.role == "server" else client(a)), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
