"""Connections from segments: 4-tuple + ISN epoch, roles, relative numbers, RFC 9293 states.

The tracker does no I/O and reads no clock: it is fed segments in capture
order and hands back the connection and the per-packet record each one
belongs to. Per-segment analysis (retransmissions and the like) is a later
stage; it keeps its own state on the connection's ``analysis`` slot.
"""

from __future__ import annotations

import builtins
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

from synscope.core.addr import AddressTable
from synscope.core.encap import Encap
from synscope.core.model import ACK, FIN, RST, SYN, IcmpError, Segment, flow_mix
from synscope.core.seqnum import MASK, SCALE_NONE, SCALE_UNKNOWN, UNSEEN, relative, seq_ge, seq_gt
from synscope.read import attempts

C2S: Final = 0
S2C: Final = 1

# A connection that saw RST or both FINs is handed on once the capture clock
# is this far past its last packet: long enough for a TIME_WAIT retransmitted FIN.
CLOSED_LINGER: Final = 60.0
# A complete connection (RST seen, or both FINs acknowledged) expects nothing more: it is
# handed on this long after its last packet, so memory stays flat on long captures. A late
# straggler (a last ACK repeated after a lost one) is absorbed and counted, as in watch.
COMPLETE_LINGER: Final = 1.0
# --max-conns: the victim is the least recently active of this many oldest entries; entries
# active in the last EVICT_ACTIVE seconds are moved to the back of the table when scanned.
EVICT_SAMPLE: Final = 64
# ICMP errors about connections not in the table, kept for reporting
MAX_ORPHAN_ICMP: Final = 1000
EVICT_ACTIVE: Final = 1.0
# Closed connections retired sooner than CLOSED_LINGER (live output) are remembered this many
# 4-tuples at most, so their TIME_WAIT stragglers are absorbed instead of opening a mid-stream entry.
MAX_RECENT_CLOSED: Final = 65536
# A live source hands on an unanswered attempt whose client stopped sending SYNs: the kernel's next
# SYN would come within GIVE_UP_BACKOFF times the last gap (exponential backoff), so silence for that
# long plus GIVE_UP_MARGIN means the client gave up (connect() returned ETIMEDOUT)
GIVE_UP_BACKOFF: Final = 2.0
GIVE_UP_MARGIN: Final = 1.0
# Capture copies listed per connection (a loopback capture has one per packet; the analysis
# keeps at most its MAX_KEPT_PACKETS too)
MAX_DUPLICATES_LISTED: Final = 5000
# A new half-open attempt is kept compact (synscope.read.attempts) once this many connections are
# held: a flood's million attempts cost a few hundred bytes each, while most connections of an
# ordinary capture never pay for making one full at its third packet (big.pcap holds over 4096 a
# fifth of the time, at most 7,832); the first 4096 attempts of a flood cost 4.5 KB each (18 MB)
COMPACT_AFTER: Final = 4096
# Well-known ports below this are taken to be the server when the handshake is missing.
EPHEMERAL_FLOOR: Final = 32768
# RFC 7323 section 2.3: the largest window shift; a larger one in a SYN is used as 14
MAX_WINDOW_SHIFT: Final = 14


@dataclass(slots=True)
class Packet:
    """One segment as part of a connection, with everything later stages add to it."""

    seg: Segment
    dir: int  # C2S or S2C
    analysis: int = 0  # bit set of analysis.flags.A_* names
    dupack_num: int = 0
    dupack_frame: int = 0
    rto: float | None = None  # for retransmissions: time since the original
    in_flight: int | None = None  # bytes sent and not yet acknowledged after this data segment
    notes: list[str] | None = None
    duplicate_of: int = 0  # a capture copy: the frame number of the first copy (not analysed)

    # Written out (dataclass keeps it): compiled, it is a native constructor; the one the
    # dataclass module generates runs as Python bytecode, once per packet.
    def __init__(self, seg: Segment, dir: int) -> None:
        self.seg = seg
        self.dir = dir
        self.analysis = 0
        self.dupack_num = 0
        self.dupack_frame = 0
        self.rto = None
        self.in_flight = None
        self.notes = None
        self.duplicate_of = 0

    def note(self, text: str) -> None:
        """Attach an annotation shown in brackets on the timeline."""
        if self.notes is None:
            self.notes = [text]
        else:
            self.notes.append(text)


@dataclass(slots=True)
class Side:
    """What one endpoint did, as far as the capture shows."""

    ip: bytes
    port: int
    isn: int | None = None  # ISN from its SYN, when seen
    base: int = UNSEEN  # subtracted for relative numbers
    syn_count: int = 0
    syn_times: list[float] = field(default_factory=list)
    syn_options: Any = None  # TcpOptions of its (first) SYN
    win_scale: int = SCALE_UNKNOWN  # or SCALE_NONE (no scaling negotiated), else the shift
    syn_truncated: bool = False  # its SYN was cut short by the snaplen (options may be missing)
    fin_seq: int | None = None  # sequence number of its FIN
    fin_ts: float | None = None
    fin_acked: bool = False
    fin_ack: int = UNSEEN  # the ACK number its first FIN carried (UNSEEN: no ACK on it)
    # simultaneous open: the SYN-ACK with which it answered the peer's crossing SYN (not a
    # retransmission of its SYN, though it carries the same ISN)
    open_answer: Packet | None = None
    rst_ts: float | None = None
    rst_frame: int = 0
    packets: int = 0
    bytes: int = 0  # payload bytes, retransmissions included
    # UNSEEN until seen (plain ints, not int | None: compiled, they stay unboxed)
    highest_ack: int = UNSEEN
    next_seq: int = UNSEEN  # highest seq+len sent
    ttl: int | None = None

    # Written out (dataclass keeps it), as on Packet: two per connection, and the generated one
    # runs as Python bytecode
    def __init__(self, ip: builtins.bytes, port: int) -> None:  # (plain "bytes" is the field below here)
        self.ip = ip
        self.port = port
        self.isn = None
        self.base = UNSEEN
        self.syn_count = 0
        self.syn_times = []
        self.syn_options = None
        self.win_scale = SCALE_UNKNOWN
        self.syn_truncated = False
        self.fin_seq = None
        self.fin_ts = None
        self.fin_acked = False
        self.fin_ack = UNSEEN
        self.open_answer = None
        self.rst_ts = None
        self.rst_frame = 0
        self.packets = 0
        self.bytes = 0
        self.highest_ack = UNSEEN
        self.next_seq = UNSEEN
        self.ttl = None

    def rel_seq(self, seq: int) -> int:
        """Sequence number relative to this side's base."""
        return relative(seq, self.base)


