"""Port scans: one client probing many ports of one host (or one port on many hosts) is one finding.

Definition (one for the whole program: :func:`synscope.read.scans.looks_like_scan`): at least
``SCAN_MIN_PORTS`` distinct ports of one host from one client within ``SCAN_WINDOW`` seconds, at
most half of them open; or
``SCAN_MIN_HOSTS`` hosts on one port (a horizontal scan). Each port probed is:

- *open*: answered with SYN-ACK. What the scanner did next names the scan: it completed the
  handshake (a connect() scan, ``nmap -sT``) or answered the SYN-ACK with RST (a half-open SYN
  scan, ``nmap -sS``);
- *closed*: answered with RST;
- *filtered*: silence, or an ICMP error (a filter on the way or on the host).

Bounded state: a table of :data:`CANDIDATE_SLOTS` + :data:`SCAN_SLOTS` pairs, in the order they
were first seen. A pair below the threshold (not yet *confirmed*) is a candidate; when the table
is full, a new pair takes the place of the oldest candidate (the earliest first seen of the pairs
still below the threshold; a pair counted again from scratch after a slow start keeps its place),
and is not followed when every pair is confirmed. The candidates are kept in a queue of their own,
in the table's order, so finding the oldest costs O(1) (not a walk of the table past the confirmed
pairs and the deleted slots at its front on every new pair, which was 14 % of a SYN flood's run).
The queue is a list of the pairs themselves, read from a front index: a pair confirmed stays in
it and is passed over when it comes to the front (an OrderedDict of keys cost a hash and a linked
node per new pair, and a flood of spoofed sources makes a new pair per attempt; a deque's
methods are calls by name from compiled code, a list's append and index are not).
A pair keeps each target's state exactly up to :data:`TARGETS_EXACT` targets, then counts only.
"""

from __future__ import annotations

from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_ip
from synscope.read.evidence import LIKELY, Evidence
from synscope.read.findings.model import MAX_IDS, SEVERITY_SCAN, ConnFacts, Finding
from synscope.read.scans import SCAN_MIN_HOSTS, SCAN_MIN_PORTS, SCAN_WINDOW, looks_like_scan

# Pairs below the threshold followed at once (a busy server has many clients of one or two ports)
CANDIDATE_SLOTS: Final = 8192
# Pairs past the threshold followed at once (each a possible scan)
SCAN_SLOTS: Final = 256
# Targets whose state a scan keeps (beyond: counted, not deduplicated)
TARGETS_EXACT: Final = 65536
# Open targets named in the finding's sentence
OPEN_LISTED: Final = 12

OPEN, CLOSED, FILTERED = 3, 2, 1
_NAME: Final = {OPEN: "open", CLOSED: "closed", FILTERED: "filtered"}


def port_state(f: ConnFacts) -> int:
    """OPEN (SYN-ACK), CLOSED (RST to the SYN) or FILTERED (silence or an ICMP error) of one probe."""
    if f.server_syns:
        return OPEN
    if f.server_rst and not f.icmp_from:
        return CLOSED
    return FILTERED


class _Pair:
    """One client's probes of one host's ports (or of one port's hosts).

    A plain class, not a dataclass: one is made (or reused, :meth:`reset`) per new pair, which in
    a SYN flood of spoofed sources is every connection, and a compiled dataclass runs its
    generated ``__init__`` as Python."""

    key: tuple  # its key in the detector's table
    first: float
    last: float
    extra_count: int
    probes: int
    connected: int
    half_open: int
    example_frame: int
    icmp: int
    confirmed: bool

    def __init__(self, ts: float, example_frame: int) -> None:
        self.targets: dict[int | bytes, int] = {}  # target -> best state seen
        self.extra: dict[int, int] | None = None  # state -> probes past TARGETS_EXACT (made when needed)
        self.ids: list[int] = []
        self.key = ()
        self.reset(ts, example_frame)

    def reset(self, ts: float, example_frame: int) -> None:
        """Count again from scratch, from a probe at ``ts`` (the containers are reused)."""
        self.first = ts
        self.last = ts
        if self.targets:
            self.targets.clear()
        self.extra = None
        self.extra_count = 0  # sum of extra's values
        self.probes = 0
        self.connected = 0  # open, and the client completed the handshake (connect scan)
        self.half_open = 0  # open, and the client did not complete it (SYN scan)
        if self.ids:
            self.ids.clear()
        self.example_frame = example_frame
        self.icmp = 0
        self.confirmed = False  # the threshold was reached within SCAN_WINDOW

    def count(self) -> int:
        return len(self.targets) + self.extra_count

    def states(self) -> dict[int, int]:
        out = {OPEN: 0, CLOSED: 0, FILTERED: 0}
        for s in self.targets.values():
            out[s] += 1
        if self.extra is not None:
            for s, n in self.extra.items():
                out[s] += n
        return out


