"""Compact half-open attempts (synscope/read/attempts.py): the tracker keeps a bare SYN, its
retransmissions and the SYN-ACK as a small record, and makes the full connection from it when a
packet it cannot hold comes or when it is reported. It must change nothing in the output: every
test here runs the same capture with compaction on and off and compares the JSON lines.

Captures are CRAFTED (tests.craft): edge cases of promotion written frame by frame, and a small
SYN flood (write_synflood, as scripts/make-synflood).
"""

from __future__ import annotations

import gc
import socket
import struct
import tracemalloc
from pathlib import Path

import pytest

from synscope.core.model import Segment
from synscope.read import attempts
from synscope.read.jsonl import connection_line
from synscope.read.pipeline import Pipeline, run
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import Tracker, segment_key
from tests.craft import ACK, FIN, RST, SYN, PcapWriter, checksum, ether, ipv4, ipv4_tcp, ipv6_tcp, tcp_options, write_synflood
from tests.helpers import PCAPS

T0 = 1_700_000_000.0
OPTS = tcp_options(ts=(1, 0))


def _json_lines(path: Path | str, compact: bool, **options: object) -> tuple[list[str], int]:
    """The JSON lines of a capture (in output order) and how many attempts were opened compact."""
    pipeline = Pipeline(compact_after=0 if compact else None, **options)  # type: ignore[arg-type]
    reader = open_capture(str(path))
    lines = [connection_line(r) for r in run([(reader.path, reader)], pipeline)]
    return lines, pipeline.tracker.compacted


def _same_both_ways(path: Path | str, **options: object) -> int:
    """Assert compaction changes no line; return how many attempts it kept compact."""
    full, none = _json_lines(path, False, **options)
    compact, kept = _json_lines(path, True, **options)
    assert none == 0
    assert compact == full
    return kept


def _syn(t: float, cport: int, isn: int, *, client: str = "10.0.0.1", server: str = "10.0.0.2", flags: int = SYN, payload: bytes = b"") -> tuple[float, bytes]:
    return t, ether(ipv4_tcp(client, server, cport, 80, isn, 0, flags, options=OPTS, payload=payload, ip_id=cport))


def _synack(t: float, cport: int, isn: int, ack: int, *, client: str = "10.0.0.1", server: str = "10.0.0.2") -> tuple[float, bytes]:
    return t, ether(ipv4_tcp(server, client, 80, cport, isn, ack, SYN | ACK, options=OPTS))


def _from_client(t: float, cport: int, seq: int, ack: int, flags: int, *, client: str = "10.0.0.1", server: str = "10.0.0.2") -> tuple[float, bytes]:
    return t, ether(ipv4_tcp(client, server, cport, 80, seq, ack, flags))


def _from_server(t: float, cport: int, seq: int, ack: int, flags: int, *, client: str = "10.0.0.1", server: str = "10.0.0.2") -> tuple[float, bytes]:
    return t, ether(ipv4_tcp(server, client, 80, cport, seq, ack, flags))


