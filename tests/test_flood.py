"""SYN-flood recognition (synscope/read/findings/syn_flood.py) on a CRAFTED flood of 20,000 attempts, and its sketches.

The capture is written by tests.craft.write_synflood, the same code as
scripts/make-synflood, which also returns the ground truth (FloodPlan).
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synscope.read.analysis.engine import ConnAnalysis
from synscope.read.findings import syn_flood as flood
from synscope.read.findings.syn_flood import DistinctCounter, FloodDetector, SpaceSaving
from synscope.read.pipeline import ConnReport, Pipeline, run
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import Connection, Side
from synscope.read.verdict import Verdict
from synscope.render.findings import render_flood
from tests.craft import write_synflood
from tests.helpers import ROOT, analyse

ATTEMPTS = 20_000
RATE = 5_000.0  # four seconds of flood: the busiest-second figure means something
NORMAL_EVERY = 2_000


@pytest.fixture(scope="module")
def flood_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("flood") / "synflood.pcap"
    with open(path, "wb") as f:
        plan = write_synflood(f, ATTEMPTS, rate=RATE, normal_every=NORMAL_EVERY, seed=7)
    return path, plan


def detect(path, **pipeline_options: object) -> tuple[FloodDetector, Pipeline]:
    det = FloodDetector()
    pipeline = Pipeline(**pipeline_options)  # type: ignore[arg-type]
    reader = open_capture(str(path))
    for report in run([(reader.path, reader)], pipeline):
        det.add(report)
    return det, pipeline


def test_generator_ground_truth(flood_file) -> None:
    path, plan = flood_file
    assert plan.attempts == ATTEMPTS and plan.normal == ATTEMPTS // NORMAL_EVERY
    assert 0.35 * ATTEMPTS < plan.answered < 0.45 * ATTEMPTS
    assert 0.4 * plan.answered < plan.cookies < 0.6 * plan.answered
    reader = open_capture(str(path))
    frames = sum(1 for _ in reader)
    assert frames == plan.frames and not reader.warnings
    # every flood SYN, every SYN-ACK and its retransmissions, ten packets per normal connection
    assert frames == plan.attempts + plan.answered + 2 * (plan.answered - plan.cookies) + 10 * plan.normal


def test_flood_is_recognised_and_summarised(flood_file) -> None:
    path, plan = flood_file
    det, _ = detect(path)
    s = det.summary()
    assert s is not None
    assert s.target == "192.0.2.10:443"
    assert s.attempts == plan.attempts + plan.normal
    assert s.half_open == plan.attempts
    assert s.completed == plan.normal
    assert s.answered == plan.answered + plan.normal
    assert s.synack_once == plan.cookies  # nothing was evicted: every retransmission is in its connection
    assert s.evicted == 0 and s.late_synacks == 0 and s.missed_attempts == 0
    assert s.answered_share == pytest.approx((plan.answered + plan.normal) / s.attempts)
    assert s.completed_share == pytest.approx(plan.normal / s.attempts)
    # distinct sources: estimated (past the exact limit), within 5 %
    assert not s.sources_exact
    assert abs(s.distinct_sources - plan.sources) < 0.05 * plan.sources
    # the loud senders are the top sources, with their exact counts (they were counted from the start)
    top = {ip: (n, err) for ip, n, err in s.top_sources}
    for ip, n in plan.loud_sources:
        count, err = top[ip]
        assert count - err <= n <= count
    assert [ip for ip, _, _ in s.top_sources[: len(plan.loud_sources)]] == [ip for ip, _ in plan.loud_sources]
    # timing: RATE attempts per second for ATTEMPTS / RATE seconds
    assert s.start == pytest.approx(plan.start, abs=1e-3)
    assert s.end == pytest.approx(plan.end, abs=1e-3)
    assert s.rate == pytest.approx(RATE, rel=0.01)
    assert RATE * 0.95 <= s.peak_rate <= RATE
    assert det.summaries() == [s]


def test_evicted_attempts_are_counted_and_cookie_share_withheld(flood_file) -> None:
    path, plan = flood_file
    det, pipeline = detect(path, max_conns=500)
    s = det.summary()
    assert s is not None and pipeline.tracker.evicted > 0
    assert s.half_open == plan.attempts and s.answered == plan.answered + plan.normal  # SYN-ACKs come 0.2 ms after the SYN
    assert s.evicted > 0
    assert s.synack_once is None  # the retransmissions came after their attempt left the table
    assert s.late_synacks == 2 * (plan.answered - plan.cookies)
    out = io.StringIO()
    render_flood(s, out)
    assert "unknown" in out.getvalue() and "evicted" in out.getvalue()


def test_render_and_json(flood_file) -> None:
    path, plan = flood_file
    det, _ = detect(path)
    s = det.summary()
    assert s is not None
    out = io.StringIO()
    render_flood(s, out)
    text = out.getvalue()
    assert text.startswith("SYN flood against 192.0.2.10:443: 20,010 connection attempts")
    assert f"{plan.loud_sources[0][0]} ({plan.loud_sources[0][1]:,})" in text
    assert "SYN cookies" in text and "Next:" in text
    assert all(ch == "\n" or ch >= " " for ch in text)
    obj = json.loads(json.dumps(s.as_dict()))
    assert obj["type"] == "syn_flood" and obj["target"] == {"ip": "192.0.2.10", "port": 443}
    assert obj["half_open"] == plan.attempts and obj["top_sources"][0]["ip"] == plan.loud_sources[0][0]


@pytest.mark.parametrize("name", ["normal.pcap", "no-answer.pcap", "refused-retry.pcap", "bulk-loss.pcap", "reorder.pcap"])
def test_no_flood_in_ordinary_captures(name: str) -> None:
    det = FloodDetector()
    for r in analyse(name):
        det.add(r)
    assert det.summary() is None


# ----- synthetic reports: shapes that are not a flood, and bounded memory


def fake_report(
    src: int, sport: int, server: bytes, dport: int, ts: float, answered: bool = False, completed: bool = False, synack_only: bool = False
) -> ConnReport:
    client = Side(src.to_bytes(4, "big"), sport)
    client.syn_count = 0 if synack_only else 1
    srv = Side(server, dport)
    srv.syn_count = 1 if answered or completed or synack_only else 0
    conn = Connection(1, client, srv, ts, ts)
    conn.syn_ts = None if synack_only else ts
    if completed:
        conn.synack_ts = ts + 0.001
        conn.handshake_ack_ts = ts + 0.002
    # the detector reads the connection only; the rest is whatever a report carries
    return ConnReport(conn, ConnAnalysis(), Verdict("", "", "", "", "", "", False))


SERVER = bytes([192, 0, 2, 10])


def test_slow_trickle_of_failures_is_no_flood() -> None:
    det = FloodDetector()
    for i in range(5000):  # 5,000 failed attempts over 5,000 s: one a second
        det.add(fake_report(0xC6120000 + i, 40000, SERVER, 443, 1_700_000_000 + i))
    assert det.summary() is None


def test_busy_healthy_server_is_no_flood() -> None:
    det = FloodDetector()
    for i in range(20000):  # 20,000 attempts in 2 s, 90 % completed
        det.add(fake_report(0xC6120000 + i, 40000, SERVER, 443, 1_700_000_000 + i / 10000, answered=True, completed=i % 10 != 0))
    assert det.summary() is None


def test_port_scan_is_no_flood() -> None:
    det = FloodDetector()
    for port in range(1, 65536):  # one attempt per port, all in a few seconds
        det.add(fake_report(0xC6120001, 40000, SERVER, port, 1_700_000_000 + port / 20000))
    assert det.summary() is None
    assert len(det._targets) <= flood.TARGET_SLOTS


def test_memory_stays_bounded_with_a_million_sources_and_many_targets() -> None:
    det = FloodDetector()
    rng = random.Random(3)
    t0 = 1_700_000_000
    for i in range(200_000):
        port = 443 if i % 2 else rng.randrange(444, 65536)  # half the attempts at one port, the rest everywhere
        det.add(fake_report(rng.getrandbits(32), rng.randrange(1024, 65536), SERVER, port, t0 + i / 50_000))
    assert len(det._targets) <= flood.TARGET_SLOTS
    for t in det._targets.values():
        assert t.sources is not None and len(t.sources) <= flood.SOURCE_SLOTS
        assert t.sources._entries <= flood.STALE_FACTOR * flood.SOURCE_SLOTS + flood.STALE_EXTRA and len(t.sources._buckets) <= flood.SOURCE_SLOTS + 1
        assert t.buckets is not None and len(t.buckets) <= flood.RATE_BUCKETS
        assert t.distinct is not None and (t.distinct.exact or t.distinct._exact is None)
    s = det.summary()
    assert s is not None and s.target_port == 443 and s.attempts == 100_000
    assert abs(s.distinct_sources - 100_000) < 5_000


def test_synack_only_connections_count_as_late_synacks() -> None:
    det = FloodDetector(min_half_open=10, min_rate=5)
    for i in range(50):
        det.add(fake_report(0xC6120000 + i, 40000, SERVER, 443, 1_700_000_000 + i / 100, answered=True))
    for i in range(7):
        det.add(fake_report(0xC6120000 + i, 40000, SERVER, 443, 1_700_000_001 + i / 100, synack_only=True))
    s = det.summary()
    assert s is not None and s.attempts == 50 and s.late_synacks == 7


# ----- the sketches


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=2000), st.integers(1, 40))
def test_space_saving_bounds(items: list[int], capacity: int) -> None:
    ss = SpaceSaving(capacity)
    for x in items:
        ss.add(x)
    true: dict[int, int] = {}
    for x in items:
        true[x] = true.get(x, 0) + 1
    assert len(ss) <= capacity and ss.total == len(items)
    for item, count, err in ss.top(capacity):
        assert count - err <= true[item] <= count  # an upper bound, off by at most its error
    # anything more frequent than total / capacity is guaranteed to be held
    for item, n in true.items():
        if n > len(items) / capacity:
            assert item in ss.counts
    if len(true) <= capacity:  # never full: exact
        assert ss.counts == true


def test_distinct_counter_exact_then_estimated() -> None:
    d = DistinctCounter(exact=1000)
    for i in range(1000):
        d.add(i.to_bytes(4, "big"))
        d.add(i.to_bytes(4, "big"))
    assert d.exact and d.count() == 1000
    for n in (5_000, 50_000, 300_000):
        d = DistinctCounter(exact=1000)
        for i in range(n):
            d.add(i.to_bytes(4, "big"))
        assert not d.exact
        assert abs(d.count() - n) < 0.05 * n, (n, d.count())


# ----- the generator script


def test_make_synflood_script(tmp_path) -> None:
    out = tmp_path / "f.pcap"
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-synflood"), str(out), "--count", "3000", "--seed", "2"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t < 30
    assert "CRAFTED" in proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["attempts"] == 3000 and plan["target"] == ["192.0.2.10", 443]
    assert sum(1 for _ in open_capture(str(out))) == plan["frames"]
    helptext = subprocess.run([sys.executable, str(ROOT / "scripts" / "make-synflood"), "--help"], capture_output=True, text=True).stdout
    assert "CRAFTED" in helptext
    # same seed, same bytes
    again = tmp_path / "g.pcap"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-synflood"), str(again), "--count", "3000", "--seed", "2"], capture_output=True, timeout=60, check=True
    )
    assert again.read_bytes() == out.read_bytes()


# ----- reading a flood with bounded memory and time (the xfail one is a reproducer for pipeline.py, not fixed here)


def _read_flood(path, max_conns: int | None) -> tuple[float, Pipeline]:
    pipeline = Pipeline(max_conns=max_conns)
    reader = open_capture(str(path))
    t = time.process_time()
    for _ in run([(reader.path, reader)], pipeline):
        pass
    return time.process_time() - t, pipeline


def test_eviction_cost_does_not_grow_with_the_table(tmp_path) -> None:
    """A full table must not cost O(table) per new connection (it once did: a min() over the table per SYN)."""
    path = tmp_path / "f.pcap"
    with open(path, "wb") as f:
        write_synflood(f, 10_000, answered_share=0.0, normal_every=0, seed=3)
    small, p_small = _read_flood(path, 100)
    big, p_big = _read_flood(path, 2000)
    assert p_small.tracker.evicted > p_big.tracker.evicted > 7000
    assert big < 2 * small, f"max-conns 2000 took {big:.2f} s, max-conns 100 {small:.2f} s"


def test_retry_bookkeeping_stays_bounded(tmp_path) -> None:
    path = tmp_path / "slow.pcap"
    with open(path, "wb") as f:  # 20,000 failed attempts from distinct sources, 10 a second for 2,000 s
        write_synflood(f, 20_000, rate=10.0, answered_share=0.0, loud=0, normal_every=0, seed=4)
    _, pipeline = _read_flood(path, 1000)
    from synscope.read.pipeline import RETRY_WINDOW

    assert len(pipeline.retries._failed) <= 10 * RETRY_WINDOW * 1.5
