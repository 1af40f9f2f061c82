"""The JSON Lines writer's shortcuts for common shapes (a direction with no data, one RTT
sample, a recurring string) write the same text as the general object, on crafted edge cases
(tests/test_read_pcaps.py holds them equal on every bundled capture)."""

from __future__ import annotations

import json
import random

import pytest

from synscope.core.model import SYN, Segment, describe_key, parse_tcp_options
from synscope.read import jsonl
from synscope.read.analysis.engine import NEVER
from synscope.read.jsonl import compact, connection_line, connection_object
from synscope.read.pipeline import ConnReport
from tests.helpers import analyse

# (the first connection of a normal exchange: data both ways, RTT samples in both directions)
NORMAL = "normal.pcap"

RTT_CASES = [
    [],
    [0.0],
    [-0.0, 0.0],  # equal as numbers, not as text
    [0.0, -0.0],
    [2e-05],
    [0.000123, 0.000123, 0.000123],
    [0.001, 0.0005, 0.25],
    [1234.5678901],
    [float("inf")],
]


def _report() -> ConnReport:
    report = analyse(NORMAL)[0]
    assert report.analysis.facts[0].payload_bytes and report.analysis.facts[0].rtt_samples
    return report


def _same(report: ConnReport) -> None:
    for absolute in (False, True):
        assert connection_line(report, absolute) == compact(connection_object(report, absolute))


@pytest.mark.parametrize("samples", RTT_CASES, ids=[repr(s) for s in RTT_CASES])
def test_rtt_member_as_the_object_writes_it(samples: list[float]) -> None:
    report = _report()
    for facts in report.analysis.facts:
        facts.rtt_samples = list(samples)
    _same(report)


def test_directions_without_data_as_the_object_writes_them() -> None:
    """No data and nothing sent again is a constant run of members; each count that breaks the
    shape (a retransmission of a SYN, a loss count, bytes without a segment count) must leave it."""
    report = _report()
    fc, fs = report.analysis.facts
    lc, ls = report.analysis.loss
    for facts in (fc, fs):
        facts.payload_bytes = facts.data_segments = 0
        facts.first_data_ts = facts.last_data_ts = NEVER
        facts.retransmitted_segments = facts.retransmitted_bytes = facts.fast_retransmissions = 0
        facts.out_of_order = facts.duplicate_acks = 0
    lc.counts = [0] * len(jsonl.LOSS_NAMES)
    ls.counts = [0] * len(jsonl.LOSS_NAMES)
    _same(report)
    assert '"bytes":0,"data_segments":0,"retransmitted_segments":0' in connection_line(report)
    for name in ("retransmitted_segments", "retransmitted_bytes", "fast_retransmissions", "out_of_order", "duplicate_acks", "payload_bytes", "data_segments"):
        setattr(fc, name, 1)
        _same(report)
        setattr(fc, name, 0)
    for k in range(len(jsonl.LOSS_NAMES)):
        counts = [0] * len(jsonl.LOSS_NAMES)
        counts[k] = 2
        ls.counts = counts
        _same(report)
    ls.counts = [0] * len(jsonl.LOSS_NAMES)
    fs.zero_window_time, fs.max_idle = 0.5, 1.25
    _same(report)


def test_recurring_strings_are_escaped_as_json_and_the_table_stays_bounded() -> None:
    words = ["SYN", 'a "quoted" fact', "µs and ümlauts", "tab\there", ""] + [f"fact {n}" for n in range(jsonl.MAX_WORDS + 10)]
    for _ in range(2):
        for word in words:
            assert jsonl.word_text(word) == json.dumps(word)
    assert len(jsonl._WORDS) <= jsonl.MAX_WORDS


# SYN options as bytes: MSS; MSS + window scale; MSS + SACK-permitted + NOP + NOP; a malformed
# length; MSS + SACK-permitted + timestamps + NOP + window scale (twice, other timestamps)
OPTIONS = [
    b"",
    bytes.fromhex("020405b4"),
    bytes.fromhex("020405b4010303"),
    bytes.fromhex("020405b404020101"),
    bytes.fromhex("0205"),
    bytes.fromhex("020405b40402080a0000000100000000" + "01030307"),
    bytes.fromhex("020405b40402080a0000000200000000" + "01030307"),
]


def test_syn_options_text_is_the_options_described() -> None:
    for _ in range(2):  # (the second time from the table)
        for raw in OPTIONS:
            seg = Segment(1, 0.0, bytes(4), bytes(4), 1, 2, 0, 0, SYN, 1024, 0, raw_options=raw)
            assert jsonl._options_text(seg) == json.dumps(parse_tcp_options(raw).describe())
    for n in range(jsonl.MAX_WORDS + 10):
        raw = bytes.fromhex("0204") + n.to_bytes(2, "big")
        seg = Segment(1, 0.0, bytes(4), bytes(4), 1, 2, 0, 0, SYN, 1024, 0, raw_options=raw)
        assert jsonl._options_text(seg) == json.dumps(f"mss {n}")
    assert len(jsonl._OPTIONS_TEXT) <= jsonl.MAX_WORDS


