"""Probe verdicts that come from data, not from text edited after the verdict (root; namespaces).

Lab as in tests/test_probe_live.py (synscope.lab.demo.build_lab), under its own prefix.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synscope.lab.demo import CLOSED_PORT, DROPPED_PORT
from tests.livelib import lab_in_sandbox

pytestmark = pytest.mark.live

FAST = ["--timeout", "0.2", "--retries", "2"]


@pytest.fixture(scope="module")
def lab():
    yield from lab_in_sandbox("sv1")


def probe(lab, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.sb.run(lab.topo.client, [sys.executable, "-m", "synscope", "probe", *args], check=False, timeout=60)


def test_count_rounds_on_a_closed_port_are_not_application_retries(lab) -> None:
    """--count 2 sends two rounds from two source ports: neither the JSON (retry_of) nor the
    text may call round 2 a retry by the application; each says which round it is."""
    proc = probe(lab, lab.topo.server_ip, "-p", str(CLOSED_PORT), "--count", "2", *FAST, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    [obj] = [json.loads(line) for line in proc.stdout.splitlines()]
    conns = obj["connections"]
    assert [c["outcome"] for c in conns] == ["refused", "refused"]
    assert [c["retry_of"] for c in conns] == [None, None]
    assert all("retry #" not in c["verdict"] for c in conns)
    assert all(c["confidence"] == "certain" and c["rule"] == "refused" for c in conns)
    text = probe(lab, lab.topo.server_ip, "-p", str(CLOSED_PORT), "--count", "2", *FAST, "--all").stdout
    assert "by the application" not in text
    assert "(Round 1 of 2 of --count.)" in text and "(Round 2 of 2 of --count.)" in text


def test_raw_probe_has_no_client_socket(lab) -> None:
    """A crafted SYN had no socket behind it: no client end state is claimed for it."""
    proc = probe(lab, lab.topo.server_ip, "-p", str(CLOSED_PORT), *FAST, "--json")
    [obj] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [c["client_state"] for c in obj["connections"]] == ["none"]
    text = probe(lab, lab.topo.server_ip, "-p", str(CLOSED_PORT), *FAST).stdout
    assert "End states: client none (raw probe: no socket)" in text and "client SYN-SENT" not in text


def test_silent_port_of_a_host_that_answered_is_not_called_down(lab) -> None:
    """The lab drops tcp/8443 on the server and nothing listens on 9090: the RST from 9090 shows
    the host is up, so the silent port is a firewall, not 'the host is down'."""
    proc = probe(lab, lab.topo.server_ip, "-p", f"{CLOSED_PORT},{DROPPED_PORT}", *FAST, "--json")
    objs = {o["port"]: o for o in map(json.loads, proc.stdout.splitlines())}
    [silent] = objs[DROPPED_PORT]["connections"]
    assert silent["outcome"] == "no-answer"
    assert "host is down" not in silent["verdict"] and "check the host is up" not in silent["next_step"]
    assert "answered on another port in this run" in silent["verdict"]
    alone = probe(lab, lab.topo.server_ip, "-p", str(DROPPED_PORT), *FAST, "--json")
    [conn] = json.loads(alone.stdout)["connections"]
    assert "or the host is down" in conn["verdict"]  # alone, silence cannot tell
