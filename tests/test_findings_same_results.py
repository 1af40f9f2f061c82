"""The findings stage's cheaper bookkeeping gives the results of the plain one it replaced.

Each reference below is the earlier code (a tuple heap, the HyperLogLog rank from a 64-bit int,
the retry linker's walk to the front of its failures at every link, a bucket dict written at
every attempt), kept here as the specification: the faster code must agree with it exactly,
victim for victim and register for register, or the figures of a finding would change.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import OrderedDict
from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from synscope.read.findings.model import MAX_IDS, ConnFacts
from synscope.read.findings.ports import GAP_SAMPLES, MIN_ATTEMPTS, MIN_USES, NARROW_MAX, PortExhaustionDetector
from synscope.read.findings.ports import _finding as _port_finding
from synscope.read.findings.ports import _Pair as _PortPair
from synscope.read.findings.reuse import ReuseDetector, _Life
from synscope.read.findings.syn_flood import RATE_BUCKETS, DistinctCounter, FloodDetector, SpaceSaving
from synscope.read.pipeline import RETRY_GAP_RATIO, RETRY_MIN_GAP, RETRY_PEERS, RETRY_WINDOW, RetryLinker


class _ReferenceSpaceSaving:
    """Space-Saving as first written: (count, tie, item) tuples in a heap."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[Hashable, int] = {}
        self.errors: dict[Hashable, int] = {}
        self.heap: list[tuple[int, int, Hashable]] = []
        self.tie = 0

    def add(self, item: Hashable, n: int = 1) -> Hashable | None:
        victim = None
        c = self.counts.get(item)
        if c is None:
            if len(self.counts) < self.capacity:
                c, err = n, 0
            else:
                while True:
                    low, _, victim = heapq.heappop(self.heap)
                    if self.counts.get(victim) == low:
                        break
                del self.counts[victim]
                del self.errors[victim]
                c, err = low + n, low
            self.errors[item] = err
        else:
            c += n
        self.counts[item] = c
        heapq.heappush(self.heap, (c, self.tie, item))
        self.tie += 1
        if len(self.heap) > 4 * self.capacity + 64:
            fresh = []
            for k, v in self.counts.items():
                fresh.append((v, self.tie, k))
                self.tie += 1
            heapq.heapify(fresh)
            self.heap = fresh
        return victim


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 3)), min_size=1, max_size=3000), st.integers(1, 12))
def test_space_saving_replaces_what_the_tuple_heap_replaced(adds: list[tuple[int, int]], capacity: int) -> None:
    ss, ref = SpaceSaving(capacity), _ReferenceSpaceSaving(capacity)
    for x, n in adds:
        assert ss.add(x, n) == ref.add(x, n)
    assert ss.counts == ref.counts and list(ss.counts) == list(ref.counts)
    assert all(ss.error(k) == ref.errors[k] for k in ref.counts)


def test_space_saving_orders_its_entries_before_the_first_replacement() -> None:
    """One item counted far past the rest before the table fills: its entries are appended
    unordered, and the first item replaced is still the least counted (the oldest of those)."""
    ss, ref = SpaceSaving(3), _ReferenceSpaceSaving(3)
    for x in ["a"] * 100 + ["b", "c", "d", "e", "b", "f"]:
        assert ss.add(x) == ref.add(x)
    assert ss.counts == ref.counts and ss.counts["a"] == 100


def test_space_saving_breaks_ties_as_the_heap_around_its_rebuilds() -> None:
    """Equal counts last counted in another order than they came into the table: before the
    heap's rebuild of its stale entries the one counted longer ago goes first, after it the one
    that came in first. Around every point of the rebuild, the same victim as the heap."""
    for capacity in (1, 2, 3, 5):
        for rounds in range(0, 120):
            ss, ref = SpaceSaving(capacity), _ReferenceSpaceSaving(capacity)
            items = list(range(capacity))
            adds = items + [x for _ in range(rounds) for x in reversed(items)] + [100, 101, 102] + items
            for x in adds:
                assert ss.add(x) == ref.add(x), (capacity, rounds)
            assert list(ss.counts.items()) == list(ref.counts.items())


def test_space_saving_of_a_flood_of_spoofed_sources() -> None:
    """Mostly new items, some again, a full table of equal counts: every victim as before."""
    rng = random.Random(5)
    ss, ref = SpaceSaving(256), _ReferenceSpaceSaving(256)
    for _ in range(60_000):
        item = rng.randrange(1 << 15).to_bytes(4, "big")
        assert ss.add(item) == ref.add(item)
    assert ss.top(10) == [(k, c, ref.errors[k]) for k, c in heapq.nlargest(10, ref.counts.items(), key=lambda kv: kv[1])]


def _reference_registers(items: list[bytes], bits: int) -> bytearray:
    regs = bytearray(1 << bits)
    for item in items:
        h = int.from_bytes(hashlib.blake2b(item, digest_size=8).digest(), "big")
        idx = h >> (64 - bits)
        rest = h & ((1 << (64 - bits)) - 1)
        regs[idx] = max(regs[idx], (64 - bits) - rest.bit_length() + 1)
    return regs


