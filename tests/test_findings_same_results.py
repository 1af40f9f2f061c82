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

from synscope.read.findings.model import ConnFacts
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
