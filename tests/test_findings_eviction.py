"""The findings stage's bounded tables drop the same entries as the simple definition says.

The detectors find the entry to drop in O(1) (a queue of candidates beside the table, an
ordered dict); these tests fill the tables (caps made small) with random traffic and compare
them, entry by entry and in order, with a plain model of the definition: walk the table from its
oldest entry and drop the first one below the threshold.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from synscope.read.findings import ConnFacts
from synscope.read.findings import scan as sc
from synscope.read.scans import SCAN_MIN_HOSTS, SCAN_MIN_PORTS, SCAN_WINDOW


@dataclass
class _ModelPair:
    first: float
    last: float
    targets: dict = field(default_factory=dict)
    probes: int = 0
    ids: list = field(default_factory=list)
    example_frame: int = 0
    confirmed: bool = False


class _ModelScans:
    """ScanDetector's tables by the definition: the oldest pair below the threshold makes room."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.vertical: dict = {}
        self.horizontal: dict = {}
        self.dropped = 0
        self.evicted = 0
        self.restarted = 0  # pairs below the threshold counted again from scratch (in their place)

    def add(self, cid: int, f: ConnFacts) -> None:
        state = sc.port_state(f)
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        self._add(self.vertical, (f.client_ip, f.server_ip), f.server_port, state, cid, ts, f, SCAN_MIN_PORTS)
        self._add(self.horizontal, (f.client_ip, f.server_port), f.server_ip, state, cid, ts, f, SCAN_MIN_HOSTS)

    def _add(self, table: dict, key: tuple, target: object, state: int, cid: int, ts: float, f: ConnFacts, threshold: int) -> None:
        p = table.get(key)
        if p is None:
            if len(table) >= self.slots:
                for k in table:
                    if len(table[k].targets) < threshold:
                        del table[k]
                        self.evicted += 1
                        break
                else:
                    self.dropped += 1
                    return
            p = table[key] = _ModelPair(ts, ts, example_frame=f.first_frame)
        elif ts > p.last + SCAN_WINDOW or ts < p.first - SCAN_WINDOW or (not p.confirmed and ts - p.first > SCAN_WINDOW):
            if p.confirmed:
                return
            self.restarted += 1
            p = table[key] = _ModelPair(ts, ts, example_frame=f.first_frame)
        p.first = min(p.first, ts)
        p.last = max(p.last, ts)
        p.probes += 1
        if len(p.ids) < 20:
            p.ids.append(cid)
        old = p.targets.get(target)
        p.targets[target] = state if old is None else max(old, state)
        if len(p.targets) >= threshold:
            p.confirmed = True


def _facts(client: bytes, server: bytes, port: int, server_syns: int, ts: float, frame: int) -> ConnFacts:
    return ConnFacts(
        client, 40000, server, port, ts, ts, ts, 1,
        server_syns, False, server_syns == 0, False,
        "x", False, False, b"", frame, -1.0, 0, 0, -1.0, (),
    )  # fmt: skip


def _view(table: dict) -> list[tuple]:
    return [(k, p.first, p.last, dict(p.targets), p.probes, list(p.ids), p.example_frame, p.confirmed) for k, p in table.items()]


@pytest.mark.parametrize("services", [(20, 5), (3, 2)])  # many clients of services (the table fills with scans), or a few that come back
def test_scan_tables_drop_the_oldest_pair_below_the_threshold(services: tuple[int, int]) -> None:
    rng = random.Random(17)
    n_clients, n_hosts = services
    det = sc.ScanDetector(candidate_slots=12, scan_slots=4)
    model = _ModelScans(16)
    clients = [bytes([198, 18, 0, i]) for i in range(40)]
    hosts = [bytes([198, 19, 0, i]) for i in range(30)]
    ts = 0.0
    cid = 0
    for _ in range(3000):
        ts += rng.choice((0.001, 0.01, 0.5, 3.0))  # some pairs too slow: they start again in place
        if rng.random() < 0.05:  # a scanner's burst: ports of one host, or one port on many hosts
            client = clients[rng.randrange(20)]
            vertical = rng.random() < 0.5
            probes = [(hosts[0], rng.randrange(1, 200)) if vertical else (rng.choice(hosts), 22) for _ in range(rng.randrange(4, 14))]
        else:  # a client of a few services
            probes = [(rng.choice(hosts[:n_hosts]), rng.choice((80, 443)))]
            client = rng.choice(clients[20 : 20 + n_clients])
        for host, port in probes:
            cid += 1
            ts += 0.001
            f = _facts(client, host, port, rng.choice((0, 0, 1)), ts, cid * 2)
            det.add(cid, f)
            model.add(cid, f)
    assert model.evicted > 100 and (model.dropped > 0 if n_clients > 3 else model.restarted > 100), "the test must fill the tables"
    assert _view(det._vertical) == _view(model.vertical)
    assert _view(det._horizontal) == _view(model.horizontal)
    assert det.dropped == model.dropped


def test_a_scan_pair_counted_again_keeps_its_place() -> None:
    """A pair too slow to be a scan starts again from scratch where it was: it is still the
    oldest candidate when a new pair needs room."""
    det = sc.ScanDetector(candidate_slots=1, scan_slots=1)
    model = _ModelScans(2)
    a, b, c, host = b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02", b"\xc6\x12\x00\x03", b"\xc6\x13\x00\x01"
    for cid, (client, ts) in enumerate([(a, 0.0), (b, 1.0), (a, 12.0), (c, 13.0)], 1):
        f = _facts(client, host, 80, 0, ts, cid)
        det.add(cid, f)
        model.add(cid, f)
    assert [k[0] for k in model.vertical] == [b, c] and model.restarted == 2  # (its vertical and horizontal pairs)
    assert _view(det._vertical) == _view(model.vertical)
