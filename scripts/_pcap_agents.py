#!/usr/bin/env python3
"""Small socket programs used by scripts/make-pcaps.

Each role is run inside a network namespace created by make-pcaps, e.g.

    ip netns exec ssc-srv python3 scripts/_pcap_agents.py server --mode http ...

Every role is bounded in time (a hard alarm() deadline) and in the number of
connections / bytes it handles.  Servers print "ready" on stdout once they
listen so that the driver can start the client.
"""

import argparse
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

# ---------------------------------------------------------------- helpers

HTTP_REQ = b"GET / HTTP/1.0\r\nHost: synscope.test\r\nUser-Agent: make-pcaps\r\n\r\n"


def http_response(body_len=300):
    body = (b"synscope test page. " * ((body_len // 20) + 1))[:body_len]
    head = b"HTTP/1.0 200 OK\r\nServer: make-pcaps\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
    return head + body


def resp_head(length=None):
    """HTTP/1.0 response header; without a length the body ends at close."""
    h = b"HTTP/1.0 200 OK\r\nServer: make-pcaps\r\nContent-Type: text/plain\r\n"
    if length is not None:
        h += b"Content-Length: %d\r\n" % length
    return h + b"\r\n"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ready():
    print("ready", flush=True)


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


CC = None


def set_cc(s):
    """Per-socket congestion control (accepted sockets inherit it from the
    listener).  Root may pick any available algorithm."""
    if CC:
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, CC.encode())
        except OSError as e:
            log(f"cannot set congestion control {CC}: {e}")


def listener(addr, port, rcvbuf=None, backlog=8):
    s = socket.socket(family_of(addr), socket.SOCK_STREAM)
    set_cc(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((addr, port))
    s.listen(backlog)
    return s


def recv_until(c, marker, limit=65536):
    buf = b""
    while marker not in buf and len(buf) < limit:
        d = c.recv(4096)
        if not d:
            break
        buf += d
    return buf


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: for the agents that craft headers."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def drain(c, limit=1 << 24):
    n = 0
    while n < limit:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    return n


def abort(c):
    """close() with SO_LINGER {1,0}: the kernel sends RST."""
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def http_exchange(s):
    """Send the request and read the response body (by its Content-Length); returns the body."""
    s.sendall(HTTP_REQ)
    buf = recv_until(s, b"\r\n\r\n")
    head, _, body = buf.partition(b"\r\n\r\n")
    clen = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            clen = int(line.split(b":")[1])
    while len(body) < clen:
        d = s.recv(4096)
        if not d:
            break
        body += d
    return body


def connect(addr, port, timeout=20.0, src_port=None, rcvbuf=None, reuse=False):
    s = socket.socket(family_of(addr), socket.SOCK_STREAM)
    set_cc(s)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if src_port:
        s.bind(("::" if ":" in addr else "0.0.0.0", src_port))
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        s.connect((addr, port))
    except OSError as e:
        log(f"connect {addr}:{port} failed after {time.monotonic() - t0:.2f}s: {e}")
        s.close()
        return None
    s.settimeout(timeout)
    return s


# ---------------------------------------------------------------- server


def server(a):
    # "many": each connection served as "http", in a thread of its own, so they overlap
    many = a.mode == "many"
    ls = listener(a.addr, a.port, rcvbuf=a.rcvbuf, backlog=256 if many else 8)
    ls.settimeout(a.timeout)
    ready()
    threads = []
    for _ in range(a.conns):
        try:
            c, peer = ls.accept()
        except TimeoutError:
            log("server: accept timed out")
            break
        c.settimeout(a.timeout)
        if many:
            t = threading.Thread(target=serve_and_close, args=(a, c), daemon=True)
            t.start()
            threads.append(t)
        else:
            serve_and_close(a, c)
    for t in threads:
        t.join(a.timeout)
    ls.close()


def serve_and_close(a, c):
    try:
        serve_one(a, c)
    except OSError as e:
        log(f"server: {e}")
    finally:
        try:
            c.close()
        except OSError:
            pass


def serve_one(a, c):
    m = a.mode
    if m in ("http", "many"):  # client closes first
        recv_until(c, b"\r\n\r\n")
        c.sendall(http_response(a.size))
        drain(c)  # wait for the client's FIN
        c.close()
    elif m == "http-close":  # server closes first (HTTP/1.0 style)
        recv_until(c, b"\r\n\r\n")
        c.sendall(http_response(a.size))
        c.close()
    elif m == "bulk":  # send a.size bytes after the request, close
        recv_until(c, b"\r\n\r\n")
        head = resp_head(a.size)
        c.sendall(head)
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!\n"
        chunk = line * 1024
        left = a.size
        while left > 0:
            n = c.send(chunk[: min(left, len(chunk))])
            left -= n
        c.shutdown(socket.SHUT_WR)
        drain(c)
        c.close()
    elif m == "rst":  # stream data, then abort with RST
        recv_until(c, b"\r\n\r\n")
        c.sendall(resp_head())
        for i in range(a.chunks):
            c.sendall(b"%05d " % i + b"x" * (a.chunk - 7) + b"\n")
            if i + 1 < a.chunks:
                time.sleep(a.gap)
        # abort right after the last write: the last segment is still
        # unacknowledged when the RST goes out
        abort(c)
    elif m == "halfclose":  # read to EOF (client SHUT_WR), then keep sending
        req = drain(c)
        log(f"server: got {req} bytes then FIN")
        c.sendall(resp_head())
        for i in range(a.chunks):
            c.sendall(b"%05d " % i + b"y" * (a.chunk - 7) + b"\n")
            time.sleep(a.gap)
        c.close()
    elif m == "slowread":  # receiver with tiny buffer that reads slowly
        slow_reader(a, c)
        c.close()
    elif m == "echo-idle":  # answer the request, then wait for the client to close
        recv_until(c, b"\r\n\r\n")
        c.sendall(b"hello\r\n")
        drain(c)
        c.close()
    else:
        raise SystemExit(f"unknown server mode {m}")


def slow_reader(a, c):
    total = 0
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        # read a burst, then pause so the window closes
        got = 0
        while got < a.burst:
            d = c.recv(min(1024, a.burst - got))
            if not d:
                log(f"reader: EOF after {total} bytes")
                return
            got += len(d)
            total += len(d)
        time.sleep(a.gap)


# ---------------------------------------------------------------- client


def client_many(a):
    """a.count HTTP exchanges from a.threads threads; every 10th goes to a.refused_port (nothing listens)."""
    lock = threading.Lock()
    todo = list(range(a.count))
    done = {"ok": 0, "failed": 0}

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            port = a.refused_port if a.refused_port and i % 10 == 9 else a.port
            s = connect(a.addr, port, timeout=a.timeout)
            if not s:
                with lock:
                    done["failed"] += 1
                continue
            try:
                http_exchange(s)
                with lock:
                    done["ok"] += 1
            except OSError as e:
                log(f"client: {e}")
            finally:
                s.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.timeout + 5)
    log(f"client: {done['ok']} exchanges, {done['failed']} refused or failed")


def client(a):
    m = a.mode
    if m == "many":
        return client_many(a)
    if m == "refused":
        for i in range(a.tries):
            s = connect(a.addr, a.port, timeout=a.timeout)
            if s:
                s.close()
            if i + 1 < a.tries:
                time.sleep(a.gap)
        return
    if m == "http":  # client closes after reading the response
        s = connect(a.addr, a.port, timeout=a.timeout)
        if not s:
            sys.exit(2)
        body = http_exchange(s)
        time.sleep(0.02)
        s.close()
        log(f"client: got {len(body)} body bytes")
        return
    if m == "http-reuse":  # same source port twice; server closes first
        for i in range(a.tries):
            s = connect(a.addr, a.port, timeout=a.timeout, src_port=a.src_port, reuse=True)
            if not s:
                sys.exit(2)
            s.sendall(HTTP_REQ)
            n = drain(s)
            s.close()
            log(f"client: conn {i} got {n} bytes")
            time.sleep(a.gap)
        return
    if m == "bulk":
        s = connect(a.addr, a.port, timeout=a.timeout, rcvbuf=a.rcvbuf)
        if not s:
            sys.exit(2)
        s.sendall(HTTP_REQ)
        n = drain(s)
        s.close()
        log(f"client: got {n} bytes")
        return
    if m == "slowread":  # receiver with tiny buffer, reads slowly
        s = connect(a.addr, a.port, timeout=a.timeout, rcvbuf=a.rcvbuf)
        if not s:
            sys.exit(2)
        s.sendall(HTTP_REQ)
        slow_reader(a, s)
        s.close()
        return
    if m == "rst":
        s = connect(a.addr, a.port, timeout=a.timeout)
        if not s:
            sys.exit(2)
        s.sendall(HTTP_REQ)
        n = 0
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    break
                n += len(d)
        except ConnectionResetError:
            log(f"client: connection reset after {n} bytes")
        s.close()
        return
    if m == "halfclose":
        s = connect(a.addr, a.port, timeout=a.timeout)
        if not s:
            sys.exit(2)
        s.sendall(HTTP_REQ)
        s.shutdown(socket.SHUT_WR)
        n = drain(s)
        s.close()
        log(f"client: got {n} bytes after half-close")
        return
    if m == "keepalive":
        s = connect(a.addr, a.port, timeout=a.timeout)
        if not s:
            sys.exit(2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        s.sendall(HTTP_REQ)
        recv_until(s, b"\r\n")
        time.sleep(a.idle)
        s.close()
        return
    if m == "connect-only":  # just try to connect (no-answer, icmp, synack-lost)
        s = connect(a.addr, a.port, timeout=a.timeout)
        if s:
            s.sendall(HTTP_REQ)
            recv_until(s, b"\r\n\r\n")
            s.close()
        return
    raise SystemExit(f"unknown client mode {m}")


# ---------------------------------------------------------------- AF_PACKET sniffer

ETH_P_ALL = 0x0003


def sniff(a):
    """Record every frame an AF_PACKET socket sees on a.iface (both the outgoing
    and the incoming copy on loopback), like scapy's sniff(); write classic pcap,
    LINKTYPE_ETHERNET, microsecond timestamps."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.iface, 0))
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    deadline = time.monotonic() + a.timeout
    n = 0
    with open(a.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        print(f"listening on {a.iface}", file=sys.stderr, flush=True)
        while not stop and time.monotonic() < deadline and n < a.count:
            try:
                r, _, _ = select.select([s], [], [], 0.2)
            except InterruptedError:
                continue
            if not r:
                continue
            data = s.recv(65535)
            t = time.time()
            sec = int(t)
            usec = int((t - sec) * 1e6)
            f.write(struct.pack("<IIII", sec, usec, len(data), len(data)))
            f.write(data)
            f.flush()
            n += 1
    log(f"sniffer: {n} frames")


# ---------------------------------------------------------------- L2 relay (TAP / AF_PACKET)

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
PACKET_OUTGOING = 4
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)


class Port:
    def __init__(self, spec):
        kind, name = spec.split(":", 1)
        self.name = name
        self.kind = kind
        if kind == "tap":
            self.fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
            self.sock = None
        elif kind == "if":
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((name, 0))
            self.fd = self.sock.fileno()
        else:
            raise SystemExit(f"bad port spec {spec}")

    def read(self):
        if self.sock is None:
            return os.read(self.fd, 65535)
        data, addr = self.sock.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:  # our own transmissions
            return None
        return data

    def write(self, frame):
        if self.sock is None:
            os.write(self.fd, frame)
        else:
            self.sock.send(frame)


def strip_tags(frame):
    while len(frame) >= 18 and struct.unpack("!H", frame[12:14])[0] in VLAN_TPIDS:
        frame = frame[:12] + frame[16:]
    return frame


def push_tags(frame, tags):
    # tags: list of (tpid, vid), outermost first
    hdr = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return frame[:12] + hdr + frame[12:]


def is_tcp_data(frame):
    """IPv4 TCP segment with payload (no VLAN tags)."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00":
        return False
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 6:
        return False
    tot = struct.unpack("!H", frame[16:18])[0]
    doff = (frame[14 + ihl + 12] >> 4) * 4
    return tot - ihl - doff > 0


def relay(a):
    """Userspace L2 wire between two ports.  left->right frames get a.tags
    pushed; right->left frames have any remaining VLAN tags stripped (the
    kernel already moved the outer one into packet metadata).  With
    --reorder N, every Nth TCP data frame going right->left is held back and
    emitted right after the next frame (or after 30 ms)."""
    left, right = Port(a.left), Port(a.right)
    tags = []
    for t in a.tags or []:
        tpid, vid = t.split(":")
        tags.append((int(tpid, 16), int(vid)))
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ready()
    deadline = time.monotonic() + a.timeout
    held = None
    held_at = 0.0
    ndata = 0
    nswapped = 0
    nframes = 0
    while not stop and time.monotonic() < deadline and nframes < a.count:
        try:
            r, _, _ = select.select([left.fd, right.fd], [], [], 0.01)
        except InterruptedError:
            continue
        if held is not None and time.monotonic() - held_at > 0.03:
            left.write(held)
            held = None
        for fd in r:
            if fd == left.fd:
                f = left.read()
                if f is None:
                    continue
                nframes += 1
                if tags:
                    f = push_tags(strip_tags(f), tags)
                right.write(f)
            else:
                f = right.read()
                if f is None:
                    continue
                nframes += 1
                f = strip_tags(f)
                if a.reorder and is_tcp_data(f):
                    ndata += 1
                    if held is None and ndata % a.reorder == 0:
                        held, held_at = f, time.monotonic()
                        continue
                left.write(f)
                if held is not None:
                    left.write(held)
                    held = None
                    nswapped += 1
    if held is not None:
        left.write(held)
    log(f"relay: {nframes} frames, {ndata} data frames, {nswapped} swapped")


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client", "sniff", "relay"])
    p.add_argument("--mode", default="http")
    p.add_argument("--addr", default="0.0.0.0")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--src-port", type=int)
    p.add_argument("--size", type=int, default=300)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--tries", type=int, default=1)
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--gap", type=float, default=0.1)
    p.add_argument("--burst", type=int, default=8192)
    p.add_argument("--idle", type=float, default=4.0)
    p.add_argument("--rcvbuf", type=int)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--iface")
    p.add_argument("--out")
    p.add_argument("--count", type=int, default=200000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--refused-port", type=int, default=0)
    p.add_argument("--left")
    p.add_argument("--right")
    p.add_argument("--tags", action="append")
    p.add_argument("--reorder", type=int, default=0)
    p.add_argument("--cc", help="TCP congestion control for this agent's sockets")
    a = p.parse_args()
    global CC
    CC = a.cc
    # hard upper bound on the life of any agent
    signal.alarm(int(a.timeout) + 15)
    {"server": server, "client": client, "sniff": sniff, "relay": relay}[a.role](a)


if __name__ == "__main__":
    main()
