"""``synscope demo``: runs end to end, explains every case, and leaves no namespace behind (root; CI runs it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from synscope.core.exit_codes import ExitCode
from synscope.lab import sandbox
from synscope.lab.demo import DEMO_PREFIX

pytestmark = pytest.mark.live


def _namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


@pytest.fixture(autouse=True)
def _root() -> None:
    why = sandbox.available()
    if why:
        pytest.skip(why)


def test_demo_runs_explains_and_cleans_up() -> None:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "synscope", "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - started
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # every case is named, with what synscope says about it
    for text in (
        "8080  open      syn-ack",
        "9090  closed    reset",
        "8443  filtered  no-response",
        "8444  filtered  admin-prohibited  198.18.1.1",
        "ICMP 3/13 from a router one hop out",
        "exponential backoff",
        "round-trip min/avg/max/stddev",
        "the server ends in TIME-WAIT",
        "EHOSTUNREACH",
    ):
        assert text in out, text
    assert out.count("== ") == 4
    assert took < 45
    assert not _namespaces(f"{DEMO_PREFIX}{proc.pid}-")


def _lab_servers() -> set[int]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in ps.splitlines()[1:] if "synscope.lab.demo serve" in line}


def test_demo_removes_its_lab_on_sigterm() -> None:
    before = _lab_servers()
    proc = subprocess.Popen([sys.executable, "-m", "synscope", "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prefix = f"{DEMO_PREFIX}{proc.pid}-"
    try:
        deadline = time.monotonic() + 20
        while len(_namespaces(prefix)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _namespaces(prefix), "the demo never built its lab"
        time.sleep(0.5)  # mid-build or mid-step
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INTERRUPTED
    assert "Traceback" not in err and "removed" in err
    assert not _namespaces(prefix)
    # and no process of the lab survives (its server runs `python3 -m synscope.lab.demo serve`)
    assert not _lab_servers() - before
