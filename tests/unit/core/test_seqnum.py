"""Sequence arithmetic modulo 2^32 (synscope.core.seqnum), above all across the wrap.

A sender whose ISN is near 2^32 - 1 crosses zero after a few bytes; every comparison the
tracker and the flag detectors make must still read "later" as later there, or a healthy
transfer shows up as a storm of retransmissions (see pcaps/wraparound.pcap).
"""

from __future__ import annotations

import pytest

from synscope.core.model import ACK, FIN, PSH, SYN, Segment
from synscope.core.seqnum import HALF, MASK, MOD, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from synscope.read.tracker import Tracker

TOP = MOD - 1  # the last sequence number before the wrap


def test_constants_are_those_of_a_32_bit_space() -> None:
    assert (MOD, MASK, HALF) == (1 << 32, 0xFFFFFFFF, 1 << 31)


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [
        (5, 3, 2),
        (3, 5, -2),
        (0, TOP, 1),  # one past the top is zero: one byte later
        (TOP, 0, -1),
        (10, TOP - 9, 20),  # a span that straddles the wrap
        (TOP - 9, 10, -20),
        (7, 7, 0),
        (HALF - 1, 0, HALF - 1),  # the largest forward distance
        (HALF, 0, -HALF),  # exactly half way round reads as behind (RFC 1982's undefined case, fixed one way)
        (HALF + 1, 0, -(HALF - 1)),
    ],
)
def test_seq_diff_is_the_signed_distance_modulo_2_32(a: int, b: int, diff: int) -> None:
    assert seq_diff(a, b) == diff


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 2),
        (TOP, 0),  # before the wrap comes before after it
        (TOP - 1000, 1000),
        (0, HALF - 1),  # as far forward as still counts as "after"
        (HALF + 1, 0),  # just past half way round: behind
    ],
)
def test_comparisons_agree_when_a_comes_before_b(a: int, b: int) -> None:
    assert seq_lt(a, b) and seq_le(a, b)
    assert not seq_gt(a, b) and not seq_ge(a, b)
    assert seq_gt(b, a) and seq_ge(b, a)
    assert not seq_lt(b, a) and not seq_le(b, a)


@pytest.mark.parametrize("a", [0, 1, HALF - 1, HALF, TOP])
def test_equal_numbers_are_le_and_ge_but_not_lt_or_gt(a: int) -> None:
    assert seq_le(a, a) and seq_ge(a, a)
    assert not seq_lt(a, a) and not seq_gt(a, a)


def test_exactly_half_way_round_reads_as_behind_both_ways() -> None:
    """2^31 apart is RFC 1982's undefined case; the helpers settle it as "before" either way
    round (never "after"), which pins the boundary of the HALF comparisons."""
    assert seq_lt(HALF, 0) and seq_lt(0, HALF)
    assert not seq_gt(HALF, 0) and not seq_gt(0, HALF)
    assert not seq_ge(HALF, 0) and seq_le(HALF, 0)


def test_plain_integer_order_is_wrong_across_the_wrap_and_ours_is_not() -> None:
    """The bug these helpers exist for: 0 < 2^32 - 1 as integers, but 0 follows it."""
    assert 0 < TOP
    assert seq_gt(0, TOP) and seq_lt(TOP, 0)


@pytest.mark.parametrize(("a", "n", "want"), [(TOP, 1, 0), (TOP, 2, 1), (TOP - 5, 10, 4), (5, -10, TOP - 4), (0, MOD, 0), (123, 0, 123)])
def test_seq_add_wraps(a: int, n: int, want: int) -> None:
    assert seq_add(a, n) == want


# ------------------------------------------------------- relative numbers across the wrap
CLIENT, SERVER = bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2])
C_ISN = TOP - 2  # client data crosses zero after two bytes
S_ISN = TOP  # server's SYN-ACK itself takes the last number: its first data byte is seq 0


def _seg(frame: int, t: float, from_client: bool, seq: int, ack: int, flags: int, length: int = 0) -> Segment:
    src, dst, sport, dport = (CLIENT, SERVER, 40000, 80) if from_client else (SERVER, CLIENT, 80, 40000)
    return Segment(frame, t, src, dst, sport, dport, seq & MASK, ack & MASK, flags, 64000, length)


def test_relative_seq_and_ack_count_on_across_the_wrap() -> None:
    """Relative numbers (what the timeline and JSON show) keep counting up as the absolute ones
    wrap to zero: 1, 101, 201 rather than 1, 4294967197, ...; next_seq / highest_ack too."""
    tracker = Tracker()
    segs = [
        _seg(1, 0.000, True, C_ISN, 0, SYN),
        _seg(2, 0.010, False, S_ISN, C_ISN + 1, SYN | ACK),
        _seg(3, 0.020, True, C_ISN + 1, S_ISN + 1, ACK),
        _seg(4, 0.030, True, C_ISN + 1, S_ISN + 1, PSH | ACK, 100),  # seq TOP-1: bytes run over the wrap
        _seg(5, 0.040, False, S_ISN + 1, C_ISN + 101, ACK),  # acks 98 (absolute)
        _seg(6, 0.050, True, C_ISN + 101, S_ISN + 1, PSH | ACK, 100),
        _seg(7, 0.060, False, S_ISN + 1, C_ISN + 201, PSH | ACK, 50),
        _seg(8, 0.070, True, C_ISN + 201, S_ISN + 51, FIN | ACK),
    ]
    for seg in segs:
        conn = tracker.feed(seg)
    assert conn is not None
    c, s = conn.client, conn.server
    assert segs[5].seq < segs[3].seq  # the absolute numbers did wrap
    rel = [(conn.side(p.dir).rel_seq(p.seg.seq), (s if p.dir == 0 else c).rel_seq(p.seg.ack)) for p in conn.packets]
    assert rel[3:] == [(1, 1), (1, 101), (101, 1), (1, 201), (201, 51)]
    assert c.rel_seq(c.next_seq) == 202  # 200 bytes and a FIN
    assert s.rel_seq(c.highest_ack) == 51
    assert c.fin_seq is not None and c.rel_seq(c.fin_seq) == 201
    # the one packet sent later but numbered lower (as integers) did not move next_seq backwards
    assert seq_gt(c.next_seq, C_ISN)


def test_a_mid_stream_pickup_just_before_the_wrap_starts_at_relative_one() -> None:
    """Without a SYN the first byte seen is relative 1 (as in Wireshark), also when it sits at the top."""
    tracker = Tracker()
    conn = tracker.feed(_seg(1, 0.0, True, TOP, 5000, PSH | ACK, 10))
    conn = tracker.feed(_seg(2, 0.1, True, TOP + 10, 5000, PSH | ACK, 10))
    assert conn is not None
    assert [conn.client.rel_seq(p.seg.seq) for p in conn.packets] == [1, 11]
    assert conn.client.next_seq == 19  # (TOP + 20) mod 2^32
