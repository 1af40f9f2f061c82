"""Bounded collection of what the text view prints at the end of a run.

A capture may hold millions of connections; the text view keeps one short row
per connection up to ROW_LIMIT, full timelines for at most TIMELINE_LIMIT
connections that went wrong, and running totals for --stats, so memory stays
bounded whatever the file. (--json streams every connection instead.)
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from synscope.read.findings import FindingsEngine
from synscope.read.pipeline import ConnReport

ROW_LIMIT = 5000
TIMELINE_LIMIT = 100
TOP = 5
# Up to this many connections the table lists them all in id order; above, problem connections
# first and the healthy ones summed up per service (--all lists everything)
LIST_ALL_UP_TO = 200
# Services (server endpoints) whose healthy connections are summed up one by one; the rest in one line
SERVICE_SLOTS = 64
# Durations kept per service for the median (the first ones)
DURATION_SAMPLES = 10_001


@dataclass
class RunSummary:
    """Everything the end-of-run text needs, in bounded memory."""

    show_all: bool = False
    row_limit: int = ROW_LIMIT
    timeline_limit: int = TIMELINE_LIMIT
    rows: list[ConnReport] = field(default_factory=list)  # reports kept for the table (packets dropped unless expanded)
    expanded: list[ConnReport] = field(default_factory=list)
    total: int = 0
    failed: int = 0
    rows_dropped: int = 0
    timelines_dropped: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_rate: list[tuple[float, int, ConnReport]] = field(default_factory=list)
    by_duration: list[tuple[float, int, ConnReport]] = field(default_factory=list)
    first_ts: float | None = None
    findings: FindingsEngine = field(default_factory=FindingsEngine)
    healthy_rows: list[ConnReport] = field(default_factory=list)  # the first LIST_ALL_UP_TO + 1 healthy ones
    services: dict[tuple[bytes, int], list[float]] = field(default_factory=dict)  # healthy: durations per server endpoint
    healthy: Counter = field(default_factory=Counter)  # healthy connections per server endpoint
    healthy_elsewhere: int = 0  # healthy connections to services beyond SERVICE_SLOTS

    def add(self, r: ConnReport) -> None:
        """Take one finished connection."""
        self.findings.feed(r)  # (before the packets are dropped below)
        self.total += 1
        self.outcomes[r.verdict.outcome] += 1
        if self.first_ts is None or r.conn.first_ts < self.first_ts:
            self.first_ts = r.conn.first_ts
        expand = self.show_all or not r.verdict.ok
        if not r.verdict.ok:
            self.failed += 1
        if expand and len(self.expanded) < self.timeline_limit:
            self.expanded.append(r)
        else:
            if expand:
                self.timelines_dropped += 1
            r.conn.packets = []  # the row needs the totals only
        if r.verdict.ok and not self.show_all:
            self._count_healthy(r)
        elif len(self.rows) < self.row_limit:
            self.rows.append(r)
        else:
            self.rows_dropped += 1
        rate = r.analysis.retransmission_rate
        if rate > 0:
            _push_top(self.by_rate, (rate, -r.conn.id, r))
        _push_top(self.by_duration, (r.conn.last_ts - r.conn.first_ts, -r.conn.id, r))

    def _count_healthy(self, r: ConnReport) -> None:
        """A connection that ended well: kept for a small capture's table, summed up per service."""
        if len(self.healthy_rows) <= LIST_ALL_UP_TO:
            self.healthy_rows.append(r)
        key = (r.conn.server.ip, r.conn.server.port)
        durations = self.services.get(key)
        if durations is None:
            if len(self.services) >= SERVICE_SLOTS:
                self.healthy_elsewhere += 1
                return
            durations = self.services[key] = []
        self.healthy[key] += 1
        if len(durations) < DURATION_SAMPLES:
            durations.append(r.conn.last_ts - r.conn.first_ts)

    def write(self, out: TextIO, stats: bool, absolute: bool, payload: bool) -> None:
        """Table, optional --stats tables, then the expanded timelines."""
        from synscope.render.findings import write_findings
        from synscope.render.table import stats_from_tops, summary_table
        from synscope.render.text import write_connection

        write_findings(self.findings.findings(), self.first_ts or 0.0, out)
        small = self.total <= LIST_ALL_UP_TO
        if small:  # every connection, in id order
            self.rows.extend(self.healthy_rows)
        self.rows.sort(key=lambda r: r.conn.id)
        if self.rows:
            summary_table(self.rows, self.first_ts or 0.0, out)
        if not small:
            self._write_healthy(out)
        if self.rows_dropped:
            out.write(f"… and {self.rows_dropped} more connections not listed (the table stops at {self.row_limit}); --json lists all\n")
        if stats:
            stats_from_tops(self.outcomes, [x[2] for x in sorted(self.by_rate, reverse=True)], [x[2] for x in sorted(self.by_duration, reverse=True)], out)
        if self.expanded:
            out.write("\n")
        for r in sorted(self.expanded, key=lambda r: r.conn.id):
            write_connection(r, out, absolute=absolute, payload=payload)
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


def _push_top(heap: list, item: tuple) -> None:
    if len(heap) < TOP:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)
