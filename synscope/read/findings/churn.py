"""No connection reuse: one client opening and closing short connections to one service in a loop.

Definition. A *short* connection completed its handshake, was closed (FIN or RST) and lasted at
most :data:`SHORT_MAX` from its SYN to its last packet. At least :data:`MIN_CONNS` short
connections from one client to one service within one period (SYNs less than
:data:`PERIOD_GAP` apart), at least :data:`MIN_RATE` per second, are a *no-connection-reuse*
finding: each one paid a handshake and a teardown that one kept-alive (or pooled) connection
pays once. The figures say how many packets and how much time went to handshakes and
teardowns, their share of the total, and what reuse would save (all but one handshake and
teardown). Confidence ``likely``: the packets show the churn, not whether the application could
have reused a connection.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.read.evidence import LIKELY, Evidence
from synscope.read.findings.model import MAX_IDS, SEVERITY_CHURN, ConnFacts, Finding

NAME: Final = "no-connection-reuse"
# A connection this short (SYN to last packet) counts as one opened for a single exchange
SHORT_MAX: Final = 2.0
# Short connections from one client to one service that make a finding
MIN_CONNS: Final = 20
# ... at this rate or more (connections per second over the period)
MIN_RATE: Final = 1.0
# SYNs further apart than this start a new period
PERIOD_GAP: Final = 10.0
# (client, service) pairs followed at once; findings kept
PAIR_SLOTS: Final = 1024
MAX_FINDINGS: Final = 100


@dataclass
class _Period:
    start: float
    end: float
    count: int = 0
    ids: list[int] = field(default_factory=list)
    packets: int = 0
    handshake_packets: int = 0
    teardown_packets: int = 0
    handshake_s: float = 0.0
    teardown_s: float = 0.0
    lifetime_s: float = 0.0
    client_closed: int = 0
    frames: tuple[int, ...] = ()


def is_short(f: ConnFacts) -> bool:
    """A complete connection, opened and closed within SHORT_MAX."""
    if not f.completed or f.teardown_ts < 0 or f.syn_ts is None or f.client_syns == 0:
        return False
    return f.last_ts - f.syn_ts <= SHORT_MAX


class ChurnDetector:
    """Periods of short connections per (client, service), in bounded memory."""

    def __init__(self, slots: int = PAIR_SLOTS) -> None:
        self.slots = slots
        # OrderedDict: its oldest entry is found in O(1); a dict's first key costs O(n) once many
        # entries were deleted from its front (5 % of a run in ReuseDetector.add)
        self._open: OrderedDict[tuple[bytes, bytes, int], _Period] = OrderedDict()
        self._done: list[Finding] = []
        self.dropped = 0  # findings not kept (MAX_FINDINGS)

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection into account."""
        if not is_short(f):
            return
        assert f.syn_ts is not None
        ts = f.syn_ts
        key = (f.client_ip, f.server_ip, f.server_port)
        p = self._open.pop(key, None)  # (re-inserted below: the dict's order is least recently used first)
        if p is not None and (ts - p.end > PERIOD_GAP or p.start - ts > PERIOD_GAP):
            self._end(key, p)
            p = None
        if p is None:
            if len(self._open) >= self.slots:  # the least recently used period ends to make room
                oldest = next(iter(self._open))
                self._end(oldest, self._open.pop(oldest))
            p = _Period(ts, ts, frames=(f.first_frame,))
        self._open[key] = p
        p.start = min(p.start, ts)
        p.end = max(p.end, ts)
        p.count += 1
        if len(p.ids) < MAX_IDS:
            p.ids.append(cid)
        p.packets += f.packets
        p.handshake_packets += f.client_syns + f.server_syns + 1
        p.teardown_packets += f.teardown_packets
        p.handshake_s += max(f.handshake_s, 0.0)
        p.teardown_s += f.last_ts - f.teardown_ts
        p.lifetime_s += f.last_ts - ts
        p.client_closed += f.first_closer == "client"

    def _end(self, key: tuple[bytes, bytes, int], p: _Period) -> None:
        """A period is over (already out of the table): a finding if it qualifies."""
        found = _qualified(key, p)
        if found is None:
            return
        if len(self._done) >= MAX_FINDINGS:
            self.dropped += 1
            return
        self._done.append(found)

    def forget(self, before: float) -> None:
        """Drop the periods and findings that ended before ``before`` (watch's window)."""
        for key in [k for k, p in self._open.items() if p.end < before]:
            del self._open[key]
        self._done = [f for f in self._done if f.end >= before]

    def findings(self) -> list[Finding]:
        """Every period found so far (a view: the periods still open are worded as they stand
        and go on growing)."""
        out = list(self._done)
        for key, p in self._open.items():
            found = _qualified(key, p)
            if found is not None and len(out) < MAX_FINDINGS:
                out.append(found)
        return out


