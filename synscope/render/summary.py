"""Bounded collection of what the text view prints at the end of a run.

A capture may hold millions of connections; the text view keeps one short row
per connection up to ROW_LIMIT, full timelines for at most TIMELINE_LIMIT
connections that went wrong, and running totals for --stats, so memory stays
bounded whatever the file. (--json streams every connection instead.)
"""

from __future__ import annotations

import heapq
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from synscope.read.findings import FindingsEngine
from synscope.read.pipeline import ConnReport, storm_suspect
from synscope.render.table import Row, table_row
from synscope.render.text import write_connection
from synscope.render.view import TextView

ROW_LIMIT = 5000
TIMELINE_LIMIT = 100
TOP = 5
# Up to this many connections the table lists them all in id order; above, problem connections
# first and the healthy ones summed up per service (--all lists everything)
LIST_ALL_UP_TO = 200
# Above this many connections a line before the table counts the ones that did not end well by
# outcome, so the first screen names the failures as groups however long the table is
PROBLEMS_LINE_ABOVE = 20
# Services (server endpoints) whose healthy connections are summed up one by one; the rest in one line
SERVICE_SLOTS = 64
# Durations kept per service for the median (the first ones)
DURATION_SAMPLES = 10_001
# Server endpoints whose failed attempts during a SYN storm are held apart at once (the rest are
# listed as any other connection)
STORM_SLOTS = 16

# Makes the texts of the kept timelines, given them in id order and the frames the findings cite
Timelines = Callable[[list[object], frozenset[int]], Iterable[str]]


# What the summary counts of every connection, kept or not: (outcome, ended well, verdict rule,
# part of a port scan, first packet's time, input file's index, duration, retransmission rate,
# server endpoint, a flood's spoofed SYN by what the packets show: see brief_of); plain values, so a
# split run's worker sends it for each of its connections
Brief = tuple[str, bool, str, bool, float, int, float, float, tuple[bytes, int], bool]


def brief_of(r: ConnReport) -> Brief:
    """The figures :meth:`RunSummary.count` takes from every connection.

    The last: a flood's spoofed SYN, by what the packets show (synscope.read.pipeline.storm_suspect:
    one SYN, no handshake, during a SYN storm against the server endpoint). A failed one is held
    apart and summed up by a syn-flood finding on the endpoint, if there is one; a client whose
    SYN went again had a kernel that retried: it may be a real client the flood kept out, and is
    listed."""
    c = r.conn
    v = r.verdict
    return (
        v.outcome,
        v.ok,
        v.rule,
        r.scan,
        c.first_ts,
        c.source_index,
        c.last_ts - c.first_ts,
        r.analysis.retransmission_rate,
        (c.server.ip, c.server.port),
        storm_suspect(r),
    )


class Kept(Protocol):
    """What :meth:`RunSummary.count` keeps of a connection beyond its brief, asked for only
    where it keeps it: the table's row, and what its timeline is made from (the report in one
    process; in a split run's parent, a handle on the report its worker holds)."""

    def row(self) -> Row: ...

    def timeline(self) -> object: ...


class _Whole:
    """A report of this process: its row made once, when first needed; whether its timeline is kept."""

    __slots__ = ("kept_timeline", "made", "report")

    def __init__(self, report: ConnReport) -> None:
        self.report = report
        self.made: Row | None = None
        self.kept_timeline = False

    def row(self) -> Row:
        if self.made is None:
            self.made = table_row(self.report)
        return self.made

    def timeline(self) -> object:
        self.kept_timeline = True
        return self.report


class _StormHeld:
    """The failed attempts of one SYN made to one server endpoint during a SYN storm against it
    (see brief_of), held apart until the end: a syn-flood finding on the endpoint sums them
    up, otherwise they are listed as any other connection. Rows and timelines are the first ones
    (by the order connections were counted), each with that place in the order."""

    __slots__ = ("count", "rows", "timelines")

    def __init__(self) -> None:
        self.count = 0
        self.rows: list[tuple[int, Row]] = []
        self.timelines: list[tuple[int, int, object]] = []  # (place, id, Kept.timeline)