def test_hyperloglog_registers_as_from_the_64_bit_hash() -> None:
    for bits in (4, 12, 16):
        items = [i.to_bytes(4, "big") for i in range(30_000)] + [bytes(16), b"\xff" * 16]
        d = DistinctCounter(exact=0, bits=bits)
        for item in items:
            d.add(item)
        assert bytes(d._regs) == bytes(_reference_registers(items, bits)), bits  # type: ignore[arg-type]


def _attempt(server_port: int, ts: float) -> ConnFacts:
    client, server = b"\xc6\x12\x00\x01", b"\xc0\x00\x02\x0a"
    return ConnFacts(client, 40000, server, server_port, ts, ts, ts, 1, 0, False, False, False, "no-answer", False, False, b"", 1, -1.0, 0, 0, -1.0, ())


def test_busiest_second_counted_as_from_a_bucket_per_attempt() -> None:
    """Attempts mostly in time order, some late (another file), over more seconds than the
    detector keeps: the same busiest second as a bucket dict written at every attempt."""
    rng = random.Random(9)
    det = FloodDetector()
    buckets: dict[int, int] = {}
    peak = 0
    ts = 1_700_000_000.0
    for _ in range(40_000):
        ts += rng.choice((0.0001, 0.001, 0.01, 0.4))
        at = ts - rng.choice((0.0, 0.0, 0.0, 3.0, 1500.0))  # a late one now and then
        det.add_facts(_attempt(443, at))
        second = int(at)
        n = buckets.get(second, 0) + 1
        if n == 1 and len(buckets) >= RATE_BUCKETS:
            del buckets[min(buckets)]
        buckets[second] = n
        peak = max(peak, n)
    assert det._targets[(b"\xc0\x00\x02\x0a", 443)].peak == peak


class _ReferenceLinker:
    """RetryLinker.link as first written: the walk over expired failures at every link."""

    def __init__(self) -> None:
        self.failed: OrderedDict[tuple, tuple[int, float, int, float]] = OrderedDict()
        self.latest: OrderedDict[tuple, float] = OrderedDict()

    def link(self, key: tuple, conn_id: int, syn_ts: float, failed_attempt: bool, clock: float, failed_at: float | None = None) -> tuple[int, int] | None:
        failed = self.failed
        prev = failed.pop(key, None)
        horizon = min(clock, syn_ts) - RETRY_WINDOW
        while failed:
            first = next(iter(failed))
            if failed[first][1] >= horizon:
                break
            del failed[first]
        pair = (key[0], key[1])
        latest = self.latest.get(pair)
        if latest is None:
            self.latest[pair] = syn_ts
            if len(self.latest) > RETRY_PEERS:
                self.latest.popitem(last=False)
        else:
            self.latest.move_to_end(pair)
            if syn_ts > latest:
                self.latest[pair] = syn_ts
        linked = None
        gap = 0.0
        busy = prev is not None and latest is not None and prev[1] < latest < syn_ts
        if prev is not None and prev[0] != conn_id and not busy:
            gap = syn_ts - prev[1]
            low, high = RETRY_GAP_RATIO
            if RETRY_MIN_GAP <= gap <= RETRY_WINDOW and (prev[2] == 0 or low * prev[3] <= gap <= high * prev[3]):
                linked = (prev[0], prev[2] + 1)
        if failed_attempt:
            failed[key] = (conn_id, syn_ts if failed_at is None else failed_at, linked[1] if linked else 0, gap)
        return linked


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(0, 10_000))
def test_retry_links_as_with_the_walk_at_every_link(seed: int) -> None:
    """Clients retrying, failures expiring, a second file that starts earlier: the same links
    and the same failures remembered."""
    rng = random.Random(seed)
    linker, ref = RetryLinker(), _ReferenceLinker()
    clients = [bytes([198, 18, 0, i]) for i in range(rng.randrange(1, 12))]
    ts = clock = 1000.0
    links = 0
    for cid in range(1, 400):
        ts += rng.choice((0.0, 0.05, 0.3, 1.0, 2.0, 30.0, 200.0))
        if rng.random() < 0.03:
            ts -= rng.choice((100.0, 500.0))  # the next file of the run starts earlier
        clock = max(clock, ts)
        key = (rng.choice(clients), b"\xc0\x00\x02\x0a", rng.choice((80, 443)))
        failed = rng.random() < 0.8
        failed_at = ts + rng.choice((0.0, 1.0, 3.0)) if rng.random() < 0.5 else None
        got = linker.link(key, cid, ts, failed, clock, failed_at)
        assert got == ref.link(key, cid, ts, failed, clock, failed_at), cid
        links += got is not None
        assert list(linker._failed.items()) == list(ref.failed.items())


