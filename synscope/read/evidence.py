"""What a verdict's cause rests on: facts from the packets, and how sure the cause is.

Every causal sentence of a verdict comes from a named rule (``Verdict.rule``) with the facts that
triggered it (``Evidence``: a short fact and the frame numbers that show it) and a confidence:

- ``certain``: the packets prove it (an RST from the server to the SYN; an ICMP error quoting the SYN);
- ``likely``: the packets point to it and nothing seen contradicts it, but another cause could
  leave the same trace (silence after SYNs: a DROP rule, or a host that is down);
- ``possible``: one of several causes the packets cannot tell apart; the renderers say so
  ("cannot tell from this capture").

The renderers word the confidence; the JSON carries it as ``"confidence"`` and the facts as
``"evidence"`` next to ``"verdict"``.
"""

from __future__ import annotations

from typing import Final

CERTAIN: Final = "certain"
LIKELY: Final = "likely"
POSSIBLE: Final = "possible"
CONFIDENCES: Final = (CERTAIN, LIKELY, POSSIBLE)


class Evidence:
    """One fact a verdict rests on, with the frames (numbers in the capture file) that show it."""

    __slots__ = ("fact", "frames")

    def __init__(self, fact: str, frames: tuple[int, ...] = ()) -> None:
        self.fact = fact
        self.frames = frames

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Evidence) and other.fact == self.fact and other.frames == self.frames

    def __hash__(self) -> int:
        return hash((self.fact, self.frames))

    def __repr__(self) -> str:
        return f"Evidence({self.fact!r}, {self.frames!r})"


def hedge(confidence: str) -> str:
    """The words that open a causal sentence of this confidence ("" for certain)."""
    if confidence == LIKELY:
        return "Likely: "
    if confidence == POSSIBLE:
        return "Possible causes (the capture cannot tell which): "
    return ""


def weakest(*levels: str) -> str:
    """The least sure of several confidences (a chain of inferences is as sure as its weakest link)."""
    worst = CERTAIN
    for level in levels:
        if CONFIDENCES.index(level) > CONFIDENCES.index(worst):
            worst = level
    return worst
