"""Repeated failures: the same failure at the same service becomes one finding.

Definition. Connection attempts that failed before they were established (refused,
no answer, killed by an ICMP error) with the same outcome, to the same server endpoint, and
(for ICMP) from the same sender, are one *repeated-failure* group: how many, from how many
clients, first and last time, one example connection. Whether an attempt was the
application retrying the one before is a per-connection link (``retry_of``, see
``synscope.read.pipeline.RetryLinker``); a group makes no such claim: independent failures
are a group, not a chain.

The confidence is the per-connection one: the packets prove each failure (``certain``)
except silence, which is ``likely`` (dropped on the way, or the host is down).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.read.evidence import CERTAIN, LIKELY, Evidence
from synscope.read.findings.model import MAX_IDS, SEVERITY_FAILURES, ConnFacts, Finding

# Failures with the same key that make a group
MIN_GROUP: Final = 2
# Groups followed at once (attempts beyond are counted as `ungrouped`)
GROUP_SLOTS: Final = 1024
# Distinct clients counted exactly up to this many (then "at least")
MAX_CLIENTS: Final = 4096

_WHAT: Final = {
    "refused": "refused (RST to the SYN)",
    "no-answer": "not answered (SYNs, nothing back)",
    "icmp-prohibited": "rejected by an ICMP administratively-prohibited error",
    "icmp-unreachable": "stopped by an ICMP unreachable error",
    "icmp-time-exceeded": "stopped by an ICMP time-exceeded error (TTL ran out)",
}


@dataclass
class _Group:
    first: float
    last: float
    count: int = 0
    ids: list[int] = field(default_factory=list)
    clients: set[bytes] = field(default_factory=set)
    example_frame: int = 0


def failed_before_established(f: ConnFacts) -> bool:
    """An attempt that went wrong before it was ever established."""
    return not f.ok and not f.established and f.client_syns > 0


class FailureGroups:
    """Groups of the same failure at the same service, in bounded memory."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, bytes, int, bytes], _Group] = {}
        self.ungrouped = 0

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection into account."""
        if not failed_before_established(f) or f.scan:  # (a scan's probes are the port-scan finding)
            return
        key = (f.outcome, f.server_ip, f.server_port, f.icmp_from)
        ts = f.syn_ts if f.syn_ts is not None else f.first_ts
        g = self._groups.get(key)
        if g is None:
            if len(self._groups) >= GROUP_SLOTS:
                self.ungrouped += 1
                return
            g = _Group(ts, ts, example_frame=f.first_frame)
            self._groups[key] = g
        g.first = min(g.first, ts)
        g.last = max(g.last, ts)
        g.count += 1
        if len(g.ids) < MAX_IDS:
            g.ids.append(cid)
        if len(g.clients) < MAX_CLIENTS:
            g.clients.add(f.client_ip)

    def forget(self, before: float) -> None:
        """Drop the groups whose last failure was before ``before`` (their slots are free again)."""
        for key in [k for k, g in self._groups.items() if g.last < before]:
            del self._groups[key]

    def findings(self) -> list[Finding]:
        """Every group of at least MIN_GROUP failures (a view: the groups go on growing)."""
        return [_finding(key, g) for key, g in self._groups.items() if g.count >= MIN_GROUP]


def _finding(key: tuple[str, bytes, int, bytes], g: _Group) -> Finding:
    outcome, ip, port, icmp_from = key
    server = fmt_ip(ip)
    where = fmt_endpoint(ip, port)
    clients = len(g.clients)
    what = _WHAT.get(outcome, outcome)
    sender = f" from {fmt_ip(icmp_from)}" if icmp_from else ""
    verdict = f"{g.count} connection attempts to {where} {what}{sender}, from {'one client' if clients == 1 else f'{clients} clients'}."
    if outcome == "refused":
        next_step = f"Nothing listens on port {port} of {server}: check the service is running and bound there (ss -lntp | grep :{port} on {server})."
    elif outcome == "no-answer":
        next_step = f"Packets to {where} are dropped on the way or the host is down: look for DROP rules for port {port}; nc -vz {server} {port} from closer."
    elif icmp_from:
        next_step = f"Check the filter or route on {fmt_ip(icmp_from)} for {where}."
    else:
        next_step = f"See connection #{g.ids[0]} for the details."
    return Finding(
        name="repeated-failure",
        rule=f"repeated-{outcome}",
        confidence=LIKELY if outcome == "no-answer" else CERTAIN,
        server_ip=server,
        server_port=port,
        start=g.first,
        end=g.last,
        connections=tuple(sorted(g.ids)),
        connection_count=g.count,
        figures=(("clients", float(clients)),),
        verdict=verdict,
        next_step=next_step,
        evidence=(Evidence(f"connection #{g.ids[0]}: {outcome}", (g.example_frame,)),),
        severity=SEVERITY_FAILURES,
        client_ip=fmt_ip(next(iter(g.clients))) if clients == 1 else None,
    )
