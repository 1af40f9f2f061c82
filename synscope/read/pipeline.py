"""Wires the stages: frames → decode → tracker → analysis → verdict → reports.

Sources push :class:`RawFrame` records in; finished connections come out as
:class:`ConnReport`, as soon as they are complete, so output can stream and
memory stays flat on long captures.
"""

from __future__ import annotations

import heapq
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, cast

from synscope.capture.bpf import FrameFilter
from synscope.core.headers import ETH_HLEN, IP4_DST, IP4_MIN_HLEN, IP4_SRC, IP4_TTL, TCP_DPORT, TCP_FLAGS, TCP_SPORT
from synscope.core.icmp import capture_filter as icmp_capture_filter
from synscope.core.model import ACK, RST, SYN, FrameSink, IcmpError, RawFrame, Segment, ends_mix
from synscope.read.analysis.annotate import annotate
from synscope.read.analysis.engine import Analyser, ConnAnalysis
from synscope.read.decode import Decoder, plain_tcp_header, plain_tcp_mix
from synscope.read.scans import ScanWatch
from synscope.read.tracker import CLOSED_LINGER, COMPACT_AFTER, Connection, FlowKey, FlowKeys, Tracker, segment_key
from synscope.read.verdict import Verdict, judge

# The same segment seen again this soon is the capture seeing one packet twice
# (loopback through AF_PACKET; -i any on a host that forwards).
DUPLICATE_WINDOW: Final = 0.001
# Capture-time interval between sweeps for finished connections. Sweeps run on this clock
# alone, so every worker of a split run sweeps at the same frames as a single one would.
SWEEP_INTERVAL: Final = 0.5
# With an idle timeout (live) a sweep scans the whole table: only once this many segments per
# connection in the table went by, so a table of a million half-open connections is not
# scanned every half second
SWEEP_WORK_RATIO: Final = 0.5
# A reader that hands frames to Pipeline.consume still gets one back to feed() at least this
# often: its caller collects finished connections (and shows progress) between frames
CHECKPOINT: Final = 1024
# Tracker.stamp of connections handed on at the end of the input (after every other)
DRAIN_STAMP: Final = 1 << 62
# pcapng files from several interfaces interleave them in batches, out of time order;
# frames are put back in time order within this much capture time (as reordercap would)
REORDER_WINDOW: Final = 2.0
REORDER_MAX_HELD: Final = 200_000
# Segments of one direction remembered per flow for duplicate detection (a burst
# interleaves the in- and outgoing copies of a few packets on a forwarding host)
DUPLICATE_HISTORY: Final = 8
# loopback addresses: 127.0.0.0/8 and ::1 (a loopback capture through AF_PACKET sees each packet twice)
LOOPBACK_V4_FIRST_BYTE: Final = 127
LOOPBACK_V6: Final = bytes(15) + b"\x01"
# Generations of the duplicate window between purges of the flows not seen in the last two
# (the purge walks every flow remembered: this keeps it cheap per packet, and the table to
# the flows of about the last PURGE_GENERATIONS milliseconds of capture)
PURGE_GENERATIONS: Final = 64
# ICMP errors, told apart by the kernel's filter before a frame the user's --filter rejected is
# decoded: exactly the messages the decoder reads (one definition, synscope.core.icmp)
ICMP_ERRORS_FILTER: Final = icmp_capture_filter()
ETHERNET: Final = 1
# A split run deals out connections by the 16 bits of shard_mix of their 4-tuple: this many buckets
SHARD_BUCKETS: Final = 1 << 16
# ... to the worker dealt the fewest frames so far, a SYN without ACK counted as this many: a
# connection costs its worker its verdict, findings facts and JSON head besides its frames.
# quick.pcap under callgrind, two workers: 3,095 M and 3,526 M instructions counting every frame
# as one, 3,284 M and 3,331 M at 16, 3,276 M and 3,340 M at 32
OPENING_WEIGHT: Final = 16
# A failed attempt followed this soon by another to the same server port may be an application retry
RETRY_WINDOW: Final = 120.0
# ... but only if the next attempt came at least this long after the failure: a client that
# opens the next connection a few milliseconds later is busy, not retrying (busy.pcap: 24
# threads, every 10th attempt refused, 2 ms apart), and the packets cannot tell them apart
RETRY_MIN_GAP: Final = 0.1
# ... and, from the third attempt on, with a regular gap: between these multiples of the gap
# before it (a fixed pause, or a backoff that doubles)
RETRY_GAP_RATIO: Final = (0.5, 3.0)
# (client, server) pairs whose latest connection start the retry linker remembers (the oldest
# are forgotten first): a client that opened any other connection to the server between two
# failures is doing other work, not retrying
RETRY_PEERS: Final = 100_000


