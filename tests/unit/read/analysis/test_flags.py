"""One test per Wireshark ``tcp.analysis.*`` detector (read/analysis/flags.py), driven through
the tracker and the analysis engine with a few hand-written segments.

Thresholds are written here as Wireshark defines them (20 ms, two duplicate ACKs, 3 ms, the
handshake RTT), never read from the code's constants: each has a case exactly at the threshold
and one just inside it, so widening one, or turning a ``<`` into ``<=``, fails a test.
Times are chosen so that the differences compared are exact in binary floating point
(the reference packet at t = 0, or dyadic fractions such as 1/64 s).
"""

from __future__ import annotations

from synscope.core.model import ACK, FIN, PSH, RST, SYN
from synscope.read.analysis.flags import SeqState, is_keep_alive, is_zero_window_probe
from tests.craft import tcp_options
from tests.unit.read.flow import WIN, Flow, names

DATA = PSH | ACK


def established(**kw: object) -> Flow:
    """A flow after its handshake (at t = -1.0, handshake RTT 1/64 s)."""
    f = Flow(**kw)  # type: ignore[arg-type]
    f.handshake()
    return f


# ------------------------------------------------------------------ 1 zero_window_probe
def test_zero_window_probe_is_one_byte_at_next_seq_into_a_zero_window() -> None:
    f = established()
    f.s(-0.5, ACK, win=0)
    probe = f.c(-0.4, DATA, 1)
    assert names(probe) == ["zero_window_probe"]
    # a probe does not advance the sequence space: the next one, same seq, is a probe again
    again = f.c(-0.2, DATA, 1, seq=probe.seg.seq)
    assert names(again) == ["zero_window_probe"]


def test_one_byte_into_an_open_window_is_no_probe() -> None:
    f = established()
    f.s(-0.5, ACK, win=2)
    assert names(f.c(-0.4, DATA, 1)) == []


def test_two_bytes_into_a_zero_window_are_no_probe() -> None:
    f = established()
    f.s(-0.5, ACK, win=0)
    assert "zero_window_probe" not in names(f.c(-0.4, DATA, 2))


# ------------------------------------------------------------------------ 2 zero_window
def test_zero_window_is_a_zero_window_field_without_syn_fin_rst() -> None:
    f = established()
    assert names(f.s(-0.5, ACK, win=0)) == ["zero_window"]
    assert names(f.s(-0.4, ACK, win=1)) == ["window_update"]
    assert "zero_window" not in names(f.s(-0.3, RST | ACK, win=0))


def test_a_fin_with_window_zero_is_no_zero_window() -> None:
    f = established()
    assert "zero_window" not in names(f.s(-0.5, FIN | ACK, win=0))


# ----------------------------------------------------------------------- 3 lost_segment
def test_lost_segment_starts_beyond_the_next_expected_seq() -> None:
    f = established()
    nxt = f.nxt[True]
    assert names(f.c(-0.5, DATA, 100, seq=nxt)) == []  # exactly the next byte: nothing missing
    assert names(f.c(-0.4, DATA, 100, seq=nxt + 101)) == ["lost_segment"]  # one byte beyond it


def test_an_rst_beyond_the_next_seq_is_no_lost_segment() -> None:
    f = established()
    assert names(f.c(-0.5, RST | ACK, seq=f.nxt[True] + 500)) == []


# ------------------------------------------------------------------------- 4 keep_alive
def test_keep_alive_is_zero_or_one_byte_one_before_the_next_seq() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK)
    nxt = f.nxt[True]
    assert names(f.c(-0.5, ACK, seq=nxt - 1)) == ["keep_alive"]
    assert names(f.c(-0.4, DATA, 1, seq=nxt - 1)) == ["keep_alive"]  # Linux's one garbage byte: not a retransmission


def test_two_before_the_next_seq_is_no_keep_alive() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK)
    nxt = f.nxt[True]
    assert "keep_alive" not in names(f.c(-0.5, ACK, seq=nxt - 2))
    assert "keep_alive" not in names(f.c(-0.4, DATA, 2, seq=nxt - 1))
    assert "keep_alive" not in names(f.c(-0.3, FIN | ACK, seq=nxt - 1))


