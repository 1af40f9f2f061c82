"""Invalid capture timestamps must not become RTTs (issue 14, item 17).

CRAFTED captures (built byte by byte by tests/craft.py; pcap record times are the capture tool's, so
a kernel cannot be made to write them): a well-behaved connection whose record times jump forward by
1 s for one packet and come back. Without the check, a 1 s "RTT" comes out of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from synscope.read.jsonl import connection_object
from synscope.read.pipeline import ConnReport
from tests import craft
from tests.helpers import analyse_paths, cli

T0 = 1_700_000_000.0
JUMP = 1.0


def _write(path: Path, jumped: int) -> Path:
    """CRAFTED: craft.conversation (10 packets, 5 ms apart) with packet index ``jumped`` stamped
    JUMP later than it was (the clock jumped forward for it and came back)."""
    frames = craft.conversation("198.18.1.2", "198.18.2.2", 40000, 80, T0, rtt=0.01)
    out = craft.pcap_header()
    for i, (t, frame) in enumerate(frames):
        t += JUMP if i == jumped else 0.0
        sec = int(t)
        out += craft.pcap_record(sec, round((t - sec) * 1e6), frame)
    path.write_bytes(out)
    return path


def _report(path: Path) -> ConnReport:
    [r] = analyse_paths(path)
    return r


def test_jumped_synack_gives_no_server_leg(tmp_path: Path) -> None:
    """SYN-ACK stamped 1 s late, the ACK after it back on time: SYN→SYN-ACK would read 1.005 s."""
    r = _report(_write(tmp_path / "x.pcap", 1))
    c = r.conn
    assert c.server_leg is None and c.client_leg is None
    assert c.handshake_rtt is not None and c.handshake_rtt < 0.1  # SYN and ACK are both on time
    v = r.verdict
    assert "The capture's clock went backwards at frame #3" in v.explanation
    assert "capture clock went backwards" in v.summary
    obj = connection_object(r)
    assert obj["handshake_rtt_server_leg"] is None


def test_jumped_ack_gives_no_rtt_sample(tmp_path: Path) -> None:
    """The server's ACK of the request stamped 1 s late, the next packet back on time: the client's
    request → that ACK would be a 1.005 s RTT sample; it is dropped, the handshake stays."""
    r = _report(_write(tmp_path / "x.pcap", 4))
    fc = r.analysis.facts[0]
    assert all(s < 0.1 for s in fc.rtt_samples), fc.rtt_samples
    assert r.conn.handshake_rtt is not None and r.conn.handshake_rtt < 0.1
    assert "went backwards at frame #6" in r.verdict.explanation
    rtt = connection_object(r)["c2s"]["rtt"]
    assert rtt is None or rtt["max"] < 0.1


def test_on_time_capture_says_nothing(tmp_path: Path) -> None:
    """The same conversation with no jump: no clock note, the figures are there."""
    r = _report(_write(tmp_path / "x.pcap", -1))
    assert r.analysis.clock_steps == 0
    assert r.conn.server_leg is not None and "clock" not in r.verdict.explanation


def test_cli_json_withholds(tmp_path: Path) -> None:
    """End to end: the JSON line has no 1 s figure anywhere."""
    p = _write(tmp_path / "x.pcap", 1)
    proc = cli("read", "--json", str(p))
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout.splitlines()[0])
    assert obj["handshake_rtt_server_leg"] is None and obj["handshake_rtt"] < 0.1
