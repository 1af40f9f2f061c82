"""The compiled read path (mypyc, compiled by the install or scripts/build-fast) prints exactly what
the Python sources print, and is never used once a source has changed since it was built.

scripts/test installs synscope (which compiles it) and sets SYNSCOPE_EXPECT_COMPILED=1 wherever a C
compiler and the Python headers are present, so in CI these tests cannot pass by quietly comparing
the Python sources with themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import synscope
from tests.helpers import PCAPS, ROOT, cli, pcap

ALL = sorted(str(p) for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
EXPECTED = os.environ.get("SYNSCOPE_EXPECT_COMPILED") == "1"


def _synscope(*args: str, pure: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SYNSCOPE_PURE"}
    if pure:
        env["SYNSCOPE_PURE"] = "1"
    return cli(*args, timeout=300, env=env)


def test_compiled_build_in_use_where_expected() -> None:
    out = _synscope("--version", pure=False).stdout
    if not EXPECTED:
        pytest.skip(f"compiled read path not expected here ({synscope.COMPILED_STATE})")
    assert "compiled read path: on" in out, out
    where = subprocess.run([sys.executable, "-c", "import synscope.read.tracker as t; print(t.__file__)"], capture_output=True, text=True, cwd=ROOT)
    assert where.stdout.strip().endswith(".so"), where.stdout
    assert "compiled read path: off (SYNSCOPE_PURE is set)" in _synscope("--version", pure=True).stdout


@pytest.mark.parametrize(
    "args",
    [
        ("read", "--json", "--workers", "1", pcap("busy.pcap")),
        ("read", "--json", "--workers", "2", *ALL),
        ("read", "--all", "--stats", "--payload", *ALL),
        ("read", "--workers", "2", "--all", "--stats", *ALL),
        ("read", "--json", "--absolute", "--max-conns", "3", *ALL),
    ],
    ids=["busy-json", "all-json-split", "all-text", "all-text-split", "all-bounded"],
)
def test_same_output_with_and_without_the_compiled_path(args: tuple[str, ...]) -> None:
    if not synscope.COMPILED:
        if EXPECTED:
            pytest.fail(f"the compiled read path was built but is not in use: {synscope.COMPILED_STATE}")
        pytest.skip(f"compiled read path {synscope.COMPILED_STATE}: nothing to compare")
    fast, pure = _synscope(*args, pure=False), _synscope(*args, pure=True)
    assert (fast.returncode, fast.stderr) == (pure.returncode, pure.stderr)
    assert fast.stdout == pure.stdout
    assert len(fast.stdout) > 10_000


def test_changed_source_is_used_instead_of_a_stale_build(tmp_path: Path) -> None:
    """A build older than its source must not shadow it: synscope loads the .py instead."""
    copy = tmp_path / "synscope"
    shutil.copytree(ROOT / "synscope", copy, ignore=shutil.ignore_patterns("*.so", "_compiled.json", "__pycache__"))
    tracker = copy / "read" / "tracker.py"
    # a "compiled" module that would fail to import if it were ever picked
    (copy / "read" / f"tracker{_ext_suffix()}").write_bytes(b"not an extension module")
    digest = hashlib.sha256(tracker.read_bytes()).hexdigest()
    manifest = {"python": sys.version.split()[0], "modules": {"synscope.read.tracker": digest}}
    (copy / "_compiled.json").write_text(json.dumps(manifest))
    code = "import synscope, synscope.read.tracker as t; print(synscope.COMPILED_STATE); print(t.__file__)"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("SYNSCOPE_PURE", None)
    tracker.write_text(tracker.read_text() + "\n# edited after the build\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    state, where = r.stdout.splitlines()
    assert state == "off (synscope.read.tracker changed since it was compiled)"
    assert where == str(tracker)


def _ext_suffix() -> str:
    import importlib.machinery

    return importlib.machinery.EXTENSION_SUFFIXES[0]
