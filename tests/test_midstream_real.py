"""A capture started mid-connection, on real kernels, against the truth that
scripts/scenarios_truth.py wrote beside each capture (see pcaps/README.md).

midstream-close.pcap: client 198.18.1.2:43001 connects to 198.18.2.2:8084; only after connect()
returned did tcpdump start on the client's veth. Request and answer follow; the server closes
first. midstream-reset.pcap: the same start, then the client aborts (SO_LINGER {1, 0}) and the
server's recv() gets ECONNRESET. (tests/test_midstream_close.py holds the crafted cases.)
"""

from __future__ import annotations

import json

from synscope.read.evidence import POSSIBLE
from synscope.read.pipeline import ConnReport
from tests.helpers import PCAPS, analyse

# what a verdict must not claim of a connection whose handshake happened before the capture
HANDSHAKE_CLAIMS = ("handshake failed", "Normal connection: handshake", "no answer", "never answered", "SYN-ACK")


def truth(name: str) -> dict:
    return json.loads((PCAPS / f"{name}.truth.json").read_text())


def notes(report: ConnReport) -> dict[int, str]:
    return {p.seg.frame: " ".join(p.notes or []) for p in report.conn.packets}


def test_the_truth_is_a_capture_started_after_the_handshake() -> None:
    for name in ("midstream-close", "midstream-reset"):
        t = truth(name)
        cap, c = t["capture"], t["applications"]["client"]
        assert c["connect"] == "ok" and c["connected_at"] < cap["tcpdump_listening_at"] < cap["first_frame_at"]
        assert t["tshark"]["counts"]["syn"] == 0 and t["tshark"]["counts"]["synack"] == 0
        assert (c["bytes_sent"], c["bytes_received"]) == (1500, 4000)
    close = truth("midstream-close")
    assert close["done"]["closed_first"] == "server" == close["observed"]["first_fin"]["from"]
    apps = close["applications"]
    assert apps["server"]["closed_at"] < apps["client"]["eof_at"] < apps["client"]["closed_at"]
    reset = truth("midstream-reset")
    assert reset["done"]["reset_by"] == "client" == reset["observed"]["first_rst"]["from"]
    assert reset["applications"]["server"]["errno"] == "ECONNRESET" and reset["tshark"]["counts"]["fin"] == 0


def test_closed_midstream_names_the_side_that_closed_first() -> None:
    t = truth("midstream-close")
    [r] = analyse("midstream-close.pcap")
    v, c = r.verdict, r.conn
    assert (v.outcome, v.rule, v.ok) == ("closed", "closed", True)
    assert v.explanation.startswith("Picked up mid-stream") and f"{t['client']} taken as the client" in v.explanation
    assert f"the {t['done']['closed_first']} first" in v.explanation and v.summary == f"{t['done']['closed_first']} closed first"
    assert not any(claim in v.explanation for claim in HANDSHAKE_CLAIMS)
    assert v.evidence[0].frames == (t["observed"]["first_frame"],) and "no SYN" in v.evidence[0].fact
    fins = {f["from"]: f["frame"] for f in t["tshark"]["frames"] if "F" in f["flags"]}
    assert {e.fact: e.frames for e in v.evidence[1:]} == {"FIN from the client": (fins["client"],), "FIN from the server": (fins["server"],)}
    apps = t["applications"]
    assert (c.client.bytes, c.server.bytes) == (apps["client"]["bytes_sent"], apps["server"]["bytes_sent"])
    # the server closed first: it holds TIME-WAIT
    assert (c.state_of(c.client), c.state_of(c.server)) == ("CLOSED", "TIME-WAIT")


def test_reset_midstream_names_the_side_that_reset() -> None:
    t = truth("midstream-reset")
    who = t["done"]["reset_by"]
    [r] = analyse("midstream-reset.pcap")
    v = r.verdict
    assert (v.outcome, v.ok, v.side) == ("midstream", False, who) and v.summary == f"picked up mid-stream; RST from {who}"
    # the RST's sender is its address, not a guess; why it was sent the packets cannot tell
    assert f"{t[who]} (the {who}) aborted it with RST" in v.explanation and v.confidence == POSSIBLE
    assert "1.5 KB sent and 4.0 KB received in the capture" in v.explanation
    assert not any(claim in v.explanation for claim in HANDSHAKE_CLAIMS)
    assert v.evidence[0].frames == (t["observed"]["first_frame"],) and "no SYN" in v.evidence[0].fact
    assert (f"RST from the {who}", (t["observed"]["first_rst"]["frame"],)) in [(e.fact, e.frames) for e in v.evidence]
    assert v.next_step.startswith(f"Check the {who} application's logs")
    assert f"RST from {who}" in notes(r)[t["observed"]["first_rst"]["frame"]]
    # the abort the application really made is among the causes offered
    assert "SO_LINGER {1, 0}" in t["applications"][who]["closed_with"] and "SO_LINGER 0" in v.explanation
