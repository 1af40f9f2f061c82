"""Findings across connections (synscope/read/findings) against the designed truth of real captures.

accept-overflow / accept-abort / accept-healthy are made by scripts/scenarios_findings.py; their
.truth.json says which clients overflowed the accept queue (from each client's TCP_INFO and
recv() result, and the server's ListenOverflows), never from synscope. busy.pcap and
refused-retry.pcap are made by scripts/make-pcaps with fixed parameters (see pcaps/README.md).
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from dataclasses import replace
from pathlib import Path

import pytest

from synscope.read.findings import ConnFacts, FindingsEngine, model
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


def test_facts_survive_pickling_every_field() -> None:
    """A split run's workers pickle each connection's facts for the parent (every field, the
    defaulted ones too: the compiled class pickles by its own __reduce__)."""
    facts = replace(
        BASE, packets=7, client_bytes=8, server_bytes=9, handshake_s=0.5, teardown_ts=3.0, teardown_packets=2, first_closer="client",
        reset=True, syn_timestamps=True, answer="synack", answer_frame=5, rule="keepalive-timeout", keepalive_probes=3,
        keepalive_interval=1.5, silent_since=2.0, prober_is_client=False, probe_frames=(1, 2), reused=True, scan=True,
    )  # fmt: skip
    back = pickle.loads(pickle.dumps(facts, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == facts and back is not facts


def test_facts_pickle_without_their_trailing_defaults() -> None:
    """__reduce__ leaves out the arguments that end at their defaults (model._DEFAULTS, held
    here to ConnFacts.__init__'s signature), and each field comes back, whichever ends it."""
    # (read from the source: a compiled class has no signature to inspect)
    module = ast.parse((Path(__file__).parents[1] / "synscope/read/findings/model.py").read_text())
    (cls,) = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "ConnFacts"]
    (tree,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    assert tuple(ast.literal_eval(d) for d in tree.args.defaults) == model._DEFAULTS
    assert len(BASE.__reduce__()[1]) == len(tree.args.args) - 1 - len(model._DEFAULTS)
    names = [a.arg for a in tree.args.args[-len(model._DEFAULTS) :]]
    others = {"packets": 7, "client_bytes": 8, "server_bytes": 9, "handshake_s": 0.5, "teardown_ts": 3.0, "teardown_packets": 2,
              "first_closer": "client", "reset": True, "syn_timestamps": True, "answer": "synack", "answer_frame": 5,
              "rule": "keepalive-timeout", "keepalive_probes": 3, "keepalive_interval": 1.5, "silent_since": 2.0,
              "prober_is_client": False, "probe_frames": (1, 2), "reused": True, "scan": True}  # fmt: skip
    assert sorted(others) == sorted(names)
    for i, name in enumerate(names):
        facts = replace(BASE, **{name: others[name]})
        assert len(facts.__reduce__()[1]) == len(tree.args.args) - len(model._DEFAULTS) + i
        back = pickle.loads(pickle.dumps(facts, protocol=pickle.HIGHEST_PROTOCOL))
        assert back == facts and getattr(back, name) == others[name]


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


def test_reuse_holder_is_who_closed_the_previous_connection_first_in_any_order() -> None:
    from synscope.read.findings import reuse

    closed = replace(BASE, first_closer="server", teardown_ts=100.5, last_ts=101.0, answer="synack", syn_timestamps=True)
    again = replace(closed, syn_ts=101.5, first_ts=101.5, last_ts=102.0, first_closer="client", reused=True)
    for order in ((1, closed, 2, again), (2, again, 1, closed)):  # the later one may be fed first
        det = reuse.ReuseDetector()
        det.add(order[0], order[1])
        det.add(order[2], order[3])
        (f,) = det.findings()
        assert f.rule == "port-reuse-time-wait-server" and f.connections == (2,) and f.figure("gap_min_seconds") == 0.5
    det = reuse.ReuseDetector()  # two clients reusing at one service: one finding
    for c, ip in enumerate((b"\xc6\x12\x01\x02", b"\xc6\x12\x01\x03")):
        det.add(10 * c + 1, replace(closed, client_ip=ip))
        det.add(10 * c + 2, replace(again, client_ip=ip))
    (f,) = det.findings()
    assert (f.connection_count, f.figure("clients"), f.client_ip) == (2, 2, None) and "The 4-tuples of 2 clients to" in f.verdict
    det = reuse.ReuseDetector()
    det.add(1, replace(closed, reset=True))  # closed by RST: no TIME-WAIT
    det.add(2, again)
    det.add(3, replace(again, syn_ts=100.0 + reuse.TIME_WAIT + 10, client_port=1))
    det.add(4, replace(closed, client_port=1))  # (4 then 3: 3 came after TIME-WAIT expired)
    det.add(5, replace(closed, client_port=2))
    det.add(6, replace(again, client_port=2, reused=False))  # the tracker says: another tunnel, not a reuse
    assert det.findings() == []
    det = reuse.ReuseDetector()
    det.add(1, closed)
    det.add(2, replace(again, answer="ack", completed=False))
    (f,) = det.findings()
    assert f.figure("challenge_acks") == 1 and f.figure("accepted") == 0 and "ACK of the old connection" in f.verdict


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


# ----- connections across time: churn, ports, TIME-WAIT reuse, dead peers (real captures)


def named(found: list, name: str) -> list:
    return [f for f in found if f.name == name]


def test_churn_is_worded_with_the_cost_of_not_reusing() -> None:
    """churn.pcap: 30 requests, one connection each, opened one after the other."""
    t = truth("churn")
    found, _ = findings_of("churn")
    assert [f.name for f in found] == ["no-connection-reuse"]
    f = found[0]
    n = t["connections"]
    assert n == t["requests"] == t["workload"]["requests"] == f.connection_count == f.figure("connections")
    assert (f.client_ip, f.server_ip, f.server_port) == (t["client"]["ip"], t["server"]["ip"], t["server"]["port"])
    # the client's loop rate: n connections within its elapsed time
    assert f.figure("connections_per_second") >= (n - 1) / t["client_report"]["elapsed_s"]
    assert f.figure("handshake_packets") == 3 * n  # SYN, SYN-ACK, ACK: nothing lost on this path
    assert f.figure("teardown_packets") >= 3 * n  # FIN, FIN, ACK at least
    overhead = f.figure("handshake_packets") + f.figure("teardown_packets")
    assert f.figure("overhead_packet_share") == round(overhead / f.figure("packets"), 4)
    assert f.figure("saved_packets") == round(overhead * (n - 1) / n)
    assert 0 < f.figure("overhead_time_share") <= 1
    assert f.figure("client_closed_first") == t["kernel_counters"]["client"]["TW"] == n  # TIME-WAIT sockets the client's kernel made
    assert f.verdict.startswith(f"198.18.1.2 opened {n} short connections to 198.18.2.2:8081 (")
    assert "One kept-alive connection would save about" in f.verdict and "keep-alive or a connection pool" in f.next_step


def test_same_requests_on_one_kept_alive_connection_give_no_finding() -> None:
    t = truth("churn-pooled")
    assert t["connections"] == 1 and t["requests"] == truth("churn")["requests"]
    found, _ = findings_of("churn-pooled")
    assert found == []


def test_narrow_port_range_is_port_exhaustion() -> None:
    """ports-narrow.pcap: ip_local_port_range 40000-40004; connect() saw EADDRNOTAVAIL."""
    t = truth("ports-narrow")
    low, high = map(int, t["sysctls_client"]["net.ipv4.ip_local_port_range"].split())
    assert t["eaddrnotavail"] > 0 and t["client_report"]["connect_errors"] == {"EADDRNOTAVAIL": t["eaddrnotavail"]}
    found, ports = findings_of("ports-narrow")
    (f,) = named(found, "port-exhaustion")
    assert f.connection_count == f.figure("attempts") == t["connections"]
    assert f.figure("distinct_ports") == t["distinct_client_ports"] == high - low + 1
    assert (f.figure("port_low"), f.figure("port_high"), f.figure("estimated_range")) == (low, high, high - low + 1)
    assert f.figure("port_reuses") == t["connections"] - t["distinct_client_ports"]
    assert 1.0 <= f.figure("wrap_seconds") < 2.0  # tcp_tw_reuse lets a TIME-WAIT port go after 1 s
    assert all(low <= ports[i] <= high for i in f.connections)
    assert f"made {t['connections']} connection attempts to 198.18.2.2:8081 from only 5 source ports (40000–40004)" in f.verdict
    assert "EADDRNOTAVAIL (errno 99)" in f.verdict
    assert "sysctl net.ipv4.ip_local_port_range" in f.next_step and "ss -tan state time-wait | wc -l" in f.next_step


def test_wide_port_range_same_requests_is_not_port_exhaustion() -> None:
    t = truth("churn")
    assert t["requests"] == truth("ports-narrow")["requests"] and t["distinct_client_ports"] == t["connections"]
    found, _ = findings_of("churn")
    assert named(found, "port-exhaustion") == [] and named(found, "port-reuse-time-wait") == []


def test_port_reuse_while_the_server_holds_time_wait() -> None:
    """port-reuse-tw.pcap: one fixed source port, the server closes first, 0.3 s apart."""
    t = truth("port-reuse-tw")
    found, ports = findings_of("port-reuse-tw")
    assert [f.name for f in found] == ["port-reuse-time-wait"]
    f = found[0]
    assert t["closed_first"] == ["server"] and t["kernel_counters"]["server"]["TW"] == t["connections"]
    assert f.connection_count == f.figure("reuses") == t["connections"] - 1
    assert f.figure("accepted") == t["connections"] - 1  # every request was answered
    assert {ports[i] for i in f.connections} == {t["workload"]["fixed_source_port"]}
    assert t["workload"]["gap_s"] <= f.figure("gap_min_seconds") <= f.figure("gap_max_seconds") < 1.0
    assert f.rule == "port-reuse-time-wait-server" and f.confidence == "certain"
    assert "used again twice 300" in f.verdict and "which the server held (it closed first)" in f.verdict
    assert "accepted (its SYN's timestamps were newer)" in f.verdict
    assert "ss -tan state time-wait" in f.next_step and "On 198.18.2.2" in f.next_step
    syn_frames = {r.conn.id: r.conn.packets[0].seg.frame for r in analyse("port-reuse-tw.pcap")}
    assert f.evidence[0].frames[:2] == (syn_frames[1], syn_frames[2])  # the previous SYN, the reusing SYN


def test_port_reuse_while_the_client_holds_time_wait() -> None:
    """ports-narrow.pcap: the client closes first and reuses its TIME-WAIT ports (tcp_tw_reuse)."""
    t = truth("ports-narrow")
    found, _ = findings_of("ports-narrow")
    (f,) = named(found, "port-reuse-time-wait")
    assert t["kernel_counters"]["client"]["TWRecycled"] == f.figure("reuses") == t["connections"] - t["distinct_client_ports"]
    assert f.rule == "port-reuse-time-wait-client" and "which the client held" in f.verdict
    assert f"{f.connection_count} completed (the client's own kernel reused its TIME-WAIT ports" in f.verdict
    assert "sysctl net.ipv4.tcp_tw_reuse" in f.next_step and "On 198.18.1.2" in f.next_step
    assert 1.0 <= f.figure("gap_min_seconds") and f.figure("gap_max_seconds") < 60


def test_dead_peer_found_by_keepalive() -> None:
    t = truth("keepalive-dead")
    sock = t["done"]["client_socket"]
    found, _ = findings_of("keepalive-dead")
    assert [f.name for f in found] == ["dead-peer-keepalive"]
    f = found[0]
    assert t["applications"]["client"]["errno"] == "ETIMEDOUT" and f.connection_count == 1
    assert f.figure("probes_min") == f.figure("probes_max") == sock["TCP_KEEPCNT"] == t["kernel"]["client_counters"]["TcpExt.TCPKeepAlive"]
    assert abs(f.figure("probe_interval_min") - sock["TCP_KEEPINTVL"]) < 0.2
    # last heard: the server's answer, before the client went idle; silence until the reset
    assert abs(f.figure("silent_since") - t["applications"]["client"]["idle_from"]) < 0.05
    assert abs(f.end - t["applications"]["client"]["errno_at"]) < 0.05
    assert f.server == "198.18.2.2:7000" and f.client_ip == "198.18.1.2"
    assert "died because 198.18.2.2 (the server) went silent" in f.verdict and "3 keep-alive probes" in f.verdict
    assert "ETIMEDOUT" in f.verdict and "tcp_keepalive" in f.next_step and "firewall or NAT" in f.next_step


def test_connections_to_one_dead_peer_are_one_finding() -> None:
    """keepalive-dead-many.pcap: 3 connections to 3 ports of one server, keep-alive 1/1/3, then
    the router drops everything from the server."""
    t = truth("keepalive-dead-many")
    found, ports = findings_of("keepalive-dead-many")
    assert [f.name for f in found] == ["dead-peer-keepalive"]
    f = found[0]
    assert f.connection_count == f.figure("connections") == t["died"] == len(t["peer"]["ports"])
    assert all(r["errno"] == "ETIMEDOUT" for r in t["client_results"])
    probes = t["kernel_counters_client"]["TCPKeepAlive"] / t["died"]
    assert f.figure("probes_min") == f.figure("probes_max") == probes == t["done"]["client_sockets"]["TCP_KEEPCNT"]
    assert f.figure("services") == len(t["peer"]["ports"])
    assert sorted(r["local"] for r in t["client_results"]) == sorted(f"{t['client']['ip']}:{ports[i]}" for i in f.connections)
    assert abs(f.figure("silent_since") - min(r["idle_from"] for r in t["client_results"])) < 0.05
    assert abs(f.end - max(r["errno_at"] for r in t["client_results"])) < 0.05
    assert f.verdict.startswith("3 connections to 198.18.2.2 (ports 7000, 7001, 7002) died because 198.18.2.2 (the server) went silent")
    assert "reset each" in f.verdict


def test_answered_keepalives_give_no_finding() -> None:
    found, _ = findings_of("keepalive")
    assert found == []


def test_new_findings_as_json_numbers() -> None:
    objs = [json.loads(x) for x in cli("read", "--json", pcap("ports-narrow.pcap")).stdout.splitlines()]
    finds = {o["finding"]: o for o in objs if "finding" in o}
    assert set(finds) == {"port-exhaustion", "port-reuse-time-wait", "no-connection-reuse"}
    assert finds["port-exhaustion"]["figures"]["distinct_ports"] == 5
    for f in finds.values():
        assert all(isinstance(v, (int, float)) for v in f["figures"].values())
        assert f["client"] == {"ip": "198.18.1.2"}


# ----- bounded memory on a crafted capture of 10,000+ connections


def _crafted_many(path, n: int) -> None:
    """CRAFTED: n complete connections (tests/craft.py), 10 ms apart, built so the tables fill:
    1,500 (client, service) pairs, each cycling through 3 source ports, so 4,500 4-tuples each
    reused within TIME-WAIT by 1,500 groups."""
    from tests.craft import PcapWriter, conversation

    frames = []
    for i in range(n):
        k = i % 1500  # one client per service; each 4-tuple comes back 45 s later (3 ports)
        client = f"198.18.{100 + k // 200}.{1 + k % 200}"
        frames += conversation(client, "198.19.0.1", 40000 + (i // 1500) % 3, 8000 + k, 1000.0 + i * 0.01, rtt=0.002, isn=(1000 + i * 7919, 5000 + i))
    frames.sort(key=lambda x: x[0])
    with open(path, "wb") as out:
        w = PcapWriter(out)
        for ts, frame in frames:
            w.write(ts, frame)


def test_findings_stage_memory_stays_bounded_on_10000_connections(tmp_path) -> None:
    import tracemalloc

    from synscope.read.findings import churn, keepalive, ports, reuse
    from synscope.read.findings.model import facts_of
    from synscope.read.pipeline import Pipeline, run
    from synscope.read.sources import open_capture

    path = tmp_path / "many.pcap"
    n = 10_500
    _crafted_many(path, n)
    reader = open_capture(str(path))
    facts = [(r.conn.id, facts_of(r)) for r in run(((reader.path, reader),), Pipeline())]
    assert len(facts) == n

    def feed(engine: FindingsEngine, count: int) -> int:
        tracemalloc.start()
        for cid, f in facts[:count]:
            engine.feed_facts(cid, f)
        engine.findings()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    # default caps: every table under its cap, the stage well under a few MB
    engine = FindingsEngine()
    peak = feed(engine, n)
    assert len(engine.churn._open) <= churn.PAIR_SLOTS and len(engine.ports._pairs) <= ports.PAIR_SLOTS
    assert len(engine.reuse._lives) == 4500 <= reuse.TUPLE_SLOTS
    assert len(engine.reuse._groups) == reuse.GROUP_SLOTS and engine.reuse.ungrouped > 0  # one group per service
    assert len(engine.ports._pairs) == churn.PAIR_SLOTS == ports.PAIR_SLOTS
    assert len(engine.dead_peers._peers) <= keepalive.PEER_SLOTS
    assert all(len(p.last_use) <= ports.NARROW_MAX and len(p.ids) <= MAX_IDS for p in engine.ports._pairs.values())
    assert peak < 24_000_000, peak

    # small caps: the tables fill, then twice the input costs no more memory
    def small() -> FindingsEngine:
        e = FindingsEngine()
        e.churn = churn.ChurnDetector(slots=64)
        e.ports = ports.PortExhaustionDetector(slots=64)
        e.reuse = reuse.ReuseDetector(tuple_slots=512, group_slots=64)
        e.dead_peers = keepalive.DeadPeerDetector(slots=64)
        return e

    half, full = small(), small()
    peak_half, peak_full = feed(half, n // 2), feed(full, n)
    assert len(full.reuse._lives) == 512 and full.reuse.forgotten > 0
    assert len(full.ports._pairs) <= 64 and len(full.churn._open) <= 64
    assert peak_full < peak_half * 1.25 + 200_000, (peak_half, peak_full)


@pytest.mark.parametrize(
    "name", ["accept-overflow", "accept-abort", "refused-retry", "port-scan", "ports-narrow", "port-reuse-tw", "keepalive-dead-many", "churn"]
)
def test_readme_shows_real_finding_text(name: str) -> None:
    """Each finding's example in the README is what synscope prints for that capture (its first
    finding, worst first)."""
    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    block = cli("read", pcap(f"{name}.pcap")).stdout.split("What went wrong\n", 1)[1].split("\n\n", 1)[0]
    findings = re.split(r"\n(?=  [!~] )", block.rstrip("\n"))
    assert findings[0] in readme, f"README example of {name} is stale:\n{findings[0]}"
