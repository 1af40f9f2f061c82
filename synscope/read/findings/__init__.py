"""Findings across connections: SYN flood, accept-queue overflow, repeated failures, port
exhaustion, port reuse in TIME-WAIT, dead peers under keep-alive, no connection reuse (see engine)."""

from synscope.read.findings.engine import FindingsEngine
from synscope.read.findings.model import ConnFacts, Finding, facts_of

__all__ = ["ConnFacts", "Finding", "FindingsEngine", "facts_of"]
