"""Accept-queue overflow at a listener, seen from the packets of several connections.

Definition. Linux puts a connection in its listener's accept queue when the client's
handshake ACK arrives; when that queue is full (the application does not call accept() fast
enough for its listen backlog) the ACK is dropped and counted as ListenOverflows. The client
believes it is connected and sends its request; the server's kernel re-sends its SYN-ACK (if
it kept a request socket; not for SYN-cookie handshakes) and acknowledges nothing until a
retransmission finds room after an accept(). With ``net.ipv4.tcp_abort_on_overflow=1`` the
server answers the ACK (and the data) with RST instead.

One connection that waits for its first ACK could be plain loss; so the finding needs, per
connection, a stall of at least :data:`STALL_MIN` with the first data retransmitted
:data:`MIN_DATA_RETRANS` times and nothing from the server but SYN-ACKs (or a SYN-ACK
re-sent after the client's ACK), and :data:`MIN_CONNS` such connections to the same listener
within one period (events less than :data:`PERIOD_GAP` apart).

``accept-queue-overflow`` / ``accept-queue-abort``: confidence ``likely`` (the packets show
the server's kernel ignoring completed handshakes; the queue itself is on the server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.read.evidence import LIKELY, Evidence
from synscope.read.findings.model import MAX_IDS, SEVERITY_ACCEPT_QUEUE, ConnFacts, Finding

# The client's first data waited at least this long with nothing from the server
STALL_MIN: Final = 1.0
# ... and was sent again at least this often (one loss is common; two in a row on several
# connections at once is not loss)
MIN_DATA_RETRANS: Final = 2
# An RST from the server this soon after the handshake ACK, before any answer, is an abort
ABORT_MAX: Final = 1.0
# Connections to one listener that make a finding
MIN_CONNS: Final = 3
# Events further apart than this start a new period
PERIOD_GAP: Final = 30.0
# Listeners (and kinds) followed at once; findings kept
LISTENER_SLOTS: Final = 256
MAX_FINDINGS: Final = 100
# Distinct clients counted exactly up to this many (then "at least")
MAX_CLIENTS: Final = 4096

OVERFLOW: Final = "accept-queue-overflow"
ABORT: Final = "accept-queue-abort"


@dataclass
class _Period:
    """Connections of one kind at one listener, close together in time."""

    start: float
    end: float
    count: int = 0
    ids: list[int] = field(default_factory=list)
    clients: set[bytes] = field(default_factory=set)
    stall_min: float = 0.0
    stall_max: float = 0.0
    retrans: int = 0
    synacks: int = 0
    frames: tuple[int, ...] = ()
    example: int = 0


def kind_of(f: ConnFacts) -> str:
    """``accept-queue-overflow``, ``accept-queue-abort`` or "" for one connection."""
    if not f.completed:
        return ""
    if 0 <= f.abort_after <= ABORT_MAX:
        return ABORT
    if f.stalled >= STALL_MIN and (f.data_retransmissions >= MIN_DATA_RETRANS or f.synack_after_ack > 0):
        return OVERFLOW
    return ""


class AcceptQueueDetector:
    """Periods of accept-queue overflow per listener, in bounded memory."""

    def __init__(self) -> None:
        self._open: dict[tuple[bytes, int, str], _Period] = {}
        self._done: list[Finding] = []
        self.dropped = 0  # periods not kept (MAX_FINDINGS)

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection into account."""
        kind = kind_of(f)
        if not kind:
            return
        key = (f.server_ip, f.server_port, kind)
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        p = self._open.get(key)
        if p is not None and (ts - p.end > PERIOD_GAP or p.start - ts > PERIOD_GAP):
            self._close(key, p)
            p = None
        if p is None:
            if len(self._open) >= LISTENER_SLOTS:  # the longest quiet one makes room
                oldest = min(self._open, key=lambda k: self._open[k].end)
                self._close(oldest, self._open[oldest])
            p = _Period(ts, ts, stall_min=f.stalled, stall_max=f.stalled, frames=f.frames, example=cid)
            self._open[key] = p
        p.start = min(p.start, ts)
        p.end = max(p.end, ts)
        p.count += 1
        if len(p.ids) < MAX_IDS:
            p.ids.append(cid)
        if len(p.clients) < MAX_CLIENTS:
            p.clients.add(f.client_ip)
        if f.stalled >= 0:
            p.stall_min = min(p.stall_min, f.stalled) if p.stall_min >= 0 else f.stalled
            p.stall_max = max(p.stall_max, f.stalled)
        p.retrans += f.data_retransmissions
        p.synacks += f.synack_after_ack

    def _close(self, key: tuple[bytes, int, str], p: _Period) -> None:
        del self._open[key]
        if p.count < MIN_CONNS:
            return
        if len(self._done) >= MAX_FINDINGS:
            self.dropped += 1
            return
        self._done.append(_finding(key, p))

    def findings(self) -> list[Finding]:
        """Every period found so far: the closed ones, then the open ones that qualify (a view:
        the open periods stay open and go on growing)."""
        found = list(self._done)
        room = MAX_FINDINGS - len(found)
        for key, p in self._open.items():
            if p.count >= MIN_CONNS and room > 0:
                found.append(_finding(key, p))
                room -= 1
        return found

    def forget(self, before: float) -> None:
        """Close the periods quiet since before ``before`` and drop the findings that ended then."""
        for key in [k for k, p in self._open.items() if p.end < before]:
            self._close(key, self._open[key])
        self._done = [f for f in self._done if f.end >= before]


