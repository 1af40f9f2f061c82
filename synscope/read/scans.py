"""What a scan looks like, and what the pipeline knows of scans and answering hosts while it reads.

Definition. A *port scan* is one client probing many ports of one host: at least
:data:`SCAN_MIN_PORTS` distinct ports within :data:`SCAN_WINDOW` seconds, of which at most :data:`SCAN_MAX_OPEN_SHARE` answered with a
SYN-ACK (a client of a few services, or of one busy service, touches few ports; an FTP client's
passive data connections touch many, but every one of them is open). A *horizontal scan* is one
client probing one port on at least :data:`SCAN_MIN_HOSTS` hosts (within the same time), at most the same share of them
open (a crawler's hosts answer). One definition, :func:`looks_like_scan`, serves the per-connection
view (:class:`ScanWatch`, while reading) and the ``port-scan`` finding (at the end). The window
keeps a client that touches a host's services now and then over hours (or several captures of
the same lab read in one run) from adding up to a scan; a scan slower than the threshold per
window (nmap -T0/-T1) is not recognised.

:class:`ScanWatch` sees every SYN, SYN-ACK and RST as it is read, in every worker of a split run
(before the shard test), so what it says of a connection when the connection is handed on is the
same with any number of workers. It answers two questions in bounded memory:

- did this server's host answer (SYN-ACK or RST) on a port other than this one? Then silence on
  this port is a filter, not a host that is down;
- is this connection part of a scan (its client's probes of this host, or of this port, so far
  look like one)?
- was its server endpoint under a SYN storm when it opened (:meth:`ScanWatch.storm`)? Then one
  client address's two attempts there may be two spoofed SYNs that happen to share a source, and
  the packets cannot tell them from an application's retry: the retry linker leaves them apart.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from synscope.core.model import ACK, RST, SYN, Segment

# Distinct ports of one host one client must have probed to be a port scan (a client of 3 services is not)
SCAN_MIN_PORTS: Final = 10
# Distinct hosts one client must have probed on one port to be a horizontal scan
SCAN_MIN_HOSTS: Final = 10
# ... within this many seconds of the first of them (after that, the count starts again)
SCAN_WINDOW: Final = 10.0
# At most this share of what was probed answered with SYN-ACK (real clients mostly reach open ports)
SCAN_MAX_OPEN_SHARE: Final = 0.5
# (client, host) and (client, port) pairs followed at once; the oldest go first
SCAN_PAIRS: Final = 4096
# Hosts whose answering ports are remembered at once; the oldest go first
ANSWER_HOSTS: Final = 16384
# Distinct ports (or hosts) kept exactly per pair; beyond, only counted (every SYN of a new
# target after that counts, so a scan past this many is still a scan)
PAIR_EXACT: Final = 1024
# A server endpoint that received at least this many bare SYNs within one second of capture time is
# under a SYN storm in that second (the syn-flood finding asks as many half-open attempts in its
# busiest second: a listen backlog is 128-4096). Spoofed flood sources from a /15 share addresses
# by chance: of a crafted flood of 200,000 attempts at 50,000 per second (scripts/make-synflood),
# 54,076 were linked as application retries before the linker asked this.
STORM_SYN_RATE: Final = 100
# Server endpoints whose SYN rate is followed at once; those that got none for the longest go first
# (but see STORM_SECOND_CHANCES)
STORM_ENDPOINTS: Final = 4096
# Endpoints under a storm passed over when the table makes room (then the oldest goes anyway)
STORM_SECOND_CHANCES: Final = 8
# Storm seconds remembered per endpoint (the oldest go first): an hour of storm
STORM_SECONDS: Final = 3600


def looks_like_scan(targets: int, open_targets: int, horizontal: bool = False) -> bool:
    """``targets`` distinct ports (or hosts, ``horizontal``) probed by one client, ``open_targets``
    of them answered with SYN-ACK: a scan?"""
    if targets < (SCAN_MIN_HOSTS if horizontal else SCAN_MIN_PORTS):
        return False
    return open_targets <= SCAN_MAX_OPEN_SHARE * targets


class _Probed:
    """Targets (ports of one host, or hosts on one port) one client sent SYNs to."""

    __slots__ = ("targets", "extra", "open", "start", "last", "confirmed")

    extra: int
    start: float
    last: float
    confirmed: bool

    def __init__(self, start: float) -> None:
        self.targets: set[int | bytes] = set()
        self.open: set[int | bytes] | None = None  # the targets that answered with SYN-ACK (made at the first)
        self.reset(start)

    def reset(self, start: float) -> None:
        """Count again from scratch, from a probe at ``start`` (the set is reused)."""
        self.targets.clear()
        self.extra = 0  # first SYNs to targets beyond PAIR_EXACT
        self.open = None
        self.start = start  # time of the first probe counted
        self.last = start  # time of the latest probe
        self.confirmed = False  # the threshold was reached within the window

    def count(self) -> int:
        return len(self.targets) + self.extra

    def mark_open(self, target: int | bytes) -> None:
        """``target`` answered with SYN-ACK (counted if it was probed)."""
        if target in self.targets:
            if self.open is None:
                self.open = set()
            self.open.add(target)

    def open_count(self) -> int:
        return len(self.open) if self.open is not None else 0


class ScanWatch:
    """Scans and answering hosts, from the SYN, SYN-ACK and RST segments read so far (bounded)."""

    def __init__(self) -> None:
        self._by_host = _Pairs()  # (client, host) -> ports
        self._by_port = _Pairs()  # (client, port) -> hosts
        self._answered: OrderedDict[bytes, tuple[int, ...]] = OrderedDict()  # host -> up to two ports it answered on
        # the latest scan of a pair that ended (a connection of it may be handed on later)
        # OrderedDict: its oldest entry is found in O(1); a dict's first key costs O(n) once many
        # entries were deleted from its front (5 % of a run in ReuseDetector.add)
        self._ended: OrderedDict[tuple[int, tuple], _Probed] = OrderedDict()
        # host -> (TTL, frame) of the first SYN-ACK it sent: its own kernel's TTL at the capture
        # point, to weigh an RST sent in its name (a reject rule on the path answers with another)
        self._synack_ttl: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        # (server ip, server port) -> its bare SYNs per second and the seconds it was under a storm
        self._rates: OrderedDict[tuple, _SynRate] = OrderedDict()

    def saw(self, seg: Segment) -> None:
        """One segment; only SYN, SYN-ACK and RST count (call for those alone, cheaply)."""
        self.saw_fields(seg.flags, seg.src, seg.dst, seg.sport, seg.dport, seg.ts, seg.ttl, seg.frame)

    def saw_fields(self, flags: int, src: bytes, dst: bytes, sport: int, dport: int, ts: float, ttl: int, frame: int) -> None:
        """:meth:`saw`, given the segment's fields: a worker of a split run reads them from the
        frames it passes over (another worker tracks their connection) without decoding them."""
        if flags & SYN and not flags & ACK:
            _add(self._by_host, (src, dst), dport, ts, SCAN_MIN_PORTS, self._ended, 0)
            _add(self._by_port, (src, dport), dst, ts, SCAN_MIN_HOSTS, self._ended, 1)
            self._count_syn(dst, dport, ts)
            return
        if flags & SYN:  # SYN-ACK: the port is open
            if src not in self._synack_ttl and ttl > 0:
                if len(self._synack_ttl) >= ANSWER_HOSTS:
                    del self._synack_ttl[next(iter(self._synack_ttl))]
                self._synack_ttl[src] = (ttl, frame)
            p = self._by_host.probed.get((dst, src))
            if p is not None:
                p.mark_open(sport)
            q = self._by_port.probed.get((dst, sport))
            if q is not None:
                q.mark_open(src)
        if flags & (SYN | RST):
            self._answer(src, sport)

    def _answer(self, host: bytes, port: int) -> None:
        answered = self._answered
        ports = answered.get(host)
        if ports is None:
            if len(answered) >= ANSWER_HOSTS:
                del answered[next(iter(answered))]
            answered[host] = (port,)
        elif len(ports) < 2 and port not in ports:
            answered[host] = (*ports, port)

    def synack_ttl(self, host: bytes) -> tuple[int, int]:
        """(TTL, frame) of the first SYN-ACK ``host`` sent in what was read so far ((0, 0): none)."""
        return self._synack_ttl.get(host, (0, 0))

    def answered_elsewhere(self, host: bytes, port: int) -> bool:
        """Did ``host`` answer (SYN-ACK or RST) on a port other than ``port``?"""
        ports = self._answered.get(host)
        return ports is not None and (len(ports) > 1 or ports[0] != port)

    def _count_syn(self, host: bytes, port: int, ts: float) -> None:
        """One bare SYN to ``host``:``port`` at ``ts``: counted in its second of capture time."""
        rates = self._rates
        endpoint: tuple = (host, port)
        rate = rates.get(endpoint)
        if rate is None:
            if len(rates) >= STORM_ENDPOINTS:
                _make_room(rates)
            rate = rates[endpoint] = _SynRate()
        second = int(ts // 1.0)
        if second != rate.second:  # (a second earlier than the last one, from another file, counts again too)
            rate.second = second
            rate.count = 0
            rates.move_to_end(endpoint)  # (the endpoints SYNs went to lately stay: once a second each, not at every SYN)
        rate.count += 1
        if rate.count == STORM_SYN_RATE:
            storms = rate.storms
            if len(storms) >= STORM_SECONDS:
                del storms[next(iter(storms))]
            storms[second] = None

    def storm(self, host: bytes, port: int, ts: float) -> bool:
        """Was ``host``:``port`` under a SYN storm (:data:`STORM_SYN_RATE`) in the second of capture
        time of ``ts``, or the one before or after it (as read so far)?"""
        rate = self._rates.get((host, port))
        if rate is None or not rate.storms:
            return False
        second = int(ts // 1.0)
        storms = rate.storms
        return second in storms or second - 1 in storms or second + 1 in storms

    def in_scan(self, client: bytes, host: bytes, port: int, ts: float) -> bool:
        """Do ``client``'s probes so far of ``host`` (or of ``port`` on many hosts) look like a scan,
        and was a connection that started at ``ts`` made during it?"""
        # (each candidate looked at in turn, not a loop over a tuple of them: compiled, that is a
        # tuple and an iterator per connection; and the ended scans only when there are any)
        ended = self._ended
        vertical: tuple = (client, host)
        if _scan_during(self._by_host.probed.get(vertical), ts, False):
            return True
        if len(ended) and _scan_during(ended.get((0, vertical)), ts, False):
            return True
        horizontal: tuple = (client, port)
        if _scan_during(self._by_port.probed.get(horizontal), ts, True):
            return True
        return len(ended) > 0 and _scan_during(ended.get((1, horizontal)), ts, True)


def _make_room(rates: OrderedDict[tuple, _SynRate]) -> None:
    """Forget the endpoint SYNs went to least lately, passing over (a few at most) the ones that
    were under a storm: a port scan's thousands of endpoints do not push a flooded one out."""
    for _ in range(STORM_SECOND_CHANCES):
        oldest, rate = rates.popitem(False)  # (positional: a keyword costs more in the call)
        if not rate.storms:
            return
        rates[oldest] = rate  # (at the end: a second chance)
    rates.popitem(False)


