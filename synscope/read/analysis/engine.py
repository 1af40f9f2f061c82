"""The analysis stage: runs the flag cascade on each packet and gathers per-direction facts.

Fed in capture order, right after the tracker has placed a packet in its
connection. At the end of a connection, :func:`finish` adds the annotations
that need hindsight (half-close, SYN backoff pattern, capture artefacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from synscope.core.model import ACK, CSUM_GOOD, CSUM_PARTIAL, CWR, ECE, FIN, RST, SYN
from synscope.core.seqnum import MASK, UNSEEN, scaled_window, seq_diff, seq_le, seq_lt
from synscope.read.analysis import flags as F
from synscope.read.analysis.ecn import EcnFacts, observe
from synscope.read.analysis.loss import LossFacts, at_own_capture_point, dsack_block, first_sack_blocks, tsval_of
from synscope.read.tracker import C2S, Connection, Packet

# TCP options this long or shorter hold no SACK block (NOP NOP TS is 12 bytes)
SACKLESS_OPTIONS: Final = 12
# TCP option kind of SACK blocks (RFC 2018)
SACK_KIND: Final = 5
# Retransmission family: what counts as "sent again"
RETRANSMITTED: Final = F.A_RETRANSMISSION | F.A_FAST_RETRANSMISSION | F.A_SPURIOUS_RETRANSMISSION
# DirectionFacts times not seen yet: before any capture time
NEVER: Final = -1.0e300
# Keep at most this many RTT samples per direction (min/median/max need no more)
MAX_RTT_SAMPLES: Final = 2048
# No throughput is stated for data that spans less than this (seconds)
MIN_THROUGHPUT_SPAN: Final = 0.001
# Segments remembered per direction for RTT and retransmission timing
MAX_IN_FLIGHT: Final = 4096
# A packet stamped this much earlier than one before it on its connection: the capture's clock went
# backwards (smaller steps are the order in which a multi-queue capture merged its packets)
CLOCK_STEP_MIN: Final = 0.001
# Clock steps remembered per connection (each withholds the time spans across it)
MAX_CLOCK_STEPS: Final = 16
# Frame numbers of segments with bad checksums kept per connection
MAX_BAD_CHECKSUMS: Final = 8
# Per-packet records kept per connection. Past this, plain packets (no analysis flag,
# no SYN/FIN/RST) are counted but not kept, so a bulk transfer of millions of packets
# does not grow memory; every flagged or control packet is always kept.
MAX_KEPT_PACKETS: Final = 5000


def may_hold_sack(raw: bytes) -> bool:
    """Options that may carry SACK blocks (kept for the timeline): longer than NOP NOP TS, or
    a SACK kind within the first three bytes (NOP NOP SACK: one block, no timestamps).
    A false yes costs only the bytes kept. (Bytes compared one by one: compiled, no slice is
    made; it runs for every segment with options.)"""
    n = len(raw)
    if n > SACKLESS_OPTIONS:
        return True
    return (n > 0 and raw[0] == SACK_KIND) or (n > 1 and raw[1] == SACK_KIND) or (n > 2 and raw[2] == SACK_KIND)


@dataclass(slots=True)
class DirectionFacts:
    """Per-direction statistics an engineer asks for (tcptrace's columns, and more)."""

    packets: int = 0
    data_segments: int = 0
    payload_bytes: int = 0
    retransmitted_segments: int = 0
    retransmitted_bytes: int = 0
    fast_retransmissions: int = 0
    timeout_retransmissions: int = 0
    spurious_retransmissions: int = 0
    out_of_order: int = 0
    duplicate_acks: int = 0
    lost_segments: int = 0  # "previous segment not captured"
    acked_unseen: int = 0
    unseen_originals: int = 0  # retransmissions whose original the capture never saw
    zero_window_adverts: int = 0
    zero_window_probes: int = 0
    zero_window_time: float = 0.0
    window_full: int = 0
    keep_alives: int = 0
    max_idle: float = 0.0
    rtt_samples: list[float] = field(default_factory=list)
    rtt_sent: list[float] = field(default_factory=list)  # when each sample's segment was sent
    # NEVER until seen (plain floats, not float | None: compiled, they stay unboxed)
    first_data_ts: float = NEVER
    last_data_ts: float = NEVER
    # internal bookkeeping
    _zero_since: float = NEVER  # NEVER: no zero window open
    _last_ts: float = NEVER

    # Written out (dataclass keeps it): two per connection, and the generated one runs as Python bytecode
    def __init__(self) -> None:
        self.packets = 0
        self.data_segments = 0
        self.payload_bytes = 0
        self.retransmitted_segments = 0
        self.retransmitted_bytes = 0
        self.fast_retransmissions = 0
        self.timeout_retransmissions = 0
        self.spurious_retransmissions = 0
        self.out_of_order = 0
        self.duplicate_acks = 0
        self.lost_segments = 0
        self.acked_unseen = 0
        self.unseen_originals = 0
        self.zero_window_adverts = 0
        self.zero_window_probes = 0
        self.zero_window_time = 0.0
        self.window_full = 0
        self.keep_alives = 0
        self.max_idle = 0.0
        self.rtt_samples = []
        self.rtt_sent = []
        self.first_data_ts = NEVER
        self.last_data_ts = NEVER
        self._zero_since = NEVER
        self._last_ts = NEVER

    @property
    def retransmission_rate(self) -> float:
        """Share of data segments that were sent again."""
        return self.retransmitted_segments / self.data_segments if self.data_segments else 0.0

    def rtt_summary(self) -> tuple[float, float, float] | None:
        """(min, median, max) of RTT samples, seconds."""
        if not self.rtt_samples:
            return None
        # statistics.median's arithmetic, without its Python-level call overhead (once per direction)
        ordered = sorted(self.rtt_samples)
        n = len(ordered)
        mid = n // 2
        median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        return ordered[0], median, ordered[-1]

    @property
    def lost_retransmissions(self) -> int:
        """Retransmissions that repair loss (spurious ones repaired nothing)."""
        return self.fast_retransmissions + self.timeout_retransmissions

    def throughput(self) -> float:
        """Payload bytes per second over the span of data in this direction (0 when that span is
        under MIN_THROUGHPUT_SPAN: a rate over a few microseconds says nothing about the path)."""
        if self.first_data_ts == NEVER or self.last_data_ts == NEVER:
            return 0.0
        span = self.last_data_ts - self.first_data_ts
        return self.payload_bytes / span if span >= MIN_THROUGHPUT_SPAN else 0.0


@dataclass(slots=True)
class Sent:
    """A segment in flight: for RTT samples (Karn's rule) and the time since an original."""

    seq: int
    end: int  # seq + length (SYN and FIN count one)
    ts: float  # sent at
    again: bool = False  # sent again: gives no RTT sample

    # Written out (dataclass keeps it): one per data segment, and the generated one runs as Python bytecode
    def __init__(self, seq: int, end: int, ts: float) -> None:
        self.seq = seq
        self.end = end
        self.ts = ts
        self.again = False


@dataclass(slots=True)
class ConnAnalysis:
    """Analysis state and results kept on ``Connection.analysis``."""

    # Each a pair, indexed by direction (C2S, S2C). Typed tuple[X, ...]: compiled, a fixed-length
    # tuple type is a C struct, boxed into a new Python tuple whenever it is indexed by a variable
    seq: tuple[F.SeqState, ...] = field(default_factory=lambda: (F.SeqState(), F.SeqState()))
    facts: tuple[DirectionFacts, ...] = field(default_factory=lambda: (DirectionFacts(), DirectionFacts()))
    # segments below the highest sequence, decided from evidence (synscope.read.analysis.loss)
    loss: tuple[LossFacts, ...] = field(default_factory=lambda: (LossFacts(), LossFacts()))
    # ECN setup bits, IP codepoints, ECE and CWR (synscope.read.analysis.ecn); None until a segment
    # shows any (most connections: no memory spent)
    ecn: tuple[EcnFacts, ...] | None = None
    # in sequence order (lists: a deque is 760 bytes empty, and its methods are generic calls when compiled)
    flight: tuple[list[Sent], ...] = field(default_factory=lambda: ([], []))
    flag_totals: int = 0
    omitted: int = 0  # plain packets counted but not kept (MAX_KEPT_PACKETS)
    finished: bool = False
    counts_only: bool = False  # only SYN/FIN/RST were captured (watch --handshakes): no data figures
    # the capture's clock went backwards on this connection: how often, the first frame stamped
    # earlier than a packet before it, and by how much
    clock_steps: int = 0
    clock_step_frame: int = 0
    clock_step_by: float = 0.0
    # checksums the decoder verified and found wrong (frame numbers, the first ones), or holding
    # only the pseudo-header sum (TX checksum offload where the capture was made)
    bad_checksums: tuple[int, ...] = ()
    partial_checksums: int = 0

    # Written out (dataclass keeps it), as on DirectionFacts
    def __init__(self) -> None:
        self.seq = (F.SeqState(), F.SeqState())
        self.facts = (DirectionFacts(), DirectionFacts())
        self.loss = (LossFacts(), LossFacts())
        self.ecn = None
        self.flight = ([], [])
        self.flag_totals = 0
        self.omitted = 0
        self.finished = False
        self.counts_only = False
        self.clock_steps = 0
        self.clock_step_frame = 0
        self.clock_step_by = 0.0
        self.bad_checksums = ()
        self.partial_checksums = 0

    @property
    def retransmission_rate(self) -> float:
        """Share of the data segments of both directions that were sent again."""
        fc, fs = self.facts
        data = fc.data_segments + fs.data_segments
        return (fc.retransmitted_segments + fs.retransmitted_segments) / data if data else 0.0


class Analyser:
    """Stateful per-packet analysis; one instance serves every connection of a run."""

    def __init__(self, max_kept_packets: int = MAX_KEPT_PACKETS) -> None:
        self.max_kept_packets = max_kept_packets

    def on_packet(self, conn: Connection, pkt: Packet) -> None:
        """Analyse one packet; fills ``pkt.analysis`` and the connection's facts."""
        state: ConnAnalysis | None = conn.analysis
        if state is None:
            state = conn.analysis = ConnAnalysis()
            if conn.reused_from is not None and not conn.idle_split:
                pkt.analysis |= F.A_REUSED_PORTS
        seg = pkt.seg
        d = pkt.dir
        fwd, rev = state.seq[d], state.seq[1 - d]
        me = conn.client if d == C2S else conn.server
        peer = conn.server if d == C2S else conn.client
        flags = seg.flags
        window = scaled_window(seg.win, flags, me.win_scale)
        ts = seg.ts
        seglen = seg.length
        # the handshake RTT tells a segment out of order from one sent again, and only one below
        # the highest seq sent (see F.classify_retransmission); worked out for those alone, yet
        # before a clock step below is noted, which it depends on
        irtt: float | None = None
        if conn.handshake_ack_ts is not None and fwd.nextseq != UNSEEN and seq_lt(seg.seq, fwd.nextseq) and (seglen or flags & (SYN | FIN)):
            irtt = conn.handshake_rtt
        if ts < conn.last_ts - CLOCK_STEP_MIN:
            self._clock_step(conn, state, seg.frame, ts)
        if seg.csum > CSUM_GOOD:
            if seg.csum == CSUM_PARTIAL:
                state.partial_checksums += 1
            elif len(state.bad_checksums) < MAX_BAD_CHECKSUMS:
                state.bad_checksums = (*state.bad_checksums, seg.frame)
        if seg.ecn or flags & (ECE | CWR) or (flags & SYN and state.ecn is not None):
            ecn = state.ecn
            if ecn is None:
                ecn = state.ecn = (EcnFacts(), EcnFacts())
            observe(ecn[d], seg.ecn, flags, seg.frame, seglen)
        bits = F.analyse_segment(ts, seg.frame, seg.seq, seg.ack, seglen, flags, window, fwd, rev, peer.win_scale, irtt)
        if flags & SYN and me.open_answer is pkt:
            # simultaneous open: the SYN-ACK answering the peer's crossing SYN repeats its own
            # SYN's ISN by design; it is a first transmission, not a retransmission
            bits &= ~(F.A_RETRANSMISSION | F.A_FAST_RETRANSMISSION | F.A_SPURIOUS_RETRANSMISSION | F.A_OUT_OF_ORDER)
        if bits & F.A_DUPLICATE_ACK:
            pkt.dupack_num, pkt.dupack_frame = fwd.dupacknum, fwd.lastnondupack
        bits |= pkt.analysis
        pkt.analysis = bits
        state.flag_totals |= bits
        facts = state.facts[d]
        facts.packets += 1
        if facts._last_ts != NEVER:
            gap = ts - facts._last_ts
            if gap > facts.max_idle:
                facts.max_idle = gap
        facts._last_ts = ts
        flight = state.flight[d]
        if seglen:
            if rev.lastack != UNSEEN and fwd.nextseq != UNSEEN:
                pkt.in_flight = seq_diff(fwd.nextseq, rev.lastack)
            facts.data_segments += 1
            facts.payload_bytes += seglen
            if facts.first_data_ts == NEVER:
                facts.first_data_ts = ts
            facts.last_data_ts = ts
        if bits:
            self._count(facts, bits, seglen, pkt, flight, window)
        # zero-window time: from the first zero advert to the next non-zero window
        if not flags & (SYN | RST):
            if window == 0:
                if facts._zero_since == NEVER:
                    facts._zero_since = ts
            elif facts._zero_since != NEVER:
                facts.zero_window_time += ts - facts._zero_since
                facts._zero_since = NEVER
        if (seglen or flags & (SYN | FIN)) and not bits & (F.A_KEEP_ALIVE | F.A_ZERO_WINDOW_PROBE):
            end = (seg.seq + seglen + (1 if flags & (SYN | FIN) else 0)) & MASK
            if bits & (RETRANSMITTED | F.A_OUT_OF_ORDER):
                self._mark_retransmitted(flight, seg.seq, pkt, ts)
                if pkt.rto is None and seglen and bits & (F.A_RETRANSMISSION | F.A_FAST_RETRANSMISSION):
                    facts.unseen_originals += 1
            elif len(flight) < MAX_IN_FLIGHT:
                flight.append(Sent(seg.seq, end, ts))
        if seglen and not bits & (F.A_KEEP_ALIVE | F.A_ZERO_WINDOW_PROBE) and not flags & SYN:
            self._place(conn, state.loss[d], d, pkt, rev.lastack)
        if flags & ACK:
            self._take_rtt(state.flight[1 - d], state.facts[1 - d], seg.ack, ts, conn)
            if len(seg.raw_options) > SACKLESS_OPTIONS:  # room for SACK blocks beyond NOP NOP TS
                dsack = dsack_block(seg.ack, first_sack_blocks(seg.raw_options))
                if dsack is not None:
                    state.loss[1 - d].on_dsack(dsack[0], dsack[1])
        if not flags & SYN and len(seg.raw_options) and not may_hold_sack(seg.raw_options):  # (len(): see FlowKeys.key)
            # only SYN options and SACK blocks are shown later; dropping the rest (NOP NOP TS)
            # saves a bytes object per packet
            seg.raw_options = b""
        packets = conn.packets
        if len(packets) > self.max_kept_packets and not bits and not flags & (SYN | FIN | RST) and packets[-1] is pkt:
            packets.pop()
            state.omitted += 1

    @staticmethod
    def _place(conn: Connection, loss: LossFacts, d: int, pkt: Packet, peer_ack: int) -> None:
        """Decide a data segment below the highest sequence from evidence (see analysis.loss)."""
        seg = pkt.seg
        if loss.needs_position(seg.seq):
            mine, other = (conn.client_leg, conn.server_leg) if d == C2S else (conn.server_leg, conn.client_leg)
            loss.set_position(at_own_capture_point(seg.ttl, mine, other))
        loss.on_data(seg.frame, seg.seq, seg.length, tsval_of(seg.raw_options), seg.ip_id, peer_ack)

    @staticmethod
    def _count(facts: DirectionFacts, bits: int, seglen: int, pkt: Packet, flight: list[Sent], window: int) -> None:
        if bits & RETRANSMITTED and seglen:
            facts.retransmitted_segments += 1
            facts.retransmitted_bytes += seglen
            if bits & F.A_FAST_RETRANSMISSION:
                facts.fast_retransmissions += 1
            elif bits & F.A_SPURIOUS_RETRANSMISSION:
                facts.spurious_retransmissions += 1
            else:
                facts.timeout_retransmissions += 1
        if bits & F.A_OUT_OF_ORDER:
            facts.out_of_order += 1
        if bits & F.A_DUPLICATE_ACK:
            facts.duplicate_acks += 1
        if bits & F.A_LOST_SEGMENT:
            facts.lost_segments += 1
        if bits & F.A_ACK_LOST_SEGMENT:
            facts.acked_unseen += 1
        if bits & F.A_ZERO_WINDOW:
            facts.zero_window_adverts += 1
        if bits & F.A_ZERO_WINDOW_PROBE:
            facts.zero_window_probes += 1
        if bits & F.A_WINDOW_FULL:
            facts.window_full += 1
        if bits & F.A_KEEP_ALIVE:
            facts.keep_alives += 1

    @staticmethod
    def _mark_retransmitted(flight: list[Sent], seq: int, pkt: Packet, ts: float) -> None:
        """Karn's rule: segments sent twice give no RTT sample; note the time since the original.

        The flight is in sequence order, so the segment is found by bisection: a storm of
        retransmissions over a full window costs log(window) each, not the window.
        """
        n = len(flight)
        if not n:
            return
        base = flight[0].seq
        lo, hi = 0, n
        offset = (seq - base) & MASK
        while lo < hi:  # first entry whose end is beyond seq
            mid = (lo + hi) // 2
            if ((flight[mid].end - base) & MASK) <= offset:
                lo = mid + 1
            else:
                hi = mid
        if lo < n:
            entry = flight[lo]
            if entry.seq == seq and pkt.rto is None:
                pkt.rto = ts - entry.ts
            if seq_le(entry.seq, seq):
                entry.again = True

    @staticmethod
    def _take_rtt(flight: list[Sent], facts: DirectionFacts, ack: int, ts: float, conn: Connection) -> None:
        acked = 0
        n = len(flight)
        while acked < n and seq_le(flight[acked].end, ack):
            acked += 1
        if not acked:
            return
        last = flight[acked - 1]
        if acked == n:
            flight.clear()  # (all of it, the usual case: no slice made)
        else:
            del flight[:acked]
        # time going backwards gives no sample, nor does a span across a backwards step of the clock
        if not last.again and ts >= last.ts and not (conn.clock_steps is not None and conn.spans_clock_step(last.ts, ts)):
            sample = ts - last.ts
            if len(facts.rtt_samples) < MAX_RTT_SAMPLES:
                facts.rtt_samples.append(sample)
                facts.rtt_sent.append(last.ts)

    @staticmethod
    def _clock_step(conn: Connection, state: ConnAnalysis, frame: int, ts: float) -> None:
        """This packet is stamped earlier than one before it on its connection: the capture's clock
        went backwards (or had jumped forward and came back). Note it, and drop the RTT samples taken
        across it: a span from before the step to after it is made of timestamps that cannot both be
        right (it is how a capture shows a 1 s "RTT" that never was)."""
        state.clock_steps += 1
        if state.clock_steps == 1:
            state.clock_step_frame = frame
            state.clock_step_by = conn.last_ts - ts
        steps = conn.clock_steps
        if steps is None:
            steps = conn.clock_steps = []
        if len(steps) < MAX_CLOCK_STEPS:
            steps.append(ts)
        for facts in state.facts:
            sent = facts.rtt_sent
            keep = [i for i in range(len(sent)) if not sent[i] <= ts < sent[i] + facts.rtt_samples[i]]
            if len(keep) < len(sent):
                facts.rtt_samples = [facts.rtt_samples[i] for i in keep]
                facts.rtt_sent = [sent[i] for i in keep]

    def finish(self, conn: Connection) -> ConnAnalysis:
        """Close the books on a connection: open zero-window spans end at its last packet."""
        state: ConnAnalysis | None = conn.analysis
        if state is None:
            state = conn.analysis = ConnAnalysis()
        if not state.finished:
            for facts in state.facts:
                if facts._zero_since != NEVER:
                    facts.zero_window_time += conn.last_ts - facts._zero_since
                    facts._zero_since = NEVER
            state.flight[0].clear()
            state.flight[1].clear()
            state.finished = True
        return state
