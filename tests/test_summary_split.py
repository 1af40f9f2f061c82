"""The split text view: each worker's WorkerPicks sends every report the parent's RunSummary keeps.

The parent merges the workers' connections keeping each worker's order. Whatever the share of
each worker (even, skewed, all in one), the summary must never need a report its worker sent as a
brief only, nor a timeline whose packets were dropped. Checked here on streams of made-up
connections with many ties (same rate, same duration), at small limits and at the real ones.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from synscope.render import summary as S


def _stream(n: int, seed: int) -> list[S.Brief]:
    rnd = random.Random(seed)
    briefs = []
    for i in range(n):
        ok = rnd.random() < 0.7
        outcome = "closed" if ok else rnd.choice(["refused", "timeout", "reset-by-server"])
        # ties, and values growing through the stream (the top ones come late, past every row limit)
        grow = 1.0 if rnd.random() < 0.5 else 2.0 * i / n
        rate = rnd.choice([0.0, 0.0, 0.0, 0.1, 0.25, 0.5]) * grow
        duration = rnd.choice([0.001, 0.002, 0.5, 1.0, float(rnd.randint(0, 100))]) * grow
        server = (bytes([198, 18, 0, rnd.randint(1, 3)]), rnd.choice([80, 443, 8080]))
        briefs.append((outcome, ok, rnd.random() * 100, duration, rate, server))
    return briefs


def _run(briefs: list[S.Brief], worker_of: list[int], workers: int, show_all: bool, row_limit: int, timeline_limit: int) -> S.RunSummary:
    """Count a stream the way a split run's parent does; returns the parent's summary."""
    picks = [S.WorkerPicks(show_all, row_limit, timeline_limit) for _ in range(workers)]
    summary = S.RunSummary(show_all=show_all, row_limit=row_limit, timeline_limit=timeline_limit)
    for cid, (brief, w) in enumerate(zip(briefs, worker_of, strict=True), start=1):
        keep = picks[w].pick(cid, brief)
        report = None
        if keep:
            report = SimpleNamespace(conn=SimpleNamespace(id=cid, packets=["pkt"] if keep == 2 else []))
        summary.count(cid, brief, report)  # type: ignore[arg-type]
    return summary


@pytest.mark.parametrize("show_all", [False, True])
@pytest.mark.parametrize("share", ["even", "skewed", "one"])
@pytest.mark.parametrize(("row_limit", "timeline_limit"), [(40, 7), (S.ROW_LIMIT, S.TIMELINE_LIMIT)])
def test_every_report_the_summary_keeps_was_sent(show_all: bool, share: str, row_limit: int, timeline_limit: int) -> None:
    briefs = _stream(6000, seed=17)
    rnd = random.Random(5)
    workers = 3
    if share == "even":
        worker_of = [rnd.randrange(workers) for _ in briefs]
    elif share == "skewed":
        worker_of = [0 if rnd.random() < 0.9 else rnd.randrange(1, workers) for _ in briefs]
    else:
        worker_of = [0] * len(briefs)
    # (S.RunSummary raises if it keeps a report that was not sent)
    summary = _run(briefs, worker_of, workers, show_all, row_limit, timeline_limit)
    assert summary.total == len(briefs)
    assert all(r.conn.packets for r in summary.expanded), "a shown timeline lost its packets"
    assert len(summary.expanded) == min(timeline_limit, sum(1 for b in briefs if show_all or not b[1]))
    assert summary.by_rate and summary.by_duration
    # the same tops as one process keeps
    one = _run(briefs, [0] * len(briefs), 1, show_all, row_limit, timeline_limit)
    assert [x[:2] for x in sorted(summary.by_rate)] == [x[:2] for x in sorted(one.by_rate)]
    assert [x[:2] for x in sorted(summary.by_duration)] == [x[:2] for x in sorted(one.by_duration)]
    assert [r.conn.id for r in summary.rows] == [r.conn.id for r in one.rows]
    assert [r.conn.id for r in summary.healthy_rows] == [r.conn.id for r in one.healthy_rows]
