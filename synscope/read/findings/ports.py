"""Port exhaustion: a client cycling through a narrow range of source ports to one service.

Definition. Linux picks a connect()'s source port from ``net.ipv4.ip_local_port_range``; a
4-tuple in TIME-WAIT (on the client, when it closes first) blocks its port for that service,
so a client that opens many connections with a narrow range runs out and connect() fails with
EADDRNOTAVAIL until a port is free again (after TIME-WAIT, or after 1 s with
``net.ipv4.tcp_tw_reuse``). At least :data:`MIN_ATTEMPTS` connection attempts from one client
to one service, from at least 2 and at most :data:`NARROW_MAX` distinct source ports, each
port used :data:`MIN_USES` times or more on average, are a *port-exhaustion* finding: how many
ports, how fast they come back (the median time between two uses of one port) and the range
they span (the estimated ``ip_local_port_range``). A failed connect() sends nothing, so the
errno itself is not in the capture. Confidence ``likely``.
"""

from __future__ import annotations

from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.read.evidence import LIKELY, Evidence
from synscope.read.findings.model import MAX_IDS, SEVERITY_PORTS, ConnFacts, Finding

NAME: Final = "port-exhaustion"
# Attempts from one client to one service that make a finding
MIN_ATTEMPTS: Final = 20
# At most this many distinct source ports (ports beyond are not followed: the range is wide)
NARROW_MAX: Final = 256
# ... each used this often on average
MIN_USES: Final = 2.0
# (client, service) pairs followed at once
PAIR_SLOTS: Final = 1024
# Gaps between two uses of one port kept for the median
GAP_SAMPLES: Final = 256


class _Pair:
    """One client's attempts to one service. A plain class (not a compiled dataclass, whose
    ``__init__`` runs as Python), reused when it makes room: a SYN flood's spoofed sources make
    one per connection."""

    first: float
    last: float
    attempts: int
    wide: bool  # more than NARROW_MAX ports: not narrow, ports no longer followed
    reuses: int
    key: tuple  # its key in the detector's table
    used: int  # the place in the detector's _order of its latest use (its earlier places are passed over)

    def __init__(self, ts: float) -> None:
        self.key = ()
        self.used = -1
        self.last_use: dict[int, float] = {}  # port -> SYN time of its last use
        self.gaps: list[float] = []
        self.ids: list[int] = []
        self.frames: list[int] = []
        self.reset(ts)

    def reset(self, ts: float) -> None:
        """A new pair, first seen at ``ts`` (the containers are reused)."""
        self.first = ts
        self.last = ts
        self.attempts = 0
        self.wide = False
        # (cleared only when not empty: a flood's pairs are made anew at every attempt, and most
        # were used once)
        if self.last_use:
            self.last_use.clear()
        if self.gaps:
            self.gaps.clear()
        self.reuses = 0
        if self.ids:
            self.ids.clear()
        if self.frames:
            self.frames.clear()


