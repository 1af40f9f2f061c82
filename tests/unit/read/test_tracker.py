"""The tracker as a playbook: segments in, connections and their state out.

Roles (who is the client), epochs on one 4-tuple (a new ISN, or a SYN after FIN/RST, is a
new connection), the RFC 9293 state each side is left in, the handshake RTT, and pick-up
in the middle of a stream. No capture file, no decoder: Segment records straight in.
"""

from __future__ import annotations

import pytest

from synscope.core.model import ACK, FIN, PSH, RST, SYN
from synscope.read.tracker import C2S, S2C, Tracker
from tests.craft import tcp_options
from tests.unit.read.playbook import A, B, Conn, Playbook

DATA = PSH | ACK
# A is 198.18.1.2:40000, B is 198.18.2.2:80; A's ISN 1000, B's 5000
A_SYN = A(SYN, 1000)
B_SYNACK = B(SYN | ACK, 5000, 1001)
A_ACK = A(ACK, 1001, 5001)
STEP1 = 1 / 128  # the playbook's first default time


def handshake(pb: Playbook, conn: int = 1) -> Playbook:
    return pb >> A_SYN >> B_SYNACK >> A_ACK << Conn(conn, client="A", states=("ESTABLISHED", "ESTABLISHED"))


# ------------------------------------------------------------------------------ roles
def test_the_sender_of_the_syn_is_the_client() -> None:
    assert (
        Playbook()
        >> A_SYN
        << Conn(1, client="A", states=("SYN-SENT", "unknown"), roles_guessed=False, midstream=False)
        >> B_SYNACK
        << Conn(1, client="A", states=("SYN-SENT", "SYN-RECEIVED"))
        >> A_ACK
        << Conn(1, client="A", states=("ESTABLISHED", "ESTABLISHED"), client__isn=1000, server__isn=5000)
    )


def test_the_syn_sender_is_the_client_whatever_the_ports_and_addresses() -> None:
    """Host B (the higher address) on an ephemeral port opens to A's port 22: B is the client."""
    assert Playbook() >> B(SYN, 7, ports=(22, 50000)) << Conn(1, client="B", states=("SYN-SENT", "unknown"), server__port=22)


def test_a_syn_ack_seen_first_makes_its_sender_the_server() -> None:
    """The capture missed the SYN: the SYN-ACK's sender is still the server, not a guess. Nothing
    from the client is in the capture, so neither side's state is known: the client's ACK may have
    gone the way its SYN went (asymmetric-open.pcap: the server had accepted the connection)."""
    assert Playbook() >> B_SYNACK << Conn(1, client="A", roles_guessed=False, midstream=False, states=("unknown", "unknown"))


@pytest.mark.parametrize(
    ("ports", "client"),
    [
        ((40000, 80), "A"),  # B sends from a well-known port: B is the server
        ((80, 40000), "B"),  # A sits on the well-known port
        ((40000, 40001), "B"),  # both ephemeral: the lower port serves
        ((40001, 40000), "A"),
        ((32767, 32768), "B"),  # 32768 is the first ephemeral port
        ((32768, 32767), "A"),
    ],
)
def test_mid_stream_the_lower_well_known_port_is_the_server(ports: tuple[int, int], client: str) -> None:
    assert Playbook() >> B(DATA, 5000, 1000, 10, ports=ports) << Conn(1, client=client, roles_guessed=True, midstream=True)


def test_simultaneous_open_stays_one_connection() -> None:
    """Both send a SYN; the second SYN is the other side's, not a new attempt, and the SYN-ACK
    that answers with the same ISN is its first answer, not a retransmission (RFC 9293 3.5)."""
    assert (
        Playbook()
        >> A_SYN
        >> B(SYN, 5000)
        << Conn(1, client="A", client__syn_count=1, server__syn_count=1, server__isn=5000, simultaneous_open=True)
        >> B(SYN | ACK, 5000, 1001)
        << Conn(1, server__syn_count=1)
    )


