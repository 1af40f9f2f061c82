"""Verdict branches that rested on one assumption (issue 14), against captures whose truth says
what the applications did: upload-sink (an upload to a sink is not a slow server; a request a
server never answers still is) and half-close-open (one answer after a FIN is not a half-close;
eight are). Both made by scripts/scenarios_assume.py from real kernel TCP; see pcaps/README.md."""

from __future__ import annotations

import json
import re

from synscope.core.fmt import size
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