def _qualified(key: tuple[bytes, bytes, int], p: _Period) -> Finding | None:
    """The finding a period makes, if it qualifies (enough connections, fast enough)."""
    rate = (p.count - 1) / (p.end - p.start) if p.end > p.start else float(p.count)
    if p.count < MIN_CONNS or rate < MIN_RATE:
        return None
    return _finding(key, p, rate)


def _share(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


def _finding(key: tuple[bytes, bytes, int], p: _Period, rate: float) -> Finding:
    client, ip, port = key
    server = fmt_ip(ip)
    where = fmt_endpoint(ip, port)
    overhead = p.handshake_packets + p.teardown_packets
    keep = (p.count - 1) / p.count
    saved_packets = round(overhead * keep)
    saved_s = p.handshake_s * keep
    packet_share = _share(overhead, p.packets)
    time_share = _share(p.handshake_s + p.teardown_s, p.lifetime_s)
    verdict = (
        f"{fmt_ip(client)} opened {p.count} short connections to {where} "
        f"({rate:,.1f} per second) instead of reusing a few: handshakes and teardowns took {overhead} of their "
        f"{p.packets} packets ({fmt.percent(packet_share)}) and {fmt.percent(time_share)} of their time "
        f"({fmt.duration(p.handshake_s)} in handshakes, summed over the connections). One kept-alive connection would save about "
        f"{saved_packets} packets and {fmt.duration(saved_s)} of handshake waits."
    )
    if p.client_closed:
        verdict += f" The client closed {p.client_closed} of them first: each left a socket in TIME-WAIT holding a local port."
    next_step = (
        "Reuse connections: HTTP keep-alive or a connection pool in the client "
        "(and check the server does not send Connection: close); count the churn with ss -s (timewait)."
    )
    figures = (
        ("connections", float(p.count)),
        ("connections_per_second", round(rate, 3)),
        ("packets", float(p.packets)),
        ("handshake_packets", float(p.handshake_packets)),
        ("teardown_packets", float(p.teardown_packets)),
        ("overhead_packet_share", packet_share),
        ("handshake_seconds", round(p.handshake_s, 6)),
        ("teardown_seconds", round(p.teardown_s, 6)),
        ("connection_seconds", round(p.lifetime_s, 6)),
        ("overhead_time_share", time_share),
        ("saved_packets", float(saved_packets)),
        ("saved_seconds", round(saved_s, 6)),
        ("client_closed_first", float(p.client_closed)),
    )
    return Finding(
        name=NAME,
        rule=NAME,
        confidence=LIKELY,
        server_ip=server,
        server_port=port,
        start=p.start,
        end=p.end,
        connections=tuple(sorted(p.ids)),
        connection_count=p.count,
        figures=figures,
        verdict=verdict,
        next_step=next_step,
        evidence=(Evidence(f"connection #{min(p.ids)}: handshake, one exchange, teardown", p.frames),),
        severity=SEVERITY_CHURN,
        client_ip=fmt_ip(client),
    )
