"""Relative sequence / ack numbers and the scaled window: one definition (synscope.core.seqnum),
the same numbers in the text timeline, in ``--json`` and in tshark's ``tcp.seq`` / ``tcp.ack`` /
``tcp.window_size``.

The text view used to show 0 as the ack of a segment without the ACK flag where ``--json`` (and
tshark) show the field's raw value; a segment with a nonzero ack and no ACK flag is broken or
crafted, and hiding it behind a 0 hides the very thing to look at.
"""

from __future__ import annotations

import io
import json
import subprocess

import pytest

from synscope.read.jsonl import connection_line, connection_object
from synscope.read.pipeline import ConnReport
from synscope.read.tracker import stale_ack_reset
from synscope.render.text import write_timeline
from tests.craft import ACK, RST, SYN, PcapWriter, ether, ipv4_tcp, tcp_options
from tests.helpers import PCAPS, analyse
from tests.oracle import have_tshark

CAPTURES = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
ARROWS = ("→", "←")

Numbers = tuple[int, str, int, int, int]  # frame, flags, seq, ack, window


def text_numbers(r: ConnReport, absolute: bool) -> list[Numbers]:
    """(frame, flags, seq, ack, win) of each packet row of the text timeline (every packet), in its order."""
    out = io.StringIO()
    write_timeline(r, out, absolute=absolute, context=None)
    rows = []
    for line in out.getvalue().splitlines()[1:]:
        parts = line.split()
        arrow = next((i for i, p in enumerate(parts) if p in ARROWS), None)
        if arrow is None or parts[arrow + 1] == "ICMP":
            continue  # the "… packets not kept" and "Headers only" lines, ICMP errors
        flags, seq, ack, _length, win = parts[arrow + 1 : arrow + 6]
        rows.append((int(parts[0]), flags, int(seq), int(ack), int(win)))
    return rows


def json_numbers(r: ConnReport, absolute: bool) -> list[Numbers]:
    """The same from the JSON line, in the timeline's order (capture time, then frame)."""
    packets = json.loads(connection_line(r, absolute))["packets"]
    assert packets == connection_object(r, absolute)["packets"]  # the fast writer and the object agree
    packets.sort(key=lambda p: (p["t"], p["frame"]))
    return [(p["frame"], p["flags"], p["seq"], p["ack"], p["win"]) for p in packets]


def tshark_numbers(path: str) -> dict[int, tuple[int, int, int]]:
    """frame → (tcp.seq, tcp.ack, tcp.window_size), relative numbers as tshark shows them."""
    cmd = ["tshark", "-n", "-r", path, "-Y", "tcp", "-T", "fields", "-e", "frame.number", "-e", "tcp.seq", "-e", "tcp.ack", "-e", "tcp.window_size"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    return {int(f): (int(s), int(a or 0), int(w)) for f, s, a, w in (line.split("\t") for line in out.splitlines())}


def assert_views_agree(reports: list[ConnReport], tshark: dict[int, tuple[int, int, int]] | None) -> int:
    """Text and JSON show the same numbers, relative and absolute, and tshark's relative ones."""
    checked = 0
    for r in reports:
        for absolute in (False, True):
            assert text_numbers(r, absolute) == json_numbers(r, absolute), f"#{r.conn.id} absolute={absolute}"
        if tshark is None:
            continue
        # without both SYNs the window scale is unknown: synscope shows the raw window, tshark
        # scales it by the one SYN it saw (docs/tshark-divergences.md)
        scale_known = r.conn.client.syn_count > 0 and r.conn.server.syn_count > 0
        # the server's ACK for an earlier attempt, before this connection's SYN-ACK: tshark bases the
        # server's relative numbers on it, synscope on the SYN-ACK (docs/tshark-divergences.md)
        stale = stale_ack_reset(r.conn)
        for p in json.loads(connection_line(r))["packets"]:
            if stale is not None and p["frame"] == stale[0].seg.frame:
                continue
            want = tshark[p["frame"]] if scale_known else tshark[p["frame"]][:2]
            got = (p["seq"], p["ack"], p["win"]) if scale_known else (p["seq"], p["ack"])
            assert got == want, f"#{r.conn.id} frame {p['frame']} ({p['flags']})"
            checked += 1
    return checked


@pytest.mark.parametrize("name", CAPTURES)
def test_text_json_and_tshark_show_the_same_numbers(name: str) -> None:
    tshark = tshark_numbers(str(PCAPS / name)) if have_tshark() else None
    reports = analyse(name)
    assert reports
    assert_views_agree(reports, tshark)


def test_an_ack_field_without_the_ack_flag_is_shown_raw_everywhere(tmp_path) -> None:
    """SYN and RST carrying a nonzero ack field without ACK (crafted): every view shows the field
    as it is, as tshark does, not 0 in one view and the raw value in another."""
    c, s = "198.18.0.2", "198.18.1.2"
    path = tmp_path / "ack-field.pcap"
    with path.open("wb") as f:
        w = PcapWriter(f)
        w.write(1e9, ether(ipv4_tcp(c, s, 40000, 80, 1000, 5555, SYN, options=tcp_options(wscale=7))))
        w.write(1e9 + 0.01, ether(ipv4_tcp(s, c, 80, 40000, 9000, 1001, SYN | ACK, options=tcp_options(wscale=7))))
        w.write(1e9 + 0.02, ether(ipv4_tcp(c, s, 40000, 80, 1001, 9001, ACK, win=502)))
        w.write(1e9 + 0.03, ether(ipv4_tcp(c, s, 40000, 80, 1001, 9777, RST, win=0)))
    from synscope.read.pipeline import Pipeline, run
    from synscope.read.sources.pcap import open_capture

    reader = open_capture(str(path))
    reports = list(run([(reader.path, reader)], Pipeline()))
    assert [n[3] for n in text_numbers(reports[0], False)] == [5555, 1, 1, 9777]
    assert [n[4] for n in text_numbers(reports[0], False)] == [64240, 64240, 502 << 7, 0]
    assert_views_agree(reports, tshark_numbers(str(path)) if have_tshark() else None)
