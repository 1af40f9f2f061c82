"""The records of the findings stage: what it keeps of a connection, and what it reports.

A *finding* is a pattern across connections (a SYN flood, an accept queue that overflowed, the
same failure again and again at one service). The stage sees every connection once, as a
:class:`ConnFacts` (a few numbers taken from its report, so a split run can send them from its
workers to the parent), keeps bounded state, and at the end of the input gives
:class:`Finding` records: frozen data, worded for people by ``synscope.render.findings`` and
for scripts by ``synscope.read.jsonl.finding_line``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from synscope.core.model import RST, SYN
from synscope.read.evidence import Evidence
from synscope.read.pipeline import ConnReport
from synscope.read.tracker import C2S

# Connection ids a finding lists (the count is exact; the list stops here)
MAX_IDS: Final = 20
# How bad a finding is, for "worst first" (higher first)
SEVERITY_FLOOD: Final = 30
SEVERITY_ACCEPT_QUEUE: Final = 20
SEVERITY_SCAN: Final = 15
SEVERITY_FAILURES: Final = 10


@dataclass(frozen=True, slots=True)
class Finding:
    """One pattern across connections: data, worded by the renderers.

    ``name`` is stable kebab-case (``syn-flood``, ``accept-queue-overflow``,
    ``accept-queue-abort``, ``repeated-failure``, ``port-scan``); ``figures`` are numbers by name;
    ``connections`` lists at most :data:`MAX_IDS` ids, ``connection_count`` counts them all.
    """

    name: str
    rule: str
    confidence: str
    server_ip: str
    server_port: int
    start: float
    end: float
    connections: tuple[int, ...]
    connection_count: int
    figures: tuple[tuple[str, float], ...]
    verdict: str
    next_step: str
    evidence: tuple[Evidence, ...] = ()
    severity: int = 0
    client_ip: str | None = None  # when every connection came from one client

    def figure(self, name: str, default: float = 0.0) -> float:
        """The figure called ``name``."""
        for key, value in self.figures:
            if key == name:
                return value
        return default

    @property
    def server(self) -> str:
        """``192.0.2.10:443`` (IPv6 in brackets)."""
        return f"[{self.server_ip}]:{self.server_port}" if ":" in self.server_ip else f"{self.server_ip}:{self.server_port}"


@dataclass(slots=True)
class ConnFacts:
    """What the findings stage keeps of one connection (small and picklable)."""

    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    first_ts: float
    last_ts: float
    syn_ts: float | None
    client_syns: int
    server_syns: int
    completed: bool  # the client's ACK of the SYN-ACK was seen
    server_rst: bool
    evicted: bool
    outcome: str
    ok: bool
    established: bool
    icmp_from: bytes  # sender of the first ICMP error (b"" when none)
    first_frame: int
    # accept queue (see accept_queue.py): times from the client's handshake ACK
    stalled: float  # seconds the client's first data waited for an ACK with nothing from the server (-1: no stall)
    data_retransmissions: int  # of the client's first data before the server ACKed it
    synack_after_ack: int  # SYN-ACKs the server re-sent after the client's handshake ACK
    abort_after: float  # RST from the server this long after the handshake ACK, before any answer (-1: none)
    frames: tuple[int, ...]  # handshake ACK, first data, first re-sent SYN-ACK or RST, the ACK that ended the stall
    scan: bool = False  # part of a port scan (ConnReport.scan): the port-scan finding covers it


def facts_of(report: ConnReport) -> ConnFacts:
    """The findings stage's view of one connection (read before its packets are dropped)."""
    c = report.conn
    v = report.verdict
    stalled, retrans, synacks, abort_after, shown = _handshake_aftermath(report)
    frames = tuple(x for x in shown if x)  # (0: not seen)
    return ConnFacts(
        c.client.ip,
        c.client.port,
        c.server.ip,
        c.server.port,
        c.first_ts,
        c.last_ts,
        c.syn_ts,
        c.client.syn_count,
        c.server.syn_count,
        c.handshake_ack_ts is not None,
        c.server.rst_ts is not None,
        c.evicted,
        v.outcome,
        v.ok,
        c.established,
        c.icmp[0].router if c.icmp else b"",
        c.packets[0].seg.frame if c.packets else 0,
        stalled,
        retrans,
        synacks,
        abort_after,
        frames,
        report.scan,
    )


def _handshake_aftermath(report: ConnReport) -> tuple[float, int, int, float, tuple[int, ...]]:
    """How the server treated the client's handshake ACK and first data.

    Walks the packets after the client's ACK of the SYN-ACK (a handful at most, before the
    server's first answer): (stall seconds or -1, retransmissions of the first data, SYN-ACKs
    re-sent, seconds to an RST or -1, frames that show it).
    """
    c = report.conn
    ack_ts = c.handshake_ack_ts
    if ack_ts is None or c.midstream:
        return -1.0, 0, 0, -1.0, ()
    ack_frame = 0
    data_ts = -1.0
    data_frame = 0
    data_seq = -1
    retrans = 0
    synacks = 0
    synack_frame = 0
    for pkt in c.packets:
        seg = pkt.seg
        if seg.ts < ack_ts:
            continue
        if pkt.dir == C2S:
            if not ack_frame and not seg.flags & SYN:
                ack_frame = seg.frame
            if seg.length:
                if data_seq < 0:
                    data_seq, data_ts, data_frame = seg.seq, seg.ts, seg.frame
                elif seg.seq == data_seq:
                    retrans += 1
            continue
        # from the server
        if seg.flags & SYN:
            synacks += 1
            synack_frame = synack_frame or seg.frame
            continue
        if seg.flags & RST:
            if data_seq < 0 or seg.ts >= data_ts:
                return -1.0, retrans, synacks, seg.ts - ack_ts, (ack_frame, data_frame, seg.frame)
            return -1.0, retrans, synacks, -1.0, ()
        if data_seq >= 0:
            # the server's first answer after the client's data: how long it waited
            return seg.ts - data_ts, retrans, synacks, -1.0, (ack_frame, data_frame, synack_frame, seg.frame)
        if data_seq < 0:
            return -1.0, 0, synacks, -1.0, ()  # the server spoke first (a banner): no stall to see
    if data_seq >= 0 and retrans:  # never answered before the capture ended
        return c.last_ts - data_ts, retrans, synacks, -1.0, (ack_frame, data_frame, synack_frame)
    return -1.0, retrans, synacks, -1.0, ()
