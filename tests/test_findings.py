"""Findings across connections (synscope/read/findings) against the designed truth of real captures.

accept-overflow / accept-abort / accept-healthy are made by scripts/scenarios_findings.py; their
.truth.json says which clients overflowed the accept queue (from each client's TCP_INFO and
recv() result, and the server's ListenOverflows), never from synscope. busy.pcap and
refused-retry.pcap are made by scripts/make-pcaps with fixed parameters (see pcaps/README.md).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from synscope.read.findings import ConnFacts, FindingsEngine
from synscope.read.findings import accept_queue as aq
from synscope.read.findings import failures as fl
from synscope.read.findings.model import MAX_IDS
from synscope.read.pipeline import RETRY_MIN_GAP, RetryLinker, link_sentences
from tests.helpers import PCAPS, analyse, cli, pcap


def truth(name: str) -> dict:
    return json.loads((PCAPS / f"{name}.truth.json").read_text())


def findings_of(name: str) -> tuple[list, dict[int, int]]:
    """(findings, connection id -> client port) of a bundled capture."""
    engine = FindingsEngine()
    ports = {}
    for r in analyse(name + ".pcap"):
        engine.feed(r)
        ports[r.conn.id] = r.conn.client.port
    return engine.findings(), ports


# ----- accept queue: real captures


@pytest.mark.parametrize("name,kind", [("accept-overflow", aq.OVERFLOW), ("accept-abort", aq.ABORT)])
def test_accept_queue_overflow_names_listener_and_the_clients_that_overflowed(name: str, kind: str) -> None:
    t = truth(name)
    found, ports = findings_of(name)
    assert [f.name for f in found] == [kind]
    f = found[0]
    assert (f.server_ip, f.server_port) == (t["listener"]["ip"], t["listener"]["port"])
    assert f.connection_count == t["overflowed"] >= aq.MIN_CONNS
    assert sorted(ports[i] for i in f.connections) == t["overflowed_client_ports"]
    assert t["kernel_counters_server"]["ListenOverflows"] >= t["overflowed"]  # the kernel agrees it dropped
    assert f.confidence == "likely"
    assert f"accept queue of {t['listener']['ip']}:{t['listener']['port']} overflowed" in f.verdict
    assert f"{t['overflowed']} connections from one client" in f.verdict
    assert "ss -lnt 'sport = :8080'" in f.next_step and "TcpExtListenOverflows" in f.next_step and "backlog" in f.next_step
    assert f.evidence and all(f.evidence[0].frames)


def test_overflow_stall_matches_what_the_clients_saw() -> None:
    """Each overflowed client's request was still unacknowledged at the sample time, and the
    application accepted nothing before its hold ended: the stall is at least that long."""
    t = truth("accept-overflow")
    found, _ = findings_of("accept-overflow")
    f = found[0]
    overflowed = [c for c in t["client_results"] if c.get("client_port") in t["overflowed_client_ports"]]
    assert all(c["at_sample"]["unacked"] > 0 for c in overflowed)
    assert f.figure("stall_min") >= t["client_sample_s"]
    assert f.figure("stall_max") <= max(c["end_s"] for c in overflowed)
    assert f.figure("data_retransmissions") >= aq.MIN_DATA_RETRANS * t["overflowed"]
    assert "were not acknowledged for" in f.verdict


def test_healthy_listener_gives_no_finding() -> None:
    t = truth("accept-healthy")
    assert t["kernel_counters_server"]["ListenOverflows"] == 0 and t["overflowed"] == 0
    found, _ = findings_of("accept-healthy")
    assert found == []


@pytest.mark.parametrize("name", ["busy", "bulk-loss", "synack-lost", "reorder", "zero-window", "keepalive", "normal"])
def test_no_accept_queue_claim_on_loss_or_slow_servers(name: str) -> None:
    found, _ = findings_of(name)
    assert not [f for f in found if f.name.startswith("accept-queue")]


# ----- repeated failures and retries


def test_busy_refusals_are_one_group_not_a_chain() -> None:
    """busy.pcap: 600 attempts from 24 threads of one client, every 10th to port 81 (refused)."""
    reports = analyse("busy.pcap")
    refused = [r for r in reports if r.verdict.outcome == "refused"]
    assert len(refused) == 600 // 10
    assert [r.retry_of for r in refused if r.retry_of is not None] == []
    assert not any("attempt" in r.verdict.explanation for r in refused)
    engine = FindingsEngine()
    for r in reports:
        engine.feed(r)
    groups = [f for f in engine.findings() if f.name == "repeated-failure"]
    assert len(groups) == 1
    g = groups[0]
    assert (g.server_port, g.connection_count, g.figure("clients")) == (81, 60, 1)
    assert g.rule == "repeated-refused" and g.confidence == "certain"
    assert len(g.connections) == MAX_IDS and g.connections[0] == min(r.conn.id for r in refused)
    assert g.start == min(r.conn.syn_ts for r in refused) and g.end == max(r.conn.syn_ts for r in refused)
    assert g.verdict.startswith("60 connection attempts to 198.18.2.2:81 refused")
    assert "ss -lntp | grep :81 on 198.18.2.2" in g.next_step


def test_one_app_retrying_is_worded_as_attempts() -> None:
    """refused-retry.pcap: the application connects 3 times, 1 s apart."""
    reports = analyse("refused-retry.pcap")
    assert [(r.retry_of, r.retry_number) for r in reports] == [(None, 0), (1, 1), (2, 2)]
    assert "attempt 2 by the application" in link_sentences(reports[1])
    assert "attempt 3 by the application" in link_sentences(reports[2])
    engine = FindingsEngine()
    for r in reports:
        engine.feed(r)
    assert [(f.name, f.connection_count, f.connections) for f in engine.findings()] == [("repeated-failure", 3, (1, 2, 3))]


def _link(linker: RetryLinker, cid: int, t: float, failed: bool = True, port: int = 81, client: bytes = b"\x01" * 4) -> tuple[int, int] | None:
    return linker.link((client, b"\x02" * 4, port), cid, t, failed, t, t + 0.001)


def test_retry_linker_needs_a_gap_a_regular_one_and_no_other_work() -> None:
    linker = RetryLinker()
    assert _link(linker, 1, 0.0) is None
    assert _link(linker, 2, RETRY_MIN_GAP / 2) is None, "too soon after the failure: independent"
    assert _link(linker, 3, 1.0) == (2, 1)
    assert _link(linker, 4, 2.0) == (3, 2), "same gap: regular"
    assert _link(linker, 5, 2.0 + 20.0) is None, "a gap 20x the one before is not the same retry loop"
    linker = RetryLinker()
    assert _link(linker, 1, 0.0) is None
    assert _link(linker, 2, 0.5, failed=False, port=80) is None  # other work with the same server
    assert _link(linker, 3, 1.0) is None


# ----- bounded state and thresholds (synthetic facts)

BASE = ConnFacts(
    client_ip=b"\xc6\x12\x01\x02",
    client_port=40000,
    server_ip=b"\xc6\x12\x02\x02",
    server_port=8080,
    first_ts=100.0,
    last_ts=110.0,
    syn_ts=100.0,
    client_syns=1,
    server_syns=1,
    completed=True,
    server_rst=False,
    evicted=False,
    outcome="closed",
    ok=True,
    established=True,
    icmp_from=b"",
    first_frame=1,
    stalled=4.0,
    data_retransmissions=3,
    synack_after_ack=0,
    abort_after=-1.0,
    frames=(3, 4, 0, 9),
)


def test_accept_queue_needs_several_connections_in_one_period() -> None:
    det = aq.AcceptQueueDetector()
    for i in range(aq.MIN_CONNS - 1):
        det.add(i + 1, BASE)
    det.add(9, replace(BASE, syn_ts=100.0 + aq.PERIOD_GAP + 1))  # a later period
    assert det.findings() == []
    det = aq.AcceptQueueDetector()
    for i in range(aq.MIN_CONNS):
        det.add(i + 1, replace(BASE, syn_ts=100.0 + i))
    assert [f.connection_count for f in det.findings()] == [aq.MIN_CONNS]


def test_one_lost_request_is_not_an_overflow() -> None:
    assert aq.kind_of(replace(BASE, data_retransmissions=1)) == ""
    assert aq.kind_of(replace(BASE, stalled=0.3)) == ""
    assert aq.kind_of(replace(BASE, data_retransmissions=0, synack_after_ack=1)) == aq.OVERFLOW
    assert aq.kind_of(replace(BASE, abort_after=0.001)) == aq.ABORT
    assert aq.kind_of(replace(BASE, completed=False)) == ""


def test_state_stays_bounded() -> None:
    det = aq.AcceptQueueDetector()
    groups = fl.FailureGroups()
    failed = replace(BASE, ok=False, established=False, outcome="refused", completed=False)
    for i in range(20_000):
        f = replace(BASE, server_port=i % 5000, syn_ts=float(i))
        det.add(i, f)
        groups.add(i, replace(failed, server_port=i % 5000))
    assert len(det._open) <= aq.LISTENER_SLOTS
    assert len(groups._groups) <= fl.GROUP_SLOTS and groups.ungrouped > 0
    assert all(len(g.ids) <= MAX_IDS for g in groups._groups.values())
    assert len(det.findings()) <= aq.MAX_FINDINGS


# ----- the first screen and JSON


def test_text_leads_with_what_went_wrong() -> None:
    out = cli("read", pcap("accept-overflow.pcap")).stdout
    header, block, table = out.split("\n\n")[:3]
    assert "accept-overflow.pcap: 6 connections" in header and "\n" not in header
    lines = block.splitlines()
    assert lines[0] == "What went wrong" and lines[1].startswith("  ~ The accept queue of 198.18.7.3:8080 overflowed: 4 connections")
    text = " ".join(x.strip() for x in lines[1:])
    assert "Next: On 198.18.7.3: ss -lnt 'sport = :8080'" in text and "; likely)" in text
    assert table.startswith("id ")
    healthy = cli("read", pcap("accept-healthy.pcap")).stdout
    assert "What went wrong" not in healthy


def test_json_finding_line_after_the_connections() -> None:
    t = truth("accept-abort")
    objs = [json.loads(x) for x in cli("read", "--json", pcap("accept-abort.pcap")).stdout.splitlines()]
    conns = [o for o in objs if "id" in o]
    finds = [o for o in objs if "finding" in o]
    assert objs == conns + finds and len(finds) == 1
    f = finds[0]
    assert f["schema"] == 1 and f["finding"] == "accept-queue-abort"
    assert f["connection_count"] == t["overflowed"] == len(f["connections"])
    by_id = {c["id"]: c for c in conns}
    assert sorted(by_id[i]["client"]["port"] for i in f["connections"]) == t["overflowed_client_ports"]
    assert f["server"] == {"ip": "198.18.7.3", "port": 8080}
    assert set(f) >= {"start", "end", "figures", "verdict", "confidence", "evidence", "next_step", "rule"}
    assert all(by_id[i]["outcome"] == "reset-by-server" for i in f["connections"])


def test_big_capture_lists_problems_and_sums_up_healthy_connections() -> None:
    """busy.pcap (600 connections): the table lists the connections that went wrong, and one line
    per service for those that ended well; --all lists every one."""
    conns = [json.loads(x) for x in cli("read", "--json", pcap("busy.pcap")).stdout.splitlines()]
    ok = {c["id"] for c in conns if c.get("ok")}
    bad = {c["id"] for c in conns if "id" in c and not c["ok"]}
    assert len(ok) > 200 and bad
    out = cli("read", pcap("busy.pcap")).stdout
    table = out.split("\n\n")[2].splitlines()
    listed = {int(line.split()[0]) for line in table[1:] if line[:1].isdigit()}
    assert listed == bad
    assert f"Healthy: {len(ok):,} connections ended well (--all lists them)" in out
    assert f"  {len(ok):,} to 198.18.2.2:80 (median " in out
    everything = cli("read", "--all", pcap("busy.pcap")).stdout
    assert "Healthy:" not in everything and f"\n{max(ok)} " in everything