@dataclass(slots=True)
class ConnReport:
    """Everything the renderers need about one connection."""

    conn: Connection
    analysis: ConnAnalysis
    verdict: Verdict
    retry_of: int | None = None  # the failed attempt this one retries (application retry), by id
    retry_number: int = 0
    source_name: str = ""
    round_no: int = 0  # probe --count: which round (0-based) of how many
    rounds: int = 1
    raw_client: bool = False  # the client was a raw probe (crafted SYN): no client socket had a state
    scan: bool = False  # part of a port scan (synscope.read.scans): the port-scan finding covers it
    storm: bool = False  # opened while its server endpoint was under a SYN storm (ScanWatch.storm)

    # Written out (dataclass keeps it): one per connection, and the generated one runs as Python bytecode
    def __init__(
        self, conn: Connection, analysis: ConnAnalysis, verdict: Verdict, retry_of: int | None = None, retry_number: int = 0, source_name: str = ""
    ) -> None:
        self.conn = conn
        self.analysis = analysis
        self.verdict = verdict
        self.retry_of = retry_of
        self.retry_number = retry_number
        self.source_name = source_name
        self.round_no = 0
        self.rounds = 1
        self.raw_client = False
        self.scan = False
        self.storm = False

    def client_state(self) -> str:
        """The client's end state; ``none`` for a raw probe, which had no socket."""
        return "none" if self.raw_client else self.conn.state_of(self.conn.client)

    def server_state(self) -> str:
        """The server's end state; ``unknown`` when a box on the path answered in its name (the
        SYN probably never reached it)."""
        return "unknown" if self.verdict.rule == "reset-by-path" else self.conn.state_of(self.conn.server)


@dataclass(slots=True)
class RunStats:
    """Totals of one run, for the header line and the --stats view."""

    frames: int = 0
    filtered_out: int = 0
    duplicates: int = 0
    first_ts: float = 0.0  # (meaningful once frames > 0; plain floats stay unboxed when compiled)
    last_ts: float = 0.0
    reordered: int = 0  # frames put back in time order
    backwards: int = 0  # frames stamped earlier than a frame before them (clock steps, broken capture)
    # checksums of the connections reported: holding only the pseudo-header sum (TX offload on the
    # capturing host), and wrong (corrupted); see synscope.read.decode.checksum_state
    partial_checksums: int = 0
    bad_checksums: int = 0


@dataclass
class Selection:
    """What the user asked to see: --host, --port, --filter."""

    hosts: frozenset[bytes] = frozenset()
    ports: frozenset[int] = frozenset()
    frame_filter: FrameFilter | None = None

    def wants(self, item: Segment | IcmpError) -> bool:
        """Does a decoded segment (or an ICMP error's quoted packet) match --host / --port?"""
        if self.hosts and item.src not in self.hosts and item.dst not in self.hosts:
            return False
        return not (self.ports and item.sport not in self.ports and item.dport not in self.ports)


class _Dealt:
    """Frames dealt to one worker of a split run (see ``Pipeline._tracks``). A native count in an
    object, not an int in a list: compiled, the count is added to in place, where a list's int
    is unboxed, added to and boxed anew on every frame."""

    def __init__(self) -> None:
        self.frames = 0


class _RecentSegments:
    """One direction's segments seen lately on a flow, for duplicate detection.

    ``segments[:count]`` and ``options[:count]`` are the ones remembered: the lists keep
    DUPLICATE_HISTORY slots, so starting over sets ``count`` alone (no list is cleared or grown
    per packet; a slot past ``count`` still refers to an old segment until it is written again).
    """

    __slots__ = ("forward", "segments", "options", "count", "generation", "proven", "conn")

    def __init__(self, forward: bool, seg: Segment, generation: int) -> None:
        self.forward = forward
        self.segments: list[Segment] = [seg] * DUPLICATE_HISTORY
        # their TCP options as captured (the analyser drops a segment's options once it is done)
        self.options: list[bytes] = [seg.raw_options] * DUPLICATE_HISTORY
        self.count = 1
        self.generation = generation  # of the duplicate window when last touched (see _seen_twice)
        # a copy of this flow's packets was proven (same non-zero IP ID): it is captured twice
        self.proven = False
        # the connection the tracker last gave for this flow (see Pipeline._track); None: look it up
        self.conn: Connection | None = None

    def restart(self, forward: bool, seg: Segment, generation: int) -> None:
        """Start over as a new entry would (an expired one is reused: no object, no lists made)."""
        self.forward = forward
        self.segments[0] = seg
        self.options[0] = seg.raw_options
        self.count = 1
        self.generation = generation
        self.proven = False

    def add(self, seg: Segment) -> None:
        """Remember one more segment; with DUPLICATE_HISTORY of them, only this one."""
        count = self.count
        if count >= DUPLICATE_HISTORY:
            count = 0
        self.segments[count] = seg
        self.options[count] = seg.raw_options
        self.count = count + 1


def _copies_expected(seg: Segment) -> bool:
    """The capture records this packet twice by design: a cooked ``-i any`` capture (it has
    packet types: the incoming and outgoing copy of a forwarded packet) or loopback."""
    if seg.pkttype >= 0:
        return True
    src = seg.src
    return src[0] == LOOPBACK_V4_FIRST_BYTE if len(src) == 4 else src == LOOPBACK_V6


