"""Verdict branches that rested on one assumption (issue 14), against captures whose truth says
what the applications did: upload-sink (an upload to a sink is not a slow server; a request a
server never answers still is) and half-close-open (one answer after a FIN is not a half-close;
eight are). Both made by scripts/scenarios_assume.py from real kernel TCP; see pcaps/README.md."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from synscope.core.addr import fmt_ip
from synscope.core.fmt import size
from synscope.read.pipeline import Pipeline, run
from synscope.read.sources.pcap import open_capture
from tests.helpers import PCAPS, analyse


def _by_port(name: str) -> list[tuple[dict, object]]:
    """(truth of the connection, its report) for each connection the truth file lists."""
    truth = json.loads((PCAPS / f"{name}.truth.json").read_text())
    reports = {r.conn.server.port: r for r in analyse(f"{name}.pcap")}
    return [(t, reports[t["server_port"]]) for t in truth["connections"]]


def test_an_upload_to_a_sink_is_not_read_as_a_slow_server() -> None:
    [(up, r), _] = _by_port("upload-sink")
    v = r.verdict
    assert up["pattern"] == "upload" and not up["answer_expected"] and not up["server_app_stuck"]
    assert up["server"]["bytes_received"] == up["client"]["bytes_sent"] and up["server"]["bytes_sent"] == 0
    assert v.outcome == "established" and v.rule == "open" and v.ok
    assert "has not responded" not in v.explanation and "request unanswered" not in v.summary
    assert not v.next_step.startswith("Check the server application")
    # what the capture shows: the bytes the sink read, all acknowledged, and that it cannot tell more
    assert f"The client sent {size(up['client']['bytes_sent'])} in 12 segments" in v.explanation
    assert "acknowledged all of it" in v.explanation and "cannot tell" in v.explanation
    assert "upload" in v.summary


def test_a_request_the_server_never_answers_still_says_so() -> None:
    [_, (req, r)] = _by_port("upload-sink")
    v = r.verdict
    assert req["pattern"] == "request" and req["answer_expected"] and req["server_app_stuck"]
    assert req["client"]["bytes_received"] == 0 and req["server"]["bytes_received"] == req["client"]["bytes_sent"]
    assert "the server application has not responded" in v.explanation and not v.ok
    assert "upload" not in v.explanation
    assert v.next_step.startswith("Check the server application on 198.18.2.2")


def test_one_answer_after_a_fin_is_not_kept_sending() -> None:
    cases = _by_port("half-close-open")
    assert [t["server_port"] for t, _ in cases] == [82, 83]
    for t, r in cases:
        v = r.verdict
        assert t["fin_by"] == "client" and not t["server_fin_in_capture"]
        assert v.outcome == "half-closed" and v.conn_state == "S2" and v.ok
        assert "The client closed its sending side (FIN)" in v.explanation
        sent = size(t["server"]["bytes_sent"])
        assert t["client"]["bytes_received"] == t["server"]["bytes_sent"]
        if t["kept_sending"]:
            m = re.search(r"kept sending data after it: (\S+ \S+) in (\d+) segments", v.explanation)
            assert m, v.explanation
            assert m.group(1) == sent and int(m.group(2)) == t["answer_segments"]
            assert "(a half-close)" in v.explanation
        else:
            assert "kept sending" not in v.explanation and "(a half-close)" not in v.explanation
            assert f"answered once after it ({sent})" in v.explanation


def test_no_mptcp_subflow_is_blamed_on_the_server() -> None:
    """mptcp-subflows: the request went over one subflow, the answer came back over the other
    (truth); neither subflow says the server did not answer, both say what they are."""
    truth = json.loads((PCAPS / "mptcp-subflows.truth.json").read_text())
    assert truth["client"]["mptcp"] and truth["client"]["joined_subflows"] == 1 and not truth["server_app_stuck"]
    assert truth["client"]["bytes_received"] == truth["server"]["bytes_sent"]
    reports = {r.conn.client.ip: r for r in analyse("mptcp-subflows.pcap")}
    assert len(reports) == len(truth["subflows"]) == 2
    for sub in truth["subflows"]:
        [r] = [r for ip, r in reports.items() if fmt_ip(ip) == sub["client"]]
        v = r.verdict
        assert v.outcome == "established" and v.ok, v
        assert "has not responded" not in v.explanation and "to send its first byte" not in v.explanation
        assert "request unanswered" not in v.summary and not v.next_step.startswith("Check the server application")
        assert "one subflow of an MPTCP connection" in v.explanation
        # the subflow that carried the request but not the answer says why that blames no server
        assert ("the answer may have come over another subflow" in v.explanation) == (not sub["answer_on_it"])


def test_an_upload_still_going_when_the_capture_ends_is_no_answer_due(tmp_path: Path) -> None:
    """upload-sink cut (pcap records copied, nothing made up) right after the upload's 10th segment
    and its ACK: the client was still sending when the capture ended, so no answer was due yet."""
    data = (PCAPS / "upload-sink.pcap").read_bytes()
    head, off, kept = data[:24], 24, []
    while off < len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        kept.append(data[off : off + 16 + caplen])
        off += 16 + caplen
    [(up, _), _] = _by_port("upload-sink")
    reports = {r.conn.server.port: r for r in analyse("upload-sink.pcap")}
    frames = [e for e in reports[84].conn.packets if e.seg.length]
    cut = frames[9].seg.frame + 1  # the 10th upload segment and the record after it (its ACK)
    path = tmp_path / "cut.pcap"
    path.write_bytes(head + b"".join(kept[:cut]))
    [r] = [r for r in run([(str(path), open_capture(str(path)))], Pipeline()) if r.conn.server.port == 84]
    v = r.verdict
    assert up["pattern"] == "upload" and v.ok and "has not responded" not in v.explanation
    assert "that was still going" in v.explanation and "no answer is due while it goes on" in v.explanation
    assert "cannot tell" not in v.explanation and "upload" in v.summary
