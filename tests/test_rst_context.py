"""Why an established connection was reset (verdict._reset_context), against captures whose truth
says what the applications did: rst-own-fin, rst-gave-up, rst-zero-window (made by
scripts/scenarios_rst.py from real kernel TCP; see pcaps/README.md)."""

from __future__ import annotations

import json
import re

from tests.helpers import PCAPS, analyse


def _case(name: str) -> tuple[dict, object]:
    t = json.loads((PCAPS / f"{name}.truth.json").read_text())
    [r] = analyse(f"{name}.pcap")
    return t, r


def test_rst_after_the_resetters_own_fin_is_its_close_with_unread_data() -> None:
    t, r = _case("rst-own-fin")
    v = r.verdict
    assert t["reset_by"] == "server" and t["unread_bytes_at_close"] > 0
    assert t["client"]["send_after_server_close_errno"] in ("EPIPE", "ECONNRESET")
    assert v.outcome == "reset-by-server" and v.rule == "reset-established" and v.confidence == "likely"
    assert "closed its sending side first (FIN)" in v.explanation
    assert f"the client sent {t['client_sent_after_server_fin']} B after it" in v.explanation
    assert "unread" in v.explanation and "not in answer to it" in v.explanation
    assert "read to EOF before close()" in v.next_step
    assert [e.fact for e in v.evidence][0] == "FIN from the server" and all(e.frames for e in v.evidence)


def test_rst_after_unanswered_retransmissions_is_the_application_giving_up() -> None:
    t, r = _case("rst-gave-up")
    v = r.verdict
    info = t["client_tcp_info_before_abort"]
    assert t["reset_by"] == "client" and t["server_alive"]
    assert v.outcome == "reset-by-client" and v.rule == "reset-established" and v.confidence == "likely"
    m = re.search(r"sent the same data (\d+) times with no answer from the server", v.explanation)
    assert m, v.explanation
    assert int(m.group(1)) == info["retransmits"] + 1  # the original and the kernel's retransmissions of it
    assert "application gave up" in v.explanation
    assert "reachable" in v.next_step and "198.18.2.2" in v.next_step


def test_rst_after_a_zero_window_names_the_reader_that_stopped() -> None:
    t, r = _case("rst-zero-window")
    v = r.verdict
    assert t["reset_by"] == "client" and t["server_reading"] is False
    assert v.outcome == "reset-by-client" and v.rule == "reset-established"
    assert "advertised a zero window before the RST" in v.explanation
    assert "stopped reading" in v.next_step and "198.18.2.2" in v.next_step
    assert any("zero window" in e.fact and e.frames for e in v.evidence)


def test_an_upload_the_client_aborted_is_not_an_unanswered_request() -> None:
    """Both captures end in the client's abort (truth), long before the capture does (rst-gave-up:
    the capture runs 7 s on): "no answer until the capture ended" would be wrong twice."""
    for name in ("rst-gave-up", "rst-zero-window"):
        t, r = _case(name)
        assert t["client"]["abort"].startswith("SO_LINGER 0")
        assert "until the capture ended" not in r.verdict.explanation and "request unanswered" not in r.verdict.summary
