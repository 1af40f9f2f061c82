"""The findings stage's bounded tables drop the same entries as the simple definition says.

The detectors find the entry to drop in O(1) (a queue of candidates beside the table, an
ordered dict); these tests fill the tables (caps made small) with random traffic and compare
them, entry by entry and in order, with a plain model of the definition: walk the table from its
oldest entry and drop the first one below the threshold.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field

import pytest

from synscope.core.addr import fmt_ip
from synscope.read.findings import ConnFacts, ports, reuse
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


# Port exhaustion and port reuse keep their tables in plain dicts with a list by age beside them
# (an OrderedDict's insertions were a quarter of their cost in a SYN flood); the references below
# are the OrderedDict code they replaced, and the tables must hold the same entries in the same
# order, with the same findings.


class _ReferencePorts:
    """PortExhaustionDetector.add as first written: an OrderedDict, least recently used first."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.pairs: OrderedDict = OrderedDict()
        self.evicted = 0

    def add(self, cid: int, f: ConnFacts) -> None:
        if f.client_syns == 0:
            return
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        key = (f.client_ip, f.server_ip, f.server_port)
        p = self.pairs.get(key)
        if p is not None:
            self.pairs.move_to_end(key)
        else:
            if len(self.pairs) >= self.slots:
                self.pairs.popitem(last=False)
                self.evicted += 1
            p = self.pairs[key] = {"first": ts, "last": ts, "attempts": 0, "wide": False, "last_use": {}, "gaps": [], "reuses": 0, "ids": [], "frames": []}
        p["first"] = min(p["first"], ts)
        p["last"] = max(p["last"], ts)
        p["attempts"] += 1
        if p["wide"]:
            return
        before = p["last_use"].get(f.client_port)
        if before is None:
            if len(p["last_use"]) >= ports.NARROW_MAX:
                p["wide"] = True
                p["last_use"].clear()
                p["gaps"].clear()
                return
        else:
            p["reuses"] += 1
            if len(p["gaps"]) < ports.GAP_SAMPLES:
                p["gaps"].append(abs(ts - before))
            if len(p["frames"]) < 2:
                p["frames"].append(f.first_frame)
        p["last_use"][f.client_port] = max(ts, before) if before is not None else ts
        if len(p["ids"]) < 20:
            p["ids"].append(cid)


def _port_facts(client: bytes, port: int, server_port: int, ts: float, frame: int) -> ConnFacts:
    return ConnFacts(
        client, port, b"\xc0\x00\x02\x0a", server_port, ts, ts + 0.5, ts, 1,
        1, True, False, False, "x", True, True, b"", frame, -1.0, 0, 0, -1.0, (),
        first_closer="client", answer="synack", reused=True,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_port_pairs_dropped_least_recently_used_first_as_with_an_ordered_dict(seed: int) -> None:
    """Clients coming back (a pair used again moves to the back), new clients pushing the least
    recently used out, some clients cycling through a few ports: the same pairs in the same
    order, the same counts and the same findings."""
    rng = random.Random(seed)
    slots = rng.choice((1, 8, 40, 200))
    det, ref = ports.PortExhaustionDetector(slots), _ReferencePorts(slots)
    clients = [bytes([198, 18, i // 256, i % 256]) for i in range(rng.choice((5, 30, 3000)))]
    ts = 0.0
    for cid in range(1, 12000):
        ts += rng.choice((0.0, 0.001, 0.2))
        if seed % 3 == 2:  # a flood: a new client every time (the list's consumed front is cut)
            client = cid.to_bytes(4, "big")
        else:
            client = rng.choice(clients[:4]) if rng.random() < 0.5 else rng.choice(clients)
        f = _port_facts(client, 40000 + rng.randrange(rng.choice((3, 300))), rng.choice((80, 443)), ts, cid)
        det.add(cid, f)
        ref.add(cid, f)
    table = [(p.key, p.first, p.last, p.attempts, p.wide, p.last_use, p.gaps, p.reuses, p.ids, p.frames) for p in det._by_last_use()]
    assert table == [(k, *p.values()) for k, p in ref.pairs.items()]
    assert list(det._pairs) == sorted(ref.pairs, key=list(det._pairs).index)  # (the same keys)
    assert det.evicted == ref.evicted
    found = [(k, p["attempts"]) for k, p in ref.pairs.items() if not p["wide"] and p["attempts"] >= max(20, 2 * len(p["last_use"])) and len(p["last_use"]) >= 2]
    assert [(f.client_ip, f.server_port, f.connection_count) for f in det.findings()] == [(fmt_ip(k[0]), k[2], n) for k, n in found]
    assert len(det._order) - det._front <= 2 * slots + 1024 + 1


class _ReferenceReuse(reuse.ReuseDetector):
    """ReuseDetector.add as first written: an OrderedDict of incarnations, the oldest first."""

    def __init__(self, tuple_slots: int) -> None:
        super().__init__(tuple_slots=tuple_slots)
        self.ref_lives: OrderedDict = OrderedDict()

    def add(self, cid: int, f: ConnFacts) -> None:
        key = (f.client_ip, f.client_port, f.server_ip, f.server_port)
        old = self.ref_lives.get(key)
        if old is not None:
            new = reuse._Life(cid, f)
            earlier, later = (new, old) if old.syn_ts > new.syn_ts else (old, new)
            self._reuse(f, earlier, later)
            if later is old:
                return
            del self.ref_lives[key]
        elif len(self.ref_lives) >= self.tuple_slots:
            self.ref_lives.popitem(last=False)
            self.forgotten += 1
            new = reuse._Life(cid, f)
        else:
            new = reuse._Life(cid, f)
        self.ref_lives[key] = new


@pytest.mark.parametrize("seed", range(6))
def test_reuse_forgets_the_oldest_incarnation_as_with_an_ordered_dict(seed: int) -> None:
    """4-tuples used again (some by a connection read late: an earlier incarnation), new ones
    pushing the oldest out: the same incarnations remembered in the same order, the same findings."""
    rng = random.Random(seed)
    slots = rng.choice((1, 5, 64))
    det, ref = reuse.ReuseDetector(tuple_slots=slots), _ReferenceReuse(slots)
    clients = [bytes([198, 18, 0, i]) for i in range(rng.choice((2, 40)))]
    ts = 0.0
    for cid in range(1, 5000):
        ts += rng.choice((0.0, 0.01, 0.5, 2.0))
        at = ts - (rng.choice((0.0, 5.0)) if rng.random() < 0.1 else 0.0)
        f = _port_facts(rng.choice(clients), 40000 + rng.randrange(rng.choice((2, 30))), 443, at, cid)
        det.add(cid, f)
        ref.add(cid, f)
    lives = [life for life in det._order[det._front :] if not life.gone]
    assert [(life.key, life.cid) for life in lives] == [(k, life.cid) for k, life in ref.ref_lives.items()]
    assert list(det._lives) == sorted(det._lives, key=[life.key for life in lives].index)
    assert det.forgotten == ref.forgotten
    assert [f.verdict for f in det.findings()] == [f.verdict for f in ref.findings()] and det.findings()
    assert len(det._order) - det._front <= 2 * slots + 1024 + 1