@dataclass(slots=True)
class Connection:
    """One TCP connection: a 4-tuple and one ISN epoch."""

    id: int
    client: Side
    server: Side
    first_ts: float
    last_ts: float
    roles_guessed: bool = False
    midstream: bool = False
    reused_from: int | None = None  # id of the earlier connection on this 4-tuple
    # both sides sent a bare SYN and the SYNs crossed (RFC 9293 3.5, figure 8): both opened
    simultaneous_open: bool = False
    packets: list[Packet] = field(default_factory=list)
    icmp: list[IcmpError] = field(default_factory=list)
    syn_ts: float | None = None
    synack_ts: float | None = None
    handshake_ack_ts: float | None = None
    source_index: int = 0
    analysis: Any = None  # owned by the analysis stage
    evicted: bool = False
    timed_out: bool = False  # retired by the idle timeout (Tracker.idle_timeout), not by FIN/RST
    idle_split: bool = False  # opened by a packet after the idle timeout: continues reused_from
    # where in the input it began and ended: the position of the frame that opened it, the
    # Tracker.stamp when it was handed on, and the capture clock then (ordering and retry linking
    # depend only on these, so workers that split the connections reproduce one worker's output)
    opened_at: int = 0
    retired_at: int = 0
    retire_clock: float = 0.0
    encap: Encap | None = None  # what carried it (None: plain frames)
    # frames dropped as capture copies of one of its packets: listed, never analysed
    duplicates: list[Packet] | None = None
    # the times stamped on its packets right after the capture's clock went backwards (set by the
    # analysis stage); a time span across one is not a measurement (see spans_clock_step)
    clock_steps: list[float] | None = None
    # a SYN with another ISN on the same 4-tuple started a new connection (port reuse): when, and
    # its frame. The record ends there, not with the capture (0.0 / 0: it was not superseded)
    superseded_at: float = 0.0
    superseded_frame: int = 0
    superseded_by_client: bool = False  # ... and that SYN came from this connection's client

    # Written out (dataclass keeps it), as on Side
    def __init__(
        self,
        id: int,
        client: Side,
        server: Side,
        first_ts: float,
        last_ts: float,
        roles_guessed: bool = False,
        midstream: bool = False,
    ) -> None:
        self.id = id
        self.client = client
        self.server = server
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.roles_guessed = roles_guessed
        self.midstream = midstream
        self.reused_from = None
        self.simultaneous_open = False
        self.packets = []
        self.icmp = []
        self.syn_ts = None
        self.synack_ts = None
        self.handshake_ack_ts = None
        self.source_index = 0
        self.analysis = None
        self.evicted = False
        self.timed_out = False
        self.idle_split = False
        self.opened_at = 0
        self.retired_at = 0
        self.retire_clock = 0.0
        self.encap = None
        self.duplicates = None
        self.clock_steps = None
        self.superseded_at = 0.0
        self.superseded_frame = 0
        self.superseded_by_client = False

    def side(self, direction: int) -> Side:
        """Sender side of a packet in this direction."""
        return self.client if direction == C2S else self.server

    def timeline(self) -> list[Packet]:
        """Its packets with the capture copies dropped as duplicates, each right after its first copy."""
        duplicates = self.duplicates
        if not duplicates:
            return self.packets
        after: dict[int, list[Packet]] = {}
        for dup in duplicates:
            after.setdefault(dup.duplicate_of, []).append(dup)
        out: list[Packet] = []
        for pkt in self.packets:
            out.append(pkt)
            copies = after.pop(pkt.seg.frame, None)
            if copies is not None:
                out.extend(copies)
        for copies in after.values():  # (their first copy was not kept: a long connection)
            out.extend(copies)
        return out

    def add_duplicate(self, seg: Segment, first_frame: int) -> None:
        """List a frame dropped as a capture copy of frame ``first_frame`` (at most MAX_DUPLICATES_LISTED)."""
        if self.duplicates is None:
            self.duplicates = []
        elif len(self.duplicates) >= MAX_DUPLICATES_LISTED:
            return
        pkt = Packet(seg, C2S if (seg.src == self.client.ip and seg.sport == self.client.port) else S2C)
        pkt.duplicate_of = first_frame
        pkt.note(f"captured twice (copy of frame {first_frame})")
        self.duplicates.append(pkt)

    @property
    def closed(self) -> bool:
        """RST seen, or both FINs seen, or the attempt ended by an ICMP error (see aborted_by_icmp)."""
        c, s = self.client, self.server
        return c.rst_ts is not None or s.rst_ts is not None or (c.fin_seq is not None and s.fin_seq is not None) or self.aborted_by_icmp()

    @property
    def synack_before_syn(self) -> bool:
        """The SYN-ACK's timestamp is earlier than the SYN's: the capture's clock or the merge of
        several captures put them out of order, so no handshake timing can be trusted."""
        return self.syn_ts is not None and self.synack_ts is not None and self.synack_ts < self.syn_ts

    @property
    def simultaneous_close(self) -> bool:
        """Both sent FIN and neither FIN acknowledges the other's: the FINs crossed (RFC 9293
        3.6, figure 13); both sides go through CLOSING and both hold TIME-WAIT."""
        c, s = self.client, self.server
        if c.fin_seq is None or s.fin_seq is None:
            return False
        return _not_acking(c.fin_ack, s.fin_seq) and _not_acking(s.fin_ack, c.fin_seq)

    def spans_clock_step(self, start: float | None, end: float | None) -> bool:
        """The capture's clock went backwards between these two times: a span from ``start`` to
        ``end`` would be made of timestamps that cannot both be right."""
        steps = self.clock_steps
        if steps is None or start is None or end is None:
            return False
        for at in steps:
            if start <= at < end or end <= at < start:
                return True
        return False

    @property
    def answered_syn_ts(self) -> float | None:
        """When the SYN the handshake answered was seen: the client's last SYN before the ACK that
        completed the handshake (before the first SYN-ACK while there is none), as Wireshark's
        most recent SYN for tcp.analysis.initial_rtt. A SYN sent again after a timeout must not
        put the timeout into the round trip (loopback-syn-retry.pcap: 1.01 s from the first SYN,
        54 µs from the one answered)."""
        limit = self.handshake_ack_ts if self.handshake_ack_ts is not None else self.synack_ts
        if limit is None:
            return self.syn_ts
        answered = self.syn_ts
        for t in self.client.syn_times:
            if t > limit:
                break
            answered = t
        return answered

    def _synacks_between(self, start: float | None, end: float | None) -> tuple[float | None, float | None]:
        """The first and the last SYN-ACK of the server from ``start`` to ``end`` (None: none)."""
        first = last = None
        if start is None:
            return None, None
        for t in self.server.syn_times:
            if t < start:
                continue
            if end is not None and t > end:
                break
            if first is None:
                first = t
            last = t
        return first, last

    @property
    def handshake_rtt(self) -> float | None:
        """The answered SYN → the ACK completing the handshake, at the capture point (None if
        unknown or nonsense)."""
        if self.handshake_ack_ts is None:  # (most failed attempts: nothing to measure to)
            return None
        start = self.answered_syn_ts
        if self.synack_before_syn or self.spans_clock_step(start, self.handshake_ack_ts):
            return None
        return _span(start, self.handshake_ack_ts)

    @property
    def server_leg(self) -> float | None:
        """The answered SYN → the first SYN-ACK after it: capture point to the server and back."""
        if self.synack_ts is None and not self.server.syn_times:  # (no answer: nothing to measure to)
            return None
        start = self.answered_syn_ts
        synack = self._synacks_between(start, self.handshake_ack_ts)[0]
        if synack is None:
            synack = self.synack_ts
        if self.spans_clock_step(start, synack):
            return None
        return _span(start, synack)

    @property
    def client_leg(self) -> float | None:
        """The last SYN-ACK before the handshake's ACK → that ACK: capture point to the client and back."""
        if self.handshake_ack_ts is None:  # (most failed attempts: nothing to measure to)
            return None
        synack = self._synacks_between(self.answered_syn_ts, self.handshake_ack_ts)[1]
        if synack is None:
            synack = self.synack_ts
        if self.synack_before_syn or self.spans_clock_step(synack, self.handshake_ack_ts):
            return None
        return _span(synack, self.handshake_ack_ts)

    @property
    def complete(self) -> bool:
        """RST seen, or both FINs seen and acknowledged, or the attempt ended by an ICMP error:
        nothing more is expected (a live watch hands it on at once, not after --idle-timeout)."""
        c, s = self.client, self.server
        return c.rst_ts is not None or s.rst_ts is not None or (c.fin_acked and s.fin_acked) or self.aborted_by_icmp()

    @property
    def settled(self) -> bool:
        """Complete, and nothing more is to be expected from either side: a connection that was
        established and ended by RST waits the full linger instead, as the RST may never have
        reached the peer, whose FIN or data can come seconds later (rst-gave-up.pcap: the
        server's FIN 7 s on); those packets belong in its timeline, as in tshark's stream."""
        if not self.complete:
            return False
        return self.handshake_ack_ts is None or (self.client.fin_acked and self.server.fin_acked)

    @property
    def established(self) -> bool:
        """Handshake completed as far as the capture shows (or picked up mid-stream)."""
        return self.handshake_ack_ts is not None or self.midstream

    def one_sided(self) -> bool:
        """Only one direction is in the capture, yet that side's ACKs move on: it acknowledges
        segments of the other side that the capture never saw, so the capture point sees one
        direction of this connection. (One ACK alone proves nothing: a connection picked up at
        its last packet looks the same.)"""
        if (self.client.packets == 0) == (self.server.packets == 0):
            return False
        first_ack = -1
        for pkt in self.packets:
            if pkt.seg.flags & ACK and not pkt.seg.flags & SYN:
                if first_ack < 0:
                    first_ack = pkt.seg.ack
                elif pkt.seg.ack != first_ack:
                    return True
        return False

    def state_of(self, side: Side) -> str:
        """RFC 9293 state of one side at the end of the capture, as the capture shows it."""
        peer = self.server if side is self.client else self.client
        if self.one_sided():
            return "unknown"  # what the unseen direction carried decides both states
        if self.midstream and not side.packets:
            return "unknown"  # picked up mid-stream and silent: the capture cannot tell it has a socket at all
        if side.rst_ts is not None or peer.rst_ts is not None:
            return "CLOSED"
        if side is self.client and self.superseded_by_client and not self.established:
            # it opened a new connection from the same port: a host holds one socket per 4-tuple,
            # so this attempt's was gone (or its address was forged and there never was one)
            return "CLOSED"
        if side.fin_seq is not None and peer.fin_seq is not None:
            if self.simultaneous_close:  # FIN-WAIT-1 -> CLOSING -> TIME-WAIT on both sides
                return "TIME-WAIT" if side.fin_acked else "CLOSING"
            first = side.fin_ts is not None and peer.fin_ts is not None and side.fin_ts <= peer.fin_ts
            if first:
                if side.fin_acked and peer.fin_acked:
                    return "TIME-WAIT"
                return "FIN-WAIT-1" if not side.fin_acked else "TIME-WAIT" if peer.fin_acked else "FIN-WAIT-2"
            return "CLOSED" if side.fin_acked else "LAST-ACK"
        if side.fin_seq is not None:
            return "FIN-WAIT-2" if side.fin_acked else "FIN-WAIT-1"
        if peer.fin_seq is not None:
            return "CLOSE-WAIT"
        if self.established:
            return "ESTABLISHED"
        if side is self.client:
            if side.syn_count and self.aborted_by_icmp():
                return "CLOSED"  # Linux aborts connect() on an ICMP error in SYN-SENT (EHOSTUNREACH, ECONNREFUSED)
            return "SYN-SENT" if side.syn_count else "unknown"
        if side.syn_count and not peer.packets and not peer.syn_count and self.reused_from is None:
            # a SYN-ACK and nothing ever from the client on these ports: its SYN went another
            # way (or before the capture), and so may its ACK (asymmetric-open.pcap: the server
            # had accepted the connection)
            return "unknown"
        if side.syn_count:
            return "SYN-RECEIVED"
        # nothing came from the server: whether its port has a listener the capture cannot tell
        # (the SYN may never have reached it)
        return "unknown"

    def aborted_by_icmp(self) -> bool:
        """An ICMP error (not a path-MTU message) answered the client's last SYN before any answer
        from the server: Linux ends the attempt there (tcp_v4_err in SYN-SENT); no later SYN came."""
        c = self.client
        if self.server.syn_count or not c.syn_times:
            return False
        last_syn = c.syn_times[-1]
        for err in self.icmp:
            if err.mtu is None and not _pmtu_or_quench(err.version, err.type, err.code) and err.ts >= last_syn:
                return True
        return False


