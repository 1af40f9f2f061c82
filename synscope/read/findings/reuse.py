"""Port reuse in TIME-WAIT: a 4-tuple used again while its previous incarnation may still be in
TIME-WAIT on the side that closed first.

Definition. After a close with FINs, the side that sent the first FIN keeps the 4-tuple in
TIME-WAIT (:data:`TIME_WAIT` = 60 s on Linux; 30 s to 4 min elsewhere). A new SYN on the same
4-tuple (the tracker's ``reused_from``: so not the same addresses in another tunnel) less
than :data:`TIME_WAIT` after the previous incarnation's last packet is a *reuse*:
the holder accepts it when the SYN's timestamp (or, without timestamps, its ISN) is newer;
otherwise it answers with an ACK of the old connection (the client then resets and retries) or
an RST, or drops the SYN. A client-side holder lets its own kernel reuse the port only with
``net.ipv4.tcp_tw_reuse`` (after 1 s, timestamps on) or SO_REUSEADDR on a bound port.

The previous incarnation of every 4-tuple is kept in a table of :data:`TUPLE_SLOTS` entries
(the oldest goes first: the table is a dict and a queue of its records in the order they were
put in, read from a front index; a record taken out of the dict stays in the queue and is
passed over at the front. An OrderedDict, which cost a linked node per put, was 40 % of the
detector's time on a SYN flood, whose spoofed sources put a 4-tuple in per attempt); reuses are grouped per (service, holder), clients counted. Confidence
``certain`` when the reuse came within :data:`SURELY_HELD` (shorter than any stack's
TIME-WAIT), ``likely`` beyond.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.read.evidence import CERTAIN, LIKELY, Evidence
from synscope.read.findings.model import MAX_IDS, SEVERITY_PORTS, ConnFacts, Finding

NAME: Final = "port-reuse-time-wait"
# Linux's TIME-WAIT (TCP_TIMEWAIT_LEN)
TIME_WAIT: Final = 60.0
# Shorter than any common stack's TIME-WAIT (macOS: 2 x 15 s)
SURELY_HELD: Final = 30.0
# Previous incarnations remembered (4-tuples)
TUPLE_SLOTS: Final = 16384
# Groups of reuses followed at once
GROUP_SLOTS: Final = 1024
# Distinct clients counted exactly up to this many (then "at least")
MAX_CLIENTS: Final = 4096


class _Life:
    """One incarnation of a 4-tuple, as much as a reuse needs. A plain class (a compiled
    dataclass runs its ``__init__`` as Python), one per connection, reused when the table makes
    room."""

    cid: int
    syn_ts: float  # -1: no SYN seen
    last_ts: float
    holder: str  # who closed first with both FINs ("" when not closed by FIN: no TIME-WAIT)
    answer: str
    completed: bool
    client_syns: int
    syn_timestamps: bool
    first_frame: int  # its first packet (the SYN)
    answer_frame: int  # the server's answer to the SYN (0: none)
    reused: bool  # the tracker linked it to an earlier connection on its 4-tuple
    key: tuple  # its key in the table

    def __init__(self, cid: int, f: ConnFacts) -> None:
        self.key = ()
        self.fill(cid, f)

    def fill(self, cid: int, f: ConnFacts) -> None:
        """Take connection ``cid``'s facts (all of them: an old incarnation's are overwritten)."""
        self.cid = cid
        self.syn_ts = f.syn_ts if f.syn_ts is not None else -1.0
        self.last_ts = f.last_ts
        self.holder = f.first_closer if f.first_closer and not f.reset else ""
        self.answer = f.answer
        self.completed = f.completed
        self.client_syns = f.client_syns
        self.syn_timestamps = f.syn_timestamps
        self.first_frame = f.first_frame
        self.answer_frame = f.answer_frame
        self.reused = f.reused


@dataclass
class _Group:
    first: float
    last: float
    count: int = 0
    ids: list[int] = field(default_factory=list)
    gap_min: float = -1.0
    gap_max: float = 0.0
    accepted: int = 0
    challenge_ack: int = 0
    reset: int = 0
    ignored: int = 0
    with_timestamps: int = 0
    example: tuple[int, int] = (0, 0)  # previous and reusing connection
    frames: tuple[int, ...] = ()  # the previous connection's SYN, the reusing SYN, its answer
    clients: set[bytes] = field(default_factory=set)


class ReuseDetector:
    """Reuses of 4-tuples within TIME-WAIT, in bounded memory."""

    def __init__(self, tuple_slots: int = TUPLE_SLOTS, group_slots: int = GROUP_SLOTS) -> None:
        self.tuple_slots = tuple_slots
        self.group_slots = group_slots
        # (a dict's first key costs O(n) once many entries were deleted from its front: the
        # oldest is found in _order instead)
        self._lives: dict[tuple, _Life] = {}
        self._order: list[_Life] = []  # the records as put in the table, oldest first from _front
        self._front = 0
        self._groups: dict[tuple[bytes, int, str], _Group] = {}
        self.forgotten = 0  # incarnations dropped from the table (TUPLE_SLOTS)
        self.ungrouped = 0  # reuses not counted (GROUP_SLOTS)

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection into account (in any order of the incarnations)."""
        # (a plain tuple type: compiled, a fixed-length one is a C struct, made a new tuple object at
        # each use as a key)
        key: tuple = (f.client_ip, f.client_port, f.server_ip, f.server_port)
        lives = self._lives
        old = lives.get(key)
        if old is not None:
            # whichever came first is the previous incarnation
            new = _Life(cid, f)
            if old.syn_ts > new.syn_ts:
                earlier, later = new, old
            else:
                earlier, later = old, new
            self._reuse(f, earlier, later)
            if later is old:
                return  # keep the newest incarnation
            del lives[key]
        elif len(lives) >= self.tuple_slots:
            new = self._take_oldest()  # the oldest incarnation makes room (its record is reused)
            new.fill(cid, f)
            self.forgotten += 1
        else:
            new = _Life(cid, f)
        new.key = key
        lives[key] = new
        order = self._order
        order.append(new)
        if len(order) - self._front > 2 * self.tuple_slots + 64:  # too many passed over: keep the live ones
            self._order = [life for life in order[self._front :] if lives.get(life.key) is life]
            self._front = 0

    def _take_oldest(self) -> _Life:
        """Take the record put in the table longest ago out of it (the table is not empty)."""
        lives = self._lives
        order = self._order
        front = self._front
        while True:
            life = order[front]
            front += 1
            if lives.get(life.key) is life:  # (else taken out since: passed over)
                break
        del lives[life.key]
        if front >= 4096 and 2 * front >= len(order):  # the list's consumed front goes (amortized O(1))
            del order[:front]
            front = 0
        self._front = front
        return life

    def _reuse(self, f: ConnFacts, earlier: _Life, later: _Life) -> None:
        if not earlier.holder or not later.reused or later.client_syns == 0 or later.syn_ts < 0:
            return
        gap = later.syn_ts - earlier.last_ts
        if gap < 0 or gap >= TIME_WAIT:
            return
        gkey = (f.server_ip, f.server_port, earlier.holder)
        g = self._groups.get(gkey)
        if g is None:
            if len(self._groups) >= self.group_slots:
                self.ungrouped += 1
                return
            g = _Group(later.syn_ts, later.syn_ts, example=(earlier.cid, later.cid), frames=(earlier.first_frame, later.first_frame, later.answer_frame))
            self._groups[gkey] = g
        g.first = min(g.first, later.syn_ts)
        g.last = max(g.last, later.syn_ts)
        g.count += 1
        if len(g.ids) < MAX_IDS:
            g.ids.append(later.cid)
        g.gap_min = gap if g.gap_min < 0 else min(g.gap_min, gap)
        g.gap_max = max(g.gap_max, gap)
        if later.answer == "synack" and later.completed:
            g.accepted += 1
        elif later.answer == "ack":
            g.challenge_ack += 1
        elif later.answer == "rst":
            g.reset += 1
        elif not later.answer:
            g.ignored += 1
        g.with_timestamps += later.syn_timestamps
        if len(g.clients) < MAX_CLIENTS:
            g.clients.add(f.client_ip)

    def forget(self, before: float) -> None:
        """Drop the incarnations and groups last seen before ``before`` (watch's window)."""
        for key in [k for k, life in self._lives.items() if life.last_ts < before]:
            del self._lives[key]
        for gkey in [k for k, g in self._groups.items() if g.last < before]:
            del self._groups[gkey]

    def findings(self) -> list[Finding]:
        """Every group of reuses."""
        return [_finding(k, g) for k, g in self._groups.items()]


