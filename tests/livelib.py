"""Shared pieces of the live tests: the demo lab as a fixture body, and reading a process's line."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator

import pytest

from synscope.lab import sandbox
from synscope.lab.demo import build_lab


def lab_in_sandbox(prefix: str) -> Iterator[object]:
    """Body of a module-scoped fixture: the demo's client/router/server lab, removed afterwards
    (and checked to be gone)."""
    why = sandbox.available()
    if why:
        pytest.skip(why)
    if not shutil.which("nft"):
        pytest.skip("nftables (nft) is not installed")
    sb = sandbox.Sandbox(prefix=prefix)
    try:
        built = build_lab(sb)
        built.sb = sb  # type: ignore[attr-defined]
        yield built
    finally:
        sb.close()
    assert not [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split() if ns.startswith(sb.tag)]


def wait_line(stream, needle: str, timeout: float = 10.0) -> str:
    """The next line of a pipe, which must contain needle (read by a thread: bounded in time)."""
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    assert result and needle in result[0], f"expected {needle!r}, got {result}"
    return result[0]
