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

from synscope.read.flood import FloodDetector, render_flood
from synscope.read.pipeline import ConnReport

ROW_LIMIT = 5000
TIMELINE_LIMIT = 100
TOP = 5


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
    floods: FloodDetector = field(default_factory=FloodDetector)

    def add(self, r: ConnReport) -> None:
        """Take one finished connection."""
        self.floods.add(r)
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
        if len(self.rows) < self.row_limit:
            self.rows.append(r)
        else:
            self.rows_dropped += 1
        rate = r.analysis.retransmission_rate
        if rate > 0:
            _push_top(self.by_rate, (rate, -r.conn.id, r))
        _push_top(self.by_duration, (r.conn.last_ts - r.conn.first_ts, -r.conn.id, r))

    def write(self, out: TextIO, stats: bool, absolute: bool, payload: bool) -> None:
        """Table, optional --stats tables, then the expanded timelines."""
        from synscope.render.table import stats_from_tops, summary_table
        from synscope.render.text import write_connection

        for flood in self.floods.summaries():
            render_flood(flood, out)
            out.write("\n")
        self.rows.sort(key=lambda r: r.conn.id)
        summary_table(self.rows, self.first_ts or 0.0, out)
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


def _push_top(heap: list, item: tuple) -> None:
    if len(heap) < TOP:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)