class Pipeline(FrameSink):
    """Stateful one-way pipeline; one per run (a run may read several files)."""

    def __init__(
        self,
        selection: Selection | None = None,
        max_conns: int | None = None,
        keep_payload: bool = False,
        dedup: bool = True,
        closed_linger: float = CLOSED_LINGER,
        idle_timeout: float | None = None,
        sweep_idle: bool = True,
        prepare: Callable[[Connection, ConnAnalysis], None] | None = None,
        verify_checksums: bool = False,
        compact_after: int | None = COMPACT_AFTER,
    ) -> None:
        """``closed_linger`` / ``idle_timeout`` / ``sweep_idle``: see :class:`Tracker` (a live source
        hands closed connections on sooner, and idle ones at all; ``read --split-idle`` splits a
        connection only when a packet comes after the timeout); ``prepare`` is called on each finished
        connection before it is annotated and judged (``watch --handshakes`` uses it); ``compact_after``: see
        :class:`Tracker` (off only in tests that check it changes nothing)."""
        self.selection = selection or Selection()
        self.decoder = Decoder(keep_payload=keep_payload, verify_checksums=verify_checksums)
        self.tracker = Tracker(max_conns=max_conns, closed_linger=closed_linger, idle_timeout=idle_timeout, sweep_idle=sweep_idle, compact_after=compact_after)
        self.tracker.addresses = self.decoder.addresses  # (one object per address, shared: see AddressTable)
        self.prepare = prepare
        self.analyser = Analyser()
        # a compact half-open attempt made a full connection: its packets analysed as when read
        self.tracker.replay = self.analyser.on_packet
        self.stats = RunStats()
        self.dedup = dedup
        # segments seen lately, per flow (see _seen_twice); a generation of the duplicate window
        # starts when a segment comes more than DUPLICATE_WINDOW after the generation's first
        self._recent: dict[FlowKey, _RecentSegments] = {}
        self._generation = 0
        self._recent_start = 0.0
        self._purged_at = 0
        self._next_sweep = 0.0
        self._since_sweep = 0
        self.retries = RetryLinker()
        self.link_retries = True
        # servers known to be up (they answered on some port in this run: probe fills it in)
        self.hosts_up: frozenset[bytes] = frozenset()
        # scans and hosts that answered, from every SYN, SYN-ACK and RST read (None: not watched, as in probe)
        self.scans: ScanWatch | None = ScanWatch()
        # for ICMP errors quoting a selected connection (see _quotes_selected), made when first needed
        self._icmp_filter: FrameFilter | None = None
        self._quote_decoder: Decoder | None = None
        self.source_names: list[str] = []
        # a split run (see share()): this worker's index and the number of workers (0: no split);
        # which worker each shard_mix bucket was dealt to (-1: none yet), frames dealt to each worker
        self._shard_index = 0
        self._shard_count = 0
        self._bucket_worker: list[int] = []
        self._shard_frames: list[_Dealt] = []
        # consume() takes frames from a reader: not with --filter, --host or --port (it would
        # have to apply them to frames it never makes RawFrames, or never decodes)
        self._consumes = self.selection.frame_filter is None and not self.selection.hosts and not self.selection.ports
        self._fed_at = 0  # stats.frames when feed() last had a frame
        self._copy_of = 0  # frame number of the first copy, when _seen_twice says True
        # the flow's entry _seen_twice looked at or made (set whenever it says False)
        self._entry: _RecentSegments | None = None
        self.source_index = 0  # of the file being read, for frames taken by consume()
        self._flow_keys = FlowKeys()  # the flow keys of frames taken by consume()

    def feed(self, frame: RawFrame, source_index: int = 0) -> None:
        """Push one captured frame through decode, tracking and analysis."""
        stats = self.stats
        ts = frame.ts
        self._count_frame(ts)
        self._fed_at = stats.frames
        data = frame.data
        sel = self.selection
        if sel.frame_filter is not None and not sel.frame_filter.matches(frame.linktype, data, frame.orig_len) and not self._quotes_selected(frame):
            stats.filtered_out += 1
            return
        item = self.decoder.decode(frame)
        if item is None:
            return
        if (sel.hosts or sel.ports) and not sel.wants(item):
            stats.filtered_out += 1
            return
        # Everything up to the shard test below sees every decoded item, in every worker of a
        # split run: the capture clock, the sweeps and the duplicate window's generations.
        self._clock_tick(ts, isinstance(item, Segment))
        workers = self._shard_count
        if isinstance(item, Segment):
            item.source_index = source_index  # (set on the class, not the union: a slot store when compiled)
            if item.flags & (SYN | RST) and self.scans is not None:  # (every worker: before the shard test)
                self.scans.saw(item)
            key = segment_key(item)
            if workers and not self._tracks(shard_mix(key), item.flags):
                return
            self._track(item, key)
        else:
            item.source_index = source_index
            if workers and not self._tracks(shard_mix(segment_key(item)), 0):
                return
            self.tracker.attach_icmp(item)

    def _quotes_selected(self, frame: RawFrame) -> bool:
        """An ICMP error the --filter rejected whose quoted TCP packet the filter selects: kept, or
        ``--filter 'tcp port N'`` would turn a rejected SYN into silence. The quoted packet is
        matched as a bare TCP header (flags unknown: SYN assumed, the usual case of an error
        that ends an attempt). Decided from the frame alone, so every worker of a split run
        decides alike."""
        sel = self.selection
        if sel.frame_filter is None:
            return False
        if self._icmp_filter is None:
            self._icmp_filter = FrameFilter(ICMP_ERRORS_FILTER)
            self._quote_decoder = Decoder()
        if not self._icmp_filter.matches(frame.linktype, frame.data, frame.orig_len):
            return False
        item = self._quote_decoder.decode(frame) if self._quote_decoder is not None else None
        if not isinstance(item, IcmpError):
            return False
        quoted = quoted_tcp_frame(item)
        return sel.frame_filter.matches(ETHERNET, quoted, len(quoted))

    def consume(self, buf: bytes, offset: int, caplen: int, orig_len: int, linktype: int, ts: float, frame: int, pkttype: int) -> bool:
        """A reader's :class:`FrameSink`: a common frame (see ``Decoder.decode_plain``) is handled
        here without being made a RawFrame, exactly as :meth:`feed` would handle it -- decoded
        and tracked, or, in a worker of a split run, counted and passed over when another worker
        tracks its connection (True). Anything else is left to feed() (False), and so is one
        frame in every CHECKPOINT, so the reader's caller gets frames back to collect reports.
        """
        if not self._consumes or linktype != 1:
            return False
        stats = self.stats
        if stats.frames - self._fed_at >= CHECKPOINT - 1:
            return False
        workers = self._shard_count
        hlen = -1
        if workers:
            hlen = plain_tcp_header(buf, offset, caplen)
            if hlen < 0:
                return False
            if not self._tracks(plain_tcp_mix(buf, offset), buf[offset + ETH_HLEN + IP4_MIN_HLEN + TCP_FLAGS]):
                self._count_frame(ts)
                self.decoder.count_passed(buf, offset, caplen)
                self._clock_tick(ts, True)
                if buf[offset + ETH_HLEN + IP4_MIN_HLEN + TCP_FLAGS] & (SYN | RST) and self.scans is not None:
                    self._scan_passed(buf, offset + ETH_HLEN, ts, frame)  # (every worker sees every one)
                return True
        # (with the header's length found above, it decodes every frame dealt here: none is handed
        # to feed() to be dealt again, which would put this worker's count of dealt frames apart
        # from the others')
        seg = self.decoder.decode_plain(buf, offset, caplen, frame, ts, pkttype, hlen)
        if seg is None:
            return False
        self._count_frame(ts)
        self._clock_tick(ts, True)
        seg.source_index = self.source_index
        if seg.flags & (SYN | RST) and self.scans is not None:
            self.scans.saw(seg)
        self._track(seg, self._flow_keys.key(seg.src, seg.sport, seg.dst, seg.dport))
        return True

    def _scan_passed(self, buf: bytes, ip: int, ts: float, frame: int) -> None:
        """Show the scan watch a SYN, SYN-ACK or RST passed over (consume), its fields read from the
        IPv4 header at ``buf[ip:]`` as Decoder.decode_plain reads them: no Segment, no checksum."""
        tcp = ip + IP4_MIN_HLEN
        if self.scans is not None:
            self.scans.saw_fields(
                buf[tcp + TCP_FLAGS],
                buf[ip + IP4_SRC : ip + IP4_SRC + 4],
                buf[ip + IP4_DST : ip + IP4_DST + 4],
                buf[tcp + TCP_SPORT] << 8 | buf[tcp + TCP_SPORT + 1],
                buf[tcp + TCP_DPORT] << 8 | buf[tcp + TCP_DPORT + 1],
                ts,
                buf[ip + IP4_TTL],
                frame,
            )

    def _track(self, seg: Segment, key: FlowKey) -> None:
        """A segment of this worker's connections: duplicate check, tracking, analysis."""
        entry: _RecentSegments | None = None
        if self.dedup:
            if self._seen_twice(seg, key):
                self.stats.duplicates += 1
                conn = self.tracker.held(key)
                if conn is not None:  # listed with its connection, not analysed
                    conn.add_duplicate(seg, self._copy_of)
                return
            entry = self._entry
        # the flow's connection as the tracker gave it last time, while it is still held (never
        # handed on: retired_at unset): the tracker need not hash the key again to find it
        held = None
        if entry is not None:
            held = entry.conn
            if held is not None and held.retired_at != 0:
                held = None
        conn = self.tracker.feed(seg, key, held)
        if entry is not None:
            entry.conn = conn
        if conn is None:  # a late packet of a connection already handed on: counted
            return
        self.analyser.on_packet(conn, conn.packets[-1])

    def _count_frame(self, ts: float) -> None:
        """The run's totals, for every frame read."""
        stats = self.stats
        stats.frames += 1
        first = stats.frames == 1
        if first or ts < stats.first_ts:
            stats.first_ts = ts
        if first or ts >= stats.last_ts:
            stats.last_ts = ts
        elif stats.last_ts - ts > DUPLICATE_WINDOW:
            stats.backwards += 1

    def _clock_tick(self, ts: float, segment: bool) -> None:
        """What every decoded item moves on, whichever worker of a split run tracks it: the
        capture clock, the sweeps and (segments only) the duplicate window's generations."""
        tracker = self.tracker
        if ts > tracker.clock:
            tracker.clock = ts
        position = self.stats.frames
        if ts >= self._next_sweep and (tracker.idle_timeout is None or not tracker.sweep_idle or self._since_sweep >= SWEEP_WORK_RATIO * len(tracker.table)):
            self._next_sweep = ts + SWEEP_INTERVAL
            self._since_sweep = 0
            tracker.stamp = position + position  # (a sum, not 2 * position: see fmt.fixed)
            tracker.sweep()
        self._since_sweep += 1
        tracker.stamp = position + position + 1
        if segment and self.dedup and (ts - self._recent_start > DUPLICATE_WINDOW or ts < self._recent_start):
            self._recent_start = ts
            self._generation += 1
            if self._generation - self._purged_at >= PURGE_GENERATIONS:
                self._purge_recent()

    def _purge_recent(self) -> None:
        """Drop the flows whose duplicate-window entries have expired (see _seen_twice)."""
        oldest = self._generation - 1
        self._recent = {flow: entry for flow, entry in self._recent.items() if entry.generation >= oldest}
        self._purged_at = self._generation

    def share(self, index: int, workers: int) -> None:
        """Track only the connections dealt to worker ``index`` of ``workers`` (a split run; see
        :meth:`_tracks`)."""
        self._shard_index, self._shard_count = index, workers
        self._bucket_worker = [-1] * SHARD_BUCKETS
        self._shard_frames = [_Dealt() for _ in range(workers)]

    def _tracks(self, mix: int, flags: int) -> bool:
        """Does this worker track the connections whose 4-tuple mixes to ``mix`` (:func:`shard_mix`)?

        Each of the SHARD_BUCKETS values of ``mix`` is dealt, at its first frame, to the worker
        that has been dealt the fewest frames so far (``flags``: the frame's TCP flags, 0 for an ICMP
        error; a SYN without ACK counts as OPENING_WEIGHT frames), and stays with it (a 4-tuple's connections,
        its reuses and ICMP errors quoting it stay in one worker). Every worker sees every frame
        that gets here, in the same order, so all deal alike with no word between them. Dealt by
        ``mix % workers`` instead, a few long flows decided the split: big.pcap's 8 bulk flows put
        61 % of its frames on one of two workers, which then ran a sixth longer than the other.
        """
        buckets = self._bucket_worker
        worker = buckets[mix]
        dealt = self._shard_frames
        if worker < 0:
            worker = 0
            for w in range(1, len(dealt)):
                if dealt[w].frames < dealt[worker].frames:
                    worker = w
            buckets[mix] = worker
        # (a connection's opening SYN counts as OPENING_WEIGHT frames: see there)
        dealt[worker].frames += OPENING_WEIGHT if flags & (SYN | ACK) == SYN else 1
        return worker == self._shard_index

    def _seen_twice(self, seg: Segment, flow: FlowKey) -> bool:
        """The same segment again within DUPLICATE_WINDOW, with nothing from the other side
        in between: one packet captured twice.

        Loopback captures through AF_PACKET record the outgoing and incoming copy;
        ``tcpdump -i any`` on a router or container host records a forwarded
        packet on every interface it crosses (its TTL one lower). Same ports,
        seq, ack, flags, length, window, IP ID and TCP options is the same packet.
        A real retransmission always follows something from the other side (a
        duplicate ACK, or the peer's own retransmission: Linux answers a repeated
        SYN at once with a byte-identical SYN-ACK), so a packet the other way in
        between means the copy is genuine.

        Byte equality alone proves nothing for packets with IP ID 0: Linux sends RSTs for a
        socket that is gone and SYN-ACKs with IP ID 0 and often the same bytes, microseconds
        apart. Such a match is taken for a copy only where the capture shows it records
        packets twice: a cooked (``-i any``) capture, loopback, or a proven copy on the flow
        (the same non-zero IP ID: a connected socket numbers its packets).
        """
        # (the port and address cast, not compared as objects: compiled, the int would be boxed
        # first, and an object comparison gives an object, so "forward" would be one too; the address
        # by identity first: the decoder hands out one bytes object per address)
        src = seg.src
        forward = cast(int, flow[1]) == seg.sport and (flow[0] is src or cast(bytes, flow[0]) == src)
        generation = self._generation
        entry = self._recent.get(flow)
        # an entry counts if touched in this generation of the window or the one before
        if entry is None:
            entry = _RecentSegments(forward, seg, generation)  # first packet (lately)
            self._recent[flow] = entry
            self._entry = entry
            return False
        self._entry = entry
        if entry.generation < generation - 1:
            entry.restart(forward, seg, generation)  # first packet lately (its entry not purged yet)
            return False
        entry.generation = generation
        if entry.forward != forward:  # the other side spoke: start over
            entry.forward = forward
            entry.segments[0] = seg
            entry.options[0] = seg.raw_options
            entry.count = 1
            return False
        segments = entry.segments
        options = entry.options
        count = entry.count
        # the same segment: ports (the flow), seq, ack, flags, length, window, IP ID and options
        for i in range(count):
            prev = segments[i]
            if (
                prev.seq == seg.seq
                and prev.ack == seg.ack
                and prev.flags == seg.flags
                and prev.length == seg.length
                and prev.win == seg.win
                and prev.ip_id == seg.ip_id
                and options[i] == seg.raw_options
            ):
                if abs(seg.ts - prev.ts) <= DUPLICATE_WINDOW:
                    if seg.ip_id:
                        entry.proven = True
                        self._copy_of = prev.frame
                        return True
                    if entry.proven or _copies_expected(seg):
                        self._copy_of = prev.frame
                        return True
                    # IP ID 0 (kernel-made RSTs and SYN-ACKs, or IPv6) on a capture that shows
                    # no sign of recording packets twice: two packets that happen to match
                    segments[i] = seg
                    return False
                if count < DUPLICATE_HISTORY:
                    segments[i] = seg  # the same one again, later: remembered from now
                    return False
                break  # (a full history starts over with it, as with any other)
        entry.add(seg)
        return False

    def sweep(self, now: float | None = None) -> None:
        """Hand on finished (and, with an idle timeout, idle) connections now; ``now`` is the
        wall clock for a live source with no packets arriving. Collect them with :meth:`ready`."""
        self.tracker.stamp = self.stats.frames + self.stats.frames + 2  # (see _clock_tick)
        self.tracker.sweep(now)

    def ready(self) -> list[ConnReport]:
        """Connections finished so far (call between frames to stream output)."""
        return [self._report(c) for c in self.tracker.take_retired()]

    def finish(self) -> list[ConnReport]:
        """End of input: reports for every connection still held."""
        return list(self.finishing())

    def finishing(self) -> Iterator[ConnReport]:
        """:meth:`finish`, one report at a time: each is made when it is asked for, so a long
        capture's last connections need not all be rendered at once."""
        self.tracker.stamp = DRAIN_STAMP
        for conn in self.tracker.drain():
            yield self._report(conn)

    def _report(self, conn: Connection) -> ConnReport:
        state = self.analyser.finish(conn)
        if self.prepare is not None:
            self.prepare(conn, state)
        scans = self.scans
        host_synack = scans.synack_ttl(conn.server.ip) if scans is not None else (0, 0)
        annotate(conn, state, host_synack[0])
        host_up = conn.server.ip in self.hosts_up or (scans is not None and scans.answered_elsewhere(conn.server.ip, conn.server.port))
        scan = scans is not None and scans.in_scan(conn.client.ip, conn.server.ip, conn.server.port, conn.first_ts)
        tracker = self.tracker
        verdict = judge(conn, state, tracker.idle_timeout, host_up, scan, host_synack, "--idle-timeout" if tracker.sweep_idle else "--split-idle")
        report = ConnReport(conn, state, verdict)
        report.scan = scan
        syn_ts = conn.syn_ts
        # (asked only of an attempt the retry linker would look at)
        if syn_ts is not None and scans is not None and not scan:
            report.storm = scans.storm(conn.server.ip, conn.server.port, syn_ts)
        report.raw_client = verdict.rule == "scan-probe"  # (a crafted probe: no socket behind it)
        if state.partial_checksums or state.bad_checksums:
            self.stats.partial_checksums += state.partial_checksums
            self.stats.bad_checksums += len(state.bad_checksums)
        if self.source_names and conn.source_index < len(self.source_names):
            report.source_name = self.source_names[conn.source_index]
        if self.link_retries and syn_ts is not None and is_attempt(report):
            linked = self.retries.link(
                (conn.client.ip, conn.server.ip, conn.server.port),
                conn.id,
                syn_ts,
                failed_attempt(conn, verdict),
                conn.retire_clock,
                conn.last_ts,
                not storm_suspect(report),
            )
            if linked is not None:
                report.retry_of, report.retry_number = linked
        return report