def idle_past(last_ts: float, clock: float, idle_timeout: float) -> bool:
    """A connection whose last packet was at ``last_ts`` is over by ``clock``: silent for the idle
    timeout or longer (Zeek's ``Connection::InactivityTimer``: ``last_time + inactivity_timeout <= t``)."""
    return last_ts + idle_timeout <= clock


def _gave_up(conn: Connection, clock: float) -> bool:
    """Only SYNs, nothing back, and no SYN for longer than the client's backoff would wait: the client
    gave up, so a live watch reports the attempt now rather than after --idle-timeout."""
    times = conn.client.syn_times
    if conn.server.packets or conn.icmp or len(times) < 2 or len(times) != conn.client.packets:
        return False
    gap = times[-1] - times[-2]
    return clock - times[-1] > GIVE_UP_BACKOFF * gap + GIVE_UP_MARGIN


def _pmtu_or_quench(version: int, icmp_type: int, code: int) -> bool:
    """ICMP messages that do not end a connection attempt: fragmentation needed / packet too big
    (path MTU discovery) and source quench."""
    if version == 4:
        return (icmp_type == 3 and code == 4) or icmp_type == 4
    return icmp_type == 2


def _not_acking(ack: int, fin_seq: int) -> bool:
    """A FIN whose ACK number (UNSEEN: none) does not cover the peer's FIN."""
    return ack == UNSEEN or not seq_gt(ack, fin_seq)


