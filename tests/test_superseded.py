"""An attempt ended by a new SYN on the same ports is not "the capture ends" (issue 17's flood).

In a SYN flood from spoofed addresses the loud sources reuse source ports: a SYN with another ISN on
the same 4-tuple starts a new connection and ends the record of the old one. The old verdict read
the capture clock at that moment and said "the capture ends 47.8 ms after the SYN: too soon to
call", on a capture that went on for seconds: it would send the engineer to capture for longer.

CRAFTED captures (tests/craft.py): a kernel reuses a source port this soon only when a socket is
closed in SYN-SENT and another is bound to the same port, which the flood generator stands in for.
"""

from __future__ import annotations

from pathlib import Path

from synscope.core.model import ACK, SYN
from synscope.read.pipeline import ConnReport
from tests import craft
from tests.helpers import analyse_paths, cli

T0 = 1_700_000_000.0
CLIENT, SERVER = "198.18.1.2", "198.18.2.2"


def _write(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    with path.open("wb") as out:
        w = craft.PcapWriter(out)
        for t, packet in frames:
            w.write(t, craft.ether(packet))
    return path


def _syn(port: int, isn: int) -> bytes:
    return craft.ipv4_tcp(CLIENT, SERVER, port, 443, isn, 0, SYN, options=craft.tcp_options())


def _synack(port: int, isn: int, ack: int) -> bytes:
    return craft.ipv4_tcp(SERVER, CLIENT, 443, port, isn, ack, SYN | ACK, options=craft.tcp_options())


def _reports(tmp_path: Path, new_syn_after: float, answered: bool, tail: float = 5.0) -> list[ConnReport]:
    """A SYN on 40000 (answered with SYN-ACK when ``answered``), a SYN with another ISN on the same
    ports ``new_syn_after`` later, and the capture running on until ``tail`` (another port's SYN)."""
    frames = [(T0, _syn(40000, 1000))]
    if answered:
        frames.append((T0 + 0.0002, _synack(40000, 7000, 1001)))
    frames.append((T0 + new_syn_after, _syn(40000, 90000)))
    frames.append((T0 + tail, _syn(40001, 5000)))
    return analyse_paths(_write(tmp_path / "x.pcap", frames))


def test_lone_syn_superseded_is_not_a_capture_that_ended(tmp_path: Path) -> None:
    first, second, _last = _reports(tmp_path, 0.0478, answered=False)
    v = first.verdict
    assert v.rule == "superseded-syn" and v.outcome == "no-answer" and v.confidence == "possible"
    assert "capture ends" not in v.explanation and "Capture for longer" not in v.next_step
    assert "47.8 ms later" in v.explanation and "frame 2" in v.explanation
    assert [e.frames for e in v.evidence] == [(1,), (2,)]  # the SYN and the one that replaced it
    assert second.conn.reused_from == first.conn.id  # the link the next step points at
    # the client opened a new connection from the same port: not still in SYN-SENT on this attempt
    assert first.client_state() == "CLOSED" and second.client_state() == "SYN-SENT"


def test_synack_then_new_syn_is_not_a_capture_that_ended(tmp_path: Path) -> None:
    first, _second, _last = _reports(tmp_path, 0.0315, answered=True)
    v = first.verdict
    assert v.rule == "superseded-synack" and v.outcome == "handshake-incomplete"
    assert "capture ends" not in v.explanation and "31.3 ms later" in v.explanation  # (after the SYN-ACK)
    assert v.evidence[-1].frames == (3,)


def test_a_capture_that_really_ends_still_says_so(tmp_path: Path) -> None:
    """The counterpart: the last SYN of the file (port 40001) is cut by the end of the capture."""
    *_, last = _reports(tmp_path, 0.05, answered=False, tail=5.0)
    assert last.verdict.rule == "capture-ends-after-syn"


def test_late_new_syn_keeps_the_no_answer_verdict_without_claiming_the_capture_ended(tmp_path: Path) -> None:
    """3 s of silence after the one SYN, then the ports are used again: silence is the finding, and
    the sentence names the new connection, not the end of the capture."""
    first, *_ = _reports(tmp_path, 3.0, answered=False, tail=6.0)
    v = first.verdict
    assert v.rule == "no-answer"
    assert "before a new connection on the same ports began 3.00 s later (frame 2)" in v.explanation
    assert "capture ended" not in v.explanation


def test_the_text_view_names_the_new_connection(tmp_path: Path) -> None:
    _reports(tmp_path, 0.0478, answered=False)
    out = cli("read", str(tmp_path / "x.pcap")).stdout
    assert "new SYN on these ports 47.8 ms later" in out
    assert "too soon to call" not in out.split("#3 ")[0]  # (only the last port's SYN is cut by the end)


# A SYN-ACK retransmitted for the attempt the new SYN superseded carries the old ISN + 1 in its ACK
# number: it answers the old attempt, never the new one (a server in SYN-RECEIVED for the old
# ISN retransmits on its own timer, 1 s then 3 s on Linux)


def _late_synack_capture(tmp_path: Path, answer_ack: int) -> list[ConnReport]:
    """SYN (ISN 1000), its SYN-ACK, a new SYN (ISN 90000) on the same ports 50 ms later, a SYN-ACK
    acknowledging ``answer_ack`` 1 s after the first, and the capture running on to 5 s."""
    frames = [
        (T0, _syn(40000, 1000)),
        (T0 + 0.0002, _synack(40000, 7000, 1001)),
        (T0 + 0.05, _syn(40000, 90000)),
        (T0 + 1.0002, _synack(40000, 7000 if answer_ack == 1001 else 8000, answer_ack)),
        (T0 + 5.0, _syn(40001, 5000)),
    ]
    return analyse_paths(_write(tmp_path / "late.pcap", frames))


def test_late_synack_of_the_superseded_attempt_is_not_the_new_attempts_answer(tmp_path: Path) -> None:
    first, second, _last = _late_synack_capture(tmp_path, answer_ack=1001)
    assert [p.seg.frame for p in first.conn.packets] == [1, 2]
    # the new attempt got no answer: the old verdict said "The server answered with SYN-ACK, but
    # no ACK from the client is in the capture", blaming the client or the path for an answer the
    # server never sent to this SYN
    assert [p.seg.frame for p in second.conn.packets] == [3]
    assert second.verdict.outcome == "no-answer" and "SYN-ACK" not in second.verdict.summary
    assert second.conn.server.syn_count == 0


def test_late_synack_is_counted_as_a_straggler(tmp_path: Path) -> None:
    _late_synack_capture(tmp_path, answer_ack=1001)
    err = cli("read", str(tmp_path / "late.pcap")).stderr
    assert "1 late packets of connections that had already ended" in err


def test_counterpart_a_synack_for_the_new_isn_answers_the_new_attempt(tmp_path: Path) -> None:
    _first, second, _last = _late_synack_capture(tmp_path, answer_ack=90001)
    assert [p.seg.frame for p in second.conn.packets] == [3, 4]
    assert second.verdict.outcome == "handshake-incomplete"
