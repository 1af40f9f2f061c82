"""Verdicts of the issue-14 scenario captures against what scripts/scenarios_verdict.py did.

Each capture has NAME.truth.json beside it, written by the script that made it (the nft rules and
where they sat, what connect() returned). The assertions check the cause, the machine the next step
sends the reader to, the end states and the confidence against that truth, never against
synscope's own earlier output; each scenario has a counterpart on which the cause is not claimed.
"""

from __future__ import annotations

import json

import pytest

from synscope.core.addr import fmt_ip
from synscope.read.evidence import CERTAIN, POSSIBLE
from synscope.read.pipeline import ConnReport
from tests.helpers import PCAPS, analyse, cli


def truth(name: str) -> list[dict]:
    return json.loads((PCAPS / f"{name}.truth.json").read_text())["connections"]


def by_port(name: str) -> dict[int, ConnReport]:
    return {r.conn.server.port: r for r in analyse(f"{name}.pcap")}


def said(r: ConnReport) -> str:
    return r.verdict.explanation + " " + r.verdict.next_step


def test_port_unreachable_is_a_reject_rule_at_the_box_that_sent_it() -> None:
    reports = by_port("reject-port")
    for t in truth("reject-port"):
        r = reports[t["server_port"]]
        if t["reject_at"]:
            # nft `reject` on the router: ICMP 3/3 from the router, not "nothing listens"
            assert r.verdict.outcome == "icmp-rejected"
            assert "reject rule" in r.verdict.explanation and "nothing listens" not in r.verdict.explanation
            assert r.verdict.next_step.startswith(f"Look for a reject rule on {t['reject_at']} ")
            assert fmt_ip(r.conn.server.ip) not in r.verdict.next_step  # not the server: the SYN never got there
            assert r.verdict.confidence != CERTAIN and r.verdict.evidence
            assert r.conn.icmp[-1].frame in {f for e in r.verdict.evidence for f in e.frames}
        else:  # the counterpart: a closed port answers RST, and no reject rule is claimed
            assert r.verdict.outcome == "refused" and "reject rule" not in said(r)
            assert f"on {fmt_ip(r.conn.server.ip)}" in r.verdict.next_step
            assert r.verdict.confidence == CERTAIN


def test_a_reset_in_the_servers_name_from_the_path_is_not_nothing_listens() -> None:
    """nft `reject with tcp reset` on the router answers the SYN with an RST in the server's name;
    its TTL (64) is not the server's own (63, its SYN-ACK for port 80 in the same capture): the
    verdict sends the reader to the router's rules, not to the server's listeners. The server's
    own RST for a closed port (81) stays "nothing listens", certain."""
    reports = by_port("reject-reset")
    for t in truth("reject-reset"):
        r = reports[t["server_port"]]
        assert t["app"]["errno"] in (None, "ECONNREFUSED")
        if t["reset_by"] and not t["reached_server"]:
            assert r.verdict.rule == "reset-by-path" and r.verdict.side == "path"
            assert "nothing listens" not in said(r) and "reject rule" in said(r)
            assert "1 hop(s)" in r.verdict.next_step  # the router: one hop from the client's capture point
            assert r.verdict.confidence != CERTAIN
            synack = next(x for x in reports.values() if x.conn.server.syn_count).conn
            facts = " ".join(e.fact for e in r.verdict.evidence)
            assert f"frame {synack.packets[1].seg.frame}," in facts  # the host's own SYN-ACK, the contrast weighed
            assert r.server_state() == "unknown"  # the SYN probably never reached it
        elif t["reset_by"]:
            assert r.verdict.rule == "refused" and "nothing listens" in said(r)
            assert r.verdict.confidence == CERTAIN and r.server_state() == "CLOSED"
        else:
            assert r.verdict.ok


def test_host_unreachable_at_once_from_the_server_is_its_own_reject_rule() -> None:
    reports = by_port("reject-server")
    for t in truth("reject-server"):
        r = reports[t["server_port"]]
        if t["reject_at"]:
            assert not t["arp_failed"]
            assert "reject rule on the server" in r.verdict.explanation
            assert "got no ARP" not in r.verdict.explanation  # within ms: not a failed ARP lookup
            assert r.verdict.next_step.startswith(f"On {t['reject_at']}:")
        else:
            assert r.verdict.ok and t["app"]["errno"] is None
            assert "reject" not in said(r)


def test_host_unreachable_after_seconds_is_a_failed_arp_lookup() -> None:
    [t] = truth("arp-fail")
    [r] = analyse("arp-fail.pcap")
    assert t["reject_at"] is None and "FAILED" in t["router_neigh_entry"]
    assert f"{t['arp_failed_at']} got no ARP/ND answer from {t['server']}" in r.verdict.explanation
    assert "reject rule" not in said(r)
    assert t["arp_failed_at"] in r.verdict.next_step and t["server"] in r.verdict.next_step


@pytest.mark.parametrize("name", ["reject-port", "reject-server", "arp-fail"])
def test_end_states_follow_the_icmp_abort(name: str) -> None:
    """connect() got the ICMP error (EHOSTUNREACH / ECONNREFUSED): the client ends CLOSED, and
    the server's state is not claimed for a SYN that never reached its socket."""
    reports = by_port(name)
    for t in truth(name):
        r = reports[t["server_port"]]
        c = r.conn
        if not c.icmp:
            continue
        assert t["app"]["errno"] in ("EHOSTUNREACH", "ECONNREFUSED")
        assert c.state_of(c.client) == "CLOSED"
        assert c.state_of(c.server) == "unknown"


