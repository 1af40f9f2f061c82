"""SYN-flood recognition over a stream of connection reports, in bounded memory.

Definition. A *SYN flood* against a server endpoint (ip:port) is a burst of
connection attempts (client SYNs) to it of which most never complete the
handshake: at least :data:`FLOOD_MIN_HALF_OPEN` half-open attempts in all, at
least :data:`FLOOD_MIN_RATE` of them within one second of capture time, and at
least :data:`FLOOD_MIN_HALF_OPEN_SHARE` of all attempts to that endpoint
half-open. Sources are usually spoofed, so an attempt is typically answered by
a SYN-ACK that nobody acknowledges (or by nothing, once the server's backlog is
full); a server answering with SYN cookies keeps no state for the attempt and
therefore never retransmits its SYN-ACK.

Use: feed every :class:`~synscope.read.pipeline.ConnReport` to
:meth:`FloodDetector.add` as the pipeline hands them out, then ask
:meth:`FloodDetector.summary` (or :meth:`~FloodDetector.summaries` for every
flooded endpoint); :func:`flood_finding` makes it a :class:`Finding` (the
``syn-flood`` finding) and ``synscope.render.findings.render_flood`` words it.

Memory does not grow with the number of attempts, sources or endpoints:

- endpoints are counted with a Space-Saving sketch of :data:`TARGET_SLOTS`
  entries (the busiest endpoints are kept; a new one replaces the least busy);
- per endpoint, sources are counted with a Space-Saving sketch of
  :data:`SOURCE_SLOTS` entries (top sources with an error bound), distinct
  sources exactly up to :data:`EXACT_SOURCES` and then by HyperLogLog
  (about 1.6 % standard error), and attempts per second in at most
  :data:`RATE_BUCKETS` one-second buckets.

What the reports can and cannot tell: with ``--max-conns`` the tracker evicts
attempts from its table before their SYN-ACK retransmissions arrive, and such a
retransmission then shows as a connection of its own with a SYN-ACK and no SYN.
Those are counted as :attr:`FloodSummary.late_synacks`, and the share of
SYN-ACKs never retransmitted (the SYN-cookie hint) is only reported when no
attempt was evicted.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import Any, Final

from synscope.core.addr import fmt_ip
from synscope.read.evidence import CERTAIN, Evidence
from synscope.read.findings.model import SEVERITY_FLOOD, ConnFacts, Finding, facts_of
from synscope.read.pipeline import ConnReport

__all__ = [
    "FLOOD_MIN_HALF_OPEN",
    "FLOOD_MIN_HALF_OPEN_SHARE",
    "FLOOD_MIN_RATE",
    "DistinctCounter",
    "FloodDetector",
    "FloodSummary",
    "SpaceSaving",
    "flood_finding",
]

# Half-open attempts to one endpoint below this are not a flood, whatever the rate
FLOOD_MIN_HALF_OPEN = 1000
# Half-open attempts within the busiest second of capture time (a listen backlog is 128-4096)
FLOOD_MIN_RATE = 100
# At least this share of the attempts to the endpoint never completed the handshake
FLOOD_MIN_HALF_OPEN_SHARE = 0.5
# Server endpoints tracked at once
TARGET_SLOTS = 32
# Sources tracked per endpoint for the top-sources list
SOURCE_SLOTS = 256
# Sources listed in a summary
TOP_SOURCES = 10
# One-second buckets of attempt counts kept per endpoint (the oldest go first)
RATE_BUCKETS = 3600
# Distinct sources are counted exactly up to this many, then estimated
EXACT_SOURCES = 4096
# HyperLogLog registers: 2^12 of them, standard error 1.04 / sqrt(4096) = 1.6 %
HLL_BITS = 12
# (how often SpaceSaving's entries may outnumber its items before the stale ones go: 4 per
# slot and 64, as when they were a heap, whose rebuilding decides which of equal counts goes first)
STALE_FACTOR: Final = 4
STALE_EXTRA: Final = 64
# Until its table first fills, SpaceSaving keeps its entries as ints in a list, unordered: its tie
# in the low bits of an int (2^40 updates before ties could collide with counts: a million a
# second for twelve days)
TIE_BITS: Final = 40
TIE_MASK: Final = (1 << TIE_BITS) - 1


class _Bucket:
    """SpaceSaving's entries of one count, oldest first from ``front``."""

    __slots__ = ("entries", "front")

    def __init__(self) -> None:
        self.entries: list[int] = []  # tie << slot_bits | slot
        self.front = 0


