#!/usr/bin/env python3
"""Socket roles for scripts/scenarios_assume.py (run inside a namespace with ip netns exec).

Each role holds its socket open for --hold seconds at the end, so the capture can end before any
close; each prints one JSON line with what the application saw. Bounded by alarm().

sink:       accept one connection, read what comes (never writes), hold.
upload:     connect, send --chunks x --chunk bytes --gap seconds apart, hold.
ask:        connect, send one request, wait --hold seconds for an answer (none comes from a mute server).
mute:       accept one connection, read the request, never answer, hold.
halfclient: connect, send a request, shutdown(SHUT_WR), read what comes for --hold seconds.
halfserver: accept one, read to EOF, send --answers x --chunk bytes --gap apart, hold (no FIN).
mserver:    MPTCP listener: accept one, read the request, wait --gap, answer --chunk bytes, hold.
mclient:    MPTCP connect (keep-alive 1 s), send one request, read for --hold seconds.
"""

import argparse
import json
import signal
import socket
import time

REQUEST = b"GET /upload-or-request HTTP/1.0\r\n\r\n"


def _listen(a: argparse.Namespace, proto: int = 0) -> socket.socket:
    """Listen on --addr/--port (``proto``: the socket's protocol, IPPROTO_MPTCP for MPTCP), say
    "ready", and return the first connection accepted."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(4)
    print("ready", flush=True)
    c, _ = ls.accept()
    ls.close()
    return c


def _read_for(c: socket.socket, seconds: float) -> tuple[int, bool]:
    """Bytes read within ``seconds`` and whether the peer closed its side (EOF)."""
    n, end = 0, time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return n, False
        c.settimeout(left)
        try:
            b = c.recv(65536)
        except TimeoutError:
            return n, False
        if not b:
            return n, True
        n += len(b)


def sink(a: argparse.Namespace) -> dict:
    c = _listen(a)
    n, eof = _read_for(c, a.hold)
    c.close()
    return {"role": "sink", "bytes_received": n, "bytes_sent": 0, "peer_closed": eof}


def mute(a: argparse.Namespace) -> dict:
    c = _listen(a)
    n, eof = _read_for(c, a.hold)
    c.close()
    return {"role": "mute", "bytes_received": n, "bytes_sent": 0, "peer_closed": eof}


def _connect(a: argparse.Namespace) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((a.addr, a.port))
    return s


def upload(a: argparse.Namespace) -> dict:
    s = _connect(a)
    sent = 0
    for i in range(a.chunks):
        if i:
            time.sleep(a.gap)
        s.sendall(b"u" * a.chunk)
        sent += a.chunk
    n, eof = _read_for(s, a.hold)
    s.close()
    return {"role": "upload", "bytes_sent": sent, "bytes_received": n, "peer_closed": eof}


def ask(a: argparse.Namespace) -> dict:
    s = _connect(a)
    # keep-alives after 1 s of silence: the connection is visibly alive while the answer does not come
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.sendall(REQUEST)
    n, eof = _read_for(s, a.hold)
    s.close()
    return {"role": "ask", "bytes_sent": len(REQUEST), "bytes_received": n, "peer_closed": eof}


def halfclient(a: argparse.Namespace) -> dict:
    s = _connect(a)
    s.sendall(REQUEST)
    s.shutdown(socket.SHUT_WR)
    n, eof = _read_for(s, a.hold)
    s.close()
    return {"role": "halfclient", "bytes_sent": len(REQUEST), "shutdown": "SHUT_WR", "bytes_received": n, "peer_closed": eof}


def halfserver(a: argparse.Namespace) -> dict:
    c = _listen(a)
    n, eof = _read_for(c, 5.0)
    sent = 0
    for i in range(a.answers):
        if i:
            time.sleep(a.gap)
        c.sendall(b"a" * a.chunk)
        sent += a.chunk
    time.sleep(a.hold)
    c.close()
    return {"role": "halfserver", "bytes_received": n, "peer_closed": eof, "bytes_sent": sent, "answers": a.answers}


IPPROTO_MPTCP = 262


def _mptcp_info(c: socket.socket) -> dict:
    """Whether the socket is MPTCP after all (a fallback to TCP is not: SOL_MPTCP MPTCP_INFO)."""
    try:
        info = c.getsockopt(284, 1, 64)  # SOL_MPTCP, MPTCP_INFO: the first byte is mptcpi_subflows, the subflows joined after the first
    except OSError as e:
        return {"mptcp": False, "errno": e.errno}
    return {"mptcp": True, "joined_subflows": info[0]}


def mserver(a: argparse.Namespace) -> dict:
    c = _listen(a, IPPROTO_MPTCP)
    n = len(c.recv(65536))
    time.sleep(a.gap)  # the second subflow joins meanwhile
    c.sendall(b"m" * a.chunk)
    info = _mptcp_info(c)
    time.sleep(a.hold)
    c.close()
    return {"role": "mserver", "bytes_received": n, "bytes_sent": a.chunk, "answer_after_s": a.gap, **info}


def mclient(a: argparse.Namespace) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.settimeout(10)
    s.connect((a.addr, a.port))
    s.sendall(REQUEST)
    n, eof = _read_for(s, a.hold)
    info = _mptcp_info(s)
    s.close()
    return {"role": "mclient", "bytes_sent": len(REQUEST), "bytes_received": n, "peer_closed": eof, **info}


ROLES = {"sink": sink, "upload": upload, "ask": ask, "mute": mute, "halfclient": halfclient, "halfserver": halfserver, "mserver": mserver, "mclient": mclient}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hold", type=float, default=4.0)
    p.add_argument("--chunks", type=int, default=1)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--gap", type=float, default=0.1)
    p.add_argument("--answers", type=int, default=1)
    a = p.parse_args()
    signal.alarm(int(a.hold + a.gap * max(a.chunks, a.answers)) + 20)
    print(json.dumps(ROLES[a.role](a)), flush=True)


if __name__ == "__main__":
    main()
