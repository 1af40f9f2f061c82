"""The per-attempt fast paths held equal to the general code they stand in for (randomized).

- ``addr.ip_string`` writes an IPv4 address itself: as ``socket.inet_ntop`` does;
- a compact record's fields read byte by byte (``attempts.header``, ``_attempt``, ``segments``,
  ``from_first``, ``pack_key``): what the record's struct formats unpack and pack;
- ``ScanWatch.in_scan`` without its loops: what the loops over both candidates said;
- ``attempts.new_record`` packing header and frame at once: the two packed apart.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest

from synscope.core.addr import fmt_ip, ip_string
from synscope.core.model import ACK, SYN, Segment
from synscope.read import attempts
from synscope.read.scans import ScanWatch, _during, looks_like_scan

SEEDS = range(6)


def _address(rnd: random.Random) -> bytes:
    """An IPv4 address whose bytes are often at the edges of their ranges (0, 9, 10, 99, 100, 255)."""
    return bytes(rnd.choice([0, 1, 9, 10, 99, 100, 199, 200, 255, rnd.randrange(256)]) for _ in range(4))


@pytest.mark.parametrize("seed", SEEDS)
def test_ip_string_as_inet_ntop(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(2000):
        packed = _address(rnd)
        assert ip_string(packed) == socket.inet_ntop(socket.AF_INET, packed) == fmt_ip(packed)
        v6 = bytes(rnd.choice([0, 0, 1, 255, rnd.randrange(256)]) for _ in range(16))
        assert ip_string(v6) == socket.inet_ntop(socket.AF_INET6, v6) == fmt_ip(v6)
    assert ip_string(b"\x01\x02") == "0102"  # neither family: hex, as before


_HEAD = struct.Struct("<qqq")
_FRAME = struct.Struct("<dqIIHHBHBbIBBB")
_PORTS = struct.Struct(">HH")


def _reference_attempt(record: bytes) -> tuple[int, bool, int, int]:
    """``attempts._attempt`` as it was written with the whole frame unpacked."""
    offset = _HEAD.size
    frames, client_first, client_isn, server_isn = 0, True, -1, -1
    while offset < len(record):
        fields = _FRAME.unpack_from(record, offset)
        seq, flags, bits, optlen = fields[2], fields[4], fields[11], fields[13]
        if frames == 0:
            client_first = bool(bits & 1)
            client_isn = seq
        elif flags & attempts._KINDS == SYN | ACK and server_isn < 0:
            server_isn = seq
        frames += 1
        offset += _FRAME.size + optlen
    return frames, client_first, client_isn, server_isn


def _reference_segments(packed: bytes, record: bytes) -> list[tuple[object, ...]]:
    """The fields of ``attempts.segments`` as the whole frame unpacks them."""
    n = (len(packed) - 4) // 2
    a, b = packed[:n], packed[n : 2 * n]
    port_a, port_b = _PORTS.unpack_from(packed, 2 * n)
    out: list[tuple[object, ...]] = []
    offset = _HEAD.size
    while offset < len(record):
        ts, frame, seq, ack, flags, win, ttl, ip_id, ecn, pkttype, index, bits, csum, optlen = _FRAME.unpack_from(record, offset)
        offset += _FRAME.size
        options = record[offset : offset + optlen]
        offset += optlen
        ends = (a, b, port_a, port_b) if bits & 1 else (b, a, port_b, port_a)
        out.append((frame, ts, *ends, seq, ack, flags, win, 0, ttl, ip_id, options, bool(bits & 2), bool(bits & 4), b"", ecn, pkttype, index, csum))
    return out


_FIELDS = (
    "frame", "ts", "src", "dst", "sport", "dport", "seq", "ack", "flags", "win", "length", "ttl", "ip_id",
    "raw_options", "truncated", "fragment", "payload", "ecn", "pkttype", "source_index", "csum",
)  # fmt: skip


def _fields(segs: list[Segment]) -> list[tuple[object, ...]]:
    return [tuple(getattr(seg, name) for name in _FIELDS) for seg in segs]


def test_i64_as_struct() -> None:
    rnd = random.Random(1)
    edges = [0, 1, -1, -2, (1 << 31) - 1, 1 << 31, -(1 << 31), -(1 << 31) - 1, (1 << 32) - 1, 1 << 32, -(1 << 32), (1 << 63) - 1, -(1 << 63)]
    for value in edges + [rnd.randrange(-(1 << 63), 1 << 63) for _ in range(2000)] + [rnd.randrange(-(1 << 33), 1 << 33) for _ in range(2000)]:
        assert attempts._i64(b"\x07" + struct.pack("<q", value), 1) == value


def _segment(rnd: random.Random, src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int) -> Segment:
    options = rnd.choice([b"", b"\x02\x04\x05\xb4", bytes(rnd.randrange(256) for _ in range(rnd.randrange(41)))])
    seg = Segment(
        rnd.randrange(1 << 40),
        rnd.uniform(0, 2e9),
        src,
        dst,
        sport,
        dport,
        seq,
        rnd.randrange(1 << 32),
        flags,
        rnd.randrange(1 << 16),
        0,
        rnd.randrange(256),
        rnd.randrange(1 << 16),
        options,
        rnd.random() < 0.2,
        rnd.random() < 0.2,
        b"",
        rnd.randrange(4),
        rnd.randrange(-1, 5),
        rnd.randrange(1 << 32),
    )
    seg.csum = rnd.randrange(256)
    return seg


@pytest.mark.parametrize("seed", SEEDS)
def test_record_fields_as_struct(seed: int) -> None:
    rnd = random.Random(seed)
    edges = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF]
    for _ in range(500):
        a, b = _address(rnd), _address(rnd)
        port_a, port_b = rnd.choice([0, 80, 255, 256, 443, 65535, rnd.randrange(65536)]), rnd.randrange(65536)
        key = (a, port_a, b, port_b)
        packed = attempts.pack_key(key)
        assert packed == a + b + _PORTS.pack(port_a, port_b)
        assert attempts.unpack_key(packed) == key
        # ids, stamps and reused_from over the whole signed range the header holds
        ident = rnd.choice([1, rnd.randrange(1 << 62), (1 << 63) - 1])
        opened_at = rnd.choice([0, rnd.randrange(1 << 40), (1 << 63) - 1])
        reused = rnd.choice([None, 0, 5, rnd.randrange(1 << 63)])
        first = rnd.random() < 0.5
        src, dst, sport, dport = (a, b, port_a, port_b) if first else (b, a, port_b, port_a)
        isn = rnd.choice(edges + [rnd.randrange(1 << 32)])
        syn = _segment(rnd, src, dst, sport, dport, SYN, isn)
        assert attempts.from_first(syn, packed) == (syn.src == a and syn.sport == port_a)
        record = attempts.new_record(ident, opened_at, reused, syn, first)
        assert attempts.header(record) == _HEAD.unpack_from(record, 0) == (ident, opened_at, -1 if reused is None else reused)
        for _more in range(rnd.randrange(8)):
            answer = rnd.random() < 0.5
            if answer:
                seg = _segment(rnd, dst, src, dport, sport, SYN | ACK, rnd.choice(edges + [rnd.randrange(1 << 32)]))
            else:
                seg = _segment(rnd, src, dst, sport, dport, SYN, isn)
            seg_first = attempts.from_first(seg, packed)
            assert seg_first == (first != answer)
            assert attempts._attempt(record) == _reference_attempt(record)
            more = attempts.extended(record, seg, seg_first)
            if more is None:
                break
            record = more
        assert attempts._attempt(record) == _reference_attempt(record)
        assert attempts.header(record) == _HEAD.unpack_from(record, 0)
        assert _fields(attempts.segments(packed, record)) == _reference_segments(packed, record)


def _reference_in_scan(watch: ScanWatch, client: bytes, host: bytes, port: int, ts: float) -> bool:
    """``ScanWatch.in_scan`` as it was written, with loops over both candidates of each kind."""
    ended = watch._ended
    for p in (watch._by_host.probed.get((client, host)), ended.get((0, (client, host)))):
        if p is not None and p.confirmed and _during(p, ts) and looks_like_scan(p.count(), p.open_count()):
            return True
    for p in (watch._by_port.probed.get((client, port)), ended.get((1, (client, port)))):
        if p is not None and p.confirmed and _during(p, ts) and looks_like_scan(p.count(), p.open_count(), horizontal=True):
            return True
    return False


@pytest.mark.parametrize("seed", SEEDS)
def test_in_scan_as_the_loops(seed: int) -> None:
    rnd = random.Random(seed)
    watch = ScanWatch()
    clients = [bytes([10, 0, 0, i]) for i in range(2)]
    horizontal = seed % 2 == 1  # scans of many hosts on few ports, or of many ports of few hosts
    hosts = [bytes([10, 1, 0, i]) for i in range(14 if horizontal else 3)]
    ports = list(range(20, 20 + (3 if horizontal else 14)))
    ts = 1000.0
    scans = 0
    for frame in range(1, 6000):
        # bursts of probes and long pauses: scans are confirmed, end and start again
        ts += rnd.choice([0.5, 2.0, 12.0, 30.0]) if rnd.random() < 0.01 else 0.001
        client, host, port = rnd.choice(clients), rnd.choice(hosts), rnd.choice(ports)
        if rnd.random() < 0.8:
            watch.saw_fields(SYN, client, host, rnd.randrange(1024, 65536), port, ts, 64, frame)
        else:
            watch.saw_fields(rnd.choice([SYN | ACK, 0x04]), host, client, port, rnd.randrange(1024, 65536), ts, 64, frame)
        q_ts = ts - rnd.choice([0.0, 5.0, 11.0, 30.0])
        got = watch.in_scan(client, host, port, q_ts)
        assert got == _reference_in_scan(watch, client, host, port, q_ts)
        scans += got
    assert scans and watch._ended  # both kinds of candidate were tried


def test_new_record_as_header_and_frame_packed_apart() -> None:
    """``new_record`` packs the header and the first frame at once: the bytes of the two packed apart."""
    rnd = random.Random(3)
    for _ in range(500):
        a, b = _address(rnd), _address(rnd)
        first = rnd.random() < 0.5
        syn = _segment(rnd, a, b, rnd.randrange(65536), rnd.randrange(65536), SYN, rnd.randrange(1 << 32))
        ident, opened_at = rnd.randrange(1, 1 << 62), rnd.randrange(1 << 62)
        reused = rnd.choice([None, 0, rnd.randrange(1 << 62)])
        want = _HEAD.pack(ident, opened_at, -1 if reused is None else reused) + attempts._frame(syn, first)
        assert attempts.new_record(ident, opened_at, reused, syn, first) == want
