"""``read --workers N`` without ``--json``: the split text view is exactly what one process prints.

Each worker counts its connections into a summary of its own and sends the parent plain values
(a brief of each connection, the table rows its summary keeps); once the parent has merged them
all it asks each worker for the texts of the timelines it shows. No report crosses between
processes: compiled reports cannot be pickled, which is what these tests catch when they run on
the compiled read path (scripts/test builds it; the limit tests run both paths explicitly).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

import synscope
from synscope.render import summary as S
from synscope.render.table import Row
from tests.helpers import ROOT, cli, pcap
from tests.test_parallel import ALL, _state

EXPECT_COMPILED = os.environ.get("SYNSCOPE_EXPECT_COMPILED") == "1"


def _same_text_for_all_workers(*args: str) -> str:
    one = cli("read", "--workers", "1", *args, timeout=300)
    for workers in ("2", "3"):
        split = cli("read", "--workers", workers, *args, timeout=300)
        assert (split.returncode, split.stderr) == (one.returncode, one.stderr), f"--workers {workers}"
        if split.stdout != one.stdout:
            a, b = one.stdout.splitlines(), split.stdout.splitlines()
            first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            pytest.fail(f"--workers {workers}: the text view differs from one worker's at line {first + 1} ({len(a)} vs {len(b)} lines)")
    return one.stdout


VIEWS = [(), ("--all",), ("--stats",), ("--summary",), ("--context", "0"), ("--all-packets", "--payload", "--absolute")]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: " ".join(v) or "default")
def test_busy_capture_text_identical(view: tuple[str, ...]) -> None:
    """busy.pcap: 600 connections, so the healthy ones are summed up per service, the failed ones
    listed and their timelines shown up to the limit."""
    out = _same_text_for_all_workers(*view, pcap("busy.pcap"))
    assert "600 connections" in out.splitlines()[0]
    assert "What went wrong" in out
    assert "Healthy: " in out or view == ("--all",)
    assert "more timelines not shown" in out or view in (("--summary",),)


@pytest.mark.parametrize("view", [(), ("--all", "--stats")], ids=["default", "all-stats"])
def test_every_bundled_capture_in_one_call_text_identical(view: tuple[str, ...]) -> None:
    """Several files (a file column), port scans, ICMP, duplicates, several link types."""
    out = _same_text_for_all_workers(*view, *ALL)
    assert "file: the input's place on the command line" in out


def test_links_name_the_single_runs_ids() -> None:
    """The timelines are written by the workers, with the ids, reused_from and retries the parent
    gave after the merge."""
    out = " ".join(_same_text_for_all_workers("--all", pcap("port-reuse.pcap"), pcap("refused-retry.pcap")).split())
    assert "used before by connection #" in out, "port reuse is named with the single run's ids"
    assert "by the application (new source port)" in out, "application retries are linked after the merge"


def test_host_port_and_conn_text_identical() -> None:
    _same_text_for_all_workers("--port", "80", pcap("busy.pcap"))
    _same_text_for_all_workers("--host", "198.18.0.2", "--stats", pcap("busy.pcap"))
    # (--conn with the text view is made in one process: the ids are known after the merge)
    out = _same_text_for_all_workers("--conn", "17", "--conn", "400", pcap("busy.pcap"))
    assert "#17 " in out and "#400 " in out


_SMALL_SUMMARY = """
import sys
import synscope
import synscope.render.summary as S
from synscope.cli.main import main

if sys.argv[1] == "compiled":
    assert synscope.COMPILED, synscope.COMPILED_STATE
# limits small enough that busy.pcap's 600 connections pass every one of them in each worker
S.LIST_ALL_UP_TO, S.TOP = 20, 3


class Small(S.RunSummary):
    def __init__(self, **kw):
        kw.setdefault("row_limit", 40)
        kw.setdefault("timeline_limit", 7)
        super().__init__(**kw)


S.RunSummary = Small
try:
    main(sys.argv[2:])
except SystemExit as e:
    assert not e.code, e.code
