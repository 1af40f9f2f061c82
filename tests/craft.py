"""CRAFTED captures: packets built byte by byte with ``struct``, written as pcap.

Nothing here comes from real traffic. It is for tests, fuzz seeds and the
synthetic SYN flood of ``scripts/make-synflood``: hostile or huge captures that
the namespace recordings of ``scripts/make-pcaps`` cannot produce (a million
spoofed sources, escape sequences in payloads, lying timestamps).

Standard library only, and no scapy: ``write_synflood`` writes about 1.6
million frames, and one scapy packet costs about 100 times what a ``struct``
template does. Addresses are from the documentation and benchmarking ranges
(192.0.2.0/24, 198.51.100.0/24, 198.18.0.0/15), so a crafted file can never be
mistaken for a capture of real hosts.
"""

from __future__ import annotations

import heapq
import random
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = [
    "FloodPlan",
    "PcapWriter",
    "checksum",
    "ether",
    "ipv4",
    "ipv4_tcp",
    "ipv6_tcp",
    "pcap_header",
    "pcap_record",
    "tcp_options",
    "write_synflood",
]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

MAC_CLIENT = bytes.fromhex("02000000000a")
MAC_SERVER = bytes.fromhex("02000000000b")

_PCAP_HDR = struct.Struct("<IHHiIII")
_PCAP_REC = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


# ----------------------------------------------------------------- pcap files


