"""Findings while ``watch`` runs: each one printed the moment it is established, once.

Every connection the watcher prints goes to the same
:class:`~synscope.read.findings.FindingsEngine` that ``read`` uses (one definition of each
detector). :meth:`LiveFindings.poll` asks the engine what it finds as things stand and
tells what is new since the last time: a finding not printed before (``new``), or one printed
whose connection count has since grown :data:`UPDATE_FACTOR` times (``more``: at most about
log2(N) such lines for N connections, however long it goes on). What ended more than
:data:`FINDINGS_WINDOW` seconds (capture time) before the latest connection is forgotten, by
the engine and here, so a watch that runs for days stays in bounded memory and a pattern that
comes back after a quiet window is a new finding.

A finding is recognised across asks by its name, rule, server and first evidence frames (the
example connection a group or period was opened with): a new group, a new period at the same
listener, is a new finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from synscope.read.findings import Finding, FindingsEngine
from synscope.read.pipeline import ConnReport

# Seconds (capture time) after its end that a finding, and the state behind it, is kept
FINDINGS_WINDOW: Final = 3600.0
# A printed finding is printed again ("still going") when its connection count has grown this many times
UPDATE_FACTOR: Final = 2
# Capture seconds between forgets as connections come in (also done at every poll)
FORGET_STEP: Final = 60.0
# Wall-clock seconds at least between asks of the engine while watching (asked only after
# connections finished: a finding is printed with the connection that established it)
FINDINGS_EVERY: Final = 0.1

NEW: Final = "new"
MORE: Final = "more"

Key = tuple[str, str, str, int, tuple[int, ...]]


def finding_key(f: Finding) -> Key:
    """What names one finding from one ask to the next."""
    first = f.evidence[0].frames if f.evidence else ()
    return (f.name, f.rule, f.server_ip, f.server_port, tuple(first))


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """A finding to print now: ``kind`` is :data:`NEW` or :data:`MORE` (``before``: the count printed last)."""

    kind: str
    finding: Finding
    before: int = 0


class LiveFindings:
    """The findings stage of a watch: feed finished connections, poll for what to print."""

    def __init__(self, window: float = FINDINGS_WINDOW) -> None:
        self.engine = FindingsEngine()
        self.window = window
        self.first_ts: float | None = None
        self.latest_ts: float | None = None
        self._shown: dict[Key, Finding] = {}  # as last printed
        self._counted: dict[Key, int] = {}  # connection count that triggers the next "more" line
        self._ends: dict[Key, float] = {}  # latest end seen of each printed finding
        self._forgot_at = float("-inf")

    def feed(self, report: ConnReport) -> None:
        """Take one finished (or, at exit, still open) connection, before its packets are dropped."""
        c = report.conn
        if self.first_ts is None or c.first_ts < self.first_ts:
            self.first_ts = c.first_ts
        if self.latest_ts is None or c.last_ts > self.latest_ts:
            self.latest_ts = c.last_ts
            if self.latest_ts - self._forgot_at >= min(FORGET_STEP, self.window / 10):
                self._forget()  # before this connection joins a group that ended a window ago
        self.engine.feed(report)

    def current(self) -> list[Finding]:
        """Everything found and not yet forgotten, worst first."""
        self._forget()
        return self.engine.findings()

    def poll(self) -> list[LiveEvent]:
        """The findings established since the last poll, and those that grew materially."""
        events: list[LiveEvent] = []
        for f in self.current():
            key = finding_key(f)
            shown = self._shown.get(key)
            self._ends[key] = f.end
            if shown is None:
                events.append(LiveEvent(NEW, f))
            elif f.connection_count >= self._counted[key]:
                events.append(LiveEvent(MORE, f, shown.connection_count))
            else:
                continue
            self._shown[key] = f
            self._counted[key] = max(f.connection_count * UPDATE_FACTOR, f.connection_count + 1)
        return events

    def changed(self) -> list[Finding]:
        """At exit: the findings whose figures differ from what was printed last (new ones included)."""
        out = []
        for f in self.current():
            key = finding_key(f)
            if self._shown.get(key) != f:
                out.append(f)
                self._shown[key] = f
                self._counted[key] = f.connection_count * UPDATE_FACTOR
                self._ends[key] = f.end
        return out

    def _forget(self) -> None:
        if self.latest_ts is None:
            return
        self._forgot_at = self.latest_ts
        before = self.latest_ts - self.window
        self.engine.forget(before)
        for key in [k for k, end in self._ends.items() if end < before]:
            del self._shown[key], self._counted[key], self._ends[key]