"""


def _paths() -> list[str]:
    out = ["pure"]
    if synscope.COMPILED or EXPECT_COMPILED:
        out.append("compiled")
    return out


@pytest.mark.parametrize("path", _paths())
@pytest.mark.parametrize("view", [(), ("--all",), ("--stats",), ("--all", "--stats")], ids=lambda v: " ".join(v) or "default")
def test_text_identical_at_every_limit(path: str, view: tuple[str, ...]) -> None:
    """With limits a tenth of the real ones every kind of kept connection comes late in some
    worker (rows, healthy rows, timelines, the top ones by rate and duration): the parent never
    needs what a worker did not send (it would fail loudly), and the text is the single run's.
    On the compiled read path and on the Python sources."""
    env = {k: v for k, v in os.environ.items() if k != "SYNSCOPE_PURE"}
    if path == "pure":
        env["SYNSCOPE_PURE"] = "1"
    outs = []
    for workers in ("1", "2", "3"):
        args = [sys.executable, "-c", _SMALL_SUMMARY, path, "read", "--workers", workers, *view, pcap("busy.pcap"), pcap("refused-retry.pcap")]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert "not listed (the table stops at 40)" in outs[0] or "--all" not in view
    assert "more timelines not shown (at most 7)" in outs[0]
    assert outs[1] == outs[0], "--workers 2"
    assert outs[2] == outs[0], "--workers 3"


# ------------------------------------------------------------------ the exchange after the merge


class _Share:
    """A text share that sends each connection's position and answers with what it was asked."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails

    def item(self, report: object) -> int:
        return report.conn.opened_at  # type: ignore[attr-defined]

    def render(self, request: object) -> object:
        if self.fails:
            raise RuntimeError("boom while rendering")
        return ("answer to", request, os.getpid())


def _split_run(share: _Share) -> tuple[object, list[int]]:
    from synscope.read.pipeline import Pipeline
    from synscope.read.split import SplitRun

    path = pcap("busy.pcap")
    split = SplitRun([path], [os.path.getsize(path)], Pipeline, 2, share=share)
    return split, list(split._pids)


def test_each_worker_answers_its_own_request_and_ends() -> None:
    split, pids = _split_run(_Share())
    try:
        merged = list(split)  # type: ignore[call-overload]
        assert sorted(cid for cid, _ in merged) == list(range(1, 601))
        assert {w for _, (w, *_rest) in merged} == {0, 1}
        answers = split.ask(["one", "two"])  # type: ignore[attr-defined]
    finally:
        split.close()  # type: ignore[attr-defined]
    assert [a[:2] for a in answers] == [("answer to", "one"), ("answer to", "two")]
    assert [a[2] for a in answers] == pids
    assert all(_state(pid) == "gone" for pid in pids)


def test_workers_left_without_a_request_end() -> None:
    """The parent may have nothing to ask (no timeline shown, the reader of its output gone)."""
    split, pids = _split_run(_Share())
    try:
        list(split)  # type: ignore[call-overload]
    finally:
        split.close()  # type: ignore[attr-defined]
    assert all(_state(pid) == "gone" for pid in pids)


def test_a_worker_failing_to_render_is_one_line() -> None:
    from synscope.read.split import WorkerFailed

    split, pids = _split_run(_Share(fails=True))
    try:
        list(split)  # type: ignore[call-overload]
        with pytest.raises(WorkerFailed) as err:
            split.ask([1, 2])  # type: ignore[attr-defined]
    finally:
        split.close()  # type: ignore[attr-defined]
    assert "of 2 failed: RuntimeError: boom while rendering" in str(err.value) and "\n" not in str(err.value)
    assert all(_state(pid) == "gone" for pid in pids)


# ------------------------------------------------------------------ the summary's counting