class RetryLinker:
    """A failed attempt that the application retries: one client, the same server port, a new
    source port, the next attempt a short and regular gap after the failure.

    Failures that follow each other closer than RETRY_MIN_GAP (independent connections of a
    busy client) are not linked: they are a group (synscope.read.findings), not a chain.
    Fed the connections in the order they are handed on; a split run links them after
    merging, so the numbers are the same as one worker's.
    """

    def __init__(self) -> None:
        # (client ip, server ip, server port) -> (id, failure time, retry number, gap before it),
        # oldest first; an OrderedDict for the same reason as _latest below (a SYN flood's failed
        # attempts expire from its front all the time)
        # (keys of plain tuple types, here and below: compiled, a fixed-length tuple type is a C
        # struct, made a new tuple object, hashed again, at each use as a key)
        self._failed: OrderedDict[tuple, tuple[int, float, int, float]] = OrderedDict()
        # (client ip, server ip) -> latest SYN time of any connection handed on, oldest first
        # OrderedDict: its oldest entry is found in O(1); a dict's first key costs O(n) once many
        # entries were deleted from its front (5 % of a run in ReuseDetector.add)
        self._latest: OrderedDict[tuple, float] = OrderedDict()
        # the failure time of _failed's first entry, while _front_known (else that entry changed:
        # look again). Most links then skip the walk to the front for expired failures.
        self._front_at = 0.0
        self._front_known = False

    def link(
        self, key: tuple, conn_id: int, syn_ts: float, failed_attempt: bool, clock: float, failed_at: float | None = None, linkable: bool = True
    ) -> tuple[int, int] | None:
        """(id of the failed attempt this one retries, retry number), or None. ``failed_attempt``:
        this connection never got established (a connection that worked, even with loss, is
        nothing to retry); ``clock``: the capture clock when it was handed on; ``failed_at``:
        when it failed (its last packet; default its SYN). ``key``: (client ip, server ip, server port).

        ``linkable`` False: the connection may be a flood's spoofed SYN (:func:`storm_suspect`).
        Spoofed flood sources share addresses by chance, and the packets cannot tell a second
        spoofed SYN from an application's retry: it is neither linked nor remembered as a failure
        to retry, only as its client's latest connection to the server (which keeps an earlier
        failure of a real client from being linked across it)."""
        if not linkable:
            self._latest_before((key[0], key[1]), syn_ts)
            return None
        failed = self._failed
        # (taken before the expired ones go: several files in one run need not be in time
        # order, and the capture clock is the latest of them)
        prev = failed[key] if key in failed else None  # (not OrderedDict.get: a method call when compiled)
        if prev is not None:
            del failed[key]
            self._front_known = False  # (it may have been the first)
        # forget failures too old to be retried by this SYN: by the SYN's own time, not only the
        # capture clock, which runs ahead when a newer file was read before this one
        horizon = min(clock, syn_ts) - RETRY_WINDOW
        if not (self._front_known and horizon <= self._front_at):  # (else the first is not expired, so none is)
            self._front_known = False
            while failed:  # kept in time order (updates re-insert), so the expired ones are at the front
                first = next(iter(failed))
                at = failed[first][1]
                if at >= horizon:
                    self._front_at = at
                    self._front_known = True
                    break
                del failed[first]
        latest = self._latest_before((key[0], key[1]), syn_ts)  # (one tuple object: see __init__)
        linked = None
        gap = 0.0
        # another connection from this client to this server started after the failure: not a retry
        busy = prev is not None and latest is not None and prev[1] < latest < syn_ts
        if prev is not None and prev[0] != conn_id and not busy:
            gap = syn_ts - prev[1]
            low, high = RETRY_GAP_RATIO
            regular = prev[2] == 0 or low * prev[3] <= gap <= high * prev[3]
            if RETRY_MIN_GAP <= gap <= RETRY_WINDOW and regular:
                linked = (prev[0], prev[2] + 1)
        if failed_attempt:
            failed[key] = (conn_id, syn_ts if failed_at is None else failed_at, linked[1] if linked else 0, gap)
        return linked

    def _latest_before(self, pair: tuple, syn_ts: float) -> float | None:
        """The latest SYN time of a connection from the client to the server (``pair``) before
        this one, which starts at ``syn_ts`` and is remembered in turn."""
        latests = self._latest
        latest = latests[pair] if pair in latests else None
        if latest is None:
            latests[pair] = syn_ts
            if len(latests) > RETRY_PEERS:
                latests.popitem(False)  # (the oldest; positional: a keyword costs more in the call)
        else:
            latests.move_to_end(pair)  # the dict stays in update order
            if syn_ts > latest:
                latests[pair] = syn_ts
        return latest


