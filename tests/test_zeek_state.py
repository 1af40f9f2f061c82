"""Zeek's conn_state and history edge cases, each checked against what Zeek's own source does.

The sources quoted (zeek/zeek): src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc
(UpdateInactiveState, UpdateEstablishedState, UpdateClosedState), src/packet_analysis/protocol/tcp/TCP.cc
(TCPAnalyzer::WantConnection), src/Conn.cc (Connection::FlipRoles) and
base/protocols/conn/main.zeek (conn_state). Frames are built with scapy; nothing here is read
back from synscope's earlier output.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from synscope.core.model import RawFrame
from synscope.read.pipeline import ConnReport, Pipeline
from synscope.read.zeek_state import CLOSED, ESTABLISHED, RESET, endpoint_states

C, S = "198.18.1.2", "198.18.2.2"
CP, SP = 40000, 80


def frames(*spec: tuple[str, str, int, int, int]) -> list[RawFrame]:
    """(who: "c" or "s", flags, seq, ack, payload length) per packet, 10 ms apart."""
    out = []
    for i, (who, flags, seq, ack, n) in enumerate(spec):
        ip = IP(src=C, dst=S) if who == "c" else IP(src=S, dst=C)
        tcp = TCP(sport=CP, dport=SP, flags=flags, seq=seq, ack=ack) if who == "c" else TCP(sport=SP, dport=CP, flags=flags, seq=seq, ack=ack)
        data = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / tcp / Raw(b"x" * n))
        out.append(RawFrame(i + 1, 1_000_000.0 + i * 0.01, 1, data, len(data)))
    return out


def one(spec: list[tuple[str, str, int, int, int]]) -> ConnReport:
    pipe = Pipeline()
    for f in frames(*spec):
        pipe.feed(f)
    [r] = pipe.finish()
    return r


HANDSHAKE = [("c", "S", 100, 0, 0), ("s", "SA", 500, 101, 0), ("c", "A", 101, 501, 0), ("c", "PA", 101, 501, 10), ("s", "A", 501, 111, 0)]
BOTH_FINS = [("c", "FA", 111, 501, 0), ("s", "FA", 501, 112, 0), ("c", "A", 112, 502, 0)]


def test_rst_after_both_fins_keeps_sf() -> None:
    """UpdateClosedState: "If our peer was also closed, then don't change our state now on a
    RST, since this connection has already seen a FIN exchange" (the RST still adds R)."""
    r = one([*HANDSHAKE, *BOTH_FINS, ("c", "R", 112, 0, 0)])
    orig, resp = endpoint_states(r.conn)
    assert (orig.state, resp.state) == (CLOSED, CLOSED)
    assert r.verdict.conn_state == "SF"
    assert r.verdict.history == "ShADaFfR"


def test_fin_then_rst_then_the_peers_fin_is_a_normal_close() -> None:
    """UpdateEstablishedState: a FIN while the peer is RESET after CLOSED turns the peer back
    to CLOSED ("The peer sent a FIN followed by a RST ... this was actually normal termination")."""
    r = one([*HANDSHAKE, ("c", "FA", 111, 501, 0), ("c", "R", 112, 0, 0), ("s", "FA", 501, 112, 0)])
    orig, resp = endpoint_states(r.conn)
    assert (orig.state, orig.prev, resp.state) == (CLOSED, RESET, CLOSED)
    assert r.verdict.conn_state == "SF"


@pytest.mark.parametrize(
    ("tail", "state"),
    [
        ([("s", "FA", 501, 111, 0), ("c", "R", 111, 0, 0)], "RSTO"),  # the RST's sender had not closed: RESET
        ([("c", "FA", 111, 501, 0), ("c", "R", 112, 0, 0)], "RSTO"),  # FIN then RST, the peer never closed
        ([("c", "FA", 111, 501, 0), ("s", "R", 501, 0, 0)], "RSTR"),  # the peer resets a half-closed connection
    ],
    ids=["rst-after-peer-fin", "fin-rst-alone", "peer-rst-after-fin"],
)
def test_rst_without_a_fin_exchange_still_resets(tail: list, state: str) -> None:
    assert one([*HANDSHAKE, *tail]).verdict.conn_state == state


SYNACK_FIRST = [("s", "SA", 500, 101, 0), ("c", "A", 101, 501, 0), ("c", "PA", 101, 501, 10), ("s", "PA", 501, 111, 20), ("c", "A", 111, 521, 0)]


@pytest.mark.parametrize(
    ("tail", "state", "hist"),
    [
        ([], "S1", "^hADd"),
        ([("s", "FA", 521, 111, 0)], "S3", "^hADdf"),
        ([("c", "FA", 111, 521, 0), ("s", "FA", 521, 112, 0)], "SF", "^hADdFf"),
    ],
    ids=["open", "responder-fin", "both-fins"],
)
def test_synack_first_is_flipped_and_follows_data_and_fins(tail: list, state: str, hist: str) -> None:
    """WantConnection flips a connection that starts with a SYN-ACK from a likely server port
    (FlipRoles adds "^"); the originator's ACK then establishes it (UpdateInactiveState: "No SYN
    packet from originator but SYN/ACK from responder, and now a pure ACK ... establish the
    connection"), so the code follows the FINs: S1, S3, SF, not SHR."""
    r = one([*SYNACK_FIRST, *tail])
    orig, _ = endpoint_states(r.conn)
    assert orig.state in (ESTABLISHED, CLOSED)
    assert (r.verdict.conn_state, r.verdict.history) == (state, hist)