def _span(start: float | None, end: float | None) -> float | None:
    """end - start, or None when either is unknown or time ran backwards between them."""
    if start is None or end is None or end < start:
        return None
    return end - start


# A flow's direction-free key, (address, port, address, port), the lower pair first. A plain
# tuple type: compiled, a fixed-length tuple type is a C struct, boxed into a new Python tuple
# (and its ports into ints) each time it is used as a dict key, several times per packet
FlowKey = tuple


def flow_key(src: bytes, sport: int, dst: bytes, dport: int, tunnel: int = 0) -> FlowKey:
    """Direction-free key of a 4-tuple: the lower (address, port) first; a fifth member,
    the :class:`~synscope.core.encap.Encap` key, for a flow inside an encapsulation (``tunnel``),
    so the same 4-tuple in two VLANs or VNIs is two flows (a plain frame's key is the 4-tuple)."""
    if lower_first(src, sport, dst, dport):
        return (src, sport, dst, dport, tunnel) if tunnel else (src, sport, dst, dport)
    return (dst, dport, src, sport, tunnel) if tunnel else (dst, dport, src, sport)


def _plain(key: FlowKey) -> bool:
    """A flow key of a plain frame (the 4-tuple, no encapsulation member): what a compact attempt
    is kept under. (A function, not len() where it is asked: mypy narrows a key whose len() is
    tested to a fixed-length tuple type, and compiled, that is a C struct, boxed into a new tuple
    each time it is passed on, so the key handed to the tracker is not the one passed on.)"""
    return len(key) == 4


def lower_first(src: bytes, sport: int, dst: bytes, dport: int) -> bool:
    """(src, sport) <= (dst, dport), without two tuples: the sender comes first in its flow key."""
    return src < dst or (src == dst and sport <= dport)


# slots of FlowKeys (a power of two): more than the flows a busy capture has going at once
FLOW_KEY_SLOTS: Final = 4096


class FlowKeys:
    """:func:`flow_key` of plain frames (no tunnel), the tuple of a recent flow handed out again.

    A key made per packet costs a tuple and two ints (ports over 256), and two dict lookups
    that compare it member by member with the key stored in the table; the same tuple again costs
    none of it and is found by identity. Direct-mapped by :func:`flow_mix`: a flow that lost its
    slot gets a new (equal) tuple. Addresses are matched by identity: the decoder hands out one
    bytes object per address, and a different one only means a new tuple.
    """

    def __init__(self) -> None:
        # (an empty slot: a key no flow has; no len() test either, which would narrow a key to a
        # fixed-length tuple type, and compiled, that is a C struct boxed into a new tuple when returned)
        self._keys: list[FlowKey] = [(b"", -1, b"", -1)] * FLOW_KEY_SLOTS

    def key(self, src: bytes, sport: int, dst: bytes, dport: int) -> FlowKey:
        """``flow_key(src, sport, dst, dport)``, the same tuple as last time for this flow if it still has its slot."""
        # the slot from a direction-free mix (sums and exclusive ors of both ends), so a flow's key is
        # found in either direction before working out which end comes first
        # (len() tested, not the bytes: compiled, a truth test of bytes is a generic call)
        src_last = src[len(src) - 1] if len(src) else 0
        dst_last = dst[len(dst) - 1] if len(dst) else 0
        slot = flow_mix(sport + dport, sport ^ dport, src_last + dst_last, src_last ^ dst_last) & (FLOW_KEY_SLOTS - 1)
        keys = self._keys
        k = keys[slot]
        # (ports cast, not compared as objects: compiled, an int compared with an object is boxed first)
        if k[0] is src and k[2] is dst and cast(int, k[1]) == sport and cast(int, k[3]) == dport:
            return k
        if k[0] is dst and k[2] is src and cast(int, k[1]) == dport and cast(int, k[3]) == sport:
            return k
        # (declared, so compiled it is one Python tuple: a variable narrowed to a fixed-length
        # tuple type would be a C struct, boxed into a new tuple at each use)
        fresh: FlowKey = (src, sport, dst, dport) if lower_first(src, sport, dst, dport) else (dst, dport, src, sport)
        keys[slot] = fresh
        return fresh


def segment_key(seg: Segment | IcmpError) -> FlowKey:
    """:func:`flow_key` of a segment, or of the packet an ICMP error quotes, with its tunnel."""
    encap = seg.encap
    return flow_key(seg.src, seg.sport, seg.dst, seg.dport, 0 if encap is None else encap.key)


