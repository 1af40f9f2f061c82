"""A source port used again after an abandoned connect(), against the truth that
scripts/scenarios_reuse.py wrote beside each capture (real kernels; see pcaps/README.md).

port-reuse-abandoned.pcap: socket A's SYN-ACK is dropped by an nft input rule on the client (the
capture on c0 sees it arrive), A is closed in SYN-SENT, and socket B connects from the same port.
The server still holds A's request: it answers B's SYN with an ACK for A's ISN, B's kernel answers
that with RST, and B's SYN, sent again, is answered. port-reuse-closed.pcap is the counterpart.
"""

from __future__ import annotations

import json

from synscope.core.model import ACK, FIN, PSH, RST, SYN, Segment
from synscope.read.analysis.annotate import annotate
from synscope.read.analysis.engine import Analyser
from synscope.read.evidence import LIKELY
from synscope.read.pipeline import ConnReport, link_sentences
from synscope.read.tracker import Tracker, stale_ack_reset
from synscope.read.verdict import judge
from tests.helpers import PCAPS, analyse


def truth(name: str) -> dict:
    return json.loads((PCAPS / f"{name}.truth.json").read_text())


def frames(report: ConnReport, flags: int) -> list[int]:
    """Frames of a connection whose SYN/ACK bits are ``flags``."""
    return [p.seg.frame for p in report.conn.packets if p.seg.flags & (SYN | ACK) == flags]


def test_the_truth_is_the_designed_scenario() -> None:
    t = truth("port-reuse-abandoned")
    a, b = t["applications"]["client"]["A"], t["applications"]["client"]["B"]
    assert t["done"]["nft"]["namespace"] == "client" and t["done"]["nft"]["hook"] == "input"
    assert a["connect"] == "EINPROGRESS" and a["tcp_info_before_close"]["state"] == "SYN-SENT"
    assert b["connect"] == "ok" and t["applications"]["client"]["unblock"]["rc"] == 0
    assert t["observed"]["A_isn_matches_capture"] and t["observed"]["B_isn_matches_capture"]
    assert "SYN-RECV 0 0 198.18.2.2:8082 198.18.1.2:41000" in t["kernel"]["ss_while_A_connects"]["server"]


def test_counts_and_isns_match_the_truth() -> None:
    t = truth("port-reuse-abandoned")
    seen = t["observed"]
    first, second = analyse("port-reuse-abandoned.pcap")
    # one record per socket, each with its own SYNs and SYN-ACK, as tshark and the sockets say
    assert first.conn.client.isn == t["applications"]["client"]["A"]["isn"]["own_isn"]
    assert second.conn.client.isn == t["applications"]["client"]["B"]["isn"]["own_isn"]
    assert second.conn.server.isn == t["applications"]["client"]["B"]["isn"]["peer_isn"]
    assert (frames(first, SYN), frames(second, SYN)) == (seen["syn_frames"]["A"], seen["syn_frames"]["B"])
    owner = {x["frame"]: x["acks"] for x in seen["synacks"]}
    assert {f: "A" for f in frames(first, SYN | ACK)} | {f: "B" for f in frames(second, SYN | ACK)} == owner
    counts = t["tshark"]["counts"]
    assert first.conn.client.syn_count + second.conn.client.syn_count == counts["syn"]
    assert first.conn.server.syn_count + second.conn.server.syn_count == counts["synack"]
    assert len(first.conn.packets) + len(second.conn.packets) == counts["frames"]


def test_the_abandoned_attempt_is_put_on_the_client_host() -> None:
    [first, _] = analyse("port-reuse-abandoned.pcap")
    v = first.verdict
    # the SYN-ACK reached the capture point on the client's link and went no further: not the
    # server's fault, not the path back, not the end of the capture
    assert (v.outcome, v.rule, v.side, v.confidence) == ("handshake-incomplete", "superseded-synack", "client", LIKELY)
    assert "reached the client's host" in v.explanation and "lost on the way back" not in v.explanation
    assert "capture ends" not in v.explanation and "return path" not in v.next_step
    assert v.next_step.startswith("On the client 198.18.1.2") and "input rules" in v.next_step
    assert first.conn.state_of(first.conn.client) == "CLOSED"


