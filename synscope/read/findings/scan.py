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

Bounded state: pairs with fewer than SCAN_MIN_PORTS targets wait in a FIFO of
:data:`CANDIDATE_SLOTS` (the oldest go first); pairs past it, up to :data:`SCAN_SLOTS`, keep each
target's state exactly up to :data:`TARGETS_EXACT` targets, then counts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class _Pair:
    """One client's probes of one host's ports (or of one port's hosts)."""

    first: float
    last: float
    targets: dict[int | bytes, int] = field(default_factory=dict)  # target -> best state seen
    extra: dict[int, int] = field(default_factory=dict)  # state -> probes past TARGETS_EXACT
    probes: int = 0
    connected: int = 0  # open, and the client completed the handshake (connect scan)
    half_open: int = 0  # open, and the client did not complete it (SYN scan)
    ids: list[int] = field(default_factory=list)
    example_frame: int = 0
    icmp: int = 0
    confirmed: bool = False  # the threshold was reached within SCAN_WINDOW

    def count(self) -> int:
        return len(self.targets) + sum(self.extra.values())

    def states(self) -> dict[int, int]:
        out = {OPEN: 0, CLOSED: 0, FILTERED: 0}
        for s in self.targets.values():
            out[s] += 1
        for s, n in self.extra.items():
            out[s] += n
        return out


class ScanDetector:
    """Port scans (vertical and horizontal) from the connections' facts, in bounded memory."""

    def __init__(self) -> None:
        self._vertical: dict[tuple[bytes, bytes], _Pair] = {}
        self._horizontal: dict[tuple[bytes, int], _Pair] = {}
        self.dropped = 0  # pairs past the threshold not followed (SCAN_SLOTS)

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection into account (connection attempts only: a client SYN)."""
        if f.client_syns == 0:
            return
        state = port_state(f)
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        _add(self._vertical, (f.client_ip, f.server_ip), f.server_port, state, cid, ts, f, SCAN_MIN_PORTS, self)
        _add(self._horizontal, (f.client_ip, f.server_port), f.server_ip, state, cid, ts, f, SCAN_MIN_HOSTS, self)

    def forget(self, before: float) -> None:
        """Drop the pairs whose last probe was before ``before`` (watch's window; their slots are free again)."""
        for key in [k for k, p in self._vertical.items() if p.last < before]:
            del self._vertical[key]
        for hkey in [k for k, p in self._horizontal.items() if p.last < before]:
            del self._horizontal[hkey]

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


def _add(table: dict, key: tuple, target: int | bytes, state: int, cid: int, ts: float, f: ConnFacts, threshold: int, det: ScanDetector) -> None:
    p = table.get(key)
    if p is None:
        if len(table) >= CANDIDATE_SLOTS + SCAN_SLOTS:
            # make room: the oldest pair still below the threshold goes (followed pairs stay)
            for k in table:
                if table[k].count() < threshold:
                    del table[k]
                    break
            else:
                det.dropped += 1
                return
        p = table[key] = _Pair(ts, ts, example_frame=f.first_frame)
    elif ts > p.last + SCAN_WINDOW or ts < p.first - SCAN_WINDOW or (not p.confirmed and ts - p.first > SCAN_WINDOW):
        if p.confirmed:
            return  # long after (or before: another file) a scan found: not part of it (one scan per pair)
        p = table[key] = _Pair(ts, ts, example_frame=f.first_frame)  # too slow so far: count again from here
    p.first = min(p.first, ts)
    p.last = max(p.last, ts)
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
    old = p.targets.get(target)
    if old is not None:
        if state > old:
            p.targets[target] = state
    elif len(p.targets) < TARGETS_EXACT:
        p.targets[target] = state
    else:
        p.extra[state] = p.extra.get(state, 0) + 1
    if p.count() >= threshold:
        p.confirmed = True


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