def pcap_header(linktype: int = 1, snaplen: int = 262144, nanosecond: bool = False) -> bytes:
    """The 24-byte little-endian pcap file header (µs or ns timestamps)."""
    return _PCAP_HDR.pack(0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(sec: int, frac: int, data: bytes, orig_len: int | None = None) -> bytes:
    """One pcap record: header with the raw ``sec`` / ``frac`` fields (not checked), then ``data``.

    Raw fields on purpose: tests write invalid ones (µs >= 10^6, year 2106).
    """
    return _PCAP_REC.pack(sec, frac, len(data), len(data) if orig_len is None else orig_len) + data


class PcapWriter:
    """Writes a little-endian microsecond pcap to a binary stream, frames in the order given."""

    def __init__(self, out: BinaryIO, linktype: int = 1, snaplen: int = 262144) -> None:
        self.out = out
        self.frames = 0
        out.write(pcap_header(linktype, snaplen))

    def write(self, ts: float, data: bytes, orig_len: int | None = None) -> None:
        """One frame at epoch time ``ts`` (rounded to the microsecond)."""
        usec = round(ts * 1_000_000)
        self.out.write(pcap_record(usec // 1_000_000, usec % 1_000_000, data, orig_len))
        self.frames += 1


# ----------------------------------------------------------------- packets


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_options(mss: int | None = 1460, sack: bool = True, ts: tuple[int, int] | None = None, wscale: int | None = 7) -> bytes:
    """Options as Linux orders them in a SYN, padded to a multiple of 4 bytes."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if sack and ts is not None:
        out += b"\x04\x02" + struct.pack("!BBII", 8, 10, *ts)
    elif sack:
        out += b"\x01\x01\x04\x02"
    elif ts is not None:
        out += b"\x01\x01" + struct.pack("!BBII", 8, 10, *ts)
    if wscale is not None:
        out += struct.pack("!BBBB", 1, 3, 3, wscale)
    return out + b"\0" * (-len(out) % 4)


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, win: int, options: bytes, payload: bytes) -> bytes:
    if len(options) % 4:
        raise ValueError("TCP options must be padded to a multiple of 4 bytes")
    doff = (20 + len(options)) // 4
    hdr = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags, win, 0, 0) + options
    seg = hdr + payload
    proto = 6
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    else:
        pseudo = src + dst + struct.pack("!I3xB", len(seg), proto)
    csum = checksum(pseudo + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def ipv4(src: str | bytes, dst: str | bytes, proto: int, body: bytes, ttl: int = 64, ip_id: int = 0, tos: int = 0, df: bool = True) -> bytes:
    """An IPv4 packet (no options) with a correct header checksum."""
    s = socket.inet_aton(src) if isinstance(src, str) else src
    d = socket.inet_aton(dst) if isinstance(dst, str) else dst
    hdr = _IPV4.pack(0x45, tos, 20 + len(body), ip_id, 0x4000 if df else 0, ttl, proto, 0, s, d)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + body


def ipv4_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    *,
    win: int = 64240,
    options: bytes = b"",
    payload: bytes = b"",
    ttl: int = 64,
    ip_id: int = 0,
) -> bytes:
    """An IPv4 + TCP packet with correct checksums."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    return ipv4(s, d, 6, _tcp(s, d, sport, dport, seq, ack, flags, win, options, payload), ttl=ttl, ip_id=ip_id)


def ipv6_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    *,
    win: int = 64800,
    options: bytes = b"",
    payload: bytes = b"",
    hlim: int = 64,
) -> bytes:
    """An IPv6 + TCP packet (no extension headers) with a correct checksum."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    seg = _tcp(s, d, sport, dport, seq, ack, flags, win, options, payload)
    return struct.pack("!IHBB", 6 << 28, len(seg), 6, hlim) + s + d + seg


def ether(packet: bytes, ethertype: int | None = None, src: bytes = MAC_CLIENT, dst: bytes = MAC_SERVER, vlans: Iterable[int] = ()) -> bytes:
    """An Ethernet II frame around ``packet`` (ethertype from the IP version unless given), with 802.1Q tags."""
    if ethertype is None:
        ethertype = 0x86DD if packet[:1] and packet[0] >> 4 == 6 else 0x0800
    tags = b"".join(struct.pack("!HH", 0x8100, vid & 0x0FFF) for vid in vlans)
    return dst + src + tags + struct.pack("!H", ethertype) + packet


def conversation(
    client: str,
    server: str,
    cport: int,
    sport: int,
    t0: float,
    *,
    request: bytes = b"GET / HTTP/1.0\r\n\r\n",
    response: bytes = b"HTTP/1.0 200 OK\r\n\r\nhello",
    rtt: float = 0.01,
    isn: tuple[int, int] = (1000, 5000),
) -> list[tuple[float, bytes]]:
    """A complete, well-behaved connection as (time, Ethernet frame) pairs.

    Handshake, one request, one response, the client closes first: the shape of
    ``pcaps/normal.pcap``, with payloads of the caller's choosing.
    """
    ci, si = isn
    v6 = ":" in client
    build = ipv6_tcp if v6 else ipv4_tcp
    opts = tcp_options(ts=None)
    half = rtt / 2
    c2s = []
    t = t0
    seq_c, seq_s = ci, si

    def pkt(from_client: bool, flags: int, seq: int, ack: int, payload: bytes = b"", options: bytes = b"") -> None:
        nonlocal t
        a, b, pa, pb = (client, server, cport, sport) if from_client else (server, client, sport, cport)
        frame = ether(
            build(a, b, pa, pb, seq, ack, flags, options=options, payload=payload),
            src=MAC_CLIENT if from_client else MAC_SERVER,
            dst=MAC_SERVER if from_client else MAC_CLIENT,
        )
        c2s.append((t, frame))
        t += half

    pkt(True, SYN, seq_c, 0, options=opts)
    pkt(False, SYN | ACK, seq_s, seq_c + 1, options=opts)
    seq_c += 1
    seq_s += 1
    pkt(True, ACK, seq_c, seq_s)
    pkt(True, PSH | ACK, seq_c, seq_s, request)
    seq_c += len(request)
    pkt(False, ACK, seq_s, seq_c)
    pkt(False, PSH | ACK, seq_s, seq_c, response)
    seq_s += len(response)
    pkt(True, ACK, seq_c, seq_s)
    pkt(True, FIN | ACK, seq_c, seq_s)
    pkt(False, FIN | ACK, seq_s, seq_c + 1)
    pkt(True, ACK, seq_c + 1, seq_s + 1)
    return c2s


# ----------------------------------------------------------------- SYN flood


@dataclass
class FloodPlan:
    """What :func:`write_synflood` put in the file: the ground truth for tests."""

    attempts: int
    target: tuple[str, int]
    answered: int = 0  # flood SYNs answered with a SYN-ACK
    cookies: int = 0  # of those, answered once and never retransmitted (SYN cookies)
    normal: int = 0  # complete connections mixed in
    frames: int = 0
    start: float = 0.0
    end: float = 0.0  # time of the last flood SYN
    rate: float = 0.0  # flood SYNs per second
    loud_sources: list[tuple[str, int]] = field(default_factory=list)  # (address, SYNs) of the heavy senders
    sources: int = 0  # distinct flood source addresses


# Linux retransmits an unanswered SYN-ACK after 1 s, then doubles (tcp_synack_retries = 5).
SYNACK_RETRIES = (1.0, 3.0)
FLOOD_SPACE = 0xC6120000  # 198.18.0.0/15: benchmarking addresses, the spoofed sources
FLOOD_SPACE_SIZE = 1 << 17


def write_synflood(
    out: BinaryIO,
    count: int = 1_000_000,
    *,
    rate: float = 50_000.0,
    answered_share: float = 0.4,
    cookie_share: float = 0.5,
    loud: int = 5,
    loud_share: float = 0.1,
    normal_every: int = 50_000,
    target: tuple[str, int] = ("192.0.2.10", 443),
    start: float = 1_700_000_000.0,
    seed: int = 1,
) -> FloodPlan:
    """Write a CRAFTED pcap of ``count`` half-open connection attempts (a SYN flood).

    - Flood SYNs from spoofed sources in 198.18.0.0/15 (uniform random, plus
      ``loud`` heavy senders that send ``loud_share`` of them) with random
      source ports, to one server ``target``, at ``rate`` SYNs per second.
    - ``answered_share`` of them get a SYN-ACK 0.2 ms later. Of those,
      ``cookie_share`` are never retransmitted (a server answering with SYN
      cookies keeps no state); the rest are retransmitted at +1 s and +3 s, as
      Linux does while the half-open entry lives. No SYN is retransmitted and
      no ACK or RST ever comes back: the sources do not exist.
    - Every ``normal_every`` flood SYNs one complete connection from
      198.51.100.0/24 is mixed in (handshake, request, response, close).

    Frames are written in time order from ``struct`` templates, about a
    million per 5 s. Deterministic for a given ``seed``. Returns the ground
    truth as a :class:`FloodPlan`.
    """
    rng = random.Random(seed)
    sip = socket.inet_aton(target[0])
    dport = target[1]
    plan = FloodPlan(count, target, start=start, rate=rate)
    writer_frames = 0
    rec = _PCAP_REC.pack
    write = out.write
    write(pcap_header(1, 262144))

    # Fixed parts of every flood frame, checksums added incrementally from these sums.
    syn_opts = struct.pack("!BBH", 2, 4, 1460)  # flood tools send a bare SYN or MSS only
    synack_opts = struct.pack("!BBH", 2, 4, 1460)
    eth_c2s = MAC_SERVER + MAC_CLIENT + b"\x08\x00"
    eth_s2c = MAC_CLIENT + MAC_SERVER + b"\x08\x00"
    ip_len = 20 + 24
    sip_words = (sip[0] << 8 | sip[1]) + (sip[2] << 8 | sip[3])
    # IPv4 header sum without the source/destination words and ID: ver/ihl/tos, len, flags, ttl/proto
    ip_const_syn = 0x4500 + ip_len + 0x4000 + ((128 << 8) | 6)  # spoofing tools like TTL 128-ish
    ip_const_sa = 0x4500 + ip_len + 0x4000 + ((64 << 8) | 6)
    tcp_pseudo = 6 + 24  # proto + TCP length
    opt_sum = (syn_opts[0] << 8 | syn_opts[1]) + (syn_opts[2] << 8 | syn_opts[3])
    doff_flags_syn = (6 << 12) | SYN
    doff_flags_sa = (6 << 12) | SYN | ACK
    win_syn, win_sa = 1024, 64240

    def fold(s: int) -> int:
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF

    ip_hdr = struct.Struct("!HHHHBBH4s4s").pack
    tcp_hdr = struct.Struct("!HHIIHHHH").pack

    def frame(c2s: bool, cip: int, cport: int, seq: int, ack: int, ip_id: int) -> bytes:
        cbytes = cip.to_bytes(4, "big")
        cwords = (cip >> 16) + (cip & 0xFFFF)
        if c2s:
            ipc = fold(ip_const_syn + ip_id + cwords + sip_words)
            th = cport + dport + (seq >> 16) + (seq & 0xFFFF) + doff_flags_syn + win_syn + opt_sum + cwords + sip_words + tcp_pseudo
            tc = fold(th)
            return (
                eth_c2s
                + ip_hdr(0x4500, ip_len, ip_id, 0x4000, 128, 6, ipc, cbytes, sip)
                + tcp_hdr(cport, dport, seq, 0, doff_flags_syn, win_syn, tc, 0)
                + syn_opts
            )
        ipc = fold(ip_const_sa + cwords + sip_words)
        th = dport + cport + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF) + doff_flags_sa + win_sa + opt_sum + cwords + sip_words + tcp_pseudo
        tc = fold(th)
        return (
            eth_s2c + ip_hdr(0x4500, ip_len, 0, 0x4000, 64, 6, ipc, sip, cbytes) + tcp_hdr(dport, cport, seq, ack, doff_flags_sa, win_sa, tc, 0) + synack_opts
        )

    loud_ips = [FLOOD_SPACE + rng.randrange(FLOOD_SPACE_SIZE) for _ in range(loud)]
    loud_counts = [0] * loud
    loud_index = {ip: k for k, ip in enumerate(loud_ips)}
    seen_sources: set[int] = set()
    pending: list[tuple[float, int, bytes]] = []  # delayed frames: (time, tie-break, bytes)
    tie = 0
    interval = 1.0 / rate
    synack_delay = 0.0002
    normal_port = 40000
    normal_no = 0
    t = start
    randrange, random_ = rng.randrange, rng.random
    for i in range(count):
        t = start + i * interval
        usec = round(t * 1_000_000)
        # flush delayed frames that are due before this SYN
        while pending and pending[0][0] <= t:
            pts, _, data = heapq.heappop(pending)
            pus = round(pts * 1_000_000)
            write(rec(pus // 1_000_000, pus % 1_000_000, len(data), len(data)) + data)
            writer_frames += 1
        if loud and random_() < loud_share:
            k = randrange(loud)
            cip = loud_ips[k]
            loud_counts[k] += 1
        else:
            cip = FLOOD_SPACE + randrange(FLOOD_SPACE_SIZE)
            hit = loud_index.get(cip)
            if hit is not None:  # a random pick that happens to be a loud sender
                loud_counts[hit] += 1
        seen_sources.add(cip)
        cport = randrange(1024, 65536)
        seq = randrange(1 << 32)
        data = frame(True, cip, cport, seq, 0, randrange(65536))
        write(rec(usec // 1_000_000, usec % 1_000_000, 58, 58) + data)
        writer_frames += 1
        if random_() < answered_share:
            plan.answered += 1
            sseq = randrange(1 << 32)
            sa = frame(False, cip, cport, sseq, (seq + 1) & 0xFFFFFFFF, 0)
            tie += 1
            heapq.heappush(pending, (t + synack_delay, tie, sa))
            if random_() < cookie_share:
                plan.cookies += 1
            else:
                for delay in SYNACK_RETRIES:
                    tie += 1
                    heapq.heappush(pending, (t + synack_delay + delay, tie, sa))
        if normal_every and i % normal_every == normal_every // 2:
            normal_no += 1
            plan.normal += 1
            client = f"198.51.100.{1 + normal_no % 254}"
            normal_port = 40000 + normal_no % 20000
            for ts, fr in conversation(client, target[0], normal_port, dport, t + interval / 3, rtt=0.002, isn=(randrange(1 << 31), randrange(1 << 31))):
                tie += 1
                heapq.heappush(pending, (ts, tie, fr))
    while pending:
        pts, _, data = heapq.heappop(pending)
        pus = round(pts * 1_000_000)
        write(rec(pus // 1_000_000, pus % 1_000_000, len(data), len(data)) + data)
        writer_frames += 1
    plan.frames = writer_frames
    plan.end = start + (count - 1) * interval if count else start
    plan.sources = len(seen_sources)
    plan.loud_sources = sorted(((socket.inet_ntoa(ip.to_bytes(4, "big")), n) for ip, n in zip(loud_ips, loud_counts, strict=True)), key=lambda x: -x[1])
    return plan