# ----------------------------------------------------------------------------- epochs
def test_a_retransmitted_syn_stays_in_its_attempt() -> None:
    assert Playbook() >> A_SYN >> A(SYN, 1000, t=1.0) << Conn(1, client__syn_count=2, client__syn_times=[STEP1, 1.0], reused_from=None)


def test_a_syn_with_a_new_isn_is_a_new_connection() -> None:
    pb = handshake(Playbook())
    assert pb >> A(SYN, 90000) << Conn(2, client="A", reused_from=1, states=("SYN-SENT", "unknown"))
    assert pb.tracker.reused == 1


def test_a_syn_ack_with_a_new_isn_is_a_new_connection() -> None:
    pb = handshake(Playbook())
    assert pb >> B(SYN | ACK, 9999, 1001) << Conn(2, client="A", reused_from=1)


def test_a_repeated_syn_ack_with_the_same_isn_stays() -> None:
    pb = handshake(Playbook())
    assert pb >> B_SYNACK << Conn(1, server__syn_count=2)


@pytest.mark.parametrize(
    "ending",
    [
        [A(FIN | ACK, 1001, 5001), B(FIN | ACK, 5001, 1002), A(ACK, 1002, 5002)],
        [B(RST | ACK, 5001, 1001)],
    ],
    ids=["fin", "rst"],
)
def test_after_fin_or_rst_a_syn_from_the_former_server_is_a_new_connection(ending: list) -> None:
    """The former server never sent a SYN (it has no ISN to compare): its SYN is a new attempt only
    because the connection is over; roles follow the new SYN."""
    pb = handshake(Playbook())
    for event in ending:
        pb = pb >> event
    assert pb >> B(SYN, 123, ports=(40000, 80)) << Conn(2, client="B", reused_from=1)


def test_a_syn_from_the_server_of_an_open_connection_is_simultaneous_open_not_new() -> None:
    pb = handshake(Playbook())
    assert pb >> B(SYN, 5000) << Conn(1)


def test_a_syn_after_a_mid_stream_pickup_is_a_new_connection() -> None:
    assert Playbook() >> A(DATA, 1000, 5000, 10) << Conn(1, midstream=True) >> A(SYN, 77) << Conn(2, midstream=False, reused_from=1)


def test_a_connection_handed_on_is_remembered_for_port_reuse_and_stragglers() -> None:
    """Closed and acknowledged, it is handed on a second later; a late ACK is absorbed, and the
    next SYN on the 4-tuple opens a new connection that names it."""
    pb = handshake(Playbook())
    pb = pb >> A(FIN | ACK, 1001, 5001) >> B(FIN | ACK, 5001, 1002) >> A(ACK, 1002, 5002, t=0.5)
    assert pb.sweep(1.25)  # not yet: a complete connection is held a second (COMPLETE_LINGER)
    assert pb.tracker.take_retired() == []
    assert pb.sweep(1.75)
    assert [c.id for c in pb.tracker.take_retired()] == [1]
    assert pb >> A(ACK, 1002, 5002, t=2.0) << Conn(None) >> A(SYN, 424242, t=2.5) << Conn(2, reused_from=1)
    assert pb.tracker.stragglers == 1


def test_a_closed_connection_is_held_until_its_linger_is_over() -> None:
    """FINs both ways but the last ACK not seen: not complete, held for CLOSED_LINGER (60 s)."""
    pb = handshake(Playbook())
    pb = pb >> A(FIN | ACK, 1001, 5001, t=1.0) >> B(FIN | ACK, 5001, 1002, t=1.0)
    assert pb.sweep(59.0)
    assert pb.tracker.take_retired() == []
    assert pb.sweep(61.5)
    assert [c.id for c in pb.tracker.take_retired()] == [1]


# ------------------------------------------------------------------------- end states
def test_the_side_that_closes_first_ends_in_time_wait() -> None:
    pb = handshake(Playbook())
    assert (
        pb
        >> A(FIN | ACK, 1001, 5001)
        << Conn(1, states=("FIN-WAIT-1", "CLOSE-WAIT"))
        >> B(ACK, 5001, 1002)
        << Conn(1, states=("FIN-WAIT-2", "CLOSE-WAIT"))
        >> B(FIN | ACK, 5001, 1002)
        << Conn(1, states=("FIN-WAIT-2", "LAST-ACK"))
        >> A(ACK, 1002, 5002)
        << Conn(1, states=("TIME-WAIT", "CLOSED"), complete=True)
    )