def _icmp_unreachable(t: float, syn_frame: bytes, code: int = 1) -> tuple[float, bytes]:
    """A router's ICMP destination unreachable quoting the IPv4 packet in ``syn_frame``."""
    packet = syn_frame[14:]
    quoted = packet[: (packet[0] & 0x0F) * 4 + 8]
    body = struct.pack("!BBHI", 3, code, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    client = socket.inet_ntoa(packet[12:16])
    return t, ether(ipv4("10.0.0.254", client, 1, body), src=bytes.fromhex("02000000000b"), dst=bytes.fromhex("02000000000a"))


def _edge_cases() -> list[tuple[float, bytes]]:
    """One attempt per case, each on its own client port, interleaved in time."""
    frames: list[tuple[float, bytes]] = []
    t = T0
    # 40001: SYN sent 10 times (more than a compact record holds), never answered
    for i in range(10):
        frames.append(_syn(t + i * 0.5, 40001, 1000))
    # 40002: SYN, SYN-ACK, SYN-ACK again, then RST from the client
    frames += [_syn(t, 40002, 2000), _synack(t + 0.001, 40002, 9000, 2001), _synack(t + 1.0, 40002, 9000, 2001)]
    frames.append(_from_client(t + 1.1, 40002, 2001, 0, RST))
    # 40003: SYN answered by an ICMP error (host unreachable)
    syn = _syn(t + 0.2, 40003, 3000)
    frames += [syn, _icmp_unreachable(t + 0.21, syn[1])]
    # 40004: 4-tuple reuse with a new ISN while the first attempt is half-open
    frames += [_syn(t + 0.3, 40004, 4000), _syn(t + 2.0, 40004, 4500)]
    # 40005: simultaneous open (a bare SYN back from the server side)
    frames += [_syn(t + 0.4, 40005, 5000), (t + 0.41, ether(ipv4_tcp("10.0.0.2", "10.0.0.1", 80, 40005, 7000, 0, SYN, options=OPTS)))]
    # 40006: SYN-ACK first (the SYN was not captured), then the ACK
    frames += [_synack(t + 0.5, 40006, 6000, 1001), _from_client(t + 0.51, 40006, 1001, 6001, ACK)]
    # 40007: a handshake that completes, data, close: the third packet makes it a full connection
    frames += [_syn(t + 0.6, 40007, 7000), _synack(t + 0.61, 40007, 17000, 7001), _from_client(t + 0.62, 40007, 7001, 17001, ACK)]
    frames += [_from_client(t + 0.63, 40007, 7001, 17001, FIN | ACK), _from_server(t + 0.64, 40007, 17001, 7002, FIN | ACK)]
    frames.append(_from_client(t + 0.65, 40007, 7002, 17002, ACK))
    # 40007 again later: the same 4-tuple after the closed connection (reused_from), left half-open
    frames.append(_syn(t + 70.0, 40007, 7777))
    # 40008: SYN-ACKs with two ISNs (the second is a new epoch)
    frames += [_syn(t + 0.7, 40008, 8000), _synack(t + 0.71, 40008, 18000, 8001), _synack(t + 1.71, 40008, 18500, 8001)]
    # 40009: a SYN carrying data (TFO-like): not held compact
    frames.append(_syn(t + 0.8, 40009, 9000, payload=b"hello"))
    # 40010: SYN then the server's RST
    frames += [_syn(t + 0.9, 40010, 10000), _from_server(t + 0.91, 40010, 0, 10001, RST | ACK)]
    # 40011: SYN with ECN setup (ECE | CWR), answered
    frames += [_syn(t + 1.0, 40011, 11000, flags=SYN | 0x40 | 0x80), _synack(t + 1.01, 40011, 21000, 11001)]
    # 40012: IPv6 attempt, SYN twice, SYN-ACK
    v6 = [ipv6_tcp("2001:db8::1", "2001:db8::2", 40012, 80, 12000, 0, SYN, options=OPTS)] * 2
    frames += [(t + 1.2, ether(v6[0])), (t + 2.2, ether(v6[1]))]
    frames.append((t + 2.21, ether(ipv6_tcp("2001:db8::2", "2001:db8::1", 80, 40012, 22000, 12001, SYN | ACK, options=OPTS))))
    # 40013: SYN in a VLAN (an encapsulated flow is never compact) and a plain SYN-ACK
    frames.append((t + 1.3, ether(ipv4_tcp("10.0.0.1", "10.0.0.2", 40013, 80, 13000, 0, SYN, options=OPTS), vlans=[7])))
    frames.append(_synack(t + 1.31, 40013, 23000, 13001))
    # 40014: the SYN captured twice within a millisecond (loopback-like copy): a duplicate of a compact attempt
    frames += [_syn(t + 1.4, 40014, 14000, client="127.0.0.1", server="127.0.0.2")] * 1
    frames.append(_syn(t + 1.4002, 40014, 14000, client="127.0.0.1", server="127.0.0.2"))
    # 40016: SYN and SYN-ACK, a new SYN (another ISN) on the same ports, then the SYN-ACK
    # retransmitted for the first attempt (a straggler), and one answering the new ISN
    frames += [_syn(t + 0.05, 40016, 16000), _synack(t + 0.0502, 40016, 26000, 16001), _syn(t + 0.1, 40016, 16500)]
    frames += [_synack(t + 1.0502, 40016, 26000, 16001), _synack(t + 1.2, 40016, 26600, 16501)]
    # 40017: SYN, SYN-ACK, the client's RST (lost past the capture point: the server retransmits
    # its SYN-ACK 1 s and 3 s later), and in between a new SYN from the same port (held compact,
    # reused_from)
    frames += [_syn(t + 0.06, 40017, 17000), _synack(t + 0.0602, 40017, 27000, 17001), _from_client(t + 0.07, 40017, 17001, 0, RST)]
    frames += [_synack(t + 1.0602, 40017, 27000, 17001), _syn(t + 2.5, 40017, 17500), _synack(t + 3.0602, 40017, 27000, 17001)]
    # 40015: many unanswered SYNs from other clients (a small flood), some retransmitted
    for i in range(200):
        client = f"198.18.{i // 250}.{i % 250 + 1}"
        frames.append(_syn(t + 0.001 * i, 50000 + i, 100000 + i, client=client))
        if i % 3 == 0:
            frames.append(_synack(t + 0.001 * i + 0.0002, 50000 + i, 200000 + i, 100001 + i, client=client))
    frames.sort(key=lambda f: f[0])
    return frames


@pytest.fixture(scope="module")
def edge_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compact") / "edges.pcap"
    with open(path, "wb") as f:
        writer = PcapWriter(f)
        for ts, frame in _edge_cases():
            writer.write(ts, frame)
    return path


@pytest.fixture(scope="module")
def flood_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compact") / "flood.pcap"
    with open(path, "wb") as f:
        write_synflood(f, 3000, rate=1000.0, normal_every=500, seed=3)
    return path


def test_bundled_captures_same_output_with_and_without_compaction() -> None:
    kept = 0
    for path in sorted(PCAPS.glob("*.pcap*")):
        kept += _same_both_ways(path)
    assert kept > 0  # some bundled attempts went through the compact path


def test_edge_cases_same_output(edge_file: Path) -> None:
    assert _same_both_ways(edge_file) > 200


def test_flood_same_output(flood_file: Path) -> None:
    assert _same_both_ways(flood_file) >= 3000


@pytest.mark.parametrize("options", [{"max_conns": 50}, {"idle_timeout": 1.5, "sweep_idle": False}, {"dedup": False}, {"keep_payload": True}])
def test_options_same_output(edge_file: Path, options: dict[str, object]) -> None:
    """--max-conns and --split-idle turn compaction off (eviction and sweeps see every connection);
    --keep-duplicates and --payload keep it."""
    _same_both_ways(edge_file, **options)


def test_records_round_trip_segments() -> None:
    """A record gives back its segments field for field."""
    frames = [_syn(T0, 40001, 1000)[1], _synack(T0 + 0.5, 40001, 9000, 1001)[1], _syn(T0 + 1.0, 40001, 1000)[1]]
    from synscope.core.model import LinkType, RawFrame
    from synscope.read.decode import Decoder

    decoder = Decoder()
    segs = [decoder.decode(RawFrame(i + 1, T0 + i, LinkType.ETHERNET, data, len(data))) for i, data in enumerate(frames)]
    assert all(isinstance(s, Segment) for s in segs)
    key = segment_key(segs[0])  # type: ignore[arg-type]
    packed = attempts.pack_key(key)
    assert attempts.unpack_key(packed) == key
    record = attempts.new_record(7, 3, None, segs[0], attempts.from_first(segs[0], packed))  # type: ignore[arg-type]
    for seg in segs[1:]:
        more = attempts.extended(record, seg, attempts.from_first(seg, packed))  # type: ignore[arg-type]
        assert more is not None
        record = more
    assert attempts.header(record) == (7, 3, -1)
    fields = ("frame", "ts", "src", "dst", "sport", "dport", "seq", "ack", "flags", "win", "length", "ttl", "ip_id", "raw_options", "ecn", "pkttype", "csum")
    for got, want in zip(attempts.segments(packed, record), segs, strict=True):
        assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields]


