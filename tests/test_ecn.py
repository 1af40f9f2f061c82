"""ECN (issue 14, item 11): negotiation, CE marks, ECE echoes and CWR, per connection.

The captures ecn-congestion, ecn-clean and ecn-declined come from real kernels (scripts/make-pcaps,
scripts/scenarios_ecn.py); their truth files hold what was set up and the kernels' counters
(the client's IpExt InCEPkts: CE-marked packets it received). Crafted cases (labelled: built byte by
byte here) cover what a kernel will not do on demand: AccECN, a reflected SYN-ACK, ECT without
negotiation, ECT bleached on the way.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from synscope.read.analysis.ecn import (
    ACCECN,
    DECLINED,
    NEGOTIATED,
    NONSTANDARD,
    NOT_REQUESTED,
    REFLECTED,
    REQUESTED,
    UNKNOWN,
    EcnFacts,
    negotiation,
    observe,
)
from synscope.read.jsonl import connection_line, connection_object
from synscope.read.pipeline import ConnReport
from tests import craft
from tests.helpers import PCAPS, analyse, analyse_paths

SYN, ACK, PSH, FIN, ECE, CWR, AE = 0x02, 0x10, 0x08, 0x01, 0x40, 0x80, 0x100
ECT0, CE = 2, 3


def truth(name: str) -> dict:
    return json.loads((PCAPS / f"{name}.truth.json").read_text())


# ------------------------------------------------------------------ real captures


def test_congestion_ce_count_matches_kernel_counter() -> None:
    """The CE marks synscope counts towards the client are the client kernel's InCEPkts (all of them
    pass the capture point, after the marking router); the negotiation is the designed one; the
    client's ECE echoes and the server's CWR are reported with their frames."""
    t = truth("ecn-congestion")
    [r] = analyse("ecn-congestion.pcap")
    obj = connection_object(r)
    ecn = obj["ecn"]
    assert t["ce_marked_to_client"] == t["kernel_counters_delta"]["client"]["IpExt.InCEPkts"] > 0
    assert ecn["negotiation"] == t["ecn_negotiation"] == "negotiated"
    assert ecn["s2c"]["ce"] == t["ce_marked_to_client"]
    assert len(ecn["s2c"]["ce_frames"]) == min(t["ce_marked_to_client"], 8)
    assert ecn["c2s"]["ce"] == 0
    assert ecn["c2s"]["ece"] > 0 and ecn["s2c"]["cwr"] > 0
    # the echo follows the first mark, the reduction follows the first echo
    assert ecn["s2c"]["ce_frames"][0] < ecn["c2s"]["ece_frames"][0] < ecn["s2c"]["cwr_frames"][0]
    v = r.verdict
    assert v.ok and v.outcome == "closed"
    assert v.rule == "ecn-congestion" and v.confidence == "certain" and v.side == "path"
    assert f"CE marked {t['ce_marked_to_client']} segments from the server" in v.explanation
    assert f"the client echoed ECE from #{ecn['c2s']['ece_frames'][0]}" in v.explanation
    assert f"CWR #{ecn['s2c']['cwr_frames'][0]}" in v.explanation
    assert "congestion on the path" in v.explanation
    assert "congestion" in v.summary
    facts = {e.fact: e.frames for e in v.evidence}
    assert facts[f"{t['ce_marked_to_client']} CE-marked segment(s) from the server"] == tuple(ecn["s2c"]["ce_frames"])


@pytest.mark.parametrize("name", ["ecn-clean", "ecn-declined"])
def test_counterparts_say_nothing_of_congestion(name: str) -> None:
    """No CE on the path (truth: the kernels counted none): the verdict states the negotiation
    outcome of the truth file and nothing of congestion."""
    t = truth(name)
    assert t["congestion"] is False and t["ce_marked_to_client"] == 0
    [r] = analyse(f"{name}.pcap")
    ecn = connection_object(r)["ecn"]
    assert ecn["negotiation"] == t["ecn_negotiation"]
    assert ecn["s2c"]["ce"] == ecn["c2s"]["ce"] == 0
    v = r.verdict
    assert v.ok and v.rule == "closed"
    assert "congestion on the path" not in v.explanation and "congestion" not in v.summary
    if t["ecn_negotiation"] == "negotiated":
        assert "ECN negotiated" in v.explanation and "signalled no congestion" in v.explanation
        assert ecn["s2c"]["ect0"] > 0  # the server's data carries ECT(0)
    else:
        assert "the server declined" in v.explanation
        assert ecn["s2c"]["ect0"] == ecn["c2s"]["ect0"] == 0


def test_json_line_matches_object() -> None:
    """The written-out JSON line carries the same "ecn" member as the object."""
    for name in ("ecn-congestion.pcap", "ecn-declined.pcap", "normal.pcap"):
        for r in analyse(name):
            line = json.loads(connection_line(r))
            assert line["ecn"] == connection_object(r)["ecn"]
    [r] = analyse("normal.pcap")
    assert connection_object(r)["ecn"] is None  # no ECN anywhere: null


# ------------------------------------------------------------------ negotiation table


def _setup(client: int | None, server: int | None) -> str:
    c, s = EcnFacts(), EcnFacts()
    if client is not None:
        observe(c, 0, SYN | client, 1, 0)
    if server is not None:
        observe(s, 0, SYN | ACK | server, 2, 0)
    return negotiation(c, s, client is not None)


@pytest.mark.parametrize(
    ("syn", "synack", "outcome"),
    [
        (ECE | CWR, ECE, NEGOTIATED),
        (ECE | CWR, 0, DECLINED),
        (ECE | CWR, ECE | CWR, REFLECTED),
        (ECE | CWR, AE | ECE | CWR, REFLECTED),
        (AE | ECE | CWR, AE | ECE | CWR, REFLECTED),
        (AE | ECE | CWR, CWR, ACCECN),
        (AE | ECE | CWR, CWR | ECE, ACCECN),
        (AE | ECE | CWR, AE, ACCECN),
        (AE | ECE | CWR, AE | CWR, ACCECN),
        (AE | ECE | CWR, ECE, NEGOTIATED),  # an RFC 3168 server answering AccECN
        (AE | ECE | CWR, 0, DECLINED),
        (0, 0, NOT_REQUESTED),
        (ECE, ECE, NONSTANDARD),
        (ECE | CWR, None, REQUESTED),
        (None, ECE, UNKNOWN),
    ],
)
def test_negotiation_table(syn: int | None, synack: int | None, outcome: str) -> None:
    assert _setup(syn, synack) == outcome


def test_retransmitted_syn_without_setup_bits_wins() -> None:
    """Linux sends a retransmitted SYN without ECE+CWR: the SYN-ACK answers the last SYN."""
    c, s = EcnFacts(), EcnFacts()
    observe(c, 0, SYN | ECE | CWR, 1, 0)
    observe(c, 0, SYN, 2, 0)
    observe(s, 0, SYN | ACK, 3, 0)
    assert negotiation(c, s, True) == NOT_REQUESTED


# ------------------------------------------------------------------ crafted captures


C, S = "198.18.1.2", "198.18.2.2"


def _frame(from_client: bool, seq: int, ack: int, flags: int, payload: bytes = b"", tos: int = 0) -> bytes:
    a, b, pa, pb = (C, S, 40000, 80) if from_client else (S, C, 80, 40000)
    sa, sb = socket.inet_aton(a), socket.inet_aton(b)
    seg = craft._tcp(sa, sb, pa, pb, seq, ack, flags & 0xFF, 64240, b"", payload)
    if flags & AE:  # the AE bit sits in the data-offset byte
        seg = seg[:12] + bytes([seg[12] | 1]) + seg[13:16] + b"\0\0" + seg[18:]
        pseudo = sa + sb + struct.pack("!BBH", 0, 6, len(seg))
        seg = seg[:16] + struct.pack("!H", craft.checksum(pseudo + seg)) + seg[18:]
    src, dst = (craft.MAC_CLIENT, craft.MAC_SERVER) if from_client else (craft.MAC_SERVER, craft.MAC_CLIENT)
    return craft.ether(craft.ipv4(sa, sb, 6, seg, tos=tos), src=src, dst=dst)


def _write(path: Path, syn: int, synack: int, data_tos: int, ack_flags: int = 0, n: int = 4) -> Path:
    """CRAFTED: a handshake with these setup bits, n server data segments with this IP ECN field,
    the client's ACKs with ``ack_flags`` added, FINs."""
    frames = [_frame(True, 100, 0, SYN | syn), _frame(False, 500, 101, SYN | ACK | synack), _frame(True, 101, 501, ACK)]
    seq = 501
    for _ in range(n):
        frames.append(_frame(False, seq, 101, ACK | PSH, b"x" * 100, tos=data_tos))
        seq += 100
        frames.append(_frame(True, 101, seq, ACK | ack_flags))
    frames += [_frame(False, seq, 101, FIN | ACK), _frame(True, 101, seq + 1, FIN | ACK), _frame(False, seq + 1, 102, ACK)]
    out = craft.pcap_header()
    for i, f in enumerate(frames):
        out += craft.pcap_record(1_700_000_000, 1000 * i, f)
    path.write_bytes(out)
    return path


