"""The JSON Lines writer's shortcuts for common shapes (a direction with no data, one RTT
sample, a recurring string) write the same text as the general object, on crafted edge cases
(tests/test_read_pcaps.py holds them equal on every bundled capture)."""

from __future__ import annotations

import json

import pytest

from synscope.core.model import SYN, Segment, parse_tcp_options
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
# length; MSS + SACK-permitted + timestamps + NOP + window scale (too long to be remembered)
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
