"""What a scan looks like, and what the pipeline knows of scans and answering hosts while it reads.

Definition. A *port scan* is one client probing many ports of one host: at least
:data:`SCAN_MIN_PORTS` distinct ports, of which at most :data:`SCAN_MAX_OPEN_SHARE` answered with a
SYN-ACK (a client of a few services, or of one busy service, touches few ports; an FTP client's
passive data connections touch many, but every one of them is open). A *horizontal scan* is one
client probing one port on at least :data:`SCAN_MIN_HOSTS` hosts, at most the same share of them
open (a crawler's hosts answer). One definition, :func:`looks_like_scan`, serves the per-connection
view (:class:`ScanWatch`, while reading) and the ``port-scan`` finding (at the end).

:class:`ScanWatch` sees every SYN, SYN-ACK and RST as it is read, in every worker of a split run
(before the shard test), so what it says of a connection when the connection is handed on is the
same with any number of workers. It answers two questions in bounded memory:

- did this server's host answer (SYN-ACK or RST) on a port other than this one? Then silence on
  this port is a filter, not a host that is down;
- is this connection part of a scan (its client's probes of this host, or of this port, so far
  look like one)?
"""

from __future__ import annotations

from typing import Final

from synscope.core.model import ACK, RST, SYN, Segment

# Distinct ports of one host one client must have probed to be a port scan (a client of 3 services is not)
SCAN_MIN_PORTS: Final = 10
# Distinct hosts one client must have probed on one port to be a horizontal scan
SCAN_MIN_HOSTS: Final = 10
# At most this share of what was probed answered with SYN-ACK (real clients mostly reach open ports)
SCAN_MAX_OPEN_SHARE: Final = 0.5
# (client, host) and (client, port) pairs followed at once; the oldest go first
SCAN_PAIRS: Final = 4096
# Hosts whose answering ports are remembered at once; the oldest go first
ANSWER_HOSTS: Final = 65536
# Distinct ports (or hosts) kept exactly per pair; beyond, only counted (every SYN of a new
# target after that counts, so a scan past this many is still a scan)
PAIR_EXACT: Final = 1024


def looks_like_scan(targets: int, open_targets: int, horizontal: bool = False) -> bool:
    """``targets`` distinct ports (or hosts, ``horizontal``) probed by one client, ``open_targets``
    of them answered with SYN-ACK: a scan?"""
    if targets < (SCAN_MIN_HOSTS if horizontal else SCAN_MIN_PORTS):
        return False
    return open_targets <= SCAN_MAX_OPEN_SHARE * targets


class _Probed:
    """Targets (ports of one host, or hosts on one port) one client sent SYNs to."""

    __slots__ = ("targets", "extra", "open")

    def __init__(self) -> None:
        self.targets: set[int | bytes] = set()
        self.extra = 0  # first SYNs to targets beyond PAIR_EXACT
        self.open: set[int | bytes] = set()

    def count(self) -> int:
        return len(self.targets) + self.extra


class ScanWatch:
    """Scans and answering hosts, from the SYN, SYN-ACK and RST segments read so far (bounded)."""

    def __init__(self) -> None:
        self._by_host: dict[tuple[bytes, bytes], _Probed] = {}  # (client, host) -> ports
        self._by_port: dict[tuple[bytes, int], _Probed] = {}  # (client, port) -> hosts
        self._answered: dict[bytes, tuple[int, ...]] = {}  # host -> up to two ports it answered on

    def saw(self, seg: Segment) -> None:
        """One segment; only SYN, SYN-ACK and RST count (call for those alone, cheaply)."""
        flags = seg.flags
        if flags & SYN and not flags & ACK:
            _add(self._by_host, (seg.src, seg.dst), seg.dport)
            _add(self._by_port, (seg.src, seg.dport), seg.dst)
            return
        if flags & SYN:  # SYN-ACK: the port is open
            p = self._by_host.get((seg.dst, seg.src))
            if p is not None and seg.sport in p.targets:
                p.open.add(seg.sport)
            q = self._by_port.get((seg.dst, seg.sport))
            if q is not None and seg.src in q.targets:
                q.open.add(seg.src)
        if flags & (SYN | RST):
            self._answer(seg.src, seg.sport)

    def _answer(self, host: bytes, port: int) -> None:
        answered = self._answered
        ports = answered.get(host)
        if ports is None:
            if len(answered) >= ANSWER_HOSTS:
                del answered[next(iter(answered))]
            answered[host] = (port,)
        elif len(ports) < 2 and port not in ports:
            answered[host] = (*ports, port)

    def answered_elsewhere(self, host: bytes, port: int) -> bool:
        """Did ``host`` answer (SYN-ACK or RST) on a port other than ``port``?"""
        ports = self._answered.get(host)
        return ports is not None and (len(ports) > 1 or ports[0] != port)

    def in_scan(self, client: bytes, host: bytes, port: int) -> bool:
        """Do ``client``'s probes so far of ``host`` (or of ``port`` on many hosts) look like a scan?"""
        p = self._by_host.get((client, host))
        if p is not None and looks_like_scan(p.count(), len(p.open)):
            return True
        q = self._by_port.get((client, port))
        return q is not None and looks_like_scan(q.count(), len(q.open), horizontal=True)


def _add(table: dict, key: tuple, target: int | bytes) -> None:
    p = table.get(key)
    if p is None:
        if len(table) >= SCAN_PAIRS:
            del table[next(iter(table))]
        p = table[key] = _Probed()
    if target in p.targets:
        return
    if len(p.targets) < PAIR_EXACT:
        p.targets.add(target)
    else:
        p.extra += 1