def test_shr_stays_for_an_originator_that_never_answered() -> None:
    """conn_state: ``rs == TCP_CLOSED`` with the originator inactive is SHR."""
    r = one([("s", "SA", 500, 101, 0), ("s", "FA", 501, 101, 0)])
    assert (r.verdict.conn_state, r.verdict.history) == ("SHR", "^hf")


def test_midstream_connection_closed_by_both_is_sf() -> None:
    """No SYN at all: each endpoint is PARTIAL after its first packet, and a FIN moves PARTIAL to
    CLOSED like ESTABLISHED (UpdateEstablishedState serves both): SF, flipped when the first
    packet came from the server's port."""
    spec = [("s", "PA", 501, 111, 20), ("c", "A", 111, 521, 0), ("c", "FA", 111, 521, 0), ("s", "FA", 521, 112, 0), ("c", "A", 112, 522, 0)]
    r = one(spec)
    assert r.verdict.conn_state == "SF"
    assert r.verdict.history.startswith("^")


def test_rstos0_needs_the_history_zeek_matches() -> None:
    """conn_state: an originator RESET with the responder inactive is RSTOS0 only when the
    history matches /^?S[^HAFGIQ]*R.*/ (a SYN then an RST, nothing else from it first)."""
    assert one([("c", "S", 100, 0, 0), ("c", "R", 101, 0, 0)]).verdict.conn_state == "RSTOS0"
    # a FIN before the RST: CLOSED then RESET (the peer had not closed), history SFR: OTH
    assert one([("c", "S", 100, 0, 0), ("c", "FA", 101, 0, 0), ("c", "R", 102, 0, 0)]).verdict.conn_state == "OTH"


# ------------------------------------------------------------------ content gaps: g / G

# the client's data 101..110 is seen, 111..120 is not (the capture missed it), then 121..130
MISSED = [("c", "S", 100, 0, 0), ("s", "SA", 500, 101, 0), ("c", "A", 101, 501, 0), ("c", "PA", 101, 501, 10)]


def test_data_acked_but_never_seen_is_a_gap_of_the_sender() -> None:
    """TCP_Reassembler::AckReceived → TrimToSeq → Undelivered → Gap: the server's ACK of 131
    covers 10 bytes never seen; both endpoints established, so the originator's history gets G
    (TCP_Endpoint::Gap), after the letters of the acknowledging packet."""
    r = one([*MISSED, ("c", "PA", 121, 501, 10), ("s", "A", 501, 131, 0)])
    assert r.verdict.history == "ShADaG"


def test_the_responders_gap_is_g_and_a_hole_filled_before_the_ack_is_none() -> None:
    spec = [*HANDSHAKE, ("s", "PA", 501, 111, 10), ("s", "PA", 521, 111, 10), ("c", "A", 111, 531, 0)]
    assert one(spec).verdict.history == "ShADadg"
    # the missing segment arrives (out of order) before the ACK: nothing was missed
    spec = [*HANDSHAKE, ("s", "PA", 511, 111, 10), ("s", "PA", 501, 111, 10), ("c", "A", 111, 521, 0)]
    assert one(spec).verdict.history == "ShADad"


def test_no_gap_letter_when_the_ack_comes_with_an_rst_or_in_a_partial_connection() -> None:
    """Gap() writes the letter only when both endpoints are established or cleanly closing
    (is_clean: ESTABLISHED, or CLOSED straight from ESTABLISHED): not after an RST, not for
    PARTIAL endpoints of a connection picked up mid-stream."""
    assert "g" not in one([*MISSED, ("s", "RA", 501, 121, 0)]).verdict.history.lower()
    midstream = [("c", "PA", 101, 501, 10), ("s", "A", 501, 111, 0), ("c", "PA", 121, 501, 10), ("s", "A", 501, 131, 0)]
    assert "g" not in one(midstream).verdict.history.lower()


def test_a_gap_revealed_by_a_fin_while_cleanly_closing_counts() -> None:
    """The FIN's own ACK: its sender is CLOSED straight from ESTABLISHED (cleanly closing)."""
    r = one([*MISSED, ("s", "FA", 501, 121, 0)])
    assert r.verdict.history == "ShADfG"


def test_loss_the_capture_saw_is_no_gap() -> None:
    """A segment lost after the capture point and sent again is data the capture saw: Zeek
    writes t, not g (tshark's "previous segment not captured" is another thing)."""
    spec = [*HANDSHAKE, ("s", "PA", 501, 111, 10), ("s", "PA", 511, 111, 10), ("c", "A", 111, 511, 0), ("s", "PA", 511, 111, 10)]
    spec.append(("c", "A", 111, 521, 0))
    assert one(spec).verdict.history == "ShADadt"
