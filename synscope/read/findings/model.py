"""The records of the findings stage: what it keeps of a connection, and what it reports.

A *finding* is a pattern across connections (a SYN flood, an accept queue that overflowed, the
same failure again and again at one service, a client churning through connections or source
ports, 4-tuples reused in TIME-WAIT, a peer that went silent under keep-alive). The stage sees every connection once, as a
:class:`ConnFacts` (a few numbers taken from its report, so a split run can send them from its
workers to the parent), keeps bounded state, and at the end of the input gives
:class:`Finding` records: frozen data, worded for people by ``synscope.render.findings`` and
for scripts by ``synscope.read.jsonl.finding_line``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from synscope.core.model import RST, SYN
from synscope.read.analysis.flags import A_KEEP_ALIVE
from synscope.read.evidence import Evidence
from synscope.read.pipeline import ConnReport
from synscope.read.tracker import C2S, S2C

# Connection ids a finding lists (the count is exact; the list stops here)
MAX_IDS: Final = 20
# How bad a finding is, for "worst first" (higher first)
SEVERITY_FLOOD: Final = 30
SEVERITY_ACCEPT_QUEUE: Final = 20
SEVERITY_SCAN: Final = 15
SEVERITY_FAILURES: Final = 10
SEVERITY_PORTS: Final = 15  # port exhaustion, port reuse in TIME-WAIT, dead peers
SEVERITY_CHURN: Final = 5  # no connection reuse: costs time, nothing failed


@dataclass(frozen=True, slots=True)
class Finding:
    """One pattern across connections: data, worded by the renderers.

    ``name`` is stable kebab-case (``syn-flood``, ``accept-queue-overflow``,
    ``accept-queue-abort``, ``repeated-failure``, ``port-exhaustion``, ``port-reuse-time-wait``,
    ``dead-peer-keepalive``, ``no-connection-reuse``, ``port-scan``); ``figures`` are numbers by name;
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


