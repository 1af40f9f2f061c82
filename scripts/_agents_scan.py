#!/usr/bin/env python3
"""Socket roles for scripts/scenarios_scan.py (run inside a namespace with ip netns exec).

listen:       real kernel listeners on --ports; accepts and closes every connection until
              --timeout; prints "ready", then at the end one JSON line (connections accepted per port).
syn-scan:     crafted SYNs (raw socket, TCP header built here, IP header by the kernel) from
              --src to each of --ports of --addr, one source port for all (as nmap -sS does),
              --gap s apart; reads the answers on the same raw socket. The RST after each
              SYN-ACK is sent by the scanner's own kernel (no socket owns the port): the half-open
              pattern of a SYN scan. Then, if --os-probes, nmap-style odd probes (FIN, NULL,
              Xmas to an open and a closed port, ACK to a closed port, an ECN-setup SYN with an
              unusual window to an open port). Prints one JSON line: what answered each probe.
syn-sweep:    crafted SYNs to one --port on each of --addrs (a horizontal scan); JSON: who answered how.
connect-scan: a connect() to each of --ports (non-blocking, all at once, --timeout s), closed at
              once; prints one JSON line: errno name (or null) per port.
connect-many: --count connections one after the other to --port (busy client), or one to each of
              --ports (a client of a few services); each sends a line and closes.
Every loop is bounded in count and by alarm().
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import select
import signal
import socket
import struct
import time

from _pcap_agents import checksum  # (scripts/ is this script's directory, first on sys.path)


def tcp_segment(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, window: int, options: bytes) -> bytes:
    """A TCP header (no payload) with its checksum over the IPv4 pseudo-header."""
    options += b"\0" * (-len(options) % 4)
    off = (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, window, 0, 0) + options
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(hdr))
    csum = checksum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:]


FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
# nmap-like SYN options: MSS 1460 only (nmap -sS sends a bare MSS option)
SCAN_OPTS = struct.pack("!BBH", 2, 4, 1460)
# an odd option layout and window, like nmap's OS-detection probes (WS 10, NOP, MSS 1460, TS, SACK)
ODD_OPTS = struct.pack("!BBB", 3, 3, 10) + b"\x01" + struct.pack("!BBH", 2, 4, 1460) + struct.pack("!BBII", 8, 10, 0xFFFFFFFF, 0) + b"\x04\x02"


def _answers(sock: socket.socket, src: str, dst: str, sport: int, until: float) -> list[tuple[int, int]]:
    """(server port, flags) of the TCP segments from ``dst`` to ``src``:``sport`` seen until ``until``."""
    out: list[tuple[int, int]] = []
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return out
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return out
        pkt = sock.recv(65535)
        ihl = (pkt[0] & 0x0F) * 4
        if socket.inet_ntoa(pkt[12:16]) != dst or socket.inet_ntoa(pkt[16:20]) != src:
            continue
        p_sport, p_dport = struct.unpack("!HH", pkt[ihl : ihl + 4])
        if p_dport != sport:
            continue
        out.append((p_sport, pkt[ihl + 13]))


def _icmp_answers(sock: socket.socket, until: float) -> list[int]:
    """Destination ports quoted by ICMP errors seen until ``until``."""
    out: list[int] = []
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return out
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return out
        pkt = sock.recv(65535)
        ihl = (pkt[0] & 0x0F) * 4
        if pkt[ihl] != 3:  # destination unreachable
            continue
        inner = pkt[ihl + 8 :]
        iihl = (inner[0] & 0x0F) * 4
        out.append(struct.unpack("!H", inner[iihl + 2 : iihl + 4])[0])


def syn_scan(a: argparse.Namespace) -> dict:
    ports = [int(x) for x in a.ports.split(",")]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.bind((a.src, 0))
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    rng = random.Random(a.seed)
    t0 = time.monotonic()
    for port in ports:
        seg = tcp_segment(a.src, a.addr, a.sport, port, rng.getrandbits(32), 0, SYN, 1024, SCAN_OPTS)
        raw.sendto(seg, (a.addr, 0))
        time.sleep(a.gap)
    sent_for = time.monotonic() - t0
    got = _answers(raw, a.src, a.addr, a.sport, time.monotonic() + a.wait)
    icmp_ports = _icmp_answers(icmp, time.monotonic() + 0.1)
    synack = sorted({p for p, f in got if f & (SYN | ACK) == SYN | ACK})
    reset = sorted({p for p, f in got if f & RST})
    out: dict = {
        "scanner": a.src,
        "source_port": a.sport,
        "target": a.addr,
        "probes": len(ports),
        "probe_gap_s": a.gap,
        "sending_s": round(sent_for, 3),
        "answered_synack": synack,
        "answered_rst": reset,
        "answered_icmp": sorted(set(icmp_ports)),
        "silent": sorted(set(ports) - set(synack) - set(reset) - set(icmp_ports)),
        "rst_after_synack_by": "the scanner's own kernel (no socket owns the source port): the RST of a half-open SYN scan",
    }
    if a.os_open and a.os_closed:
        probes = [
            ("FIN", a.os_open, FIN, 1024, b""),
            ("NULL", a.os_open, 0, 1024, b""),
            ("Xmas", a.os_open, FIN | PSH | URG, 1024, b""),
            ("FIN", a.os_closed, FIN, 1024, b""),
            ("NULL", a.os_closed, 0, 1024, b""),
            ("Xmas", a.os_closed, FIN | PSH | URG, 1024, b""),
            ("ACK", a.os_closed, ACK, 1024, b""),
            ("ECN-SYN", a.os_open, SYN | ECE | CWR, 3, ODD_OPTS),
        ]
        results = []
        for i, (kind, port, flags, win, opts) in enumerate(probes):
            sport = a.sport + 1 + i  # a source port per probe, as nmap's OS detection does
            seq = rng.getrandbits(32)
            raw.sendto(tcp_segment(a.src, a.addr, sport, port, seq, rng.getrandbits(32) if flags & ACK else 0, flags, win, opts), (a.addr, 0))
            seen = _answers(raw, a.src, a.addr, sport, time.monotonic() + 0.3)
            results.append({"probe": kind, "port": port, "source_port": sport, "answer_flags": [f for _, f in seen]})
        out["os_probes"] = results
    raw.close()
    icmp.close()
    return out


def syn_sweep(a: argparse.Namespace) -> dict:
    """A horizontal SYN scan: one port (--port) on each of --addrs, crafted SYNs as syn_scan's."""
    addrs = a.addrs.split(",")
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.bind((a.src, 0))
    rng = random.Random(a.seed)
    for addr in addrs:
        raw.sendto(tcp_segment(a.src, addr, a.sport, a.port, rng.getrandbits(32), 0, SYN, 1024, SCAN_OPTS), (addr, 0))
        time.sleep(a.gap)
    until = time.monotonic() + a.wait
    seen: dict[str, list[int]] = {}
    while time.monotonic() < until:
        r, _, _ = select.select([raw], [], [], max(0.0, until - time.monotonic()))
        if not r:
            break
        pkt = raw.recv(65535)
        ihl = (pkt[0] & 0x0F) * 4
        src = socket.inet_ntoa(pkt[12:16])
        p_sport, p_dport = struct.unpack("!HH", pkt[ihl : ihl + 4])
        if src in addrs and p_sport == a.port and p_dport == a.sport:
            seen.setdefault(src, []).append(pkt[ihl + 13])
    raw.close()
    return {
        "scanner": a.src,
        "port": a.port,
        "targets": addrs,
        "answered_synack": sorted(h for h, fl in seen.items() if any(f & (SYN | ACK) == SYN | ACK for f in fl)),
        "answered_rst": sorted(h for h, fl in seen.items() if any(f & RST for f in fl)),
        "silent": sorted(set(addrs) - set(seen)),
    }