def test_the_new_connection_opened_and_closed_normally() -> None:
    t = truth("port-reuse-abandoned")
    seen, b = t["observed"], t["applications"]["client"]["B"]
    _, second = analyse("port-reuse-abandoned.pcap")
    c, v = second.conn, second.verdict
    assert c.reused_from == 1 and second.retry_of == 1
    assert (c.client.bytes, c.server.bytes) == (b["bytes_sent"], b["bytes_received"])
    # the client's RST answered the server's ACK for A's ISN: not an abort of B, not a refusal
    assert (v.outcome, v.rule, v.ok) == ("closed", "closed", True)
    assert c.client.rst_ts is None and c.server.rst_ts is None
    stale = [e for e in v.evidence if "earlier attempt" in e.fact]
    [rst] = seen["client_rsts"]
    assert [e.frames for e in stale] == [(*seen["server_acks_for_A_after_B_syn"], rst["frame"])] and rst["equals_ack_of"]
    assert "nothing was lost" in v.explanation and "were lost" not in v.explanation
    # the server closed first and holds TIME-WAIT (its kernel's TW counter)
    assert t["kernel"]["counters"]["server"]["TcpExt.TW"] == 1
    assert (c.state_of(c.client), c.state_of(c.server)) == ("CLOSED", "TIME-WAIT")
    notes = {p.seg.frame: " ".join(p.notes or []) for p in c.packets}
    assert "aborted" not in notes[rst["frame"]] and "answers that ACK" in notes[rst["frame"]]
    assert "the same source port" in link_sentences(second) and "new source port" not in link_sentences(second)


def test_the_healthy_counterpart_claims_no_such_cause() -> None:
    t = truth("port-reuse-closed")
    assert t["tshark"]["counts"]["rst"] == 0 and t["observed"]["server_acks_for_A_after_B_syn"] == []
    first, second = analyse("port-reuse-closed.pcap")
    assert [r.verdict.outcome for r in (first, second)] == ["closed", "closed"] and all(r.verdict.ok for r in (first, second))
    assert second.conn.reused_from == 1 and second.retry_of is None
    assert (frames(first, SYN), frames(second, SYN)) == (t["observed"]["syn_frames"]["A"], t["observed"]["syn_frames"]["B"])
    assert not any("earlier attempt" in e.fact for r in (first, second) for e in r.verdict.evidence)


# ------------------------------------------------------------------ scripted: what the rule needs
CLI_IP, SRV_IP = bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2])


def _seg(frame: int, t: float, from_client: bool, seq: int, ack: int, flags: int, length: int = 0) -> Segment:
    if from_client:
        return Segment(frame, t, CLI_IP, SRV_IP, 40000, 80, seq, ack, flags, 64000, length, ttl=64)
    return Segment(frame, t, SRV_IP, CLI_IP, 80, 40000, seq, ack, flags, 64000, length, ttl=63)


def _judge(rst_seq: int, server_resets: bool = False):
    """A SYN (ISN 1000) answered by an ACK of an old connection (ack 501), the client's RST with
    ``rst_seq``, the SYN again, a handshake and a close (``server_resets``: the server's RST
    instead of the FINs): the connection and its verdict."""
    tracker, analyser = Tracker(), Analyser()
    segments = [
        _seg(1, 0.0, True, 1000, 0, SYN),
        _seg(2, 0.0001, False, 9000, 501, ACK),
        _seg(3, 0.0002, True, rst_seq, 0, RST),
        _seg(4, 0.015, True, 1000, 0, SYN),
        _seg(5, 0.0151, False, 7000, 1001, SYN | ACK),
        _seg(6, 0.0152, True, 1001, 7001, ACK),
        _seg(7, 0.02, False, 7001, 1001, FIN | ACK),
        _seg(8, 0.0201, True, 1001, 7002, FIN | ACK),
        _seg(9, 0.0202, False, 7002, 1002, ACK),
    ]
    if server_resets:
        segments[6:] = [_seg(7, 0.02, True, 1001, 7001, PSH | ACK, 10), _seg(8, 0.03, False, 7001, 1011, RST | ACK)]
    for seg in segments:
        conn = tracker.feed(seg)
        assert conn is not None
        analyser.on_packet(conn, conn.packets[-1])
    [conn] = list(tracker.drain())
    state = analyser.finish(conn)
    annotate(conn, state)
    return conn, judge(conn, state)


def test_only_an_rst_carrying_the_stale_acks_number_is_taken_for_its_answer() -> None:
    conn, v = _judge(501)  # seq = the ACK's number: the kernel's answer (RFC 9293 3.10.7.3)
    assert stale_ack_reset(conn) is not None and (v.outcome, v.ok) == ("closed", True) and conn.client.rst_ts is None
    conn, v = _judge(1001)  # another seq: not that answer; it stays a reset
    assert stale_ack_reset(conn) is None and v.outcome == "reset-by-client" and conn.client.rst_ts is not None


def test_a_later_reset_keeps_its_sender() -> None:
    conn, v = _judge(501, server_resets=True)
    assert stale_ack_reset(conn) is not None and v.outcome == "reset-by-server"