# pieces of option bytes: every kind the parser knows, well formed and not, padding, the end marker
_OPTION_PIECES = [
    lambda rng: bytes([2, 4]) + rng.randrange(65536).to_bytes(2, "big"),
    lambda rng: bytes([3, 3, rng.choice((0, 7, 14, 15))]),
    lambda rng: bytes([4, 2]),
    lambda rng: bytes([8, 10]) + rng.randbytes(8),
    lambda rng: bytes([8, 10]) + rng.randbytes(8),
    lambda rng: bytes([8, rng.choice((2, 9, 11, 12))]) + rng.randbytes(rng.randrange(12)),  # a timestamp of another length
    lambda rng: bytes([5, 10]) + rng.randbytes(8),
    lambda rng: bytes([34, 2]),
    lambda rng: bytes([1]),
    lambda rng: bytes([0]),
    lambda rng: bytes([rng.choice((6, 30, 253)), 2]),
    lambda rng: rng.randbytes(rng.randrange(1, 4)),  # junk: a length past the end, below 2...
]


def test_syn_options_described_alike_share_a_key() -> None:
    """describe_key() zeroes only what the parser reads as timestamp values: options with one key
    are described alike, options that differ only in their timestamps' values share it, and the
    text looked up by it is the options described."""
    rng = random.Random(7)
    described: dict[bytes, str] = {}
    for _ in range(20_000):
        raw = b"".join(rng.choice(_OPTION_PIECES)(rng) for _ in range(rng.randrange(6)))[:40]
        text = parse_tcp_options(raw).describe()
        key = describe_key(raw)
        assert len(key) == len(raw)
        assert described.setdefault(key, text) == text, raw.hex()
        seg = Segment(1, 0.0, bytes(4), bytes(4), 1, 2, 0, 0, SYN, 1024, 0, raw_options=raw)
        assert jsonl._options_text(seg) == json.dumps(text), raw.hex()
    timestamped = bytes.fromhex("020405b40402080a") + rng.randbytes(8) + bytes.fromhex("01030307")
    assert describe_key(timestamped) == bytes.fromhex("020405b40402080a") + bytes(8) + bytes.fromhex("01030307")


def _random_time(rng: random.Random, second: int) -> float:
    """A capture time: mostly microseconds within ``second`` (whole milliseconds, whole seconds
    among them), sometimes nanoseconds, a time before 2**23 s, zero or a negative one."""
    pick = rng.randrange(10)
    if pick < 5:
        return (second * 10**6 + rng.randrange(10**6)) / 10**6
    if pick == 5:
        return (second * 10**6 + rng.randrange(1000) * 1000 * rng.randrange(2)) / 10**6
    if pick == 6:
        return (second * 10**9 + rng.randrange(10**9)) / 10**9
    if pick == 7:
        return rng.uniform(0, 2.0**23)
    if pick == 8:
        return rng.choice((0.0, -0.0, -1.5, 2.0**23, 2.0**32, 2.0**32 - 1e-6, 2.0**23 - 1e-6))
    return second + rng.randrange(10**6) / 1e6  # computed as the reader does


@pytest.mark.parametrize("seed", range(4))
def test_packet_members_as_the_object_writes_them(seed: int) -> None:
    """Each packet's members are written as the object's: times in and out of the microsecond
    form, repeating seconds and new ones, frame numbers with their thousands repeated or not,
    small and large numbers, repeating windows, any flags and analysis, notes and options."""
    rng = random.Random(seed)
    report = _report()
    notes = [None, ["FIN: client closes first"], ["server answers 36 µs after the SYN"], ['a "quoted" note', "tab\there"], [f"dup ACK #{seed}"]]
    for _ in range(20):
        second = rng.choice((1_700_000_000, 2**23, 2**32 - 1))
        for pkt in report.conn.timeline():
            seg = pkt.seg
            seg.ts = _random_time(rng, second + rng.randrange(2))
            seg.frame = rng.choice((seg.frame, rng.randrange(1000, 1100), rng.randrange(2**20), 999_999, 1_000_000))
            seg.length = rng.choice((0, 1, 1460, 2047, 2048, 65535))
            seg.seq = rng.randrange(2**32)
            seg.ack = rng.randrange(2**32)
            seg.flags = rng.choice((seg.flags, rng.randrange(0x200), 0x400 | SYN))  # beyond 9 bits too
            seg.win = rng.choice((seg.win, seg.win, 0, rng.randrange(65536)))
            pkt.analysis = rng.choice((0, 0, 1, rng.randrange(1 << 15)))
            pkt.notes = rng.choice(notes)
        _same(report)