def _stream(n: int, seed: int) -> list[S.Brief]:
    rnd = random.Random(seed)
    briefs: list[S.Brief] = []
    for i in range(n):
        ok = rnd.random() < 0.7
        outcome = "closed" if ok else rnd.choice(["refused", "timeout", "reset-by-server"])
        # ties, and values growing through the stream (the top ones come late, past every row limit)
        grow = 1.0 if rnd.random() < 0.5 else 2.0 * i / n
        rate = rnd.choice([0.0, 0.0, 0.0, 0.1, 0.25, 0.5]) * grow
        duration = rnd.choice([0.001, 0.002, 0.5, 1.0, float(rnd.randint(0, 100))]) * grow
        server = (bytes([198, 18, 0, rnd.randint(1, 3)]), rnd.choice([80, 443, 8080]))
        scan = rnd.random() < 0.05
        storm = rnd.random() < 0.3  # (a failed one is held apart: see the flooded parameter below)
        briefs.append((outcome, ok, outcome, scan, rnd.random() * 100, rnd.randrange(2), duration, rate, server, storm))
    return briefs


class _Offer:
    """A worker's connection as its own summary takes it (the test's stand-in for a report)."""

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.made: Row | None = None
        self.kept_timeline = False

    def row(self) -> Row:
        self.made = Row(self.cid, "c", "s", 0.0, 0, "1 s", "1/1", "0/0", "x", "", False, "0%", "0/0")
        return self.made

    def timeline(self) -> object:
        self.kept_timeline = True
        return self.cid


def _split(briefs: list[S.Brief], worker_of: list[int], workers: int, show_all: bool, row_limit: int, timeline_limit: int) -> S.RunSummary:
    """Count a stream as a split run does: each worker into its own summary, the parent from what
    they sent (S.Sent raises if the parent keeps what its worker did not)."""
    mine = [S.RunSummary(show_all=show_all, row_limit=row_limit, timeline_limit=timeline_limit) for _ in range(workers)]
    parent = S.RunSummary(show_all=show_all, row_limit=row_limit, timeline_limit=timeline_limit)
    for cid, (brief, w) in enumerate(zip(briefs, worker_of, strict=True), start=1):
        offer = _Offer(cid * 7)  # (a worker's own numbering: another, in the same order)
        mine[w].count(offer.cid, brief, offer)
        parent.count(cid, brief, S.Sent(cid, offer.made, ("handle", cid) if offer.kept_timeline else None))
    return parent


@pytest.mark.parametrize("show_all", [False, True])
@pytest.mark.parametrize("share", ["even", "skewed", "one"])
@pytest.mark.parametrize(("row_limit", "timeline_limit"), [(40, 7), (S.ROW_LIMIT, S.TIMELINE_LIMIT)])
@pytest.mark.parametrize("flooded", [set(), {("198.18.0.2", 443)}])
def test_the_parent_keeps_only_what_workers_sent_and_what_one_process_keeps(
    show_all: bool, share: str, row_limit: int, timeline_limit: int, flooded: set[tuple[str, int]]
) -> None:
    briefs = _stream(6000, seed=17)
    rnd = random.Random(5)
    workers = 3
    if share == "even":
        worker_of = [rnd.randrange(workers) for _ in briefs]
    elif share == "skewed":
        worker_of = [0 if rnd.random() < 0.9 else rnd.randrange(1, workers) for _ in briefs]
    else:
        worker_of = [0] * len(briefs)
    split = _split(briefs, worker_of, workers, show_all, row_limit, timeline_limit)
    one = _split(briefs, [0] * len(briefs), 1, show_all, row_limit, timeline_limit)
    # (failed storm attempts held apart join the lists, or a syn-flood finding sums them up)
    split._settle_storms(flooded)
    one._settle_storms(flooded)
    assert split.flood_attempts == one.flood_attempts
    assert (split.flood_attempts > 0) == (bool(flooded) and not show_all)
    assert (split.rows_dropped, split.timelines_dropped) == (one.rows_dropped, one.timelines_dropped)
    assert split.total == len(briefs)
    assert split.by_rate and split.by_duration
    assert split.expanded == one.expanded
    assert [x[:2] for x in sorted(split.by_rate)] == [x[:2] for x in sorted(one.by_rate)]
    assert [x[:2] for x in sorted(split.by_duration)] == [x[:2] for x in sorted(one.by_duration)]
    assert [x.id for x in split.rows] == [x.id for x in one.rows]
    assert [x.id for x in split.healthy_rows] == [x.id for x in one.healthy_rows]
    assert all(-x[1] == x[2].id for x in split.by_duration), "the parent's ids in the rows"