def _random_facts(rng: random.Random, ts: float) -> ConnFacts:
    """A connection from a few clients and ports to a few services: tuples and pairs come back."""
    client = bytes((198, 18, 0, rng.randrange(4)))
    server = bytes((192, 0, 2, rng.randrange(2)))
    syns = rng.choice((0, 1, 1, 1, 2))
    closer = rng.choice(("", "client", "server"))
    return ConnFacts(
        client, 40000 + rng.randrange(6), server, rng.choice((80, 443)), ts, ts + rng.random(), ts if syns else None, syns, rng.randrange(2),
        rng.random() < 0.5, False, False, "no-answer", False, False, b"", rng.randrange(1, 1000), -1.0, 0, 0, -1.0, (),
        first_closer=closer, reset=rng.random() < 0.2, syn_timestamps=rng.random() < 0.5, answer=rng.choice(("", "synack", "rst", "ack")),
        answer_frame=rng.randrange(1000), reused=rng.random() < 0.7,
    )  # fmt: skip


class _ReferenceReuse:
    """ReuseDetector.add's table as first written: an OrderedDict, the oldest incarnation first."""

    def __init__(self, slots: int) -> None:
        self.det = ReuseDetector(tuple_slots=slots)  # (its reuse groups and findings)
        self.lives: OrderedDict[tuple, _Life] = OrderedDict()
        self.slots = slots

    def add(self, cid: int, f: ConnFacts) -> None:
        key = (f.client_ip, f.client_port, f.server_ip, f.server_port)
        old = self.lives.get(key)
        if old is not None:
            new = _Life(cid, f)
            earlier, later = (new, old) if old.syn_ts > new.syn_ts else (old, new)
            self.det._reuse(f, earlier, later)
            if later is old:
                return
            del self.lives[key]
        elif len(self.lives) >= self.slots:
            new = self.lives.popitem(False)[1]
            new.fill(cid, f)
            self.det.forgotten += 1
        else:
            new = _Life(cid, f)
        self.lives[key] = new

    def forget(self, before: float) -> None:
        for key in [k for k, life in self.lives.items() if life.last_ts < before]:
            del self.lives[key]
        self.det.forget(before)


class _ReferencePorts:
    """PortExhaustionDetector.add's table as first written: an OrderedDict, least recently used first."""

    def __init__(self, slots: int) -> None:
        self.pairs: OrderedDict[tuple, _PortPair] = OrderedDict()
        self.slots = slots
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
                p = self.pairs.popitem(False)[1]
                p.reset(ts)
                self.evicted += 1
            else:
                p = _PortPair(ts)
            self.pairs[key] = p
        p.first, p.last = min(p.first, ts), max(p.last, ts)
        p.attempts += 1
        if p.wide:
            return
        before = p.last_use.get(f.client_port)
        if before is None:
            if len(p.last_use) >= NARROW_MAX:
                p.wide = True
                p.last_use.clear()
                p.gaps.clear()
                return
        else:
            p.reuses += 1
            if len(p.gaps) < GAP_SAMPLES:
                p.gaps.append(abs(ts - before))
            if len(p.frames) < 2:
                p.frames.append(f.first_frame)
        p.last_use[f.client_port] = max(ts, before) if before is not None else ts
        if len(p.ids) < MAX_IDS:
            p.ids.append(cid)

    def findings(self) -> list:
        out = []
        for key, p in self.pairs.items():
            ports = len(p.last_use)
            if p.wide or p.attempts < MIN_ATTEMPTS or ports < 2 or p.attempts < MIN_USES * ports:
                continue
            out.append(_port_finding(key, p))
        return out


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.integers(0, 3))
def test_reuse_and_port_tables_keep_and_drop_as_the_ordered_dicts(seed: int, slots: int, forgets: int) -> None:
    """The dict-and-queue tables of ReuseDetector and PortExhaustionDetector drop the same
    entries and list the same findings, in the same order, as the OrderedDicts they replaced."""
    rng = random.Random(seed)
    reuse, reuse_ref = ReuseDetector(tuple_slots=slots), _ReferenceReuse(slots)
    ports, ports_ref = PortExhaustionDetector(slots=slots), _ReferencePorts(slots)
    ts = 1_700_000_000.0
    n = rng.choice((50, 500, 3000))
    forget_at = {rng.randrange(n) for _ in range(forgets)}
    for cid in range(n):
        ts += rng.choice((0.01, 0.5, 3.0))
        f = _random_facts(rng, ts - rng.choice((0.0, 0.0, 5.0)))
        reuse.add(cid, f)
        reuse_ref.add(cid, f)
        ports.add(cid, f)
        ports_ref.add(cid, f)
        if cid in forget_at:
            reuse.forget(ts - 20)
            reuse_ref.forget(ts - 20)
            ports.forget(ts - 20)
            for key in [k for k, p in ports_ref.pairs.items() if p.last < ts - 20]:
                del ports_ref.pairs[key]
        assert len(reuse._lives) == len(reuse_ref.lives) and len(ports._pairs) == len(ports_ref.pairs)
    assert reuse.findings() == reuse_ref.det.findings() and reuse.forgotten == reuse_ref.det.forgotten
    assert ports.findings() == ports_ref.findings() and ports.evicted == ports_ref.evicted
    assert [p.key for p in ports._in_order()] == list(ports_ref.pairs)
    assert [life.cid for life in reuse._order[reuse._front :] if reuse._lives.get(life.key) is life] == [life.cid for life in reuse_ref.lives.values()]