def connect_scan(a: argparse.Namespace) -> dict:
    ports = [int(x) for x in a.ports.split(",")]
    socks = {}
    results: dict[int, str | None] = {}
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((a.src, 0))
        s.setblocking(False)
        e = s.connect_ex((a.addr, port))
        if e not in (0, errno.EINPROGRESS):
            results[port] = errno.errorcode.get(e, str(e))
            s.close()
        else:
            socks[s.fileno()] = (s, port)
        time.sleep(a.gap)
    deadline = time.monotonic() + a.timeout
    while socks and time.monotonic() < deadline:
        _, w, _ = select.select([], [x[0] for x in socks.values()], [], max(0.0, deadline - time.monotonic()))
        for s in w:
            sock, port = socks.pop(s.fileno())
            e = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            results[port] = None if e == 0 else errno.errorcode.get(e, str(e))
            sock.close()  # at once: the connect scan's pattern (handshake, then FIN)
    for sock, port in socks.values():
        results[port] = "timeout"
        sock.close()
    return {
        "scanner": a.src,
        "target": a.addr,
        "probes": len(ports),
        "connected": sorted(p for p, e in results.items() if e is None),
        "refused": sorted(p for p, e in results.items() if e == "ECONNREFUSED"),
        "timeout": sorted(p for p, e in results.items() if e == "timeout"),
        "other": {str(p): e for p, e in sorted(results.items()) if e not in (None, "ECONNREFUSED", "timeout")},
    }


def connect_many(a: argparse.Namespace) -> dict:
    ports = [int(x) for x in a.ports.split(",")] if a.ports else [a.port] * a.count
    done = []
    for port in ports:
        s = socket.create_connection((a.addr, port), timeout=5, source_address=(a.src, 0))
        s.sendall(b"hello\n")
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
        s.close()
        done.append(port)
        time.sleep(a.gap)
    return {"client": a.src, "target": a.addr, "connections": len(done), "ports": sorted(set(done)), "errno": None}


def listen(a: argparse.Namespace) -> dict:
    ports = [int(x) for x in a.ports.split(",")]
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a.addr, port))
        s.listen(64)
        socks.append(s)
    print("ready", flush=True)
    accepted = {p: 0 for p in ports}
    deadline = time.monotonic() + a.timeout
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    while not stop and time.monotonic() < deadline:
        try:
            r, _, _ = select.select(socks, [], [], 0.2)
        except InterruptedError:
            break
        for s in r:
            c, _ = s.accept()
            accepted[s.getsockname()[1]] += 1
            c.settimeout(1.0)
            try:
                c.recv(4096)  # the client's line, or its FIN at once (connect scan)
            except OSError:
                pass
            c.close()
    return {"listener": a.addr, "ports": ports, "accepted": {str(k): v for k, v in accepted.items()}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["listen", "syn-scan", "syn-sweep", "connect-scan", "connect-many"])
    p.add_argument("--addrs", default="")
    p.add_argument("--addr", default="")
    p.add_argument("--src", default="")
    p.add_argument("--ports", default="")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--sport", type=int, default=45678)
    p.add_argument("--gap", type=float, default=0.002)
    p.add_argument("--wait", type=float, default=1.5)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--os-open", type=int, default=0)
    p.add_argument("--os-closed", type=int, default=0)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 30)
    role = {"listen": listen, "syn-scan": syn_scan, "syn-sweep": syn_sweep, "connect-scan": connect_scan, "connect-many": connect_many}[a.role]
    print(json.dumps(role(a)), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