def storm_suspect(report: ConnReport) -> bool:
    """Opened during a SYN storm against its server endpoint (``report.storm``) with nothing to show
    a kernel behind its client: one SYN and no handshake. A flood's crafted SYNs are sent once and
    never completed; a client whose SYN went again, or that completed the handshake, had a kernel
    that retried or answered, and may be a real client the flood hit."""
    conn = report.conn
    return report.storm and conn.client.syn_count <= 1 and not conn.established


def is_attempt(report: ConnReport) -> bool:
    """A connection the retry linker looks at: one with a SYN, not a scan's probe, and not the
    continuation of an earlier record split off by ``read --split-idle`` (the same attempt).
    A :func:`storm_suspect` is looked at only as its client's latest connection to the server:
    see ``RetryLinker.link``'s ``linkable``."""
    conn = report.conn
    return conn.syn_ts is not None and not report.scan and not conn.idle_split


def failed_attempt(conn: Connection, verdict: Verdict) -> bool:
    """A connection the application may retry: it went wrong before it was ever established."""
    return not verdict.ok and not conn.established


def quoted_tcp_frame(err: IcmpError) -> bytes:
    """The packet an ICMP error quotes, rebuilt as an Ethernet frame with a bare TCP header (SYN),
    for the user's --filter to judge."""
    tcp = struct.pack("!HHIIBBHHH", err.sport, err.dport, (err.seq or 0) & 0xFFFFFFFF, 0, 0x50, 0x02, 0, 0, 0)
    if err.version == 6:
        ip = struct.pack("!IHBB", 0x60000000, len(tcp), 6, 64) + err.src + err.dst
        ethertype = 0x86DD
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0) + err.src + err.dst
        ethertype = 0x0800
    return bytes(12) + struct.pack("!H", ethertype) + ip + tcp


