"""A playbook for the tracker: segments in, connection state out (after mitmproxy's Playbook).

    assert (
        Playbook()
        >> A(SYN, seq=1000)
        << Conn(1, client="A", states=("SYN-SENT", "unknown"))
        >> B(SYN | ACK, seq=5000, ack=1001)
        << Conn(1, client="A", states=("SYN-SENT", "SYN-RECEIVED"))
    )

``A`` and ``B`` are two hosts (198.18.1.2:40000 and 198.18.2.2:80 unless ports are given);
which of them is the client is for the tracker to find out, and for ``Conn`` to check.
Each ``<<`` checks the connection the segment before it went to. A failing playbook raises
with the transcript played so far, so the step that went wrong is in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synscope.core.model import Segment, flag_string
from synscope.core.seqnum import MASK
from synscope.read.tracker import Connection, Tracker

HOSTS = {"A": (bytes([198, 18, 1, 2]), 40000), "B": (bytes([198, 18, 2, 2]), 80)}
STEP = 1 / 128  # default time between events (dyadic: sums and differences stay exact)


@dataclass
class Event:
    """A segment sent by host ``sender`` to the other one."""

    sender: str
    flags: int
    seq: int
    ack: int = 0
    length: int = 0
    t: float | None = None
    options: bytes = b""
    truncated: bool = False
    ports: tuple[int, int] | None = None  # (A's port, B's port), default from HOSTS

    def segment(self, frame: int, t: float) -> Segment:
        other = "B" if self.sender == "A" else "A"
        (src, sport), (dst, dport) = HOSTS[self.sender], HOSTS[other]
        if self.ports is not None:
            sport, dport = self.ports if self.sender == "A" else self.ports[::-1]
        return Segment(
            frame,
            t,
            src,
            dst,
            sport,
            dport,
            self.seq & MASK,
            self.ack & MASK,
            self.flags,
            64000,
            self.length,
            raw_options=self.options,
            truncated=self.truncated,
        )

    def __str__(self) -> str:
        arrow = "A>B" if self.sender == "A" else "B>A"
        return f"{arrow} {flag_string(self.flags)} seq={self.seq} ack={self.ack} len={self.length}"


def A(flags: int, seq: int, ack: int = 0, length: int = 0, **kw: Any) -> Event:
    """A segment from host A."""
    return Event("A", flags, seq, ack, length, **kw)


def B(flags: int, seq: int, ack: int = 0, length: int = 0, **kw: Any) -> Event:
    """A segment from host B."""
    return Event("B", flags, seq, ack, length, **kw)


@dataclass
class Conn:
    """What the tracker should have made of the segment before: the connection it went to.

    ``id`` None: the segment was absorbed (a straggler of a connection already handed on).
    ``client``: which host ("A" or "B") is the client; ``states``: (client, server) RFC 9293
    states; any other keyword names a connection attribute, ``__`` for a dot
    (``client__win_scale=7``).
    """

    id: int | None
    client: str | None = None
    states: tuple[str, str] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, id: int | None, client: str | None = None, states: tuple[str, str] | None = None, **attrs: Any) -> None:
        self.id, self.client, self.states, self.attrs = id, client, states, attrs

    def mismatches(self, conn: Connection | None) -> list[str]:
        """How the connection differs from this expectation (empty: as expected)."""
        if conn is None or self.id is None:
            got = None if conn is None else conn.id
            return [] if got == self.id else [f"connection {got}, expected {self.id}"]
        out = []
        if conn.id != self.id:
            out.append(f"connection {conn.id}, expected {self.id}")
        if self.client is not None:
            who = next((h for h, (ip, _) in HOSTS.items() if ip == conn.client.ip), "?")
            if who != self.client:
                out.append(f"client is {who}, expected {self.client}")
        if self.states is not None:
            got_states = (conn.state_of(conn.client), conn.state_of(conn.server))
            if got_states != self.states:
                out.append(f"states {got_states}, expected {self.states}")
        for name, want in self.attrs.items():
            value: Any = conn
            for part in name.split("__"):
                value = getattr(value, part)
            if value != want:
                out.append(f"{name.replace('__', '.')} = {value!r}, expected {want!r}")
        return out


class Playbook:
    """Events in, expected connection state out, played in order on one Tracker."""

    def __init__(self, tracker: Tracker | None = None) -> None:
        self.tracker = tracker if tracker is not None else Tracker()
        self.steps: list[Event | Conn | float] = []
        # how far the steps were played (a playbook is played on, never replayed), and its state then
        self.played = 0
        self.transcript: list[str] = []
        self.last: Connection | None = None
        self.t = 0.0
        self.frame = 0

    def __rshift__(self, event: Event) -> Playbook:
        self.steps.append(event)
        return self

    def __lshift__(self, expected: Conn) -> Playbook:
        self.steps.append(expected)
        return self

    def sweep(self, now: float) -> Playbook:
        """Let the capture clock reach ``now`` and hand on what is due (as the pipeline's sweeps do)."""
        self.steps.append(now)
        return self

    def __bool__(self) -> bool:
        """Play the steps added since the last time; raise at the first expectation not met."""
        while self.played < len(self.steps):
            step = self.steps[self.played]
            self.played += 1
            if isinstance(step, Event):
                self.frame += 1
                self.t = step.t if step.t is not None else self.t + STEP
                self.last = self.tracker.feed(step.segment(self.frame, self.t))
                self.transcript.append(f">> t={self.t:g} {step}  -> connection {None if self.last is None else self.last.id}")
            elif isinstance(step, Conn):
                wrong = step.mismatches(self.last)
                self.transcript.append(f"<< {step.id} {step.client or ''} {step.states or ''} {step.attrs or ''}")
                if wrong:
                    raise AssertionError("playbook diverged:\n  " + "\n  ".join(self.transcript) + "\n  !! " + "; ".join(wrong))
            else:
                self.tracker.sweep(step)
                self.transcript.append(f"-- sweep at {step}")
        return True

    def connections(self) -> list[Connection]:
        """Every connection, handed on or not, by id (plays what is left first)."""
        assert self
        return sorted(self.tracker.drain(), key=lambda c: c.id)