def _clients(n: int) -> str:
    return "one client" if n == 1 else f"{n} clients"


def _finding(key: tuple[bytes, int, str], p: _Period) -> Finding:
    ip, port, kind = key
    server = fmt_ip(ip)
    where = fmt_endpoint(ip, port)
    clients = len(p.clients)
    if kind == OVERFLOW:
        waited = fmt.duration(p.stall_min) if p.stall_max - p.stall_min < 0.05 else f"{fmt.duration(p.stall_min)}–{fmt.duration(p.stall_max)}"
        how = f"{p.retrans} retransmissions of their first data"
        if p.synacks:
            how += f", {p.synacks} SYN-ACKs re-sent after their ACK"
        verdict = (
            f"The accept queue of {where} overflowed: {p.count} connections from {_clients(clients)} completed the handshake "
            f"from the client's view, sent data and were not acknowledged for {waited} ({how}). "
            "Likely: the listen backlog is full because the application does not call accept() fast enough."
        )
        facts = [Evidence(f"connection #{p.example}: handshake ACK, data not acknowledged, retransmitted; first answer later", p.frames)]
    else:
        verdict = (
            f"The accept queue of {where} overflowed with tcp_abort_on_overflow on: {p.count} connections from {_clients(clients)} "
            "completed the handshake and were reset by the server right after it, before any answer. "
            "Likely: the listen backlog is full because the application does not call accept() fast enough."
        )
        facts = [Evidence(f"connection #{p.example}: handshake ACK, then RST from the server", p.frames)]
    next_step = (
        f"On {server}: ss -lnt 'sport = :{port}' (Recv-Q at Send-Q means the backlog is full); "
        "nstat -az TcpExtListenOverflows; raise the listen backlog (and net.core.somaxconn) or fix the accept loop."
    )
    figures: list[tuple[str, float]] = [("clients", float(clients))]
    if kind == OVERFLOW:
        figures += [("stall_min", round(p.stall_min, 6)), ("stall_max", round(p.stall_max, 6)), ("data_retransmissions", float(p.retrans))]
        figures.append(("synacks_resent", float(p.synacks)))
    return Finding(
        name=kind,
        rule=kind,
        confidence=LIKELY,
        server_ip=server,
        server_port=port,
        start=p.start,
        end=p.end,
        connections=tuple(sorted(p.ids)),
        connection_count=p.count,
        figures=tuple(figures),
        verdict=verdict,
        next_step=next_step,
        evidence=tuple(facts),
        severity=SEVERITY_ACCEPT_QUEUE,
        client_ip=fmt_ip(next(iter(p.clients))) if clients == 1 else None,
    )