def _report(path: Path) -> ConnReport:
    [r] = analyse_paths(path)
    return r


def test_crafted_ect_without_negotiation(tmp_path: Path) -> None:
    """CRAFTED: the server declines ECN, yet marks its data ECT(0): a sender bug or a middlebox."""
    r = _report(_write(tmp_path / "x.pcap", ECE | CWR, 0, ECT0))
    ecn = connection_object(r)["ecn"]
    assert ecn["negotiation"] == DECLINED and ecn["s2c"]["ect0"] == 4
    assert "4 segments from the server carry an ECN codepoint (ECT or CE) though ECN was not negotiated" in r.verdict.explanation
    assert "ECT without ECN negotiated" in r.verdict.summary


def test_crafted_ect_on_plain_handshake(tmp_path: Path) -> None:
    """CRAFTED: no ECN setup at all (plain SYN, plain SYN-ACK), yet the server's data is ECT(0)."""
    r = _report(_write(tmp_path / "x.pcap", 0, 0, ECT0))
    assert connection_object(r)["ecn"]["negotiation"] == NOT_REQUESTED
    assert "though ECN was not negotiated" in r.verdict.explanation


def test_crafted_ect_bleached(tmp_path: Path) -> None:
    """CRAFTED: ECN agreed, but the server's data reaches the capture point without ECT."""
    r = _report(_write(tmp_path / "x.pcap", ECE | CWR, ECE, 0))
    assert connection_object(r)["ecn"]["negotiation"] == NEGOTIATED
    assert "none of the server's 4 data segments carries ECT at the capture point" in r.verdict.explanation
    assert "between the server and the capture point" in r.verdict.explanation