def _half_open_tracker(count: int, compact: bool) -> tuple[int, Tracker]:
    """Peak bytes traced while a tracker holds ``count`` half-open attempts (a SYN and a SYN-ACK each)."""
    segs = []
    for i in range(count):
        client = bytes((198, 18, i >> 8 & 0xFF, i & 0xFF))
        server = bytes((192, 0, 2, 10))
        syn = Segment(2 * i + 1, T0 + i * 1e-4, client, server, 1024 + i % 60000, 443, i * 7919, 0, SYN, 64240, 0, 64, i & 0xFFFF, OPTS)
        synack = Segment(2 * i + 2, T0 + i * 1e-4 + 2e-5, server, client, 443, 1024 + i % 60000, i * 104729, i * 7919 + 1, SYN | ACK, 65160, 0, 64, 0, OPTS)
        segs += [syn, synack]
    gc.collect()
    tracemalloc.start()
    tracker = Tracker(compact_after=0 if compact else None)
    for i, seg in enumerate(segs):
        tracker.stamp = 2 * i + 1
        tracker.feed(seg)
        segs[i] = None  # type: ignore[call-overload]  # (the tracker alone holds what it keeps)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, tracker


def test_half_open_attempts_are_small() -> None:
    """20,000 half-open attempts (SYN and SYN-ACK) cost under 400 bytes each held compact, where
    full connections cost over ten times that."""
    count = 20_000
    peak, tracker = _half_open_tracker(count, True)
    assert len(tracker.attempts) == count and not tracker.table
    assert peak / count < 400, f"{peak / count:.0f} bytes per compact attempt"
    drained = list(tracker.drain())
    assert [c.id for c in drained] == list(range(1, count + 1))
    assert all(c.server.syn_count == 1 and c.client.syn_count == 1 for c in drained)


def test_compact_only_once_many_are_held() -> None:
    """The first ``compact_after`` attempts are full connections (an ordinary capture never pays
    for making one full later); the ones after are compact; drained in id order either way."""
    tracker = Tracker(compact_after=100)
    for i in range(300):
        client = bytes((198, 18, 0, i & 0xFF)) if i < 256 else bytes((198, 18, 1, i & 0xFF))
        tracker.stamp = 2 * i + 1
        tracker.feed(Segment(i + 1, T0 + i, client, bytes((192, 0, 2, 10)), 40000, 443, i, 0, SYN, 64240, 0, 64, 0, OPTS))
    assert len(tracker.table) == 100 and len(tracker.attempts) == 200
    assert [c.id for c in tracker.drain()] == list(range(1, 301))