def test_no_answer_keeps_syn_sent_and_does_not_claim_listen() -> None:
    """The counterpart: silence (README: a DROP rule on the router) is not an abort."""
    [r] = analyse("no-answer.pcap")
    assert r.conn.state_of(r.conn.client) == "SYN-SENT" and r.conn.state_of(r.conn.server) == "unknown"


def test_capture_cut_after_the_syn_is_too_soon_to_call() -> None:
    """tcpdump -c 1 kept only the SYN; the connection itself worked (truth): no DROP-rule verdict."""
    [t] = truth("capture-cut")
    [r] = analyse("capture-cut.pcap")
    assert t["app"]["errno"] is None and t["app"]["bytes_received"] > 0
    v = r.verdict
    assert v.outcome == "capture-ended" and v.confidence == POSSIBLE
    assert "too soon to call" in v.explanation and "capture ends 0 µs after" in v.explanation
    assert "DROP" not in said(r) and "dropped" not in said(r)


def test_silence_long_after_the_syns_still_says_dropped() -> None:
    """The counterpart of the cut capture: 8 SYNs over 11 s against a DROP rule."""
    [r] = analyse("no-answer.pcap")
    assert r.verdict.outcome == "no-answer" and r.verdict.confidence == "likely"
    assert "DROP rules" in r.verdict.next_step


def test_filter_on_the_port_keeps_the_icmp_error_that_quotes_it() -> None:
    """--filter 'tcp port 84' must not turn the rejection into silence."""
    [t] = [t for t in truth("reject-port") if t["reject_at"]]
    proc = cli("read", str(PCAPS / "reject-port.pcap"), "--filter", f"tcp port {t['server_port']}", "--json")
    [obj] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert obj["outcome"] == "icmp-rejected" and obj["icmp"][0]["from"] == t["reject_at"]
    proc = cli("read", str(PCAPS / "reject-port.pcap"), "--filter", "tcp port 81", "--json")
    assert [json.loads(line)["outcome"] for line in proc.stdout.splitlines()] == ["refused"]  # the other ICMP stays out


def test_zero_window_probes_are_not_called_keep_alives() -> None:
    """zero-window.pcap (a reader that stops reading): Linux's probes into the zero window carry
    tshark's keep_alive flag (kept in JSON), but the timeline names them zero-window probes;
    real keep-alives (keepalive.pcap) keep their name."""
    [r] = analyse("zero-window.pcap")
    notes = [n for p in r.conn.packets for n in p.notes or ()]
    assert "keep-alive" not in notes and notes.count("zero-window probe") >= 1
    proc = cli("read", str(PCAPS / "zero-window.pcap"), "--json")
    [obj] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any("keep_alive" in p["analysis"] for p in obj["packets"])
    [k] = analyse("keepalive.pcap")
    assert "keep-alive" in [n for p in k.conn.packets for n in p.notes or ()]


def test_no_throughput_over_a_tiny_span() -> None:
    from synscope.read.analysis.engine import MIN_THROUGHPUT_SPAN, DirectionFacts

    f = DirectionFacts()
    f.payload_bytes, f.first_data_ts, f.last_data_ts = 1000, 5.0, 5.0 + 55e-6
    assert f.throughput() == 0.0  # 55 µs: no rate worth stating
    f.last_data_ts = 5.0 + 10 * MIN_THROUGHPUT_SPAN
    assert f.throughput() == pytest.approx(1000 / (10 * MIN_THROUGHPUT_SPAN))


def test_server_time_wait_does_not_claim_ports() -> None:
    """port-reuse.pcap: the server closes first and holds TIME-WAIT; that uses no port of its own."""
    reports = analyse("port-reuse.pcap")
    tw = [r for r in reports if r.conn.state_of(r.conn.server) == "TIME-WAIT"]
    assert tw
    for r in tw:
        assert "exhaust its ports" not in r.verdict.explanation and "uses no port of the server" in r.verdict.explanation


def test_rtt_column_names_the_leg() -> None:
    out = cli("read", str(PCAPS / "normal.pcap"), "--all").stdout
    assert "rtt capture↔receiver" in out


def test_every_verdict_names_its_rule_and_its_frames_exist() -> None:
    """Over every bundled capture: each verdict comes from a named rule with a known confidence,
    and each evidence frame is a packet (or ICMP error) of that very connection, or the SYN that
    superseded it (the first packet of the next connection on its ports)."""
    names = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng") and p.name != "busy.pcap")
    for name in names:
        for r in analyse(name):
            v = r.verdict
            assert v.rule, (name, r.conn.id, v.outcome)
            assert v.confidence in ("certain", "likely", "possible")
            frames = {p.seg.frame for p in r.conn.packets} | {e.frame for e in r.conn.icmp} | ({r.conn.superseded_frame} - {0})
            for e in v.evidence:
                assert set(e.frames) <= frames, (name, r.conn.id, e)
