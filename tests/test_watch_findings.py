"""watch prints findings live: the same engine as read, each finding once when established.

The captures' truth files say what was done (pcaps/accept-overflow.truth.json: an
accept queue that overflowed for several clients; refused-retry: an application retrying a
closed port); these tests check that watch names the same findings as read, while it runs.
"""

from __future__ import annotations

import json

from synscope.read.findings import FindingsEngine
from synscope.read.findings.failures import GROUP_SLOTS, FailureGroups
from synscope.read.findings.lines import finding_object
from synscope.read.findings.model import facts_of
from synscope.watch.findings import MORE, NEW, LiveFindings
from tests.helpers import analyse, cli
from tests.test_watch import frames_of, make_watcher


def read_findings(name: str) -> list[dict]:
    proc = cli("read", "--json", f"pcaps/{name}")
    assert proc.returncode == 0, proc.stderr
    return [o for o in map(json.loads, proc.stdout.splitlines()) if "finding" in o]


def shifted(name: str, dt: float) -> list:
    """Reports of a capture moved ``dt`` seconds later (a pattern that comes back)."""
    reports = analyse(name)
    for r in reports:
        c = r.conn
        c.first_ts += dt
        c.last_ts += dt
        if c.syn_ts is not None:
            c.syn_ts += dt
    return reports


def test_engine_findings_is_a_view_asking_changes_nothing() -> None:
    reports = analyse("accept-overflow.pcap", "refused-retry.pcap")
    asked = FindingsEngine()
    for r in reports:
        asked.feed(r)
        asked.findings()  # watch asks after every batch
    once = FindingsEngine()
    for r in reports:
        once.feed(r)
    assert asked.findings() == once.findings() == asked.findings()
    assert {f.name for f in once.findings()} == {"accept-queue-overflow", "repeated-failure"}


def test_text_finding_printed_while_watching_then_final_figures() -> None:
    w, cap = make_watcher(frames_of("refused-retry.pcap"))
    w.run()
    live = cap.out_at_stop  # what was printed before watch was stopped
    assert "! finding repeated-failure at 198.18.2.2:81: 2 connection attempts" in live
    assert live.count("finding repeated-failure") == 1  # once: 3 is not twice 2
    w.finish()
    out = w.out.getvalue()
    summary = out[out.index("\nwatch test0:") :]
    assert "What went wrong" in summary and "3 connection attempts to 198.18.2.2:81 refused" in summary


def test_json_finding_lines_same_schema_as_read_and_final_figures_last() -> None:
    for name in ("refused-retry.pcap", "accept-overflow.pcap"):
        w, cap = make_watcher(frames_of(name), as_json=True)
        w.run()
        early = [json.loads(x) for x in cap.out_at_stop.splitlines()]
        assert any("finding" in o for o in early), f"{name}: no finding while watching"
        w.finish()
        objs = [json.loads(x) for x in w.out.getvalue().splitlines()]
        found = [o for o in objs if "finding" in o]
        want = read_findings(name)
        last = {(o["finding"], o["server"]["ip"], o["server"]["port"]): o for o in found}
        assert len(last) == len(want)
        for o in want:
            got = last[(o["finding"], o["server"]["ip"], o["server"]["port"])]
            assert got.keys() == o.keys()
            # the example connection is the first the watcher finished, which may differ from read's
            for k in ("connection_count", "connections", "figures", "rule", "confidence", "start", "end"):
                assert got[k] == o[k], (name, k)
        # every finding line comes after the connections it covers
        ids = [o["id"] for o in objs if "id" in o]
        for i, o in enumerate(objs):
            if "finding" in o:
                printed = {x["id"] for x in objs[:i] if "id" in x}
                assert set(o["connections"]) <= printed, ids


def test_read_output_unchanged_by_the_view() -> None:
    reports = analyse("accept-overflow.pcap")
    engine = FindingsEngine()
    for r in reports:
        engine.feed(r)
    [f] = engine.findings()
    assert finding_object(f) == read_findings("accept-overflow.pcap")[0]


def test_more_lines_are_bounded_and_a_pattern_after_the_window_is_new() -> None:
    live = LiveFindings(window=600.0)
    events = []
    base = analyse("refused-retry.pcap")
    for k in range(40):  # 120 refusals in a row, a second apart per capture
        for r in analyse("refused-retry.pcap") if k else base:  # (fresh reports: compiled records do not deepcopy)
            for attr in ("first_ts", "last_ts", "syn_ts"):
                setattr(r.conn, attr, getattr(r.conn, attr) + 3 * k)
            live.feed(r)
        # (the copies reuse the capture's ports: port-exhaustion shows too; this test follows the group)
        events += [e for e in live.poll() if e.finding.name == "repeated-failure"]
    kinds = [(e.kind, e.finding.connection_count) for e in events]
    assert kinds[0] == (NEW, 3)
    assert [n for kind, n in kinds[1:]] == [6, 12, 24, 48, 96] and {k for k, _ in kinds[1:]} == {MORE}
    assert events[1].before == 3
    # quiet for longer than the window, then the same failures again: a new finding, counted afresh
    for r in shifted("refused-retry.pcap", 5000.0):
        live.feed(r)
    again = live.poll()
    assert [(e.kind, e.finding.connection_count) for e in again] == [(NEW, 3)]
    assert len(live.current()) == 1  # the old group is forgotten


def test_forget_frees_failure_group_slots() -> None:
    groups = FailureGroups()
    [r] = analyse("refused.pcap")
    f = facts_of(r)
    for port in range(GROUP_SLOTS):
        f.server_port = port
        groups.add(port, f)
    f.server_port = 65000
    groups.add(1, f)
    assert groups.ungrouped == 1  # no slot left
    groups.forget(f.last_ts + 1)
    groups.add(2, f)
    groups.add(3, f)
    assert [g.connection_count for g in groups.findings()] == [2]


def test_forget_drops_every_detectors_findings() -> None:
    """A watch that runs for days forgets every kind of finding, not only failure groups:
    after forgetting everything before a time past the capture, nothing is left to report."""
    engine = FindingsEngine()
    for name in ("port-scan.pcap", "accept-overflow.pcap", "busy.pcap"):
        for report in analyse(name):
            engine.feed(report)
    assert {f.name for f in engine.findings()} >= {"port-scan", "accept-queue-overflow", "repeated-failure"}
    engine.forget(float("inf"))
    assert engine.findings() == []