@dataclass(slots=True, init=False)
class ConnFacts:
    """What the findings stage keeps of one connection (small and picklable; the defaults are
    :meth:`__init__`'s)."""

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
    # life cycle (churn.py, ports.py)
    packets: int
    client_bytes: int  # payload, both ways
    server_bytes: int
    handshake_s: float  # first SYN to the handshake ACK (-1: not completed)
    teardown_ts: float  # first FIN or RST (-1: none)
    teardown_packets: int  # packets from the first FIN or RST on
    first_closer: str  # "client" or "server": who sent the first FIN ("" when no FIN)
    reset: bool  # an RST was seen (either side)
    syn_timestamps: bool  # the client's SYN carried TCP timestamps
    answer: str  # the server's first packet after the client's SYN: synack, rst, ack ("": none)
    answer_frame: int
    # keep-alive (keepalive.py), for the keepalive-timeout verdict
    rule: str  # the verdict's rule
    keepalive_probes: int  # unanswered probes before the prober's reset
    keepalive_interval: float  # median gap between those probes (and the reset)
    silent_since: float  # the last packet heard from the peer that went silent
    prober_is_client: bool
    probe_frames: tuple[int, ...]  # first probe, the reset
    reused: bool  # the tracker saw this 4-tuple before (same encapsulation too)
    scan: bool  # part of a port scan (ConnReport.scan): the port-scan finding covers it

    def __init__(
        self,
        client_ip: bytes,
        client_port: int,
        server_ip: bytes,
        server_port: int,
        first_ts: float,
        last_ts: float,
        syn_ts: float | None,
        client_syns: int,
        server_syns: int,
        completed: bool,
        server_rst: bool,
        evicted: bool,
        outcome: str,
        ok: bool,
        established: bool,
        icmp_from: bytes,
        first_frame: int,
        stalled: float,
        data_retransmissions: int,
        synack_after_ack: int,
        abort_after: float,
        frames: tuple[int, ...],
        packets: int = 0,
        client_bytes: int = 0,
        server_bytes: int = 0,
        handshake_s: float = -1.0,
        teardown_ts: float = -1.0,
        teardown_packets: int = 0,
        first_closer: str = "",
        reset: bool = False,
        syn_timestamps: bool = False,
        answer: str = "",
        answer_frame: int = 0,
        rule: str = "",
        keepalive_probes: int = 0,
        keepalive_interval: float = -1.0,
        silent_since: float = -1.0,
        prober_is_client: bool = True,
        probe_frames: tuple[int, ...] = (),
        reused: bool = False,
        scan: bool = False,
    ) -> None:
        # written out, not generated (init=False): a compiled dataclass runs its generated
        # __init__ as Python, and one ConnFacts is made per connection
        self.client_ip = client_ip
        self.client_port = client_port
        self.server_ip = server_ip
        self.server_port = server_port
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.syn_ts = syn_ts
        self.client_syns = client_syns
        self.server_syns = server_syns
        self.completed = completed
        self.server_rst = server_rst
        self.evicted = evicted
        self.outcome = outcome
        self.ok = ok
        self.established = established
        self.icmp_from = icmp_from
        self.first_frame = first_frame
        self.stalled = stalled
        self.data_retransmissions = data_retransmissions
        self.synack_after_ack = synack_after_ack
        self.abort_after = abort_after
        self.frames = frames
        self.packets = packets
        self.client_bytes = client_bytes
        self.server_bytes = server_bytes
        self.handshake_s = handshake_s
        self.teardown_ts = teardown_ts
        self.teardown_packets = teardown_packets
        self.first_closer = first_closer
        self.reset = reset
        self.syn_timestamps = syn_timestamps
        self.answer = answer
        self.answer_frame = answer_frame
        self.rule = rule
        self.keepalive_probes = keepalive_probes
        self.keepalive_interval = keepalive_interval
        self.silent_since = silent_since
        self.prober_is_client = prober_is_client
        self.probe_frames = probe_frames
        self.reused = reused
        self.scan = scan

    def __reduce__(self) -> tuple[type[ConnFacts], tuple[object, ...]]:
        """Pickled as the constructor's arguments (a split run's workers send ConnFacts): with a
        written-out ``__init__`` the compiled class cannot be made empty and filled in. The
        arguments that end it at their defaults are left out (the constructor puts them back):
        a half-open attempt's keep-alive fields are, and the parent unpickles one per connection."""
        args: tuple = (  # (a plain tuple type: compiled, a fixed-length one is a struct of 41)
            self.client_ip,
            self.client_port,
            self.server_ip,
            self.server_port,
            self.first_ts,
            self.last_ts,
            self.syn_ts,
            self.client_syns,
            self.server_syns,
            self.completed,
            self.server_rst,
            self.evicted,
            self.outcome,
            self.ok,
            self.established,
            self.icmp_from,
            self.first_frame,
            self.stalled,
            self.data_retransmissions,
            self.synack_after_ack,
            self.abort_after,
            self.frames,
            self.packets,
            self.client_bytes,
            self.server_bytes,
            self.handshake_s,
            self.teardown_ts,
            self.teardown_packets,
            self.first_closer,
            self.reset,
            self.syn_timestamps,
            self.answer,
            self.answer_frame,
            self.rule,
            self.keepalive_probes,
            self.keepalive_interval,
            self.silent_since,
            self.prober_is_client,
            self.probe_frames,
            self.reused,
            self.scan,
        )
        n = len(args)
        defaults = _DEFAULTS
        first = n - len(defaults)  # the first argument with a default
        while n > first and args[n - 1] == defaults[n - 1 - first]:
            n -= 1
        return ConnFacts, args[:n]


# The defaults of ConnFacts.__init__'s last arguments (packets on), in order: __reduce__ leaves
# out the arguments that end it at them (tests/test_findings.py holds this to the signature)
_DEFAULTS: Final[tuple[object, ...]] = (0, 0, 0, -1.0, -1.0, 0, "", False, False, "", 0, "", 0, -1.0, -1.0, True, (), False, False)


