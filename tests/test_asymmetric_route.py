"""The client's SYN on another path (asymmetric routing), on real kernels, against the truth that
scripts/scenarios_truth.py wrote beside each capture (see pcaps/README.md).

Client and server are joined by two routers; the client's route to the server goes via r2, the
server's back via r1, and tcpdump runs on r1's server-side veth: it sees the server's SYN-ACK and
everything the server sends, nothing the client sends. asymmetric-route.pcap holds a whole
exchange (the server closes first), asymmetric-open.pcap only the SYN-ACK (tcpdump stopped once
connect() returned), symmetric-route.pcap is the healthy counterpart: both ways via r1.
"""

from __future__ import annotations

import json

from synscope.read.evidence import CERTAIN, POSSIBLE
from synscope.read.pipeline import ConnReport
from tests.helpers import PCAPS, analyse

# what a verdict must not say when the client's packets merely went by another path
BLAME = ("never sent", "did not send", "no answer", "answered nothing", "did not answer", "never answered", "handshake failed", "no FIN back")


def truth(name: str) -> dict:
    return json.loads((PCAPS / f"{name}.truth.json").read_text())


def words(report: ConnReport) -> str:
    """Everything a reader sees of a connection: summary, explanation, next step, packet notes."""
    v = report.verdict
    return " ".join([v.summary, v.explanation, v.next_step, *(n for p in report.conn.packets for n in p.notes or [])])


def test_the_truth_is_the_designed_routing() -> None:
    for name in ("asymmetric-route", "asymmetric-open"):
        t = truth(name)
        client_segments = t["kernel"]["counters"]["client"]["Tcp.OutSegs"]
        assert " via 198.18.3.1 dev c1 src 198.18.1.2" in t["done"]["routes"]["client_to_server"]
        assert " via 198.18.2.1 dev s0 " in t["done"]["routes"]["server_to_client"]
        assert t["kernel"]["forwarded_datagrams"]["r2"] >= client_segments > 0 and t["tshark"]["counts"]["from_client"] == 0
        # the applications saw a whole, healthy exchange
        c, s = t["applications"]["client"], t["applications"]["server"]
        assert c["connect"] == "ok" and "errno" not in c and "errno" not in s
        assert (c["bytes_sent"], c["bytes_received"], s["bytes_received"], s["bytes_sent"]) == (1500, 4000, 1500, 4000)
    sym = truth("symmetric-route")
    assert sym["kernel"]["forwarded_datagrams"]["r2"] == 0
    assert sym["tshark"]["counts"]["from_client"] == sym["kernel"]["counters"]["client"]["Tcp.OutSegs"]


def test_whole_exchange_seen_one_way_is_put_on_the_capture_point() -> None:
    t = truth("asymmetric-route")
    [r] = analyse("asymmetric-route.pcap")
    v, c = r.verdict, r.conn
    # the server's ACKs move past data the capture never saw: the capture sees one direction
    assert (v.outcome, v.rule, v.side, v.confidence) == ("one-sided", "one-sided-capture", "capture", CERTAIN)
    assert "asymmetric routing" in v.explanation and "cannot be told" in v.explanation
    assert v.next_step.startswith("Capture where both directions pass")
    assert not any(claim in words(r) for claim in BLAME)
    assert v.evidence[0].frames[0] == t["tshark"]["frames"][0]["frame"]  # the SYN-ACK acknowledges the unseen SYN
    assert (c.client.packets, c.server.packets) == (0, t["tshark"]["counts"]["frames"])
    assert c.server.bytes == t["applications"]["server"]["bytes_sent"]
    # the client closed too (the truth), so the capture must not put either side in a state
    assert (c.state_of(c.client), c.state_of(c.server)) == ("unknown", "unknown")
    fin = t["observed"]["first_fin"]["frame"]
    assert next(" ".join(p.notes) for p in c.packets if p.seg.frame == fin).startswith("FIN: server closes its side; the client's direction")


def test_lone_synack_names_the_other_path_and_claims_no_state() -> None:
    t = truth("asymmetric-open")
    [r] = analyse("asymmetric-open.pcap")
    v, c = r.verdict, r.conn
    assert (v.rule, v.side, v.confidence) == ("synack-without-syn", "capture", POSSIBLE)
    assert "asymmetric routing" in v.explanation and "capture started after the SYN" in v.explanation
    assert "capture where both directions pass" in v.next_step
    assert not any(claim in words(r) for claim in BLAME)
    assert v.evidence[0].frames == (t["tshark"]["frames"][0]["frame"],)
    # the server had accepted the connection (its application read the request): the capture,
    # which never sees the client's direction, must not say it waits for the ACK in SYN-RECEIVED
    assert t["applications"]["server"]["bytes_received"] == 1500
    assert (c.state_of(c.client), c.state_of(c.server)) == ("unknown", "unknown")


def test_symmetric_counterpart_is_healthy() -> None:
    t = truth("symmetric-route")
    [r] = analyse("symmetric-route.pcap")
    v, c = r.verdict, r.conn
    assert (v.outcome, v.rule, v.ok, v.confidence) == ("closed", "closed", True, CERTAIN)
    assert v.explanation.startswith("Normal connection: handshake,") and f"the {t['done']['closed_first']} first" in v.explanation
    assert (c.client.bytes, c.server.bytes) == (1500, 4000) and not c.roles_guessed
    assert (c.client.packets, c.server.packets) == (t["tshark"]["counts"]["from_client"], t["tshark"]["counts"]["from_server"])
    assert (c.state_of(c.client), c.state_of(c.server)) == ("CLOSED", "TIME-WAIT")