# ---------------------------------------------------------------------- 5 window_update
def test_window_update_is_a_bare_ack_with_a_new_nonzero_window() -> None:
    f = established()
    f.s(-0.5, ACK)
    assert names(f.s(-0.4, ACK, win=WIN + 1000)) == ["window_update"]
    # the same window again is a duplicate ACK, not another update
    assert names(f.s(-0.3, ACK, win=WIN + 1000)) == ["duplicate_ack"]


def test_a_new_window_with_a_new_ack_is_no_window_update() -> None:
    f = established()
    f.s(-0.5, ACK)
    f.c(-0.45, DATA, 100)
    assert names(f.s(-0.4, ACK, win=WIN + 1000)) == []


# ------------------------------------------------------------------------ 6 window_full
def test_window_full_reaches_exactly_the_advertised_right_edge() -> None:
    f = established()
    f.s(-0.5, ACK, win=1000)
    assert names(f.c(-0.4, DATA, 999)) == []  # one byte short of the edge
    f2 = established()
    f2.s(-0.5, ACK, win=1000)
    assert names(f2.c(-0.4, DATA, 1000)) == ["window_full"]


def test_window_full_uses_the_scaled_window() -> None:
    """The window field (250) counts in units of 2^2 once both SYNs carry window scale 2."""
    f = Flow()
    f.handshake(options=tcp_options(ts=None, wscale=2))
    f.s(-0.5, ACK, win=250)
    assert names(f.c(-0.4, DATA, 1000)) == ["window_full"]
    g = Flow()
    g.handshake(options=tcp_options(ts=None, wscale=2))
    g.s(-0.5, ACK, win=250)
    assert names(g.c(-0.4, DATA, 250)) == []


# ---------------------------------------------------------------------- 7 keep_alive_ack
def test_keep_alive_ack_answers_a_keep_alive() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK)
    f.c(-0.5, ACK, seq=f.nxt[True] - 1)  # keep-alive
    assert names(f.s(-0.4, ACK)) == ["keep_alive_ack"]


def test_the_same_ack_without_a_keep_alive_before_it_is_a_duplicate_ack() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK)
    f.c(-0.5, ACK)  # a plain ACK, at the next seq
    assert names(f.s(-0.4, ACK)) == ["duplicate_ack"]


# ---------------------------------------------------------------- 8 zero_window_probe_ack
def test_zero_window_probe_ack_repeats_the_ack_and_the_zero_window() -> None:
    f = established()
    f.s(-0.5, ACK, win=0)
    probe = f.c(-0.4, DATA, 1)
    assert names(f.s(-0.3, ACK, win=0, ack=probe.seg.seq)) == ["zero_window", "zero_window_probe_ack"]
    probe = f.c(-0.2, DATA, 1, seq=probe.seg.seq)
    # the probe byte taken in (ack one further) is still the probe's ACK (and, since a probe
    # does not advance the sequence space, an ACK of a byte not seen)
    assert names(f.s(-0.1, ACK, win=0, ack=probe.seg.seq + 1)) == ["ack_lost_segment", "zero_window", "zero_window_probe_ack"]


def test_an_ack_two_past_the_probe_is_no_probe_ack() -> None:
    f = established()
    f.s(-0.5, ACK, win=0)
    probe = f.c(-0.4, DATA, 1)
    assert "zero_window_probe_ack" not in names(f.s(-0.3, ACK, win=0, ack=probe.seg.seq + 2))


# ---------------------------------------------------------------------- 9 duplicate_ack
def test_duplicate_acks_are_numbered_and_point_at_the_original() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    first = f.s(-0.8, ACK)
    dups = [f.s(t, ACK) for t in (-0.7, -0.6)]
    assert names(first) == []
    assert [names(d) for d in dups] == [["duplicate_ack"], ["duplicate_ack"]]
    assert [(d.dupack_num, d.dupack_frame) for d in dups] == [(1, first.seg.frame), (2, first.seg.frame)]


def test_an_ack_with_data_or_another_window_is_no_duplicate() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK)
    assert "duplicate_ack" not in names(f.s(-0.7, DATA, 10))
    assert "duplicate_ack" not in names(f.s(-0.6, ACK, win=WIN - 1))


# ------------------------------------------------------------------- 10 ack_lost_segment
def test_ack_lost_segment_acks_beyond_what_was_seen() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    assert names(f.s(-0.8, ACK)) == []  # exactly what was sent
    f.c(-0.7, DATA, 100)
    assert names(f.s(-0.6, ACK, ack=f.nxt[True] + 1)) == ["ack_lost_segment"]  # one byte beyond it