class PortExhaustionDetector:
    """Source ports per (client, service), in bounded memory (NARROW_MAX ports a pair)."""

    def __init__(self, slots: int = PAIR_SLOTS) -> None:
        self.slots = slots
        # The pairs least recently used first: a dict, and a queue of the pairs at each use read
        # from a front index (a pair's place is the latest; its earlier ones are passed over).
        # An OrderedDict's move_to_end, popitem and insertion (a linked node) cost half the
        # detector's time on a SYN flood; a dict's first key costs O(n) once many entries were
        # deleted from its front.
        self._pairs: dict[tuple, _Pair] = {}
        self._order: list[_Pair] = []
        self._front = 0
        self._base = 0  # the place in the queue of _order[0]
        self.evicted = 0  # pairs dropped to make room (their counts are lost)

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection attempt into account."""
        if f.client_syns == 0:
            return
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        # (a plain tuple type: compiled, a fixed-length one is a C struct, made a new tuple object at
        # each use as a key)
        key: tuple = (f.client_ip, f.server_ip, f.server_port)
        pairs = self._pairs
        p = pairs.get(key)
        if p is None:
            if len(pairs) >= self.slots:
                p = self._take_oldest()  # the least recently used pair makes room (its record is reused)
                p.reset(ts)
                self.evicted += 1
            else:
                p = _Pair(ts)
            p.key = key
            pairs[key] = p
        order = self._order
        p.used = self._base + len(order)
        order.append(p)
        if len(order) - self._front > 2 * self.slots + 64:  # too many places passed over: keep the latest
            self._renumber(self._in_order())
        if ts < p.first:
            p.first = ts
        if ts > p.last:
            p.last = ts
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

    def _current(self, p: _Pair, place: int) -> bool:
        """Is ``place`` in the queue ``p``'s latest, and ``p`` still in the table?"""
        return p.used == place and self._pairs.get(p.key) is p

    def _in_order(self) -> list[_Pair]:
        """The pairs of the table, least recently used first."""
        order = self._order
        base = self._base
        return [order[i] for i in range(self._front, len(order)) if self._current(order[i], base + i)]

    def _renumber(self, pairs: list[_Pair]) -> None:
        """Make ``pairs`` (the table's, least recently used first) the whole queue."""
        for i in range(len(pairs)):
            pairs[i].used = i
        self._order = pairs
        self._front = 0
        self._base = 0

    def _take_oldest(self) -> _Pair:
        """Take the least recently used pair out of the table (it is not empty)."""
        order = self._order
        front = self._front
        base = self._base
        while True:
            p = order[front]
            front += 1
            if self._current(p, base + front - 1):  # (else used again since, or gone: passed over)
                break
        del self._pairs[p.key]
        if front >= 4096 and 2 * front >= len(order):  # the list's consumed front goes (amortized O(1))
            del order[:front]
            self._base = base + front
            front = 0
        self._front = front
        return p

    def forget(self, before: float) -> None:
        """Drop the pairs last seen before ``before`` (watch's window)."""
        for key in [k for k, p in self._pairs.items() if p.last < before]:
            del self._pairs[key]

    def findings(self) -> list[Finding]:
        """Every pair that cycled through a narrow range of ports."""
        out = []
        for p in self._in_order():
            key = p.key
            ports = len(p.last_use)
            if p.wide or p.attempts < MIN_ATTEMPTS or ports < 2 or p.attempts < MIN_USES * ports:
                continue
            out.append(_finding(key, p))
        return out


def _finding(key: tuple[bytes, bytes, int], p: _Pair) -> Finding:
    client, ip, port = key
    server = fmt_ip(ip)
    where = fmt_endpoint(ip, port)
    ports = sorted(p.last_use)
    low, high = ports[0], ports[-1]
    gaps = sorted(p.gaps)
    wrap = gaps[len(gaps) // 2] if gaps else 0.0
    span = p.last - p.first
    verdict = (
        f"{fmt_ip(client)} made {p.attempts} connection attempts to {where} from only {len(ports)} source ports "
        f"({low}–{high}): each port came back after {fmt.duration(wrap)} (median) over {fmt.duration(span)}. "
        "Its local port range looks that narrow; when every port is in use or in TIME-WAIT, connect() fails "
        "with EADDRNOTAVAIL (errno 99), which sends nothing and so is not in the capture."
    )
    next_step = (
        f"On {fmt_ip(client)}: sysctl net.ipv4.ip_local_port_range (widen it) and ss -tan state time-wait | wc -l; "
        "reuse connections instead of opening one per request."
    )
    figures = (
        ("attempts", float(p.attempts)),
        ("distinct_ports", float(len(ports))),
        ("port_low", float(low)),
        ("port_high", float(high)),
        ("estimated_range", float(high - low + 1)),
        ("port_reuses", float(p.reuses)),
        ("wrap_seconds", round(wrap, 6)),
        ("attempts_per_second", round((p.attempts - 1) / span, 3) if span > 0 else float(p.attempts)),
    )
    return Finding(
        name=NAME,
        rule=NAME,
        confidence=LIKELY,
        server_ip=server,
        server_port=port,
        start=p.first,
        end=p.last,
        connections=tuple(sorted(p.ids)),
        connection_count=p.attempts,
        figures=figures,
        verdict=verdict,
        next_step=next_step,
        evidence=(Evidence(f"{len(ports)} source ports for {p.attempts} attempts; a port used again", tuple(p.frames)),),
        severity=SEVERITY_PORTS,
        client_ip=fmt_ip(client),
    )