def test_when_the_server_closes_first_the_server_holds_time_wait() -> None:
    pb = handshake(Playbook())
    assert (
        pb
        >> B(FIN | ACK, 5001, 1001)
        << Conn(1, states=("CLOSE-WAIT", "FIN-WAIT-1"))
        >> A(FIN | ACK, 1001, 5002)
        << Conn(1, states=("LAST-ACK", "FIN-WAIT-2"), complete=False)
        >> B(ACK, 5002, 1002)
        << Conn(1, states=("CLOSED", "TIME-WAIT"), complete=True)
    )


def test_simultaneous_close_leaves_both_sides_in_time_wait() -> None:
    pb = handshake(Playbook())
    assert (
        pb
        >> A(FIN | ACK, 1001, 5001, t=1.0)
        >> B(FIN | ACK, 5001, 1001, t=1.0)
        >> A(ACK, 1002, 5002)
        >> B(ACK, 5002, 1002)
        << Conn(1, states=("TIME-WAIT", "TIME-WAIT"))
    )


def test_a_reset_closes_both_sides() -> None:
    pb = handshake(Playbook())
    assert pb >> B(RST | ACK, 5001, 1001) << Conn(1, states=("CLOSED", "CLOSED"), closed=True, complete=True, server__rst_frame=4)


def test_a_refused_syn_is_closed_and_never_established() -> None:
    assert Playbook() >> A_SYN >> B(RST | ACK, 0, 1001) << Conn(1, client="A", states=("CLOSED", "CLOSED"), established=False, handshake_rtt=None)


def test_fin_seq_counts_the_data_before_it() -> None:
    pb = handshake(Playbook())
    assert pb >> A(FIN | DATA, 1001, 5001, 10) << Conn(1, client__fin_seq=1011, client__next_seq=1012)
    assert pb >> B(ACK, 5001, 1011) << Conn(1, client__fin_acked=False)  # acks the data, not the FIN
    assert pb >> B(ACK, 5001, 1012) << Conn(1, client__fin_acked=True)


# ---------------------------------------------------------------------- handshake RTT
def test_handshake_rtt_is_syn_to_the_completing_ack_at_the_capture_point() -> None:
    assert (
        Playbook()
        >> A(SYN, 1000, t=0.5)
        >> B(SYN | ACK, 5000, 1001, t=0.5 + 1 / 64)
        << Conn(1, handshake_rtt=None, server_leg=1 / 64)
        >> A(ACK, 1001, 5001, t=0.5 + 1 / 64 + 1 / 256)
        << Conn(1, handshake_rtt=1 / 64 + 1 / 256, server_leg=1 / 64, client_leg=1 / 256)
    )


def test_handshake_rtt_counts_from_the_syn_it_answered() -> None:
    """As tshark's initial_rtt (its most recent SYN): the SYN timeout is not part of the round trip."""
    assert (
        Playbook()
        >> A(SYN, 1000, t=0.0)
        >> A(SYN, 1000, t=1.0)
        >> B(SYN | ACK, 5000, 1001, t=1.25)
        >> A(ACK, 1001, 5001, t=1.5)
        << Conn(1, handshake_rtt=0.5, server_leg=0.25, client_leg=0.25)
    )


def test_a_synack_lost_after_the_capture_point_splits_the_legs_around_the_answered_syn() -> None:
    """SYN, SYN-ACK (lost on the way to the client), SYN again, SYN-ACK again, ACK: the legs are
    those of the second exchange (synack-lost.pcap: 8 µs, not 1.02 s)."""
    assert (
        Playbook()
        >> A(SYN, 1000, t=0.0)
        >> B(SYN | ACK, 5000, 1001, t=0.125)
        >> A(SYN, 1000, t=1.0)
        >> B(SYN | ACK, 5000, 1001, t=1.25)
        >> A(ACK, 1001, 5001, t=1.75)
        << Conn(1, handshake_rtt=0.75, server_leg=0.25, client_leg=0.5)
    )