# ------------------------------------------------------------- 11 spurious_retransmission
def test_spurious_retransmission_resends_data_already_acked() -> None:
    f = established()
    orig = f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK)
    again = f.c(-0.5, DATA, 100, seq=orig.seg.seq)
    assert names(again) == ["retransmission", "spurious_retransmission"]  # tshark sets both


def test_a_resend_one_byte_beyond_the_ack_is_not_spurious() -> None:
    f = established()
    orig = f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK, ack=orig.seg.seq + 99)
    assert names(f.c(-0.5, DATA, 100, seq=orig.seg.seq)) == ["retransmission"]


# ---------------------------------------------------------------- fast_retransmission
def fast_setup(dupacks: int, cisn: int = 1000) -> tuple[Flow, int]:
    """Client sends A, B, C; B is lost; the server acks A, then repeats that ACK ``dupacks``
    times, the last at t = 0. Returns the flow and B's seq."""
    f = established(cisn=cisn)
    f.c(-0.9, DATA, 100)  # A
    b = f.nxt[True]
    f.c(-0.85, DATA, 100)  # B (lost on the way)
    f.s(-0.8, ACK, ack=b)  # ACKs A
    f.c(-0.5, DATA, 100)  # C
    times = [-0.1 * i for i in range(dupacks - 1, -1, -1)]
    dups = [f.s(t, ACK, ack=b) for t in times]
    assert [d.dupack_num for d in dups] == list(range(1, dupacks + 1))
    return f, b


def test_fast_retransmission_within_20_ms_of_the_second_duplicate_ack() -> None:
    f, b = fast_setup(2)
    assert names(f.c(0.0199, DATA, 100, seq=b)) == ["retransmission", "fast_retransmission"]


def test_fast_retransmission_across_the_sequence_wrap() -> None:
    """B starts just below 2^32 and ends past zero; C and the ACKs are numbered after the wrap."""
    f, b = fast_setup(2, cisn=(1 << 32) - 150)
    assert b > 0xFFFFFF00 and f.nxt[True] < 1000
    assert names(f.c(0.0199, DATA, 100, seq=b)) == ["retransmission", "fast_retransmission"]


def test_exactly_20_ms_after_the_duplicate_ack_is_no_longer_fast() -> None:
    f, b = fast_setup(2)
    assert names(f.c(0.020, DATA, 100, seq=b)) == ["retransmission"]


def test_one_duplicate_ack_is_not_enough_for_fast_retransmission() -> None:
    f, b = fast_setup(1)
    assert names(f.c(0.001, DATA, 100, seq=b)) == ["retransmission"]


def test_fast_retransmission_is_of_the_segment_the_duplicates_ask_for() -> None:
    f, b = fast_setup(3)
    assert names(f.c(0.001, DATA, 100, seq=b + 100)) == ["retransmission"]  # C again, not B


# ------------------------------------------------------------------------ out_of_order
def midstream_gap(t_hole: float) -> list[str]:
    """No handshake (so no RTT): A, then C (B missing) at t = 0, then B at ``t_hole``."""
    f = Flow()
    a = f.c(-1.0, DATA, 100)
    f.c(0.0, DATA, 100, seq=a.seg.seq + 200)
    return names(f.c(t_hole, DATA, 100, seq=a.seg.seq + 100))


def test_out_of_order_within_3_ms_when_the_rtt_is_unknown() -> None:
    assert midstream_gap(0.0029) == ["out_of_order"]


def test_exactly_3_ms_after_the_highest_segment_is_a_retransmission() -> None:
    assert midstream_gap(0.003) == ["retransmission"]


def handshake_gap(gap: float) -> list[str]:
    """Handshake RTT 1/64 s; A at 0.25, C (B missing) at 0.5, then B ``gap`` later."""
    f = established()
    a = f.c(0.25, DATA, 100)
    f.c(0.5, DATA, 100, seq=a.seg.seq + 200)
    return names(f.c(0.5 + gap, DATA, 100, seq=a.seg.seq + 100))


def test_out_of_order_threshold_is_the_handshake_rtt_when_known() -> None:
    assert handshake_gap(1 / 64 - 1 / 1024) == ["out_of_order"]
    assert handshake_gap(1 / 256) == ["out_of_order"]  # past the 3 ms default, inside the RTT


