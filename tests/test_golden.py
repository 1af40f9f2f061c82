"""Golden output per bundled capture: what a user sees, reviewed as diffs.

Two per capture: the text report (``read --all``, NAME.txt: timelines folded around their
events, as a user sees them) and the JSON Lines (``read --json``, NAME.jsonl), compared byte
for byte. Captures whose golden is about every packet's numbers are read with --all-packets.

Regenerate after an intended change with:  UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import PCAPS, ROOT, cli

GOLDEN = ROOT / "tests" / "golden"
CAPTURES = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
REGENERATE = "UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py"
# their text golden shows every packet: the point is each row's numbers (the sequence wrap)
ALL_PACKETS = frozenset({"wraparound.pcap"})


def _check(name: str, path: Path, got: str, explain: str = "") -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert path.exists(), f"no golden file for {name}: run {REGENERATE}"
    assert got == path.read_text(), f"output for {name} changed{explain}; if intended: {REGENERATE}"


@pytest.mark.parametrize("name", CAPTURES)
def test_golden_text(name: str) -> None:
    proc = cli("read", "--all", *(["--all-packets"] if name in ALL_PACKETS else []), f"pcaps/{name}")
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout + ("--- stderr ---\n" + proc.stderr if proc.stderr else "")
    _check(name, GOLDEN / f"{name}.txt", got)


def _json_changes(got: str, want: str) -> str:
    """Which connections and keys differ: a JSON line is too long to read in a plain diff."""
    old, new = want.splitlines(), got.splitlines()
    if len(old) != len(new):
        return f" ({len(new)} lines, golden has {len(old)})"
    changes = []
    for number, (a, b) in enumerate(zip(old, new, strict=True), 1):
        if a == b:
            continue
        try:
            before, after = json.loads(a), json.loads(b)
        except ValueError:
            changes.append(f"line {number}: not JSON")
            continue
        keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)) or ["(same values, other text)"]
        changes.append(f"line {number} (id {after.get('id')}): {', '.join(keys)}")
    return ": " + "; ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")


@pytest.mark.parametrize("name", CAPTURES)
def test_golden_json(name: str) -> None:
    proc = cli("read", "--json", f"pcaps/{name}")
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout + ("--- stderr ---\n" + proc.stderr if proc.stderr else "")
    path = GOLDEN / f"{name}.jsonl"
    want = path.read_text() if path.exists() else ""
    _check(name, path, got, _json_changes(got, want) if want and got != want else "")
