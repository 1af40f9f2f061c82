"""What the text view of ``read`` shows: the options its renderers take, in one record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Rows shown before and after each event of a folded timeline (read --context)
DEFAULT_CONTEXT: Final = 3


@dataclass(frozen=True)
class TextView:
    """The text view's choices: numbers, payload, --stats, how much of each timeline, or none."""

    absolute: bool = False  # raw sequence and ack numbers
    payload: bool = False  # a preview of each segment's payload
    stats: bool = False  # the --stats tables
    context: int | None = DEFAULT_CONTEXT  # rows around each event; None: every packet (--all-packets)
    summary_only: bool = False  # header, findings and table only (--summary)