def link_sentences(report: ConnReport) -> str:
    """The sentences that tie a connection to others (port reuse, application retry, probe round),
    worded from the report's data: renderers put them after the verdict's own explanation."""
    out = []
    if report.conn.reused_from is not None and report.conn.idle_split:
        out.append(f"This continues connection #{report.conn.reused_from}, split off after the idle timeout (--split-idle).")
    elif report.conn.reused_from is not None:
        out.append(f"This 4-tuple was used before by connection #{report.conn.reused_from} (port reuse).")
    if report.retry_of is not None and report.conn.client.port != 0:
        # the retry linker links by client and service; the same 4-tuple is a reuse, not a new port
        port = "the same source port" if report.retry_of == report.conn.reused_from else "new source port"
        out.append(f"This is attempt {report.retry_number + 1} by the application ({port}), after connection #{report.retry_of} failed.")
    if report.rounds > 1:
        out.append(f"(Round {report.round_no + 1} of {report.rounds} of --count.)")
    return " ".join(out)


def shard_mix(key: FlowKey) -> int:
    """The bucket a split run deals the connections of this flow_key by (``Pipeline._tracks``): by
    the 4-tuple alone, so both directions of a tunnelled flow (whose outer headers differ) and the
    frames passed over undecoded (plain_tcp_mix) agree."""
    return ends_mix(key[1], key[3], key[0][-1], key[2][-1])


