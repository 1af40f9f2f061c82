"""Dead peers found by keep-alive: connections whose keep-alive probes went unanswered until the
prober's kernel dropped them, grouped per silent peer.

Definition. A connection with the per-connection verdict ``keepalive-timeout`` (one side's
keep-alive probes got no answer, then that side reset the connection: its application got
ETIMEDOUT) counts for the peer that went silent. Each silent peer (an address, on the server or
the client side) with at least :data:`MIN_CONNS` such connections is a *dead-peer-keepalive* finding: how many connections
died this way, the probes seen and their interval (``tcp_keepalive_intvl``,
``tcp_keepalive_probes``), when the peer was last heard. The packets cannot tell a host that is
down from a path (a stateful firewall or NAT) that forgot the flow. Confidence ``certain``
(the probes and the reset are in the capture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_ip
from synscope.read.evidence import CERTAIN, Evidence
from synscope.read.findings.model import MAX_IDS, SEVERITY_PORTS, ConnFacts, Finding

NAME: Final = "dead-peer-keepalive"
# Connections per peer that make a finding (one is enough: its application got ETIMEDOUT)
MIN_CONNS: Final = 1
# Peers followed at once (connections beyond are counted as `ungrouped`)
PEER_SLOTS: Final = 1024


@dataclass
class _Peer:
    silent_first: float
    silent_last: float
    end: float
    count: int = 0
    ids: list[int] = field(default_factory=list)
    probes_min: int = 0
    probes_max: int = 0
    interval_min: float = -1.0
    interval_max: float = 0.0
    others: set[bytes] = field(default_factory=set)  # the probers (up to MAX_IDS)
    other_count: int = 0
    ports: list[int] = field(default_factory=list)  # the services' ports (up to MAX_IDS)
    silent_for_min: float = -1.0  # last heard to the reset, per connection
    silent_for_max: float = 0.0
    frames: tuple[int, ...] = ()
    server_ip: bytes = b""


class DeadPeerDetector:
    """Keep-alive deaths per silent peer, in bounded memory."""

    def __init__(self, slots: int = PEER_SLOTS) -> None:
        self.slots = slots
        self._peers: dict[tuple[bytes, bool], _Peer] = {}
        self.ungrouped = 0

    def add(self, cid: int, f: ConnFacts) -> None:
        """Take one connection into account."""
        if f.rule != "keepalive-timeout" or f.keepalive_probes <= 0:
            return
        peer_is_server = f.prober_is_client
        peer = f.server_ip if peer_is_server else f.client_ip
        prober = f.client_ip if peer_is_server else f.server_ip
        key = (peer, peer_is_server)
        silent = f.silent_since if f.silent_since >= 0 else f.first_ts
        p = self._peers.get(key)
        if p is None:
            if len(self._peers) >= self.slots:
                self.ungrouped += 1
                return
            p = _Peer(silent, silent, f.last_ts, probes_min=f.keepalive_probes, frames=f.probe_frames, server_ip=f.server_ip)
            self._peers[key] = p
        p.silent_first = min(p.silent_first, silent)
        p.silent_last = max(p.silent_last, silent)
        p.end = max(p.end, f.last_ts)
        p.count += 1
        if len(p.ids) < MAX_IDS:
            p.ids.append(cid)
        p.probes_min = min(p.probes_min, f.keepalive_probes)
        p.probes_max = max(p.probes_max, f.keepalive_probes)
        if f.keepalive_interval >= 0:
            p.interval_min = f.keepalive_interval if p.interval_min < 0 else min(p.interval_min, f.keepalive_interval)
            p.interval_max = max(p.interval_max, f.keepalive_interval)
        silent_for = f.last_ts - silent
        p.silent_for_min = silent_for if p.silent_for_min < 0 else min(p.silent_for_min, silent_for)
        p.silent_for_max = max(p.silent_for_max, silent_for)
        if f.server_port not in p.ports and len(p.ports) < MAX_IDS:
            p.ports.append(f.server_port)
        if prober not in p.others and len(p.others) < MAX_IDS:
            p.others.add(prober)
            p.other_count += 1

    def forget(self, before: float) -> None:
        """Drop the peers whose last connection ended before ``before`` (watch's window)."""
        for key in [k for k, p in self._peers.items() if p.end < before]:
            del self._peers[key]

    def findings(self) -> list[Finding]:
        """Every silent peer with at least MIN_CONNS connections dropped by keep-alive."""
        return [_finding(k, p) for k, p in self._peers.items() if p.count >= MIN_CONNS]


def _range(lo: float, hi: float, unit: str = "") -> str:
    if unit:
        return fmt.duration(lo) if hi - lo < 0.05 else f"{fmt.duration(lo)}–{fmt.duration(hi)}"
    return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def _finding(key: tuple[bytes, bool], p: _Peer) -> Finding:
    peer_ip, peer_is_server = key
    peer = fmt_ip(peer_ip)
    server = fmt_ip(p.server_ip)
    port = p.ports[0]
    ports = ", ".join(str(x) for x in sorted(p.ports)[:5]) + (", …" if len(p.ports) > 5 else "")
    where = f"[{server}]" if ":" in server else server
    where += f":{port}" if len(p.ports) == 1 else f" (ports {ports})"
    prober = "client" if peer_is_server else "server"
    conns = "1 connection" if p.count == 1 else f"{p.count} connections"
    verdict = (
        f"{conns} to {where} died because {peer} ({'the server' if peer_is_server else 'the client'}) went silent: "
        f"the {prober}'s kernel sent {_range(p.probes_min, p.probes_max)} keep-alive probes "
        f"every {_range(p.interval_min, p.interval_max, 's')}, none was answered, and it reset {'the connection' if p.count == 1 else 'each'} "
        f"(the application got ETIMEDOUT) {_range(p.silent_for_min, p.silent_for_max, 's')} after the peer was last heard."
    )
    next_step = (
        f"Is {peer} up (ping {peer}; ip route get {peer})? If it is, look for a stateful firewall or NAT on the path "
        "that dropped the idle flow (its idle timeout vs. net.ipv4.tcp_keepalive_time); the "
        f"{prober}'s tcp_keepalive_time/intvl/probes decide how soon it notices."
    )
    figures = (
        ("connections", float(p.count)),
        ("probes_min", float(p.probes_min)),
        ("probes_max", float(p.probes_max)),
        ("probe_interval_min", round(p.interval_min, 6)),
        ("probe_interval_max", round(p.interval_max, 6)),
        ("silent_since", round(p.silent_first, 6)),
        ("silent_seconds_min", round(p.silent_for_min, 6)),
        ("silent_seconds_max", round(p.silent_for_max, 6)),
        ("services", float(len(p.ports))),
        ("probers", float(p.other_count)),
    )
    return Finding(
        name=NAME,
        rule=NAME,
        confidence=CERTAIN,
        server_ip=server,
        server_port=port,
        start=p.silent_first,
        end=p.end,
        connections=tuple(sorted(p.ids)),
        connection_count=p.count,
        figures=figures,
        verdict=verdict,
        next_step=next_step,
        evidence=(Evidence(f"connection #{min(p.ids)}: first unanswered probe; the {prober}'s reset", p.frames),),
        severity=SEVERITY_PORTS,
        client_ip=fmt_ip(next(iter(p.others))) if peer_is_server and p.other_count == 1 else (peer if not peer_is_server else None),
    )
