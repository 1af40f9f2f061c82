"""Port scans (issue 14 item 16) against the designed truth of port-scan.pcap.

The capture (scripts/scenarios_scan.py) holds a SYN scan with crafted SYNs and OS-detection
probes, a connect() scan with real sockets, a busy client of one port and a client of three
services; the truth file says which ports were designed and seen open, closed, dropped and
rejected, never from synscope.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict

import pytest

from synscope.core.model import SYN, Segment
from synscope.read.findings import ConnFacts, FindingsEngine
from synscope.read.findings import scan as sc
from synscope.read.scans import ANSWER_HOSTS, SCAN_MIN_PORTS, SCAN_PAIRS, ScanWatch, looks_like_scan
from tests.helpers import PCAPS, cli, pcap

NAME = "port-scan"


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((PCAPS / f"{NAME}.truth.json").read_text())


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    r = cli("read", "--json", pcap(f"{NAME}.pcap"))
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _conns(objects: list[dict], ip: str) -> list[dict]:
    return [o for o in objects if "id" in o and o["client"]["ip"] == ip]


def test_one_finding_per_scanner_with_the_truths_port_states(truth: dict, objects: list[dict]) -> None:
    found = [o for o in objects if o.get("finding") == "port-scan" and o["rule"] != "horizontal-scan"]
    assert sorted(f["client"]["ip"] for f in found) == sorted(s["ip"] for s in truth["scanners"])
    by_ip = {f["client"]["ip"]: f for f in found}
    for s in truth["scanners"]:
        f = by_ip[s["ip"]]
        fig = f["figures"]
        assert f["server"]["ip"] == truth["target"]
        assert fig["targets"] == len(truth["scanned_ports"])
        assert fig["open"] == len(truth["scanned_open"])
        assert fig["closed"] == len(truth["scanned_closed"])
        assert fig["filtered"] == len(truth["scanned_filtered"]) + len(truth["scanned_rejected"])
        assert (fig["port_min"], fig["port_max"]) == (min(truth["scanned_ports"]), max(truth["scanned_ports"]))
        # what the scanner did after a SYN-ACK names the scan
        assert f["rule"] == {"syn": "syn-scan", "connect": "connect-scan"}[s["kind"]]
        opened = ", ".join(map(str, truth["scanned_open"]))
        assert f"open: {opened}." in f["verdict"], f["verdict"]
        assert s["ip"] in f["next_step"] and opened in f["next_step"]


def test_clients_that_are_not_scanners_are_not_called_scans(truth: dict, objects: list[dict]) -> None:
    for c in truth["not_scanners"]:
        conns = _conns(objects, c["ip"])
        assert len(conns) == c["saw"]["connections"]
        assert all(o["findings"] == [] for o in conns)
        # (other findings may name them: 198.18.1.4's 30 short connections are churn, not a scan)
        assert not any(o["client"] and o["client"]["ip"] == c["ip"] for o in objects if o.get("finding") == "port-scan")


def test_scan_connections_name_the_finding_and_make_no_other(truth: dict, objects: list[dict]) -> None:
    for s in truth["scanners"]:
        conns = _conns(objects, s["ip"])
        assert conns and all(o["findings"] == ["port-scan"] for o in conns)
        assert all(o["retry_of"] is None for o in conns), "a scan's probes are not application retries"
    # the scanners' refused and silent ports are the scan, not groups of repeated failures
    others = {c["ip"] for c in truth["not_scanners"]}
    assert [o["finding"] for o in objects if "finding" in o and not (o["client"] and o["client"]["ip"] in others)] == ["port-scan"] * 3


def test_horizontal_scan_one_port_on_many_hosts(truth: dict, objects: list[dict]) -> None:
    h = truth["horizontal"]
    [f] = [o for o in objects if o.get("rule") == "horizontal-scan"]
    assert f["client"]["ip"] == h["ip"] and f["server"]["port"] == h["port"]
    assert f["figures"]["targets"] == len(h["hosts"]) and f["figures"]["open"] == len(h["open_on"])
    assert f["figures"]["closed"] == len(h["saw"]["answered_rst"]) and f["figures"]["filtered"] == len(h["saw"]["silent"])
    assert f"probed port {h['port']} on {len(h['hosts'])} hosts" in f["verdict"]
    assert f"open on {', '.join(h['open_on'])}." in f["verdict"]
    assert all(o["findings"] == ["port-scan"] for o in _conns(objects, h["ip"]))


def test_silent_ports_are_filtered_not_a_host_that_is_down(truth: dict, objects: list[dict]) -> None:
    for s in truth["scanners"]:
        silent = [o for o in _conns(objects, s["ip"]) if o["server"]["port"] in truth["scanned_filtered"]]
        assert sorted(o["server"]["port"] for o in silent) == truth["scanned_filtered"]
        for o in silent:
            assert o["outcome"] == "no-answer"
            assert "host is down" not in o["verdict"] and "host is up" not in (o["next_step"] or "")
            assert "answered on another port" in o["verdict"]


def test_os_detection_probes_are_probes_not_connections(truth: dict, objects: list[dict]) -> None:
    syn = next(s for s in truth["scanners"] if s["kind"] == "syn")
    probes = {p["source_port"]: p for p in syn["saw"]["os_probes"] if p["probe"] != "ECN-SYN"}
    conns = {o["client"]["port"]: o for o in _conns(objects, syn["ip"]) if o["client"]["port"] in probes}
    assert sorted(conns) == sorted(probes)
    for sport, p in probes.items():
        o = conns[sport]
        assert o["outcome"] == "probe" and o["rule"] == "scan-probe", o["verdict"]
        assert p["probe"] in o["verdict"]
        assert o["server_state"] != "CLOSE-WAIT" and o["client_state"] == "none"
        answered = bool(p["answer_flags"])
        assert ("RST came back" in o["verdict"]) == answered
        if not answered:
            assert o["server_state"] == "unknown", "a server that sent nothing has no known state"


def test_text_view_sums_the_scan_up(truth: dict) -> None:
    out = cli("read", pcap(f"{NAME}.pcap"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    scanners = [s["ip"] for s in truth["scanners"]]
    assert all(f"{ip} scanned {len(truth['scanned_ports'])} ports of {truth['target']}" in text.replace("\n    ", " ") for ip in scanners)
    rows = [line for line in text.splitlines() if any(f"{ip}:" in line for ip in scanners)]
    assert rows == [], "no row per probed port"
    assert "Port scans: " in text
    every = cli("read", "--all", pcap(f"{NAME}.pcap")).stdout
    assert sum(1 for line in every.splitlines() if f" {scanners[1]}:" in line) >= len(truth["scanned_ports"])


# ----- the definition and the bounded state, on facts


def _facts(client: bytes, server: bytes, port: int, state: str, ts: float, completed: bool = False) -> ConnFacts:
    return ConnFacts(
        client, 40000, server, port, ts, ts, ts, 1,
        1 if state == "open" else 0, completed, state == "closed", False,
        "x", False, completed, b"", 1, -1.0, 0, 0, -1.0, (),
    )  # fmt: skip


def test_thresholds() -> None:
    assert not looks_like_scan(3, 0), "a client of three services is not a scan"
    assert not looks_like_scan(1, 1), "a busy client of one port is not a scan"
    assert looks_like_scan(SCAN_MIN_PORTS, 0)
    assert not looks_like_scan(40, 40), "many ports all open (passive FTP data connections) is not a scan"


def test_horizontal_scan_one_port_many_hosts() -> None:
    engine = FindingsEngine()
    for i in range(20):
        engine.feed_facts(i + 1, _facts(b"\xc6\x12\x01\x02", bytes([198, 18, 2, i + 1]), 22, "open" if i < 2 else "filtered", float(i)))
    found = [f for f in engine.findings() if f.name == "port-scan"]
    assert len(found) == 1 and found[0].rule == "horizontal-scan"
    assert found[0].figure("targets") == 20 and found[0].figure("open") == 2
    assert "probed port 22 on 20 hosts" in found[0].verdict and "198.18.2.1" in found[0].verdict


def test_detector_memory_is_bounded() -> None:
    det = sc.ScanDetector()
    for i in range(sc.CANDIDATE_SLOTS + sc.SCAN_SLOTS + 5000):
        det.add(i, _facts(i.to_bytes(4, "big"), b"\xc6\x12\x02\x02", 80, "open", float(i)))
    assert len(det._vertical) <= sc.CANDIDATE_SLOTS + sc.SCAN_SLOTS
    watch = ScanWatch()
    for i in range(max(SCAN_PAIRS, ANSWER_HOSTS) + 100):
        watch.saw(Segment(i, float(i), i.to_bytes(4, "big"), b"\xc6\x12\x02\x02", 40000, 80, 0, 0, SYN, 1024, 0))
    assert len(watch._by_host) <= SCAN_PAIRS and len(watch._by_port) <= SCAN_PAIRS


def test_watch_drops_the_oldest_pair_first() -> None:
    """The watch's tables (a dict and its keys in a list) drop the pair that came first, as an
    OrderedDict's popitem(last=False) did: clients coming back to a host (kept in their place)
    among new ones."""
    rng = random.Random(3)
    watch = ScanWatch()
    ref: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
    clients = [i.to_bytes(4, "big") for i in range(3 * SCAN_PAIRS)]
    for i in range(6 * SCAN_PAIRS):
        client = rng.choice(clients[:50]) if rng.random() < 0.3 else rng.choice(clients)
        host = bytes([198, 18, 2, rng.randrange(2)])
        watch.saw(Segment(i, float(i) / 1000, client, host, 40000, 80 + rng.randrange(3), 0, 0, SYN, 1024, 0))
        if (client, host) not in ref:
            if len(ref) >= SCAN_PAIRS:
                ref.popitem(last=False)
            ref[(client, host)] = None
    assert list(watch._by_host.probed) == list(ref)
    assert watch._by_host.keys[watch._by_host.front :] == list(ref)