class SpaceSaving:
    """Top-k counting in ``capacity`` slots (Metwally, Agrawal, El Abbadi: Space-Saving, 2005).

    An item not in the table replaces the one with the smallest count and
    inherits that count, so every count is an upper bound and overestimates by
    at most its recorded error; any item seen more than ``total / capacity``
    times is guaranteed to be in the table. Of equal counts the oldest entry goes first.

    O(1) per update (a stream summary): each item has a slot (its count, error and latest tie
    in lists); each count a bucket of entries, ints ``tie << slot_bits | slot`` appended as
    items reach that count, so a bucket is in tie order; the smallest count's oldest up-to-date
    entry is the one replaced. An entry is stale when its tie is not its slot's latest (the item
    was counted again, or replaced); stale entries are passed over at the front of the smallest
    bucket. The rule for ties is the one of the heap of (count, tie) entries this replaced: when
    the entries not yet passed over outnumber ``STALE_FACTOR * capacity + STALE_EXTRA``, the stale
    ones go and every item gets a new tie in the order it came into the table (which changes
    which of equal counts is oldest: kept exactly, or a flood's top sources would change).
    tests/test_findings_same_results.py holds it to that heap, victim for victim.

    Until the table first fills nothing is replaced, so the entries are only appended to a
    list, ``(count << TIE_BITS | tie) << slot_bits | slot``, and sorted into buckets at the
    first replacement (a busy endpoint's count goes up at every attempt: a bucket per count
    made at each would cost more than the heap did).
    """

    __slots__ = (
        "_bucketed",
        "_buckets",
        "_counts",
        "_entries",
        "_errors",
        "_items",
        "_lows",
        "_pending",
        "_slot_bits",
        "_slots",
        "_tie",
        "_ties",
        "capacity",
        "total",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._slots: dict[Hashable, int] = {}  # item -> its slot, in the order the items came into the table
        self._items: list[Hashable] = []  # slot -> item
        self._counts: list[int] = []  # slot -> count
        self._errors: list[int] = []  # slot -> how much the count may overstate it
        self._ties: list[int] = []  # slot -> tie of its latest entry (its other entries are stale)
        self._slot_bits = capacity.bit_length()
        self._buckets: dict[int, _Bucket] = {}  # count -> its entries
        self._lows: list[int] = []  # the buckets' counts, a heap (the smallest first)
        self._entries = 0  # entries in the buckets not passed over yet (up-to-date or stale)
        self._bucketed = False  # the entries are in _buckets (False: in _pending, unordered)
        self._pending: list[int] = []  # (count << TIE_BITS | tie) << slot_bits | slot, until bucketed
        self._tie = 0  # the next entry's tie-break: entries of equal counts go oldest first
        self.total = 0

    @property
    def counts(self) -> dict[Hashable, int]:
        """Item -> count, in the order the items came into the table."""
        counts = self._counts
        return {item: counts[slot] for item, slot in self._slots.items()}

    def add(self, item: Hashable, n: int = 1) -> Hashable | None:
        """Count ``n`` (at least 1) more occurrences of ``item``; returns the item it replaced, if any."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self.total += n
        victim = None
        slots = self._slots
        counts = self._counts
        slot = slots.get(item)
        if slot is None:
            if len(slots) < self.capacity:
                slot = len(self._items)
                c = n
                self._items.append(item)
                counts.append(c)
                self._errors.append(0)
                self._ties.append(0)
            else:
                if not self._bucketed:
                    self._make_buckets()
                slot = self._take_lowest()
                victim = self._items[slot]
                del slots[victim]
                low = counts[slot]
                c = low + n
                counts[slot] = c
                self._errors[slot] = low
                self._items[slot] = item
            slots[item] = slot
        else:
            c = counts[slot] + n
            counts[slot] = c
        tie = self._tie
        self._ties[slot] = tie
        self._tie = tie + 1
        if self._bucketed:
            bucket = self._buckets.get(c)
            if bucket is None:
                bucket = _Bucket()
                self._buckets[c] = bucket
                heappush(self._lows, c)
            bucket.entries.append(tie << self._slot_bits | slot)
        else:
            self._pending.append((c << TIE_BITS | tie & TIE_MASK) << self._slot_bits | slot)
        self._entries += 1
        if self._entries > STALE_FACTOR * self.capacity + STALE_EXTRA:
            self._renew()
        return victim

    def _take_lowest(self) -> int:
        """The slot of the smallest count's oldest up-to-date entry, that entry passed over
        (with the stale ones before it)."""
        buckets = self._buckets
        lows = self._lows
        ties = self._ties
        bits = self._slot_bits
        mask = (1 << bits) - 1
        while True:
            low = lows[0]
            bucket = buckets[low]
            entries = bucket.entries
            front = bucket.front
            while front < len(entries):
                entry = entries[front]
                front += 1
                slot = entry & mask
                if ties[slot] == entry >> bits:
                    self._entries -= front - bucket.front
                    if front >= 64 and 2 * front >= len(entries):  # the list's consumed front goes
                        del entries[:front]
                        front = 0
                    bucket.front = front
                    return slot
            # only stale entries left: the bucket goes
            self._entries -= front - bucket.front
            del buckets[low]
            heappop(lows)

    def _make_buckets(self) -> None:
        """Sort the entries appended so far into buckets (at the first replacement)."""
        bits = self._slot_bits
        mask = (1 << bits) - 1
        buckets: dict[int, _Bucket] = {}
        pending = self._pending
        pending.sort()  # (count, tie) order: each bucket in tie order
        for entry in pending:
            c = entry >> (TIE_BITS + bits)
            bucket = buckets.get(c)
            if bucket is None:
                bucket = _Bucket()
                buckets[c] = bucket
            bucket.entries.append(((entry >> bits) & TIE_MASK) << bits | entry & mask)
        self._pending = []
        self._buckets = buckets
        lows = list(buckets)
        heapify(lows)
        self._lows = lows
        self._bucketed = True

    def _renew(self) -> None:
        """Drop the stale entries: every item gets a new tie in the order it came into the table."""
        counts = self._counts
        ties = self._ties
        bits = self._slot_bits
        tie = self._tie
        if not self._bucketed:
            pending: list[int] = []
            for s in self._slots.values():
                ties[s] = tie
                pending.append((counts[s] << TIE_BITS | tie & TIE_MASK) << bits | s)
                tie += 1
            self._tie = tie
            self._pending = pending
            self._entries = len(pending)
            return
        buckets: dict[int, _Bucket] = {}
        for s in self._slots.values():
            ties[s] = tie
            c = counts[s]
            bucket = buckets.get(c)
            if bucket is None:
                bucket = _Bucket()
                buckets[c] = bucket
            bucket.entries.append(tie << bits | s)
            tie += 1
        self._tie = tie
        self._buckets = buckets
        lows = list(buckets)
        heapify(lows)
        self._lows = lows
        self._entries = len(self._slots)

    def error(self, item: Hashable) -> int:
        """How much ``item``'s count may overstate it (0 when it was counted from its first occurrence)."""
        slot = self._slots.get(item)
        return self._errors[slot] if slot is not None else 0

    def top(self, k: int) -> list[tuple[Hashable, int, int]]:
        """The ``k`` largest as (item, count, error), largest first."""
        best = heapq.nlargest(k, self.counts.items(), key=lambda kv: kv[1])
        return [(item, count, self.error(item)) for item, count in best]

    def __len__(self) -> int:
        return len(self._slots)


# The HyperLogLog hash: 64-bit blake2b (copied, then fed one item)
_BLAKE2B_64: Final = hashlib.blake2b(digest_size=8)


class DistinctCounter:
    """Distinct items: an exact set up to ``exact`` items, then HyperLogLog with 2^``bits`` registers."""

    __slots__ = ("_bits", "_exact", "_limit", "_regs")

    def __init__(self, exact: int = EXACT_SOURCES, bits: int = HLL_BITS) -> None:
        if not 4 <= bits <= 24:
            raise ValueError("bits must be from 4 to 24")
        self._limit = exact
        self._bits = bits
        self._exact: set[bytes] | None = set()
        self._regs: bytearray | None = None

    @property
    def exact(self) -> bool:
        """Is :meth:`count` exact (still below the set limit)?"""
        return self._exact is not None

    def add(self, item: bytes) -> None:
        """Count ``item`` (bytes, e.g. a packed address)."""
        if self._exact is not None:
            self._exact.add(item)
            if len(self._exact) <= self._limit:
                return
            items, self._exact = self._exact, None
            self._regs = bytearray(1 << self._bits)
            for x in items:
                self._hll_add(x)
            return
        self._hll_add(item)

    def _hll_add(self, item: bytes) -> None:
        regs = self._regs
        assert regs is not None
        # the 64-bit blake2b of the item, read from its bytes (an int of 64 bits would be a
        # Python long, whose every operation is a call): the register is its top ``bits`` bits,
        # the rank the place of the first 1 bit after them (all zero: one past the last bit)
        # (a copy of a hasher made once: the constructor's keyword arguments cost more than the hash)
        hasher = _BLAKE2B_64.copy()
        hasher.update(item)
        h = hasher.digest()
        b = self._bits
        idx = (h[0] << 16 | h[1] << 8 | h[2]) >> (24 - b)
        rank = 1
        pos = b
        while pos < 64 and not (h[pos >> 3] >> (7 - (pos & 7))) & 1:
            rank += 1
            pos += 1
        if rank > regs[idx]:
            regs[idx] = rank

    def count(self) -> int:
        """Number of distinct items added (estimated once past the exact limit)."""
        if self._exact is not None:
            return len(self._exact)
        regs = self._regs
        assert regs is not None
        m = len(regs)
        alpha = 0.7213 / (1 + 1.079 / m)
        harmonic = 0.0
        for i in range(m):  # a loop, not sum() over a generator: mypyc cannot iterate a bytearray there
            harmonic += 2.0 ** -regs[i]
        estimate = alpha * m * m / harmonic
        zeros = regs.count(0)
        if estimate <= 2.5 * m and zeros:  # small-range correction: linear counting
            estimate = m * math.log(m / zeros)
        return round(estimate)


@dataclass(slots=True)
class _Target:
    """Everything counted about one server endpoint."""

    ip: bytes
    port: int
    missed: int = 0  # attempts that may have been missed before the endpoint got a slot
    attempts: int = 0
    half_open: int = 0
    answered: int = 0  # SYN-ACK seen
    completed: int = 0  # handshake completed (client's ACK of the SYN-ACK seen)
    refused: int = 0  # answered by RST, no SYN-ACK
    synack_once: int = 0  # answered, not completed, SYN-ACK sent exactly once
    synack_retrans: int = 0  # SYN-ACK retransmissions (packets) to attempts that stayed half-open
    evicted: int = 0  # attempts whose connection the tracker evicted (--max-conns)
    late_synacks: int = 0  # connections of a SYN-ACK (and retransmissions) without a SYN
    first: float | None = None
    last: float | None = None
    peak: int = 0
    sources: SpaceSaving | None = None
    distinct: DistinctCounter | None = None
    buckets: dict[int, int] | None = None
    second: int = 0  # the bucket counted last; its count is second_count (in buckets when another is counted)
    second_count: int = 0


@dataclass(frozen=True, slots=True)
class FloodSummary:
    """A recognised SYN flood against one server endpoint.

    Counts are of connection attempts (client SYNs, retransmissions of one
    attempt counted once). Shares are of ``attempts``.
    """

    target_ip: str
    target_port: int
    attempts: int
    half_open: int  # attempts that never completed the handshake
    answered: int  # attempts the server answered with a SYN-ACK
    completed: int  # attempts that completed the handshake
    refused: int  # attempts answered by RST only
    distinct_sources: int
    sources_exact: bool  # False: distinct_sources is a HyperLogLog estimate (about 1.6 % error)
    top_sources: tuple[tuple[str, int, int], ...]  # (address, attempts, overcount bound), most first
    start: float  # capture time of the first attempt
    end: float  # capture time of the last attempt
    peak_rate: int  # half-open attempts in the busiest second
    synack_once: int | None  # answered, never completed, SYN-ACK never retransmitted; None if unknowable
    late_synacks: int  # SYN-ACKs seen after their attempt was evicted from the connection table
    evicted: int  # attempts evicted from the connection table (--max-conns) before they ended
    missed_attempts: int  # upper bound of attempts not counted (the endpoint got a slot late)
    synack_retransmissions: int = 0  # SYN-ACKs sent again to attempts that stayed half-open (packets)

    @property
    def target(self) -> str:
        """``192.0.2.10:443`` (IPv6 in brackets)."""
        return f"[{self.target_ip}]:{self.target_port}" if ":" in self.target_ip else f"{self.target_ip}:{self.target_port}"

    @property
    def duration(self) -> float:
        """Seconds from the first to the last attempt."""
        return self.end - self.start

    @property
    def rate(self) -> float:
        """Mean attempts per second from the first to the last (N attempts span N - 1 intervals)."""
        return (self.attempts - 1) / self.duration if self.duration > 0 else float(self.attempts)

    @property
    def answered_share(self) -> float:
        """Share of attempts answered with a SYN-ACK."""
        return self.answered / self.attempts if self.attempts else 0.0

    @property
    def completed_share(self) -> float:
        """Share of attempts that completed the handshake."""
        return self.completed / self.attempts if self.attempts else 0.0

    @property
    def half_open_share(self) -> float:
        """Share of attempts that never completed the handshake."""
        return self.half_open / self.attempts if self.attempts else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (keys as the attribute names, plus the derived figures)."""
        return {
            "type": "syn_flood",
            "target": {"ip": self.target_ip, "port": self.target_port},
            "attempts": self.attempts,
            "half_open": self.half_open,
            "answered": self.answered,
            "completed": self.completed,
            "refused": self.refused,
            "answered_share": round(self.answered_share, 4),
            "completed_share": round(self.completed_share, 4),
            "distinct_sources": self.distinct_sources,
            "sources_exact": self.sources_exact,
            "top_sources": [{"ip": ip, "attempts": n, "overcount": err} for ip, n, err in self.top_sources],
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "duration": round(self.duration, 6),
            "rate": round(self.rate, 1),
            "peak_rate": self.peak_rate,
            "synack_once": self.synack_once,
            "synack_retransmissions": self.synack_retransmissions,
            "late_synacks": self.late_synacks,
            "evicted": self.evicted,
            "missed_attempts": self.missed_attempts,
        }


class FloodDetector:
    """Aggregates connection reports per server endpoint and recognises SYN floods.

    Bounded memory whatever the input (see the module docstring). Thresholds
    default to the module constants and can be given per instance.
    """

    def __init__(
        self,
        min_half_open: int = FLOOD_MIN_HALF_OPEN,
        min_rate: int = FLOOD_MIN_RATE,
        min_half_open_share: float = FLOOD_MIN_HALF_OPEN_SHARE,
        target_slots: int = TARGET_SLOTS,
        source_slots: int = SOURCE_SLOTS,
    ) -> None:
        self.min_half_open = min_half_open
        self.min_rate = min_rate
        self.min_half_open_share = min_half_open_share
        self.source_slots = source_slots
        self._endpoints = SpaceSaving(target_slots)  # (ip, port) -> attempts
        self._targets: dict[tuple[bytes, int], _Target] = {}
        self.reports = 0
        self.attempts = 0
        self._key: tuple = (b"", -1)  # the key of the latest endpoint (see add_facts)

    def add(self, report: ConnReport) -> None:
        """Take one finished connection into account (any order; O(log slots))."""
        self.add_facts(facts_of(report))

    def add_facts(self, f: ConnFacts) -> None:
        """:meth:`add` from the findings stage's record of a connection."""
        self.reports += 1
        # (a plain tuple type: compiled, a fixed-length one is a C struct, made a new tuple object
        # at each use as a key, three per attempt)
        key: tuple = self._key
        if f.server_ip is not key[0] or f.server_port != key[1]:
            # (the endpoint's key of the attempt before is used again: a flood's attempts go to
            # one endpoint, and a dict finds a key that is the very object it holds without
            # comparing tuples; the server's address is the decoder's shared object)
            key = (f.server_ip, f.server_port)
            self._key = key
        if f.client_syns == 0:
            # no SYN: a SYN-ACK whose attempt was evicted earlier, or a mid-stream pickup
            if f.server_syns:
                t = self._targets.get(key)
                if t is not None:
                    t.late_synacks += 1
            return
        self.attempts += 1
        t = self._slot(key)
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        t.attempts += 1
        answered = f.server_syns > 0
        completed = f.completed
        if answered:
            t.answered += 1
        elif f.server_rst:
            t.refused += 1
        if completed:
            t.completed += 1
        else:
            t.half_open += 1
            if answered and f.server_syns == 1:
                t.synack_once += 1
            elif answered:
                t.synack_retrans += f.server_syns - 1
            second = int(ts) if ts == ts and abs(ts) < 1e18 else 0  # NaN / absurd stamps share a bucket
            if t.second_count and second == t.second:  # the second of the attempt before (attempts mostly come in time order)
                n = t.second_count + 1
            else:
                buckets = t.buckets
                assert buckets is not None
                if t.second_count:  # that second's count goes into the table only now
                    buckets[t.second] = t.second_count
                n = buckets.get(second, 0) + 1
                if n == 1 and len(buckets) >= RATE_BUCKETS:
                    del buckets[min(buckets)]
                buckets[second] = n
                t.second = second
            t.second_count = n
            if n > t.peak:
                t.peak = n
        if f.evicted:
            t.evicted += 1
        if t.first is None or ts < t.first:
            t.first = ts
        if t.last is None or ts > t.last:
            t.last = ts
        assert t.sources is not None and t.distinct is not None
        t.sources.add(f.client_ip)
        t.distinct.add(f.client_ip)

    def _slot(self, key: tuple) -> _Target:
        """The endpoint's record (made if new), counted in the endpoint sketch; ``key``: (ip, port)."""
        endpoints = self._endpoints
        targets = self._targets
        t = targets.get(key)
        gone = endpoints.add(key)
        if gone is not None:  # the sketch replaced its least busy endpoint
            targets.pop(gone, None)  # type: ignore[call-overload]  # (gone already if forgotten)
        if t is None:
            t = _Target(key[0], key[1], missed=endpoints.error(key))
            t.sources = SpaceSaving(self.source_slots)
            t.distinct = DistinctCounter()
            t.buckets = {}
            targets[key] = t
        return t

    def forget(self, before: float) -> None:
        """Drop the endpoints whose last attempt was before ``before`` (a later attempt starts afresh)."""
        for key in [k for k, t in self._targets.items() if t.last is not None and t.last < before]:
            del self._targets[key]

    def _is_flood(self, t: _Target) -> bool:
        return t.half_open >= self.min_half_open and t.peak >= self.min_rate and t.half_open >= self.min_half_open_share * t.attempts

    def summaries(self) -> list[FloodSummary]:
        """Every endpoint under a SYN flood, the most attempts first."""
        out = []
        for t in sorted(self._targets.values(), key=lambda t: -t.half_open):
            if not self._is_flood(t):
                continue
            assert t.sources is not None and t.distinct is not None and t.first is not None and t.last is not None
            out.append(
                FloodSummary(
                    target_ip=fmt_ip(t.ip),
                    target_port=t.port,
                    attempts=t.attempts,
                    half_open=t.half_open,
                    answered=t.answered,
                    completed=t.completed,
                    refused=t.refused,
                    distinct_sources=t.distinct.count(),
                    sources_exact=t.distinct.exact,
                    top_sources=tuple((fmt_ip(ip), n, err) for ip, n, err in t.sources.top(TOP_SOURCES)),  # type: ignore[arg-type]
                    start=t.first,
                    end=t.last,
                    peak_rate=t.peak,
                    synack_once=t.synack_once if t.evicted == 0 else None,
                    late_synacks=t.late_synacks,
                    evicted=t.evicted,
                    missed_attempts=t.missed,
                    synack_retransmissions=t.synack_retrans,
                )
            )
        return out

    def summary(self) -> FloodSummary | None:
        """The flood with the most half-open attempts, or None when there is none."""
        found = self.summaries()
        return found[0] if found else None


def _evidence(s: FloodSummary) -> tuple[Evidence, ...]:
    """What the server did with the half-open attempts: SYN-ACKs sent again (it kept state) and,
    when no attempt was evicted, SYN-ACKs never sent again (the sign of SYN cookies)."""
    out = [Evidence(f"{s.half_open:,} half-open attempts, {s.peak_rate:,} in the busiest second")]
    if s.synack_retransmissions:
        out.append(Evidence(f"{s.synack_retransmissions:,} SYN-ACK retransmissions to half-open attempts (the server kept their state)"))
    if s.synack_once:
        out.append(
            Evidence(
                f"{s.synack_once:,} half-open attempts answered by one SYN-ACK never retransmitted (a sign of SYN cookies: the server keeps no state for them)"
            )
        )
    return tuple(out)


def flood_finding(s: FloodSummary) -> Finding:
    """The ``syn-flood`` finding of one flooded endpoint (connection ids are not kept: a
    flood has too many, and its figures say more)."""
    approx = "" if s.sources_exact else "about "
    verdict = (
        f"SYN flood against {s.target}: {s.attempts:,} connection attempts, {s.half_open:,} never completed the handshake, "
        f"from {approx}{s.distinct_sources:,} source addresses (busiest second: {s.peak_rate:,})."
    )
    if s.synack_retransmissions:
        verdict += f" The server retransmitted {s.synack_retransmissions:,} SYN-ACKs to them."
    if s.synack_once:
        verdict += f" {s.synack_once:,} got one SYN-ACK never retransmitted: a sign of SYN cookies (no state kept)."
    return Finding(
        name="syn-flood",
        rule="syn-flood",
        confidence=CERTAIN,
        server_ip=s.target_ip,
        server_port=s.target_port,
        start=s.start,
        end=s.end,
        connections=(),
        connection_count=s.attempts,
        figures=(
            ("attempts", float(s.attempts)),
            ("half_open", float(s.half_open)),
            ("answered", float(s.answered)),
            ("completed", float(s.completed)),
            ("refused", float(s.refused)),
            ("distinct_sources", float(s.distinct_sources)),
            ("peak_rate", float(s.peak_rate)),
            ("synack_retransmissions", float(s.synack_retransmissions)),
            *((("synack_once", float(s.synack_once)),) if s.synack_once is not None else ()),
        ),
        verdict=verdict,
        next_step=(
            "Check the server's SYN backlog and SYN cookies (netstat -s | grep -i listen; sysctl net.ipv4.tcp_syncookies) "
            "and filter upstream: the sources are usually spoofed."
        ),
        evidence=_evidence(s),
        severity=SEVERITY_FLOOD,
    )
