"""Shared test helpers: run the read pipeline in-process or the CLI as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from synscope.read.pipeline import ConnReport, Pipeline, run
from synscope.read.sources.pcap import open_capture

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"


def pcap(name: str) -> str:
    """Path of a bundled capture."""
    path = PCAPS / name
    assert path.exists(), f"bundled capture {name} missing: run scripts/make-pcaps"
    return str(path)


def analyse(*names: str, **pipeline_options: object) -> list[ConnReport]:
    """Reports for bundled captures, sorted by connection id."""
    return analyse_paths(*(pcap(n) for n in names), **pipeline_options)


def analyse_paths(*paths: str | Path, **pipeline_options: object) -> list[ConnReport]:
    """Reports for captures anywhere (a test's own crafted file), sorted by connection id."""
    pipeline = Pipeline(**pipeline_options)  # type: ignore[arg-type]
    readers = [open_capture(str(p)) for p in paths]
    reports = list(run(((r.path, r) for r in readers), pipeline))
    return sorted(reports, key=lambda r: r.conn.id)


def cli(*args: str, input: bytes | None = None, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``synscope ARGS`` in a subprocess, as a user would (``env``: its whole environment)."""
    proc = subprocess.run([sys.executable, "-m", "synscope", *args], input=input, capture_output=True, timeout=timeout, cwd=ROOT, env=env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
