"""Golden text output per bundled capture: what a user sees, reviewed as diffs.

Regenerate after an intended change with:  UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import PCAPS, ROOT, cli

GOLDEN = ROOT / "tests" / "golden"
CAPTURES = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))


@pytest.mark.parametrize("name", CAPTURES)
def test_golden_text(name: str) -> None:
    proc = cli("read", "--all", f"pcaps/{name}")
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout + ("--- stderr ---\n" + proc.stderr if proc.stderr else "")
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(got)
    assert path.exists(), f"no golden file for {name}: run UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py"
    assert got == path.read_text(), f"output for {name} changed; if intended: UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py"