@dataclass
class RunSummary:
    """Everything the end-of-run text needs, in bounded memory."""

    show_all: bool = False
    row_limit: int = ROW_LIMIT
    timeline_limit: int = TIMELINE_LIMIT
    rows: list[Row] = field(default_factory=list)  # the table's rows (Kept.row)
    expanded: list[tuple[int, object]] = field(default_factory=list)  # (id, Kept.timeline) of the timelines shown
    total: int = 0
    failed: int = 0
    rows_dropped: int = 0
    timelines_dropped: int = 0
    outcomes: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)  # connections that did not end well, by (outcome, rule)
    by_rate: list[tuple[float, int, Row]] = field(default_factory=list)
    by_duration: list[tuple[float, int, Row]] = field(default_factory=list)
    first_ts: float | None = None
    file_starts: dict[int, float] = field(default_factory=dict)  # per input file: its first connection's first packet
    findings: FindingsEngine = field(default_factory=FindingsEngine)
    healthy_rows: list[Row] = field(default_factory=list)  # the first LIST_ALL_UP_TO + 1 healthy ones
    services: dict[tuple[bytes, int], list[float]] = field(default_factory=dict)  # healthy: durations per server endpoint
    healthy: Counter = field(default_factory=Counter)  # healthy connections per server endpoint
    healthy_elsewhere: int = 0  # healthy connections to services beyond SERVICE_SLOTS
    scan_probes: int = 0  # connections of port scans, summed up by the port-scan finding (not listed unless --all)
    counted: int = 0  # connections listed or held apart so far (the place of the next one in that order)
    row_places: list[int] = field(default_factory=list)  # the place of each of rows
    timeline_places: list[int] = field(default_factory=list)  # the place of each of expanded
    storms: dict[tuple[bytes, int], _StormHeld] = field(default_factory=dict)  # failed attempts during SYN storms, by server endpoint
    flood_attempts: int = 0  # of those, summed up by a syn-flood finding (set by write)

    def add(self, r: ConnReport) -> None:
        """Take one finished connection."""
        self.findings.feed(r)
        whole = _Whole(r)
        self.count(r.conn.id, brief_of(r), whole)
        if not whole.kept_timeline:
            # (its row, if kept, is made: the packets go now, not when the batch of connections
            # handed on with it is done, thousands at once after a sweep)
            r.conn.packets = []

    def count(self, cid: int, brief: Brief, kept: Kept) -> None:
        """Take one connection whose findings facts went in already: its :func:`brief_of`, and
        what is kept of it where it is (rows and timelines up to their limits, the top ones by
        retransmission rate and duration).

        A split run's worker counts its own connections into a summary of its own and sends what
        that one kept: the parent merges the workers' connections keeping each worker's order, so
        whatever it keeps of a kind (the first N, the top ones so far) its worker kept too.
        """
        outcome, ok, rule, scan, first_ts, source_index, duration, rate, server, storm = brief
        self.total += 1
        self.outcomes[outcome] += 1
        if self.first_ts is None or first_ts < self.first_ts:
            self.first_ts = first_ts
        if source_index not in self.file_starts or first_ts < self.file_starts[source_index]:
            self.file_starts[source_index] = first_ts
        if scan and not self.show_all:  # one finding line, not a row and a timeline per port
            self.scan_probes += 1
            if not ok:
                self.failed += 1
                self.problems[("scan probes", "scan probes")] += 1  # counted, not listed
            return
        expand = self.show_all or not ok
        if not ok:
            self.failed += 1
            self.problems[(outcome, rule)] += 1
        place = self.counted
        self.counted += 1
        if storm and not ok and not self.show_all and self._hold_apart(server, place, cid, kept):
            pass  # (held apart: listed at the end unless a syn-flood finding sums it up)
        else:
            if expand:
                if len(self.expanded) < self.timeline_limit:
                    self.expanded.append((cid, kept.timeline()))
                    self.timeline_places.append(place)
                else:
                    self.timelines_dropped += 1
            if ok and not self.show_all:
                self._count_healthy(server, duration, kept)
            elif len(self.rows) < self.row_limit:
                self.rows.append(kept.row())
                self.row_places.append(place)
            else:
                self.rows_dropped += 1
        if rate > 0:
            _push_top(self.by_rate, rate, cid, kept)
        _push_top(self.by_duration, duration, cid, kept)

    def _hold_apart(self, server: tuple[bytes, int], place: int, cid: int, kept: Kept) -> bool:
        """Hold a failed attempt made during a SYN storm against ``server`` apart (False: no room
        for another endpoint; it is listed at once). Its row and timeline are kept if it is among
        the endpoint's first ones, as the table and the timelines keep the first ones: listed at
        the end, the first of all are those of the first of both."""
        held = self.storms.get(server)
        if held is None:
            if len(self.storms) >= STORM_SLOTS:
                return False
            held = self.storms[server] = _StormHeld()
        held.count += 1
        if len(held.timelines) < self.timeline_limit:
            held.timelines.append((place, cid, kept.timeline()))
        if len(held.rows) < self.row_limit:
            held.rows.append((place, kept.row()))
        return True

    def _settle_storms(self, flooded: set[tuple[str, int]]) -> None:
        """The failed attempts held apart: those of an endpoint a syn-flood finding names are
        counted in flood_attempts; the others join the table and the timelines, which then keep
        the first ones of all, as if they had never been apart."""
        from synscope.core.addr import fmt_ip

        rows = list(zip(self.row_places, self.rows, strict=True))
        timelines = list(zip(self.timeline_places, self.expanded, strict=True))
        row_candidates = len(rows) + self.rows_dropped
        timeline_candidates = len(timelines) + self.timelines_dropped
        for (ip, port), held in self.storms.items():
            if (fmt_ip(ip), port) in flooded:
                self.flood_attempts += held.count
                continue
            rows += held.rows
            timelines += [(place, (cid, timeline)) for place, cid, timeline in held.timelines]
            row_candidates += held.count
            timeline_candidates += held.count
        self.storms = {}
        rows.sort(key=_first)
        timelines.sort(key=_first)
        del rows[self.row_limit :]
        del timelines[self.timeline_limit :]
        self.rows = [row for _, row in rows]
        self.expanded = [item for _, item in timelines]
        self.row_places = [place for place, _ in rows]
        self.timeline_places = [place for place, _ in timelines]
        self.rows_dropped = row_candidates - len(rows)
        self.timelines_dropped = timeline_candidates - len(timelines)

    def _count_healthy(self, key: tuple[bytes, int], duration: float, kept: Kept) -> None:
        """A connection that ended well: kept for a small capture's table, summed up per service."""
        if len(self.healthy_rows) <= LIST_ALL_UP_TO:
            self.healthy_rows.append(kept.row())
        durations = self.services.get(key)
        if durations is None:
            if len(self.services) >= SERVICE_SLOTS:
                self.healthy_elsewhere += 1
                return
            durations = self.services[key] = []
        self.healthy[key] += 1
        if len(durations) < DURATION_SAMPLES:
            durations.append(duration)

    def write(self, out: TextIO, view: TextView, timelines: Timelines | None = None) -> None:
        """Findings, table, optional --stats tables, then the expanded timelines (unless --summary).

        ``timelines``: given the kept timelines (Kept.timeline) in id order and the frames the
        findings cite, their texts in that order; by default they are reports, written here."""
        from synscope.render.findings import write_findings
        from synscope.render.table import stats_from_tops, summary_table

        findings = self.findings.findings()
        write_findings(findings, self.first_ts or 0.0, out)
        self._settle_storms({(f.server_ip, f.server_port) for f in findings if f.name == "syn-flood"})
        small = self.total <= LIST_ALL_UP_TO
        if small:  # every connection, in id order
            self.rows.extend(self.healthy_rows)
        self.rows.sort(key=_row_id)
        if self.failed and self.total > PROBLEMS_LINE_ABOVE:
            out.write(problems_line(self.failed, self.total, self.problems) + "\n")
        if self.rows:
            summary_table(self.rows, self.first_ts or 0.0, out, self.file_starts if len(self.file_starts) > 1 else None)
        if not small:
            self._write_healthy(out)
        if self.scan_probes:
            out.write(f"Port scans: {self.scan_probes:,} connections not listed (the port-scan findings above sum them up; --all lists them)\n")
        if self.flood_attempts:
            out.write(f"SYN floods: {self.flood_attempts:,} failed attempts not listed (the syn-flood findings above sum them up; --all lists them)\n")
        if self.rows_dropped:
            out.write(f"… and {self.rows_dropped} more connections not listed (the table stops at {self.row_limit}); --json lists all\n")
        if view.stats:
            stats_from_tops(self.outcomes, [x[2] for x in sorted(self.by_rate, reverse=True)], [x[2] for x in sorted(self.by_duration, reverse=True)], out)
        if view.summary_only:
            return
        if self.expanded:
            out.write("\n")
        # frames the findings cite are kept in the timelines too (frame numbers are per file: with
        # several files a few more rows may stay unfolded, none is lost)
        cited = frozenset(n for f in findings for e in f.evidence for n in e.frames)
        shown = [x[1] for x in sorted(self.expanded, key=_first)]
        if timelines is None:
            for r in shown:
                assert isinstance(r, ConnReport)
                write_connection(r, out, absolute=view.absolute, payload=view.payload, context=view.context, also_cited=cited)
        else:
            for text in timelines(shown, cited):
                out.write(text)
        if self.timelines_dropped:
            out.write(f"… {self.timelines_dropped} more timelines not shown (at most {self.timeline_limit}); use --conn ID or --json for them\n")

    def _write_healthy(self, out: TextIO) -> None:
        """One line per service for the connections that ended well (a big capture)."""
        from synscope.core import fmt
        from synscope.core.addr import fmt_endpoint

        total = sum(self.healthy.values()) + self.healthy_elsewhere
        if not total:
            return
        out.write(f"Healthy: {total:,} connections ended well (--all lists them)\n")
        for (ip, port), n in self.healthy.most_common():
            durations = sorted(self.services[(ip, port)])
            median = durations[len(durations) // 2]
            out.write(f"  {n:,} to {fmt_endpoint(ip, port)} (median {fmt.duration(median)})\n")
        if self.healthy_elsewhere:
            out.write(f"  {self.healthy_elsewhere:,} to other services\n")


def problems_line(failed: int, total: int, problems: Counter) -> str:
    """``Did not end well: 109 of 600 connections: 60 refused, 34 closed (closed), 15 closed (path-loss)``:
    a big capture's failures in groups, before the table lists them one by one."""
    groups = ", ".join(f"{n:,} {outcome}" + (f" ({rule})" if rule != outcome else "") for (outcome, rule), n in problems.most_common())
    return f"Did not end well: {failed:,} of {total:,} connections: {groups}"


def _push_top(heap: list[tuple[float, int, Row]], value: float, cid: int, kept: Kept) -> None:
    """Keep the TOP connections by ``value`` (ties: the lower id), asking for a row only of one that enters."""
    if len(heap) < TOP:
        heapq.heappush(heap, (value, -cid, kept.row()))
    elif (value, -cid) > heap[0][:2]:
        heapq.heapreplace(heap, (value, -cid, kept.row()))


def _first(item: tuple[int, object]) -> int:
    return item[0]


def _row_id(row: Row) -> int:
    return row.id


def timeline_text(r: ConnReport, view: TextView, cited: frozenset[int]) -> str:
    """One connection's block of the text view (title, verdict, figures, timeline) as a string."""
    buf = io.StringIO()
    write_connection(r, buf, absolute=view.absolute, payload=view.payload, context=view.context, also_cited=cited)
    return buf.getvalue()


# ------------------------------------------------------------ the text view of a split run
# (synscope.read.split runs the workers; nothing but plain values crosses between processes:
# compiled reports cannot be pickled)


class WorkerShare:
    """A split run worker's side of the text view.

    For each of the worker's connections, :meth:`item` gives what the parent's summary counts:
    the brief, the table row where the worker's own summary keeps one, and whether it keeps its
    timeline; the worker holds those reports. Once the parent has merged every connection (and
    knows their ids, links and the findings' frames), :meth:`render` writes the timelines it
    asks for with the renderer of a single run.
    """

    def __init__(self, show_all: bool, row_limit: int, timeline_limit: int, view: TextView) -> None:
        self.picks = RunSummary(show_all=show_all, row_limit=row_limit, timeline_limit=timeline_limit)
        self.view = view
        self.held: dict[int, ConnReport] = {}  # by the position that opened the connection

    def item(self, r: ConnReport) -> tuple[Brief, Row | None, bool]:
        """(brief, row or None, timeline kept) of one connection (numbered by its position)."""
        offer = _Offered(r)
        brief = brief_of(r)
        self.picks.count(r.conn.id, brief, offer)
        if offer.kept_timeline:
            self.held[r.conn.opened_at] = r
        return brief, offer.made, offer.kept_timeline

    def render(self, request: tuple[frozenset[int], list[tuple[int, int, int | None, tuple[int, int] | None]]]) -> list[str]:
        """The texts of the timelines asked for: (frames the findings cite, [(position, id,
        reused_from, (retry_of, retry_number) or None), ...]), with the single run's ids."""
        cited, wanted = request
        texts = []
        for position, cid, reused_from, retry in wanted:
            r = self.held.pop(position)
            r.conn.id = cid
            r.conn.reused_from = reused_from
            if retry is not None:
                r.retry_of, r.retry_number = retry
            texts.append(timeline_text(r, self.view, cited))
        return texts


class _Offered(_Whole):
    """A worker's own report, as its summary asks for it (a kept timeline: the worker holds
    the report, by its position)."""

    __slots__ = ()

    def timeline(self) -> object:
        self.kept_timeline = True
        return self.report.conn.opened_at


class Sent:
    """A connection merged by a split run's parent: what its worker sent (with the single run's
    id put in). Asked for a part the worker did not keep, it fails loudly, not wrongly."""

    __slots__ = ("cid", "handle", "sent")

    def __init__(self, cid: int, sent: Row | None, handle: object) -> None:
        self.cid = cid
        self.sent = sent
        self.handle = handle

    def row(self) -> Row:
        if self.sent is None:
            raise AssertionError(f"connection #{self.cid}: the text summary keeps a row its worker did not send")
        return self.sent._replace(id=self.cid)

    def timeline(self) -> object:
        if self.handle is None:
            raise AssertionError(f"connection #{self.cid}: the text summary shows a timeline its worker did not keep")
        return self.handle