def test_an_ack_short_of_the_syn_ack_does_not_complete_the_handshake() -> None:
    pb = Playbook() >> A_SYN >> B_SYNACK
    assert pb >> A(ACK, 1001, 5000) << Conn(1, handshake_ack_ts=None, established=False)
    assert pb >> A(ACK, 1001, 5001) << Conn(1, established=True)


def test_the_handshake_ack_must_come_from_the_client() -> None:
    """A bare ACK from the server (its ack, 9001, is past its own ISN + 1 as a number) completes nothing."""
    pb = Playbook() >> A(SYN, 9000) >> B(SYN | ACK, 5000, 9001)
    assert pb >> B(ACK, 5001, 9001) << Conn(1, handshake_ack_ts=None, established=False)
    assert pb >> A(ACK, 9001, 5001) << Conn(1, established=True)


def test_time_running_backwards_gives_no_rtt() -> None:
    assert Playbook() >> A(SYN, 1000, t=1.0) >> B(SYN | ACK, 5000, 1001, t=0.5) >> A(ACK, 1001, 5001, t=0.75) << Conn(1, handshake_rtt=None, server_leg=None)


# ----------------------------------------------------------------- window scale (RFC 7323)
def test_window_scaling_is_on_only_when_both_syns_carry_it() -> None:
    ws = tcp_options(ts=None, wscale=7)
    no_ws = tcp_options(ts=None, wscale=None)
    assert (
        Playbook()
        >> A(SYN, 1000, options=ws)
        >> B(SYN | ACK, 5000, 1001, options=tcp_options(ts=None, wscale=2))
        << Conn(1, client__win_scale=7, server__win_scale=2)
    )
    assert Playbook() >> A(SYN, 1000, options=ws) >> B(SYN | ACK, 5000, 1001, options=no_ws) << Conn(1, client__win_scale=-2, server__win_scale=-2)


def test_a_syn_cut_by_the_snaplen_leaves_scaling_unknown() -> None:
    assert (
        Playbook()
        >> A(SYN, 1000, truncated=True)
        >> B(SYN | ACK, 5000, 1001, options=tcp_options(ts=None, wscale=2))
        << Conn(1, client__win_scale=-1, server__win_scale=-1)
    )


# ------------------------------------------------------------------ mid-stream pickup
def test_mid_stream_pickup_is_established_with_relative_numbers_from_one() -> None:
    pb = Playbook() >> B(DATA, 77_000, 9_000, 100)
    # A sent nothing: a mid-stream pickup cannot tell it has a socket at all (a scan's lone probe
    # looks the same), so its end state is unknown; B, which sent data, is ESTABLISHED
    assert pb << Conn(1, client="A", midstream=True, roles_guessed=True, states=("unknown", "ESTABLISHED"), handshake_rtt=None)
    [conn] = pb.connections()
    assert conn.server.rel_seq(77_000) == 1  # first byte seen is relative 1, as in Wireshark
    assert conn.client.rel_seq(9_000) == 1  # the ACK tells where the other side stands
    assert conn.packets[0].dir == S2C


def test_packets_get_their_direction_from_the_roles() -> None:
    pb = handshake(Playbook()) >> B(DATA, 5001, 1001, 10) >> A(ACK, 1001, 5011)
    assert pb
    [conn] = pb.connections()
    assert [p.dir for p in conn.packets] == [C2S, S2C, C2S, S2C, C2S]
    assert (conn.client.packets, conn.server.packets, conn.server.bytes) == (3, 2, 10)


def test_independent_4_tuples_are_independent_connections() -> None:
    tracker = Tracker()
    assert Playbook(tracker) >> A_SYN << Conn(1) >> A(SYN, 1000, ports=(40001, 80)) << Conn(2) >> B_SYNACK << Conn(1, server__syn_count=1)