class _SynRate:
    """Bare SYNs to one server endpoint in the latest second of capture time that had any, and the
    seconds in which it was under a SYN storm (a dict used as an insertion-ordered set)."""

    __slots__ = ("second", "count", "storms")

    def __init__(self) -> None:
        self.second = -1
        self.count = 0
        self.storms: dict[int, None] = {}


class _Pairs:
    """Pairs followed, the oldest first: a dict, and its keys in the order they came in a list
    read from a front index (the oldest is taken in O(1) without an OrderedDict, whose
    insertions, two per SYN of a SYN flood, cost more). A pair is dropped only as the oldest,
    so the list holds exactly the dict's keys, in its order."""

    def __init__(self) -> None:
        self.probed: dict[tuple, _Probed] = {}
        self.keys: list[tuple] = []
        self.front = 0

    def __len__(self) -> int:
        return len(self.probed)

    def take_oldest(self) -> _Probed:
        """Take the oldest pair out (there is one)."""
        keys = self.keys
        front = self.front
        key = keys[front]
        front += 1
        if front >= 4096 and 2 * front >= len(keys):  # the list's consumed front goes (amortized O(1))
            del keys[:front]
            front = 0
        self.front = front
        return self.probed.pop(key)


def _during(p: _Probed, ts: float) -> bool:
    return p.start - SCAN_WINDOW <= ts <= p.last + SCAN_WINDOW