def stale_ack_reset(conn: Connection) -> tuple[Packet, Packet] | None:
    """The server's ACK that answered the client's SYN for another connection's sequence numbers,
    and the client's RST that answered that ACK, or None.

    A server that still holds an earlier attempt on the same 4-tuple (a request in SYN-RECV, a
    socket in TIME-WAIT) answers a SYN with another ISN with an ACK of the old connection (Linux
    tcp_check_req: out of window). A client in SYN-SENT answers an ACK that does not acknowledge
    its SYN with RST, seq = that ACK's number (RFC 9293 3.10.7.3), which resets the server's old
    attempt, and sends its SYN again. The two are part of opening this connection, not an abort of
    it: before any SYN-ACK, only the client's SYN(s) before them, the RST without ACK."""
    isn = conn.client.isn
    if isn is None or conn.simultaneous_open:
        return None
    ack: Packet | None = None
    end = 0
    for pkt in conn.packets:
        seg = pkt.seg
        flags = seg.flags
        if pkt.dir == C2S:
            if flags & RST:
                if ack is not None and not flags & ACK and seg.seq == ack.seg.ack:
                    return ack, pkt
                return None
            if ack is not None or not flags & SYN or flags & ACK:
                return None
            end = max(end, seg.length)
        elif ack is None and flags & (SYN | RST | ACK) == ACK and ((seg.ack - isn - 1) & MASK) > end:
            ack = pkt
        else:
            return None
    return None