def time_ordered(frames: Iterable[RawFrame], stats: RunStats) -> Iterator[RawFrame]:
    """Frames in timestamp order, holding at most REORDER_WINDOW seconds of capture, once the
    file has declared a second interface.

    Multi-interface pcapng captures are written in per-interface batches; analysing
    them in file order would make every batch look like a burst of retransmissions.
    Frames keep their file frame numbers, so they still match Wireshark's.
    """
    heap: list[tuple[float, int, RawFrame]] = []
    newest = float("-inf")
    # While the file has declared one interface, frames stay in file order, as in a pcap file
    # (holding seconds of frames would only cost memory and time)
    declares = hasattr(frames, "interfaces")
    for frame in frames:
        ts = frame.ts
        if not heap and declares and getattr(frames, "interfaces") <= 1:  # noqa: B009 (frames need not be a reader)
            if ts > newest:
                newest = ts
            yield frame
            continue
        # frames the reader gave to its sink (only while there was one interface) count as seen
        newest = max(newest, getattr(frames, "passed_newest", newest))
        if ts < newest:
            stats.reordered += 1
        else:
            newest = ts
        heapq.heappush(heap, (ts, frame.frame, frame))
        while heap and (heap[0][0] < newest - REORDER_WINDOW or len(heap) > REORDER_MAX_HELD):
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def run(
    sources: Iterable[tuple[str, Iterable[RawFrame]]],
    pipeline: Pipeline,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[ConnReport]:
    """Feed every frame of every source (see :func:`feed_source`); yield reports as connections
    finish, then the rest."""
    for index, (name, frames) in enumerate(sources):
        for frames_read in feed_source(pipeline, index, name, frames, CHECKPOINT):
            if progress is not None:
                progress(index, frames_read)
            yield from pipeline.ready()
    yield from pipeline.ready()
    yield from pipeline.finishing()


def feed_source(pipeline: Pipeline, index: int, name: str, frames: Iterable[RawFrame], every: int) -> Iterator[int]:
    """Feed one source's frames (source ``index`` of a run) to ``pipeline``; about every ``every``
    frames, counting those a capture reader hands straight to :meth:`Pipeline.consume`, yield the
    number of this source's frames so far (the caller collects reports then).

    A source whose ``format`` attribute is ``"pcapng"`` is put in time order first.
    """
    stats = pipeline.stats
    pipeline.source_names.append(name)
    pipeline.source_index = index
    if hasattr(frames, "sink"):  # a capture reader: it hands the common frames to consume()
        setattr(frames, "sink", pipeline)  # noqa: B010 (frames is any iterable)
    stream = time_ordered(frames, stats) if getattr(frames, "format", "") == "pcapng" else frames
    before = stats.frames
    next_batch = before + every
    for frame in stream:
        pipeline.feed(frame, index)  # (a method call, not a bound method in a local: native when compiled)
        if stats.frames >= next_batch:
            next_batch = stats.frames + every
            yield stats.frames - before