def test_exactly_one_handshake_rtt_after_the_highest_segment_is_a_retransmission() -> None:
    assert handshake_gap(1 / 64) == ["retransmission"]


def test_a_segment_ending_exactly_at_the_next_seq_is_a_retransmission_however_soon() -> None:
    """The last segment sent again right away is a retransmission (Wireshark: the hole it fills
    would end at nextseq), not reordering."""
    f = Flow()
    a = f.c(-1.0, DATA, 100)
    last = f.c(0.0, DATA, 100, seq=a.seg.seq + 100)
    assert names(f.c(0.001, DATA, 100, seq=last.seg.seq)) == ["retransmission"]


# ---------------------------------------------------------------------- retransmission
def test_retransmission_carries_the_time_since_the_original() -> None:
    f = established()
    orig = f.c(0.0, DATA, 100)
    again = f.c(0.25, DATA, 100, seq=orig.seg.seq)
    assert names(again) == ["retransmission"]
    assert again.rto == 0.25


def test_a_retransmitted_syn_is_a_retransmission_of_the_same_attempt() -> None:
    f = Flow()
    syn = f.c(0.0, SYN)
    again = f.c(1.0, SYN, seq=syn.seg.seq)
    assert names(again) == ["retransmission"]
    assert f.tracker.reused == 0 and f.conn is not None and f.conn.id == 1


# ------------------------------------------------------------------------ reused_ports
def closed_flow() -> Flow:
    f = established()
    f.c(-0.5, FIN | ACK)
    f.s(-0.4, FIN | ACK)
    f.c(-0.3, ACK)
    return f


def test_reused_ports_a_new_syn_after_the_connection_closed() -> None:
    f = closed_flow()
    f.nxt[True] = 777_000
    syn = f.c(0.0, SYN)
    assert names(syn) == ["reused_ports"]
    assert f.conn is not None and (f.conn.id, f.conn.reused_from) == (2, 1)


def test_reused_ports_a_new_isn_while_the_old_connection_is_open() -> None:
    f = established()
    f.c(-0.5, DATA, 100)
    f.nxt[True] = 777_000
    assert names(f.c(0.0, SYN)) == ["reused_ports"]
    assert f.tracker.reused == 1


def test_the_first_connection_on_a_4_tuple_has_no_reused_ports() -> None:
    f = Flow()
    assert names(f.c(0.0, SYN)) == []


# --------------------------------------------- the predicates alone (the engine pre-filters them)
def seq_states(nextseq: int, rev_window: int) -> tuple[SeqState, SeqState]:
    fwd, rev = SeqState(), SeqState()
    fwd.nextseq, rev.window = nextseq, rev_window
    return fwd, rev


def test_is_zero_window_probe_takes_exactly_one_byte() -> None:
    fwd, rev = seq_states(1000, 0)
    assert [is_zero_window_probe(n, 1000, fwd, rev) for n in (0, 1, 2)] == [False, True, False]


def test_is_keep_alive_takes_zero_or_one_byte() -> None:
    fwd, _ = seq_states(1000, 0)
    assert [is_keep_alive(n, 999, ACK, fwd) for n in (0, 1, 2)] == [True, True, False]
    fwd.nextseq = 0  # one before zero is the top of the space
    assert is_keep_alive(0, 0xFFFFFFFF, ACK, fwd)


# -------------------------------------------------------------- the cascade's order
def test_a_zero_window_probe_ends_the_forward_checks() -> None:
    """Wireshark stops at a probe: its own zero window is not also reported."""
    f = established()
    f.s(-0.5, ACK, win=0)
    assert names(f.c(-0.4, DATA, 1, win=0)) == ["zero_window_probe"]


def test_a_keep_alive_is_never_also_a_retransmission() -> None:
    f = established()
    f.c(-0.9, DATA, 100)
    f.s(-0.8, ACK)
    assert "retransmission" not in names(f.c(-0.5, DATA, 1, seq=f.nxt[True] - 1))


def test_a_lost_segment_and_an_acked_unseen_one_can_be_on_one_packet() -> None:
    f = established()
    f.s(-0.9, DATA, 100)
    f.c(-0.8, DATA, 100, ack=f.nxt[False] + 50, seq=f.nxt[True] + 10)
    assert names(f.conn.packets[-1]) == ["lost_segment", "ack_lost_segment"]  # type: ignore[union-attr]