def test_crafted_ece_without_ce_seen_is_downstream(tmp_path: Path) -> None:
    """CRAFTED: the client echoes ECE though no CE passed the capture point: marked after it."""
    r = _report(_write(tmp_path / "x.pcap", ECE | CWR, ECE, ECT0, ack_flags=ECE))
    v = r.verdict
    assert "No CE from the server was captured, yet the client echoed ECE" in v.explanation
    assert "marked after the capture point, on the way to the client" in v.explanation
    assert v.rule == "ecn-congestion" and v.confidence == "likely"  # no CWR seen


def test_crafted_accecn_bits_are_a_counter(tmp_path: Path) -> None:
    """CRAFTED: AccECN agreed (SYN AE+CWR+ECE, SYN-ACK CWR): ECE on the client's ACKs is the ACE
    counter, not an echo: no congestion claimed from it."""
    r = _report(_write(tmp_path / "x.pcap", AE | ECE | CWR, CWR, ECT0, ack_flags=ECE))
    v = r.verdict
    assert connection_object(r)["ecn"]["negotiation"] == ACCECN
    assert "AccECN negotiated" in v.explanation and "not ECE echoes" in v.explanation
    assert v.rule == "closed" and "congestion on the path" not in v.explanation


def test_crafted_reflected_synack(tmp_path: Path) -> None:
    """CRAFTED: the SYN-ACK repeats ECE+CWR: a reflector, not an agreement."""
    r = _report(_write(tmp_path / "x.pcap", ECE | CWR, ECE | CWR, 0))
    assert connection_object(r)["ecn"]["negotiation"] == REFLECTED
    assert "a reflector or a broken middlebox" in r.verdict.explanation
    assert "ECN setup reflected" in r.verdict.summary
