"""The syn-flood finding on a real-kernel half-open storm (pcaps/syn-storm.pcap), checked against
the designed truth (pcaps/syn-storm.truth.json): the SYNs are CRAFTED, the listener, its SYN-ACKs,
their retransmissions and its SYN cookies are the server kernel's; healthy captures give none."""

from __future__ import annotations

import json

import pytest

from synscope.core.addr import fmt_ip
from synscope.read.findings import FindingsEngine
from synscope.read.findings.model import Finding, facts_of
from synscope.read.findings.syn_flood import FloodDetector
from tests.helpers import PCAPS, analyse, cli, pcap


def truth() -> dict:
    return json.loads((PCAPS / "syn-storm.truth.json").read_text())


def floods(name: str) -> list[Finding]:
    """The syn-flood findings of a bundled capture."""
    engine = FindingsEngine()
    for r in analyse(name):
        engine.feed(r)
    return [f for f in engine.findings() if f.name == "syn-flood"]


def test_storm_truth_is_a_flood_by_design() -> None:
    """The capture was made to cross the finding's thresholds, and the server kernel did both
    things the finding tells apart: kept state (retransmitted) and sent SYN cookies."""
    t = truth()
    c, k = t["crafted"], t["kernel_counters_server"]
    assert c["syns_sent"] >= 1000 and c["rate_per_s"] >= 100
    assert sum(c["per_source"].values()) == c["syns_sent"]
    assert k["SyncookiesSent"] > 0 and k["TCPSynRetrans"] > 0
    assert k["ListenDrops"] == 0 and k["TCPReqQFullDrop"] == 0  # every SYN answered (cookies, not drops)
    assert t["nft_client"]["dropped"] == c["syns_sent"] + k["TCPSynRetrans"]  # every SYN-ACK to the crafted sources


def test_syn_flood_figures_equal_the_truth() -> None:
    t = truth()
    c, k = t["crafted"], t["kernel_counters_server"]
    real = t["real_client"]["results"]
    (f,) = floods("syn-storm.pcap")
    assert (f.server_ip, f.server_port) == (t["listener"]["ip"], t["listener"]["port"])
    fig = dict(f.figures)
    assert fig["attempts"] == c["syns_sent"] + len(real) == f.connection_count
    assert fig["half_open"] == c["syns_sent"] == t["expect"]["half_open"]
    assert fig["completed"] == t["real_connected"]
    assert fig["answered"] == fig["attempts"] and fig["refused"] == 0  # no drop at the listener (ListenDrops 0)
    assert fig["distinct_sources"] == len(c["sources"]) + 1 == t["expect"]["distinct_sources"]
    assert fig["peak_rate"] == pytest.approx(c["rate_per_s"], abs=2)
    # the server kernel's own counts: SYN-ACKs sent again, and cookies that never came back
    assert fig["synack_retransmissions"] == k["TCPSynRetrans"]
    assert fig["synack_once"] == k["SyncookiesSent"] - k["SyncookiesRecv"]


def test_top_sources_are_the_crafted_addresses_with_their_counts() -> None:
    t = truth()
    detector = FloodDetector()
    for r in analyse("syn-storm.pcap"):
        detector.add(r)
    s = detector.summary()
    assert s is not None and s.sources_exact
    crafted = {ip: n for ip, n, err in s.top_sources if ip in t["crafted"]["per_source"]}
    assert crafted == t["crafted"]["per_source"]
    assert dict((ip, n) for ip, n, _ in s.top_sources)[t["real_client"]["ip"]] == len(t["real_client"]["results"])


def test_text_names_the_listener_retransmissions_and_cookies() -> None:
    t = truth()
    k = t["kernel_counters_server"]
    proc = cli("read", "--summary", pcap("syn-storm.pcap"))
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    head = text[: text.index("Did not end well")]
    attempts, half_open = t["expect"]["attempts"], t["expect"]["half_open"]
    assert f"SYN flood against {t['listener']['ip']}:{t['listener']['port']}: {attempts:,} connection attempts, {half_open:,} never completed" in head
    assert f"retransmitted {k['TCPSynRetrans']:,} SYN-ACKs" in head
    assert f"{k['SyncookiesSent'] - k['SyncookiesRecv']:,} got one SYN-ACK never retransmitted: a sign of SYN cookies" in head


def test_real_clients_completed_during_the_storm() -> None:
    """The real clients' handshakes (answered by SYN cookies) complete in the capture as the truth says."""
    t = truth()
    mine = [r for r in analyse("syn-storm.pcap") if fmt_ip(r.conn.client.ip) == t["real_client"]["ip"]]
    assert len(mine) == len(t["real_client"]["results"])
    assert sum(facts_of(r).completed for r in mine) == t["real_connected"] == len(mine)
    assert sorted(r.conn.client.port for r in mine) == sorted(x["client_port"] for x in t["real_client"]["results"])


@pytest.mark.parametrize("name", ["accept-healthy.pcap", "busy.pcap", "churn.pcap"])
def test_healthy_captures_give_no_syn_flood(name: str) -> None:
    assert floods(name) == []
