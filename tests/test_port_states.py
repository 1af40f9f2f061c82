"""Port states (open / closed / filtered / unknown) and their order: one definition
(synscope.probe.classify.PORT_STATES) that the classifier, the aggregation over rounds, the
result totals and both exit-code paths (a scan and ``--connect``) follow."""

from __future__ import annotations

import io
import itertools
from types import SimpleNamespace

import pytest

from synscope.core.exit_codes import ExitCode
from synscope.probe.classify import (
    CLOSED,
    FILTERED,
    OPEN,
    PORT_STATES,
    UNKNOWN,
    PortResult,
    Reply,
    Round,
    Try,
    aggregate,
    exit_code,
    states_exit_code,
)
from synscope.render.probe import write_footer


def _round(n: int, state: str) -> Round:
    """A finished round that ended in ``state`` (FILTERED: silent after its tries)."""
    rd = Round(n, 40000 + n, 1000, [Try(None, 0.0, float(n))])
    if state == FILTERED:
        rd.gave_up = True
    else:
        rd.reply = Reply(state, "x", b"\x01\x02\x03\x04", float(n) + 0.001, n, 64)
    return rd


def _result(state: str) -> PortResult:
    return PortResult(8080, state, "x", None, None, 1, None, [])


def test_the_best_state_of_any_round_wins_in_the_defined_order() -> None:
    """open beats closed beats filtered (as nmap decides), whatever the order of the rounds."""
    answered = [s for s in PORT_STATES if s != UNKNOWN]
    assert answered == [OPEN, CLOSED, FILTERED]
    for a, b in itertools.permutations(answered, 2):
        best = min(a, b, key=PORT_STATES.index)
        assert aggregate(8080, [_round(0, a), _round(1, b)]).state == best


def test_totals_name_every_state_in_the_defined_order() -> None:
    """The footer of probe counts every state there is, none left out, in PORT_STATES order."""
    results = [_result(s) for s in PORT_STATES for _ in range(PORT_STATES.index(s) + 1)]
    outcome = SimpleNamespace(results=results, elapsed=1.0, frames=0, rsts_sent=0, config=SimpleNamespace(write=None), interrupted=False)
    out = io.StringIO()
    write_footer(outcome, out)
    want = ", ".join(f"{i + 1} {s}" for i, s in enumerate(PORT_STATES))
    assert out.getvalue().startswith(want + " in ")


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ([OPEN], ExitCode.OK),
        ([CLOSED], ExitCode.CLOSED),
        ([FILTERED], ExitCode.FILTERED),
        ([OPEN, CLOSED], ExitCode.CLOSED),
        ([CLOSED, FILTERED, OPEN], ExitCode.FILTERED),
    ],
)
def test_exit_code_of_a_scan_and_of_connect_agree(states: list[str], code: ExitCode) -> None:
    """A scan (``exit_code``) and ``--connect`` (its one port) give the documented status."""
    assert exit_code([_result(s) for s in states]) == code
    assert states_exit_code(states) == code
