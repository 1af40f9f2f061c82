"""The findings stage: every connection goes in, findings come out at the end of the input.

Runs after the verdicts, one way: it reads reports (or, in a split run, the
:class:`~synscope.read.findings.model.ConnFacts` the workers send), keeps bounded state in
each detector and never edits a connection's verdict.

``read`` asks :meth:`FindingsEngine.findings` once, at the end. ``watch`` asks again and
again as connections finish (a finding is printed the moment it is established), so asking
changes nothing: every detector's ``findings()`` is a view of its state, not a close-out; and
:meth:`FindingsEngine.forget` drops what ended before a time, so a watch that runs for days
keeps finding new patterns in bounded memory.
"""

from __future__ import annotations

from synscope.read.findings.accept_queue import AcceptQueueDetector
from synscope.read.findings.churn import ChurnDetector
from synscope.read.findings.failures import FailureGroups
from synscope.read.findings.keepalive import DeadPeerDetector
from synscope.read.findings.model import ConnFacts, Finding, facts_of
from synscope.read.findings.ports import PortExhaustionDetector
from synscope.read.findings.reuse import ReuseDetector
from synscope.read.findings.scan import ScanDetector
from synscope.read.findings.syn_flood import FloodDetector, flood_finding
from synscope.read.pipeline import ConnReport


class FindingsEngine:
    """Feeds every detector; :meth:`findings` gives what they found, worst first."""

    def __init__(self) -> None:
        self.floods = FloodDetector()
        self.accept_queue = AcceptQueueDetector()
        self.failures = FailureGroups()
        self.scans = ScanDetector()
        self.churn = ChurnDetector()
        self.ports = PortExhaustionDetector()
        self.reuse = ReuseDetector()
        self.dead_peers = DeadPeerDetector()

    def feed(self, report: ConnReport) -> None:
        """Take one connection (before its packets are dropped)."""
        self.feed_facts(report.conn.id, facts_of(report))

    def feed_facts(self, cid: int, facts: ConnFacts) -> None:
        """Take one connection as its facts and id (a split run's parent does this)."""
        self.floods.add_facts(facts)
        self.accept_queue.add(cid, facts)
        self.failures.add(cid, facts)
        self.scans.add(cid, facts)
        self.churn.add(cid, facts)
        self.ports.add(cid, facts)
        self.reuse.add(cid, facts)
        self.dead_peers.add(cid, facts)

    def forget(self, before: float) -> None:
        """Drop the state of everything that ended before ``before`` (capture time): watch's window."""
        self.floods.forget(before)
        self.accept_queue.forget(before)
        self.failures.forget(before)
        self.scans.forget(before)
        self.churn.forget(before)
        self.ports.forget(before)
        self.reuse.forget(before)
        self.dead_peers.forget(before)

    def findings(self) -> list[Finding]:
        """Everything found so far, worst first (then most connections, then earliest).

        A view: asking again (after more connections) gives the findings as they stand then."""
        found = [flood_finding(s) for s in self.floods.summaries()]
        flooded = {(f.server_ip, f.server_port) for f in found}
        found += self.accept_queue.findings()
        found += self.scans.findings()
        # the half-open attempts of a flood are the flood, not a group of failures
        found += [f for f in self.failures.findings() if (f.server_ip, f.server_port) not in flooded]
        found += self.ports.findings()
        found += self.reuse.findings()
        found += self.dead_peers.findings()
        found += self.churn.findings()
        found.sort(key=lambda f: (-f.severity, -f.connection_count, f.start))
        return found
