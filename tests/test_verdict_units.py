"""Verdicts on small scripted exchanges (the stages need no capture file: segments in, verdict out)."""

from __future__ import annotations

from synscope.core.model import ACK, FIN, PSH, SYN, IcmpError, Segment
from synscope.read.analysis.annotate import annotate
from synscope.read.analysis.engine import Analyser
from synscope.read.tracker import Tracker
from synscope.read.verdict import judge

CLIENT, SERVER = bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2])


class Exchange:
    """Feeds hand-written segments through tracker and analysis, like a capture would."""

    def __init__(self) -> None:
        self.tracker, self.analyser = Tracker(), Analyser()
        self.frame = 0
        self.cseq, self.sseq = 1000, 5000

    def send(self, t: float, from_client: bool, flags: int, length: int = 0, win: int = 64000) -> None:
        self.frame += 1
        if from_client:
            seg = Segment(self.frame, t, CLIENT, SERVER, 40000, 80, self.cseq, self.sseq if flags & ACK else 0, flags, win, length)
            self.cseq += length + (1 if flags & (SYN | FIN) else 0)
        else:
            seg = Segment(self.frame, t, SERVER, CLIENT, 80, 40000, self.sseq, self.cseq, flags, win, length)
            self.sseq += length + (1 if flags & (SYN | FIN) else 0)
        conn = self.tracker.feed(seg)
        self.analyser.on_packet(conn, conn.packets[-1])

    def handshake(self, t: float = 0.0) -> None:
        self.send(t, True, SYN)
        self.send(t + 0.010, False, SYN | ACK)
        self.send(t + 0.020, True, ACK)

    def verdict(self):
        [conn] = list(self.tracker.drain())
        state = self.analyser.finish(conn)
        annotate(conn, state)
        return judge(conn, state)


def test_slow_server_application_is_not_blamed_on_the_network() -> None:
    x = Exchange()
    x.handshake()
    x.send(0.030, True, PSH | ACK, 100)
    x.send(0.040, False, ACK)  # the request is acknowledged within one RTT
    x.send(2.540, False, PSH | ACK, 500)  # the answer comes 2.5 s later
    x.send(2.550, True, ACK)
    x.send(2.560, True, FIN | ACK)
    x.send(2.570, False, FIN | ACK)
    x.send(2.580, True, ACK)
    v = x.verdict()
    assert v.outcome == "closed" and not v.ok
    assert "server took 2.51 s to send its first byte" in v.explanation
    assert "not the network" in v.explanation and "server application" in v.next_step


def test_request_never_answered() -> None:
    x = Exchange()
    x.handshake()
    x.send(0.030, True, PSH | ACK, 100)
    x.send(0.040, False, ACK)
    x.send(5.0, True, ACK)  # the capture goes on, nothing comes back
    v = x.verdict()
    assert v.outcome == "established" and not v.ok
    assert "got no answer" in v.explanation


def test_fast_answer_is_fine() -> None:
    x = Exchange()
    x.handshake()
    x.send(0.030, True, PSH | ACK, 100)
    x.send(0.045, False, PSH | ACK, 500)
    x.send(0.050, True, FIN | ACK)
    x.send(0.060, False, FIN | ACK)
    x.send(0.070, True, ACK)
    v = x.verdict()
    assert v.ok and "first byte" not in v.explanation


def test_packet_too_big_on_an_established_connection_is_explained() -> None:
    x = Exchange()
    x.handshake()
    x.send(0.030, True, PSH | ACK, 1400)
    err = IcmpError(99, 0.035, bytes([198, 18, 1, 1]), 4, 3, 4, CLIENT, SERVER, 40000, 80, 1001, 64, 1280)
    x.tracker.attach_icmp(err)
    v = x.verdict()
    assert "MTU 1280" in v.explanation and "198.18.1.1" in v.explanation