class Tracker:
    """Assigns segments to connections and keeps each side's handshake and teardown facts."""

    def __init__(
        self,
        max_conns: int | None = None,
        closed_linger: float = CLOSED_LINGER,
        idle_timeout: float | None = None,
        sweep_idle: bool = True,
        compact_after: int | None = COMPACT_AFTER,
    ) -> None:
        """``closed_linger``: how long after its last packet a closed connection is held before it is
        handed on; ``idle_timeout``: a connection silent this long is over (None: never): a packet
        for it starts a new record (Zeek's inactivity timeout), and with ``sweep_idle`` (a live
        source) a sweep hands it on without waiting for one. ``compact_after``: while this many
        connections are held, a new half-open attempt is kept as a compact record (see
        :mod:`synscope.read.attempts`; None: never, 0: always, for tests that check it changes
        nothing); not with ``max_conns`` or ``idle_timeout``, whose eviction and sweeps look at
        every connection held."""
        self.closed_linger = closed_linger
        self.idle_timeout = idle_timeout
        self.sweep_idle = sweep_idle
        # 4-tuples of closed connections retired before CLOSED_LINGER was over → when that is over
        # OrderedDict: its oldest entry is found in O(1); a dict's first key costs O(n) once many
        # entries were deleted from its front (5 % of a run in ReuseDetector.add)
        self._recent_closed: OrderedDict[FlowKey, float] = OrderedDict()
        self.stragglers = 0
        self.timed_out = 0
        self.table: dict[FlowKey, Connection] = {}
        # closed connections still in the table: what a sweep looks at (without an idle timeout)
        self._closing: dict[FlowKey, Connection] = {}
        self.next_id = 1
        # set by the caller before each feed() / sweep(): 2 x the input position, + 1 in feed();
        # recorded on the connections handed on (retired_at), its position on those opened (opened_at)
        self.stamp = 0
        # a worker of a split run numbers connections by opened_at and lists every opening here;
        # the merge renumbers them
        self.ids_from_position = False
        self.opened: list[int] | None = None
        # ... and here the ids a later connection can no longer name as reused_from (another
        # connection on the same 4-tuple was handed on, or the table of them was full)
        self.released: list[int] | None = None
        self.max_conns = max_conns
        self.evicted = 0
        self.orphan_icmp: list[IcmpError] = []
        self.reused = 0
        self._retired: list[Connection] = []
        # id of the last connection handed on per 4-tuple, to report port reuse after it
        self._last_id: OrderedDict[FlowKey, int] = OrderedDict()
        self.clock = 0.0
        # half-open attempts (a SYN, its retransmissions, the SYN-ACK) as compact records, by packed
        # 4-tuple, in the order they were opened (ids increase); disjoint from ``table``
        self.compacting = compact_after is not None and max_conns is None and idle_timeout is None
        self.compact_after = 0 if compact_after is None else compact_after
        self.attempts: dict[bytes, bytes] = {}
        self._packed_key: FlowKey = ()  # the key _pack() packed last, and what it made of it
        # the address table of the decoder whose segments are fed (None: none shared), for the
        # addresses of attempts made full connections (see _materialise)
        self.addresses: AddressTable | None = None
        self._packed = b""
        self.compacted = 0  # attempts opened as compact records (tests check the path is taken)
        # called with each packet of an attempt made a full connection from its compact record, as
        # the caller would have called it after feed() (the pipeline's per-packet analysis)
        self.replay: Callable[[Connection, Packet], None] | None = None

    def _pack(self, key: FlowKey) -> bytes:
        """``attempts.pack_key(key)``, kept for the key packed last: a SYN-ACK's key is packed to look
        for its attempt in _answers_earlier and again in feed (the pipeline hands out one tuple per
        flow, so the same key is the same object)."""
        if key is self._packed_key:
            return self._packed
        packed = attempts.pack_key(key)
        self._packed_key = key
        self._packed = packed
        return packed

    def open_count(self) -> int:
        """Connections held, compact attempts included."""
        return len(self.table) + len(self.attempts)

    def held(self, key: FlowKey) -> Connection | None:
        """The connection held for this flow key (a compact attempt is made a full connection)."""
        conn = self.table.get(key)
        if conn is None and self.attempts and _plain(key):
            packed = self._pack(key)
            record = self.attempts.get(packed)
            if record is not None:
                conn = self._promote(key, packed, record)
        return conn

    # ----------------------------------------------------------------- segments
    def feed(self, seg: Segment, key: FlowKey | None = None, held: Connection | None = None) -> Connection | None:
        """Attach one segment to its connection; returns the connection (the new packet record is
        its last packet), or None for a straggler of a connection already handed on (counted in
        ``stragglers``). (One value: compiled, a pair would be a new tuple per packet.)

        ``key``: the segment's :func:`flow_key`, when the caller has it already; ``held``: the
        connection this tracker holds for ``key`` (``table[key]``), when the caller knows it (it
        was given for the flow before and has not been handed on since): not looked up again.
        None: looked up.
        """
        if key is None:
            key = segment_key(seg)
        ts = seg.ts
        if ts > self.clock:
            self.clock = ts
        flags = seg.flags
        if flags & (SYN | ACK | FIN | RST) == SYN | ACK and self._answers_earlier(key, seg):
            return None
        conn = held if held is not None else self.table.get(key)
        packed = b""
        if conn is None and self.compacting and _plain(key) and (self.attempts or len(self.table) >= self.compact_after):
            packed = self._pack(key)
            record = self.attempts.get(packed) if self.attempts else None
            if record is not None:
                more = attempts.extended(record, seg, attempts.from_first(seg, packed))
                if more is not None:  # one more frame of the same half-open attempt
                    self.attempts[packed] = more
                    return None
                conn = self._promote(key, packed, record)
        if conn is None:
            if self._recent_closed and self._absorb(key, seg):
                return None
            if packed and len(self.table) >= self.compact_after and attempts.opening(seg):
                self._open_compact(key, packed, seg)
                return None
            conn = self._open(key, seg)
        elif self.idle_timeout is not None and idle_past(conn.last_ts, ts, self.idle_timeout):
            conn = self._split_idle(key, conn, seg)
        elif flags & SYN and self._starts_new_epoch(conn, seg):
            old = conn
            old.superseded_at = ts
            old.superseded_frame = seg.frame
            old.superseded_by_client = seg.src == old.client.ip and seg.sport == old.client.port
            self._retire(key)
            conn = self._open(key, seg)
            conn.reused_from = old.id
            self.reused += 1
        self._attach(key, conn, seg)
        return conn

    def _answers_earlier(self, key: FlowKey, seg: Segment) -> bool:
        """Is ``seg`` (a SYN-ACK) an answer to an earlier attempt on these ports, not to the one held?

        The attempt held has a reused_from (another connection on this 4-tuple was handed on before
        it), no SYN-ACK yet, and ``seg`` does not acknowledge its SYN (ISN + 1, + the SYN's data):
        typically a server retransmitting its SYN-ACK for the attempt a new SYN (another ISN)
        superseded. It is then a straggler of a connection already reported; attached to the held
        attempt it would read as the server answering a SYN it never answered. Without an earlier
        connection on the ports the SYN-ACK stays with the attempt (what else it could be, the
        packets do not say)."""
        conn = self.table.get(key)
        if conn is not None:
            client = conn.client
            if conn.reused_from is None or client.isn is None or conn.server.isn is not None or (seg.src == client.ip and seg.sport == client.port):
                return False
            first = conn.packets[0].seg if conn.packets else None
            data = first.length if first is not None and first.flags & SYN else 0
            if ((seg.ack - client.isn - 1) & MASK) <= data:
                return False
        else:
            if not self.attempts or not _plain(key):
                return False
            packed = self._pack(key)
            record = self.attempts.get(packed)
            if record is None or not attempts.answers_earlier(record, seg, attempts.from_first(seg, packed)):
                return False
        self.stragglers += 1
        return True

    def _attach(self, key: FlowKey, conn: Connection, seg: Segment) -> None:
        """Add a segment to its connection's packets and sides."""
        direction = C2S if (seg.src == conn.client.ip and seg.sport == conn.client.port) else S2C
        pkt = Packet(seg, direction)
        conn.packets.append(pkt)
        if seg.ts > conn.last_ts:
            conn.last_ts = seg.ts
        self._update_sides(conn, pkt)
        if seg.flags & (FIN | RST) and key not in self._closing and conn.closed:
            self._closing[key] = conn

    def _open_compact(self, key: FlowKey, packed: bytes, seg: Segment) -> None:
        """A bare SYN opens a compact attempt: numbered and stamped as :meth:`_open` would."""
        position = self.stamp >> 1
        ident = position if self.ids_from_position else self.next_id
        self.next_id += 1
        if self.opened is not None:
            self.opened.append(position)
        reused_from = self._last_id.pop(key, None) if self._last_id else None
        self.compacted += 1
        self.attempts[packed] = attempts.new_record(ident, position, reused_from, seg, attempts.from_first(seg, packed))

    def _promote(self, key: FlowKey, packed: bytes, record: bytes) -> Connection:
        """A compact attempt becomes a full connection in the table (a packet it cannot hold came)."""
        del self.attempts[packed]
        ident, opened_at, reused_from = attempts.header(record)
        conn = self._materialise(key, packed, record, ident, opened_at, reused_from)
        self.table[key] = conn
        return conn

    def _materialise(self, key: FlowKey, packed: bytes, record: bytes, ident: int, opened_at: int, reused_from: int) -> Connection:
        """The full connection of a compact attempt: its segments fed through the same code as
        when they were read (and each packet to ``replay``), with the id, stamps and reused_from
        the attempt got when it was opened (``attempts.header`` of its record: the caller has them)."""
        # (the addresses as the objects the decoder handed out: a flood's server, one object, is
        # then found by identity in every table keyed by it, not compared byte by byte)
        addresses = self.addresses
        if addresses is not None:
            n = (len(packed) - 4) // 2
            segs = attempts.segments(packed, record, addresses.at(packed, 0, n), addresses.at(packed, n, n))
        else:
            segs = attempts.segments(packed, record)
        first = segs[0]
        client, server, guessed, midstream = _sides(first)
        conn = Connection(ident, client, server, first.ts, first.ts, guessed, midstream)
        conn.source_index = first.source_index
        conn.opened_at = opened_at
        if reused_from >= 0:
            conn.reused_from = reused_from
        replay = self.replay
        for seg in segs:
            self._attach(key, conn, seg)
            if replay is not None:
                replay(conn, conn.packets[-1])
        return conn

    def _split_idle(self, key: FlowKey, old: Connection, seg: Segment) -> Connection:
        """A packet for a connection silent for the idle timeout: the old record is handed on as it
        stands (``timed_out`` unless it had closed) and the packet opens a new one, as Zeek's
        ``Connection::InactivityTimer`` removes the connection and the next packet makes another.
        The new record names the old one in ``reused_from``: it continues it (``idle_split``: a
        mid-stream pickup, or the same SYN sent again), unless it is a SYN of a new connection
        (another ISN: port reuse, as without the timeout)."""
        continues = not (seg.flags & SYN and self._starts_new_epoch(old, seg))
        if not old.closed:
            old.timed_out = True
            self.timed_out += 1
        self._retire(key)
        conn = self._open(key, seg)  # (a SYN takes the old id as reused_from there)
        if conn.reused_from is None:
            conn.reused_from = self._last_id.pop(key, None)
        conn.idle_split = continues
        return conn

    def _starts_new_epoch(self, conn: Connection, seg: Segment) -> bool:
        """A SYN whose ISN differs from the one this 4-tuple already has starts a new connection.

        Retransmitted SYNs (same ISN) stay in the attempt they belong to.
        """
        src_is_client = seg.src == conn.client.ip and seg.sport == conn.client.port
        sender = conn.client if src_is_client else conn.server
        if seg.flags & ACK:  # SYN-ACK: only a different ISN from an already-seen SYN-ACK
            return sender.isn is not None and seg.seq != sender.isn
        if sender.isn is not None:
            return seg.seq != sender.isn
        # a SYN from a side that never sent one: new attempt if the old connection is over
        return conn.closed or conn.midstream

    def _open(self, key: FlowKey, seg: Segment) -> Connection:
        flags = seg.flags
        client, server, guessed, midstream = _sides(seg)
        if self.max_conns is not None and len(self.table) >= self.max_conns:
            self._evict_oldest()
        position = self.stamp >> 1
        conn = Connection(position if self.ids_from_position else self.next_id, client, server, seg.ts, seg.ts, guessed, midstream)
        conn.source_index = seg.source_index
        conn.encap = seg.encap
        conn.opened_at = position
        self.next_id += 1
        if self.opened is not None:
            self.opened.append(position)
        self.table[key] = conn
        if flags & SYN and self._last_id:
            conn.reused_from = self._last_id.pop(key, None)
        return conn

    def _update_sides(self, conn: Connection, pkt: Packet) -> None:
        seg = pkt.seg
        flags = seg.flags
        me = conn.client if pkt.dir == C2S else conn.server
        peer = conn.server if pkt.dir == C2S else conn.client
        me.packets += 1
        me.bytes += seg.length
        me.ttl = seg.ttl
        if flags & SYN:
            if conn.simultaneous_open and flags & ACK and me.open_answer is None and seg.seq == me.isn:
                # its answer to the peer's crossing SYN: the first SYN-ACK, not a retransmission
                me.open_answer = pkt
                if conn.synack_ts is None:
                    conn.synack_ts = seg.ts
            elif me.isn is None:
                me.isn = seg.seq
                me.base = seg.seq
                me.syn_options = seg.options
                crossing = not flags & ACK and peer.syn_count > 0 and peer.syn_options is not None and me is conn.server
                if crossing and not conn.established and peer.rst_ts is None:
                    # a bare SYN back while the peer's SYN is unanswered: the SYNs crossed.
                    # Window scaling is agreed in the two SYNs (RFC 7323 2.2)
                    conn.simultaneous_open = True
                    _agree_scale(me, peer, seg.options, seg.truncated)
                if flags & ACK:
                    _agree_scale(me, peer, seg.options, seg.truncated)
                else:
                    me.syn_truncated = seg.truncated
            if me.open_answer is not pkt:
                me.syn_count += 1
                me.syn_times.append(seg.ts)
                if flags & ACK:
                    if conn.synack_ts is None:
                        conn.synack_ts = seg.ts
                elif conn.syn_ts is None:
                    conn.syn_ts = seg.ts
        elif me.base == UNSEEN:
            me.base = (seg.seq - 1) & MASK  # as Wireshark: first mid-stream byte is relative 1
        end = (seg.seq + seg.length + (1 if flags & (SYN | FIN) else 0)) & MASK
        if me.next_seq == UNSEEN or seq_gt(end, me.next_seq):
            me.next_seq = end
        if flags & FIN and me.fin_seq is None:
            me.fin_seq = (seg.seq + seg.length) & MASK
            me.fin_ts = seg.ts
            if flags & ACK:
                me.fin_ack = seg.ack
        if flags & RST and me.rst_ts is None:
            # (not the client's RST to an ACK for an earlier attempt, before this one opened)
            stale = stale_ack_reset(conn) if pkt.dir == C2S and conn.server.isn is None else None
            if stale is None or stale[1] is not pkt:
                me.rst_ts = seg.ts
                me.rst_frame = seg.frame
        if flags & ACK:
            if me.highest_ack == UNSEEN or seq_gt(seg.ack, me.highest_ack):
                me.highest_ack = seg.ack
            if peer.base == UNSEEN and not flags & RST:
                peer.base = (seg.ack - 1) & MASK
            if (
                conn.handshake_ack_ts is None
                and not flags & (SYN | RST)
                and conn.synack_ts is not None
                and pkt.dir == C2S
                and conn.server.isn is not None
                and seq_ge(seg.ack, (conn.server.isn + 1) & MASK)
            ):
                conn.handshake_ack_ts = seg.ts
            if peer.fin_seq is not None and not peer.fin_acked and seq_gt(seg.ack, peer.fin_seq):
                peer.fin_acked = True

    # -------------------------------------------------------------------- ICMP
    def attach_icmp(self, err: IcmpError) -> Connection | None:
        """Attach an ICMP error to the connection whose packet it quotes (None if not tracked)."""
        key = segment_key(err)
        conn = self.held(key)
        if conn is None:
            # kept for whoever reports them (watch drains the list); bounded, so an ICMP
            # flood about unknown connections cannot grow memory
            if len(self.orphan_icmp) < MAX_ORPHAN_ICMP:
                self.orphan_icmp.append(err)
            return None
        conn.icmp.append(err)
        if err.ts > conn.last_ts:
            conn.last_ts = err.ts
        if key not in self._closing and conn.aborted_by_icmp():
            self._closing[key] = conn
        return conn

    # -------------------------------------------------------------- retirement
    def _retire(self, key: FlowKey, clock: float | None = None) -> None:
        conn = self.table.pop(key)
        self._closing.pop(key, None)
        conn.retired_at = self.stamp
        conn.retire_clock = self.clock if clock is None else clock
        self._retired.append(conn)
        last = self._last_id
        released = self.released
        if released is not None and key in last:
            released.append(last[key])
        last[key] = conn.id
        if len(last) > MAX_RECENT_CLOSED:
            oldest = next(iter(last))
            if released is not None:
                released.append(last[oldest])
            del last[oldest]

    def _evict_oldest(self) -> None:
        """Evict the least recently active of the oldest EVICT_SAMPLE entries (approximate LRU).

        Scanning the whole table per new connection made a full table quadratic. The
        table is in creation order; entries near the front that are still active are
        moved to the back, so the front fills with the long idle.
        """
        table = self.table
        victim_key = None
        victim_ts = float("inf")
        active: list[FlowKey] = []
        recent = self.clock - EVICT_ACTIVE
        for i, (k, c) in enumerate(table.items()):
            if i >= EVICT_SAMPLE:
                break
            if c.last_ts < victim_ts:
                victim_key, victim_ts = k, c.last_ts
            if c.last_ts >= recent:
                active.append(k)
        assert victim_key is not None
        table[victim_key].evicted = True
        self.evicted += 1
        self._retire(victim_key)
        for k in active:
            if k != victim_key:
                table[k] = table.pop(k)

    def sweep(self, now: float | None = None) -> None:
        """Retire connections that closed long enough ago to be complete, and (with an
        idle timeout) connections silent for longer than it.

        Time is the capture clock, or ``now`` when that is later (a live source
        passes the wall clock while no packets arrive).
        """
        clock = self.clock if now is None or now < self.clock else now
        horizon = clock - self.closed_linger
        complete_horizon = clock - min(self.closed_linger, COMPLETE_LINGER)
        idle_timeout = self.idle_timeout if self.sweep_idle else None
        # (id, key, connection): ids are unique, so keys and connections are never compared
        done: list[tuple[int, FlowKey, Connection]] = []
        # without an idle timeout only closed connections can be due: look at those alone, so a
        # table of a million half-open connections costs nothing here
        for k, c in (self.table if idle_timeout is not None else self._closing).items():
            if c.last_ts >= complete_horizon and idle_timeout is None:
                continue  # (due neither way below: the common case, decided without c.closed)
            if c.closed:
                if c.last_ts < horizon or (c.last_ts < complete_horizon and c.settled):
                    done.append((c.id, k, c))
            elif idle_timeout is not None and idle_past(c.last_ts, clock, idle_timeout):
                c.timed_out = True
                self.timed_out += 1
                done.append((c.id, k, c))
            elif idle_timeout is not None and _gave_up(c, clock):
                done.append((c.id, k, c))
        done.sort()
        recent = self._recent_closed
        remember_after = clock - CLOSED_LINGER
        for _, k, c in done:
            if c.last_ts >= remember_after and not c.timed_out:
                recent[k] = c.last_ts + CLOSED_LINGER
                if len(recent) > MAX_RECENT_CLOSED:
                    del recent[next(iter(recent))]
            self._retire(k, clock)
        # roughly in expiry order: drop the expired from the front (the keys gathered in one pass:
        # each new iterator would step again over the slots deleted at the front)
        expired: list[FlowKey] = []
        for k, until in recent.items():
            if until >= clock:
                break
            expired.append(k)
        for k in expired:
            del recent[k]

    def _absorb(self, key: FlowKey, seg: Segment) -> bool:
        """A late packet (TIME_WAIT retransmitted FIN, last ACK, extra RST) of a closed connection
        that was already handed on before CLOSED_LINGER was over: counted, not tracked."""
        until = self._recent_closed.get(key)
        if until is None:
            return False
        if seg.flags & SYN or seg.ts > until:
            del self._recent_closed[key]
            return False
        self.stragglers += 1
        return True

    def take_retired(self) -> list[Connection]:
        """Connections finished since the last call, in the order they finished."""
        out, self._retired = self._retired, []
        return out

    def drain(self) -> Iterator[Connection]:
        """End of input: every connection still open, oldest first."""
        yield from self.take_retired()
        rest = [c for _, c in sorted([(c.id, c) for c in self.table.values()], key=_first)]
        self.table.clear()
        self._closing.clear()
        for c in rest:
            c.retired_at = self.stamp
            c.retire_clock = self.clock
        # compact attempts, in id order already, merged in; each made a full connection only when
        # its turn comes, so one at a time is held in full
        held, self.attempts = self.attempts, {}
        i = 0
        for packed, record in held.items():
            # its record is let go at once (a value replaced: allowed while iterating), so what the
            # reports hold on to next (retry linking, findings) takes the memory it freed
            held[packed] = b""
            ident, opened_at, reused_from = attempts.header(record)
            while i < len(rest) and rest[i].id < ident:
                yield rest[i]
                i += 1
            # (no flow key: _attach looks at it only for a FIN or an RST, which a compact record never holds)
            conn = self._materialise(_NO_KEY, packed, record, ident, opened_at, reused_from)
            conn.retired_at = self.stamp
            conn.retire_clock = self.clock
            yield conn
        yield from rest[i:]