def facts_of(report: ConnReport) -> ConnFacts:
    """The findings stage's view of one connection (read before its packets are dropped)."""
    c = report.conn
    v = report.verdict
    stalled, retrans, synacks, abort_after, shown = _handshake_aftermath(report)
    frames = tuple(x for x in shown if x)  # (0: not seen)
    teardown_ts, teardown_packets = _teardown(report)
    answer, answer_frame = _answer(report)
    probes, interval, silent, by_client, probe_frames = _keepalive(report)
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
        c.client.packets + c.server.packets,
        c.client.bytes,
        c.server.bytes,
        c.handshake_ack_ts - c.syn_ts if c.handshake_ack_ts is not None and c.syn_ts is not None else -1.0,
        teardown_ts,
        teardown_packets,
        _first_closer(report),
        c.client.rst_ts is not None or c.server.rst_ts is not None,
        c.client.syn_options is not None and c.client.syn_options.ts_val is not None,
        answer,
        answer_frame,
        v.rule,
        probes,
        interval,
        silent,
        by_client,
        probe_frames,
        c.reused_from is not None and not c.idle_split,
        report.scan,
    )


def _first_closer(report: ConnReport) -> str:
    """Who sent the first FIN (so holds TIME-WAIT if both FINs were exchanged)."""
    cf, sf = report.conn.client.fin_ts, report.conn.server.fin_ts
    if cf is not None and (sf is None or cf <= sf):
        return "client"
    return "server" if sf is not None else ""


def _earlier(a: float | None, b: float | None) -> float | None:
    """The earlier of two times, either of which may be None (as min() over those that are not)."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b < a else a


def _teardown(report: ConnReport) -> tuple[float, int]:
    """(time of the first FIN or RST or -1, packets from it on); walks back from the end."""
    c = report.conn
    # (no list of the times: one per connection, and most connections of a flood have none)
    first = _earlier(_earlier(_earlier(c.client.fin_ts, c.server.fin_ts), c.client.rst_ts), c.server.rst_ts)
    if first is None:
        return -1.0, 0
    n = 0
    for pkt in reversed(c.packets):
        if pkt.seg.ts < first:
            break
        n += 1
    return first, n


def _answer(report: ConnReport) -> tuple[str, int]:
    """The server's first packet after the client's first SYN: synack, rst, ack or ""."""
    c = report.conn
    if not c.client.syn_count:
        return "", 0
    seen_syn = False
    for pkt in c.packets:
        flags = pkt.seg.flags
        if pkt.dir == C2S:
            seen_syn = seen_syn or bool(flags & SYN)
            continue
        if not seen_syn:
            continue
        if flags & SYN:
            return "synack", pkt.seg.frame
        if flags & RST:
            return "rst", pkt.seg.frame
        return "ack", pkt.seg.frame
    return "", 0


def _keepalive(report: ConnReport) -> tuple[int, float, float, bool, tuple[int, ...]]:
    """For a keepalive-timeout verdict: (unanswered probes, median gap between them and the
    reset, time of the last packet from the silent peer or -1, prober is the client, frames)."""
    c = report.conn
    if report.verdict.rule != "keepalive-timeout":
        return 0, -1.0, -1.0, True, ()
    by_client = c.client.rst_ts is not None and (c.server.rst_ts is None or c.client.rst_ts <= c.server.rst_ts)
    direction = C2S if by_client else S2C
    packets = c.packets
    rst_index = -1
    for i in range(len(packets)):
        if packets[i].dir == direction and packets[i].seg.flags & RST:
            rst_index = i
            break
    if rst_index < 0:
        return 0, -1.0, -1.0, by_client, ()
    times: list[float] = []
    first_probe = 0
    for i in range(rst_index - 1, -1, -1):  # the run of probes right before the reset
        pkt = packets[i]
        if pkt.dir != direction or not pkt.analysis & A_KEEP_ALIVE:
            break
        times.append(pkt.seg.ts)
        first_probe = pkt.seg.frame
    silent = -1.0
    for i in range(rst_index - 1, -1, -1):
        if packets[i].dir != direction:
            silent = packets[i].seg.ts
            break
    times.reverse()
    times.append(packets[rst_index].seg.ts)
    gaps = sorted([times[i + 1] - times[i] for i in range(len(times) - 1)])
    interval = gaps[len(gaps) // 2] if gaps else -1.0
    return len(times) - 1, interval, silent, by_client, (first_probe, packets[rst_index].seg.frame)


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