def _scan_during(p: _Probed | None, ts: float, horizontal: bool) -> bool:
    """Is ``p`` (if any) a confirmed scan that looks like one, and ``ts`` during it? (see ScanWatch.in_scan)"""
    return p is not None and p.confirmed and _during(p, ts) and looks_like_scan(p.count(), p.open_count(), horizontal)


def _add(pairs: _Pairs, key: tuple, target: int | bytes, ts: float, threshold: int, ended: OrderedDict, kind: int) -> None:
    table = pairs.probed
    p = table.get(key)
    if p is None:
        if len(table) >= SCAN_PAIRS:
            p = pairs.take_oldest()  # the oldest pair makes room (its record is reused)
            p.reset(ts)
        else:
            p = _Probed(ts)
        table[key] = p
        pairs.keys.append(key)
    elif ts > p.last + SCAN_WINDOW or ts < p.start - SCAN_WINDOW or (not p.confirmed and ts - p.start > SCAN_WINDOW):
        # too slow to be a scan so far, or long after (or before: another file) the scan: count again from here
        if p.confirmed:
            ended.pop((kind, key), None)
            if len(ended) >= SCAN_PAIRS:
                del ended[next(iter(ended))]
            ended[(kind, key)] = p
            p = table[key] = _Probed(ts)
        else:
            p.reset(ts)
    if ts > p.last:
        p.last = ts
    if target in p.targets:
        return
    if len(p.targets) < PAIR_EXACT:
        p.targets.add(target)
    else:
        p.extra += 1
    if p.count() >= threshold:
        p.confirmed = True
