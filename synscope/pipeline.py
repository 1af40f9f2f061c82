"""Wires the stages: frames → decode → tracker → analysis → verdict → reports.

Sources push :class:`RawFrame` records in; finished connections come out as
:class:`ConnReport`, as soon as they are complete, so output can stream and
memory stays flat on long captures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from synscope.analysis.annotate import annotate
from synscope.analysis.engine import Analyser, ConnAnalysis
from synscope.bpf import FrameFilter
from synscope.decode import Decoder
from synscope.model import IcmpError, RawFrame, Segment
from synscope.tracker import Connection, Tracker
from synscope.verdict import Verdict, judge

# Identical bytes seen again this soon is the capture seeing one packet twice
# (AF_PACKET on loopback records the outgoing and the incoming copy).
DUPLICATE_WINDOW = 0.001
# Capture-time interval between sweeps for finished connections
SWEEP_INTERVAL = 5.0
# A failed attempt followed this soon by another to the same server port is an application retry
RETRY_WINDOW = 120.0


@dataclass(slots=True)
class ConnReport:
    """Everything the renderers need about one connection."""

    conn: Connection
    analysis: ConnAnalysis
    verdict: Verdict
    retry_of: int | None = None
    retry_number: int = 0
    source_name: str = ""


@dataclass(slots=True)
class RunStats:
    """Totals of one run, for the header line and the --stats view."""

    frames: int = 0
    filtered_out: int = 0
    duplicates: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    connections: int = 0
    warnings: list[str] = field(default_factory=list)


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


class Pipeline:
    """Stateful one-way pipeline; one per run (a run may read several files)."""

    def __init__(
        self,
        selection: Selection | None = None,
        max_conns: int | None = None,
        keep_payload: bool = False,
        dedup: bool = True,
    ) -> None:
        self.selection = selection or Selection()
        self.decoder = Decoder(keep_payload=keep_payload)
        self.tracker = Tracker(max_conns=max_conns)
        self.analyser = Analyser()
        self.stats = RunStats()
        self.dedup = dedup
        self._prev_data: bytes = b""
        self._prev_ts = 0.0
        self._next_sweep = 0.0
        self._failed: dict[tuple[bytes, bytes, int], tuple[int, float, int]] = {}
        self.source_names: list[str] = []

    def feed(self, frame: RawFrame, source_index: int = 0) -> None:
        """Push one captured frame through decode, tracking and analysis."""
        stats = self.stats
        stats.frames += 1
        ts = frame.ts
        if stats.first_ts is None or ts < stats.first_ts:
            stats.first_ts = ts
        if stats.last_ts is None or ts > stats.last_ts:
            stats.last_ts = ts
        data = frame.data
        if self.dedup and data == self._prev_data and 0 <= ts - self._prev_ts < DUPLICATE_WINDOW:
            stats.duplicates += 1
            return
        self._prev_data, self._prev_ts = data, ts
        sel = self.selection
        if sel.frame_filter is not None and not sel.frame_filter.matches(frame.linktype, data, frame.orig_len):
            stats.filtered_out += 1
            return
        item = self.decoder.decode(frame)
        if item is None:
            return
        if (sel.hosts or sel.ports) and not sel.wants(item):
            stats.filtered_out += 1
            return
        item.source_index = source_index
        if isinstance(item, Segment):
            conn, pkt = self.tracker.feed(item)
            self.analyser.on_packet(conn, pkt)
        else:
            self.tracker.attach_icmp(item)
        if ts >= self._next_sweep:
            self._next_sweep = ts + SWEEP_INTERVAL
            self.tracker.sweep()

    def ready(self) -> list[ConnReport]:
        """Connections finished so far (call between frames to stream output)."""
        return [self._report(c) for c in self.tracker.take_retired()]

    def finish(self) -> list[ConnReport]:
        """End of input: reports for every connection still held."""
        return [self._report(c) for c in self.tracker.drain()]

    def _report(self, conn: Connection) -> ConnReport:
        state = self.analyser.finish(conn)
        annotate(conn, state)
        verdict = judge(conn, state)
        self.stats.connections += 1
        report = ConnReport(conn, state, verdict)
        if self.source_names and conn.source_index < len(self.source_names):
            report.source_name = self.source_names[conn.source_index]
        self._link_retries(report)
        return report

    def _link_retries(self, report: ConnReport) -> None:
        """Failed attempts to one server port from new source ports are the application retrying."""
        conn = report.conn
        if conn.syn_ts is None:
            return
        key = (conn.client.ip, conn.server.ip, conn.server.port)
        prev = self._failed.get(key)
        if prev is not None and 0 <= conn.syn_ts - prev[1] <= RETRY_WINDOW and prev[0] != conn.id:
            report.retry_of = prev[0]
            report.retry_number = prev[2] + 1
            if report.conn.client.port != 0:
                report.verdict.explanation += (
                    f" This is retry #{report.retry_number} by the application (new source port) after connection #{prev[0]}."
                )
        if report.verdict.ok:
            self._failed.pop(key, None)
        else:
            self._failed[key] = (conn.id, conn.syn_ts, report.retry_number)


def run(
    sources: Iterable[tuple[str, Iterable[RawFrame]]],
    pipeline: Pipeline,
    on_report: Callable[[ConnReport], None] | None = None,
) -> Iterator[ConnReport]:
    """Feed every frame of every source; yield reports as connections finish, then the rest."""
    for index, (name, frames) in enumerate(sources):
        pipeline.source_names.append(name)
        feed = pipeline.feed
        n = 0
        for frame in frames:
            feed(frame, index)
            n += 1
            if n & 0x3FF == 0:
                yield from pipeline.ready()
    yield from pipeline.ready()
    yield from pipeline.finish()