class ScanDetector:
    """Port scans (vertical and horizontal) from the connections' facts, in bounded memory."""

    def __init__(self, candidate_slots: int = CANDIDATE_SLOTS, scan_slots: int = SCAN_SLOTS) -> None:
        self.slots = candidate_slots + scan_slots  # pairs per table
        self._vertical: dict[tuple[bytes, bytes], _Pair] = {}
        self._horizontal: dict[tuple[bytes, int], _Pair] = {}
        # each table's candidates (pairs below the threshold), in the table's order; a pair
        # confirmed since is passed over when it comes to the front (see _Candidates.oldest)
        self._vertical_waiting = _Candidates()
        self._horizontal_waiting = _Candidates()
        self.dropped = 0  # pairs past the threshold not followed (SCAN_SLOTS)

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection into account (connection attempts only: a client SYN)."""
        if f.client_syns == 0:
            return
        state = port_state(f)
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        self._add(self._vertical, self._vertical_waiting, (f.client_ip, f.server_ip), f.server_port, state, cid, ts, f, SCAN_MIN_PORTS)
        self._add(self._horizontal, self._horizontal_waiting, (f.client_ip, f.server_port), f.server_ip, state, cid, ts, f, SCAN_MIN_HOSTS)

    def _add(self, table: dict, waiting: _Candidates, key: tuple, target: int | bytes, state: int, cid: int, ts: float, f: ConnFacts, threshold: int) -> None:
        p: _Pair | None = table.get(key)
        if p is None:
            if len(table) >= self.slots:
                # make room: the oldest pair still below the threshold goes (its object is reused)
                p = waiting.oldest()
                if p is None:  # every pair is past the threshold (followed pairs stay)
                    self.dropped += 1
                    return
                del table[p.key]
                p.reset(ts, f.first_frame)
            else:
                p = _Pair(ts, f.first_frame)
            p.key = key
            table[key] = p
            waiting.pairs.append(p)
        elif ts > p.last + SCAN_WINDOW or ts < p.first - SCAN_WINDOW or (not p.confirmed and ts - p.first > SCAN_WINDOW):
            if p.confirmed:
                return  # long after (or before: another file) a scan found: not part of it (one scan per pair)
            p.reset(ts, f.first_frame)  # too slow so far: count again from here (a candidate still, in its place)
        if ts < p.first:
            p.first = ts
        if ts > p.last:
            p.last = ts
        p.probes += 1
        if state == OPEN:
            if f.completed:
                p.connected += 1
            else:
                p.half_open += 1
        if f.icmp_from:
            p.icmp += 1
        if len(p.ids) < MAX_IDS:
            p.ids.append(cid)
        targets = p.targets
        old = targets.get(target) if targets else None  # (a new pair's is empty: no lookup)
        if old is not None:
            if state > old:
                targets[target] = state
        elif len(targets) < TARGETS_EXACT:
            targets[target] = state
        else:
            if p.extra is None:
                p.extra = {}
            p.extra[state] = p.extra.get(state, 0) + 1
            p.extra_count += 1
        if not p.confirmed and p.count() >= threshold:
            p.confirmed = True  # (no longer a candidate: passed over in waiting)

    def forget(self, before: float) -> None:
        """Drop the pairs whose last probe was before ``before`` (watch's window; their slots are free again)."""
        for key in [k for k, p in self._vertical.items() if p.last < before]:
            del self._vertical[key]
        for hkey in [k for k, p in self._horizontal.items() if p.last < before]:
            del self._horizontal[hkey]
        self._vertical_waiting = _candidates(self._vertical, self._vertical_waiting)
        self._horizontal_waiting = _candidates(self._horizontal, self._horizontal_waiting)

    def findings(self) -> list[Finding]:
        """Every scan found (a horizontal one only where no vertical one covers the same client)."""
        out = []
        scanners = set()
        for (client, host), p in self._vertical.items():
            if p.confirmed and looks_like_scan(p.count(), p.states()[OPEN]):
                out.append(_finding(client, host, 0, p))
                scanners.add(client)
        for (client, port), p in self._horizontal.items():
            if client not in scanners and p.confirmed and looks_like_scan(p.count(), p.states()[OPEN], horizontal=True):
                out.append(_finding(client, b"", port, p))
        return out


class _Candidates:
    """A table's pairs below the threshold, in the table's order (the oldest at ``front``); a
    pair confirmed since it was put here is passed over when it comes to the front."""

    def __init__(self) -> None:
        self.pairs: list[_Pair] = []
        self.front = 0

    def oldest(self) -> _Pair | None:
        """Take the oldest pair still below the threshold off the front (None: there is none);
        the confirmed pairs before it go too."""
        pairs = self.pairs
        front = self.front
        found = None
        while front < len(pairs):
            p = pairs[front]
            front += 1
            if not p.confirmed:
                found = p
                break
        if front >= 4096 and 2 * front >= len(pairs):  # the list's consumed front goes (amortized O(1))
            del pairs[:front]
            front = 0
        self.front = front
        return found


def _candidates(table: dict, waiting: _Candidates) -> _Candidates:
    """``waiting`` without the pairs no longer in ``table`` or confirmed (in its order)."""
    out = _Candidates()
    pairs = waiting.pairs
    for i in range(waiting.front, len(pairs)):
        p = pairs[i]
        if not p.confirmed and table.get(p.key) is p:
            out.pairs.append(p)
    return out


def _ports_text(ports: list[int]) -> str:
    """``22, 80, 443`` (the first OPEN_LISTED, then how many more)."""
    head = ", ".join(str(p) for p in ports[:OPEN_LISTED])
    return head + (f" and {len(ports) - OPEN_LISTED} more" if len(ports) > OPEN_LISTED else "")


def _finding(client: bytes, host: bytes, port: int, p: _Pair) -> Finding:
    scanner = fmt_ip(client)
    states = p.states()
    n = p.count()
    duration = p.last - p.first
    rate = (p.probes - 1) / duration if duration > 0 else float(p.probes)
    open_targets = sorted(t for t, s in p.targets.items() if s == OPEN)
    filtered = f"{states[FILTERED]} filtered" + (f" ({p.icmp} by an ICMP error, the rest silent)" if p.icmp else " (no answer)")
    if p.connected and not p.half_open:
        kind, how = "connect-scan", "A connect() scan: it completed the handshake with every open port, then closed (as nmap -sT)."
    elif p.half_open and not p.connected:
        kind, how = "syn-scan", "A half-open SYN scan: it never completed a handshake, each SYN-ACK was answered with RST (as nmap -sS)."
    else:
        kind, how = "port-scan", ""
    when = f"in {fmt.duration(duration)} ({rate:,.0f} probes/s)" if duration > 0 else "at once"
    if host:
        target = fmt_ip(host)
        ports = [t for t in p.targets if isinstance(t, int)]
        lo, hi = (min(ports), max(ports)) if ports else (0, 0)
        opened = [t for t in open_targets if isinstance(t, int)]
        found = f"open: {_ports_text(opened)}" if opened else "no port open"
        verdict = f"{scanner} scanned {n:,} ports of {target} ({lo}–{hi}) {when}: {states[OPEN]} open, {states[CLOSED]} closed, {filtered}; {found}."
        next_step = f"Check whether {scanner} is yours (an inventory or security scanner); if not, block it. " + (
            f"Check the firewall policy for the open ports of {target} ({_ports_text(opened)}): should {scanner} reach them?"
            if opened
            else f"Nothing was found open on {target}."
        )
        rule = kind
        server_ip, server_port = target, 0
    else:
        hosts = sorted(fmt_ip(t) for t in open_targets if isinstance(t, bytes))
        verdict = f"{scanner} probed port {port} on {n:,} hosts {when} (a horizontal scan): {states[OPEN]} open, {states[CLOSED]} closed, {filtered}" + (
            f"; open on {', '.join(hosts[:OPEN_LISTED])}{' and more' if len(hosts) > OPEN_LISTED else ''}." if hosts else "."
        )
        next_step = f"Check whether {scanner} is yours; if not, block it. Check which hosts should expose port {port}."
        rule = "horizontal-scan"
        server_ip, server_port = "", port
    if how:
        verdict += " " + how
    figures: list[tuple[str, float]] = [
        ("targets", float(n)),
        ("probes", float(p.probes)),
        ("open", float(states[OPEN])),
        ("closed", float(states[CLOSED])),
        ("filtered", float(states[FILTERED])),
        ("connected", float(p.connected)),
        ("half_open", float(p.half_open)),
        ("duration", round(duration, 6)),
        ("rate", round(rate, 1)),
    ]
    if host:
        figures += [("port_min", float(lo)), ("port_max", float(hi))]
    return Finding(
        name="port-scan",
        rule=rule,
        confidence=LIKELY,
        server_ip=server_ip,
        server_port=server_port,
        start=p.first,
        end=p.last,
        connections=tuple(sorted(p.ids)),
        connection_count=p.probes,
        figures=tuple(figures),
        verdict=verdict,
        next_step=next_step,
        evidence=(Evidence(f"{n:,} {'ports' if host else 'hosts'} probed by {scanner}, {states[OPEN]} answered with SYN-ACK", (p.example_frame,)),),
        severity=SEVERITY_SCAN,
        client_ip=scanner,
    )