def _finding(key: tuple[bytes, int, str], g: _Group) -> Finding:
    ip, port, holder = key
    client = fmt_ip(next(iter(g.clients))) if len(g.clients) == 1 else ""
    who = client or f"{len(g.clients)} clients"
    server = fmt_ip(ip)
    where = fmt_endpoint(ip, port)
    came = fmt.duration(g.gap_min) if g.gap_max - g.gap_min < 0.0005 else f"{fmt.duration(g.gap_min)}–{fmt.duration(g.gap_max)}"
    happened = []
    if g.accepted and holder == "client":
        happened.append(f"{g.accepted} completed (the client's own kernel reused its TIME-WAIT ports: net.ipv4.tcp_tw_reuse or SO_REUSEADDR)")
    elif g.accepted:
        why = "its SYN's timestamps were newer" if g.with_timestamps >= g.count else "its SYN's timestamps or initial sequence number were newer"
        happened.append(f"{g.accepted} accepted ({why})")
    if g.challenge_ack:
        happened.append(f"{g.challenge_ack} answered with an ACK of the old connection instead of a SYN-ACK")
    if g.reset:
        happened.append(f"{g.reset} reset")
    if g.ignored:
        happened.append(f"{g.ignored} ignored (no answer to the SYN)")
    times = {1: "once", 2: "twice"}.get(g.count, f"{g.count} times")
    verdict = (
        f"The 4-tuples of {who} to {where} were used again {times} {came} after the previous connection "
        f"ended, well within Linux's {TIME_WAIT:.0f} s TIME-WAIT, which the {holder} held (it closed first): " + "; ".join(happened) + "."
    )
    if holder == "client":
        next_step = (
            f"On {client or 'the clients'}: ss -tan state time-wait | wc -l; sysctl net.ipv4.tcp_tw_reuse net.ipv4.ip_local_port_range; "
            "reuse connections (keep-alive, a pool) instead of reopening the same ports."
        )
    else:
        next_step = (
            f"On {server}: ss -tan state time-wait '( sport = :{port} )' | wc -l; keep tcp_timestamps on at both ends "
            "(TIME-WAIT accepts a new SYN by its timestamp); reuse connections instead of reopening them."
        )
    figures = (
        ("reuses", float(g.count)),
        ("gap_min_seconds", round(g.gap_min, 6)),
        ("gap_max_seconds", round(g.gap_max, 6)),
        ("time_wait_seconds", TIME_WAIT),
        ("accepted", float(g.accepted)),
        ("challenge_acks", float(g.challenge_ack)),
        ("reset", float(g.reset)),
        ("ignored", float(g.ignored)),
        ("with_timestamps", float(g.with_timestamps)),
        ("clients", float(len(g.clients))),
    )
    return Finding(
        name=NAME,
        rule=f"{NAME}-{holder}",
        confidence=CERTAIN if g.gap_max < SURELY_HELD else LIKELY,
        server_ip=server,
        server_port=port,
        start=g.first,
        end=g.last,
        connections=tuple(sorted(g.ids)),
        connection_count=g.count,
        figures=figures,
        verdict=verdict,
        next_step=next_step,
        evidence=(
            Evidence(
                f"connection #{g.example[0]} closed by the {holder} first; #{g.example[1]} on the same 4-tuple: its SYN and the answer",
                tuple(x for x in g.frames if x),
            ),
        ),
        severity=SEVERITY_PORTS,
        client_ip=client or None,
    )