# The flow key given for a compact attempt made a full connection at drain (see Tracker.drain)
_NO_KEY: Final[FlowKey] = ()


def _agree_scale(me: Side, peer: Side, options: Any, truncated: bool) -> None:
    """Window scaling from a SYN-ACK and the SYN it answers, or from two crossing SYNs.

    Scaling is on only when both SYNs carry the option (RFC 7323); a SYN whose options the
    snaplen cut off leaves it unknown, not "off".
    """
    wscale = options.wscale
    peer_scale = peer.syn_options.wscale if peer.syn_options is not None else None
    if wscale is not None and peer_scale is not None:
        # RFC 7323 2.3: a shift over 14 is used as 14 (a crafted or broken 255 would otherwise
        # make windows of 10^79 bytes)
        me.win_scale = min(wscale, MAX_WINDOW_SHIFT)
        peer.win_scale = min(peer_scale, MAX_WINDOW_SHIFT)
    elif truncated or peer.syn_truncated:
        me.win_scale = peer.win_scale = SCALE_UNKNOWN
    else:
        me.win_scale = peer.win_scale = SCALE_NONE


def _sides(seg: Segment) -> tuple[Side, Side, bool, bool]:
    """(client, server, roles guessed, mid-stream) of a connection opened by this segment."""
    flags = seg.flags
    if flags & SYN and not flags & ACK:
        return Side(seg.src, seg.sport), Side(seg.dst, seg.dport), False, False
    if flags & SYN:  # SYN-ACK first: the sender is the server
        return Side(seg.dst, seg.dport), Side(seg.src, seg.sport), False, False
    if _looks_like_server(seg.sport, seg.dport):
        return Side(seg.dst, seg.dport), Side(seg.src, seg.sport), True, True
    return Side(seg.src, seg.sport), Side(seg.dst, seg.dport), True, True


def _first(pair: tuple[int, Connection]) -> int:
    return pair[0]


def _looks_like_server(sport: int, dport: int) -> bool:
    """Guess whether the sender of a mid-stream packet is the server (lower, well-known port)."""
    if sport < EPHEMERAL_FLOOR <= dport:
        return True
    if dport < EPHEMERAL_FLOOR <= sport:
        return False
    return sport < dport
