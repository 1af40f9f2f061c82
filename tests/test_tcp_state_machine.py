"""TCP state-machine cases (issue 14 items 2, 3, 4, 6, 7, 8) against the truth that
scripts/scenarios_tcpsm.py wrote beside each capture from what the applications and kernels saw."""

from __future__ import annotations

import json
import subprocess

from synscope.core.addr import fmt_ip
from synscope.core.model import ACK, PSH, RST, SYN, Segment
from synscope.read.analysis.annotate import annotate
from synscope.read.analysis.engine import Analyser
from synscope.read.analysis.flags import A_RETRANSMISSION
from synscope.read.evidence import CERTAIN, LIKELY
from synscope.read.tracker import Tracker
from synscope.read.verdict import judge
from tests.helpers import PCAPS, analyse, pcap


def truth(name: str) -> dict:
    return json.loads((PCAPS / f"{name}.truth.json").read_text())


def notes(report) -> list[str]:
    return [n for p in report.conn.packets for n in (p.notes or [])]


def frames_in_file(name: str, dfilter: str) -> int:
    """Frames matching a tshark display filter (independent of synscope's decoder)."""
    out = subprocess.run(["tshark", "-n", "-r", pcap(name), "-Y", dfilter, "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, check=True)
    return len(out.stdout.split())


# ------------------------------------------------------------------ item 2
def test_simultaneous_open_is_recognised_with_no_fault() -> None:
    t = truth("simultaneous-open")
    assert all(app["connect"] == "ok" for app in t["applications"].values())
    [r] = analyse("simultaneous-open.pcap")
    c, v = r.conn, r.verdict
    assert c.simultaneous_open
    assert {f"{fmt_ip(c.client.ip)}:{c.client.port}", f"{fmt_ip(c.server.ip)}:{c.server.port}"} == set(t["applications"])
    assert (v.rule, v.confidence, v.ok, v.next_step) == ("simultaneous-open", CERTAIN, True, "")
    assert "Simultaneous open" in v.explanation and "both sent a SYN" in v.explanation
    assert "lost" not in v.explanation.replace("no SYN or SYN-ACK was lost", "")
    assert "return path" not in v.next_step
    # each side sent one SYN and one SYN-ACK: no retransmission anywhere in the handshake
    assert (c.client.syn_count, c.server.syn_count) == (1, 1)
    handshake = [p for p in c.packets if p.seg.flags & SYN]
    assert len(handshake) == 4 and not any(p.analysis & A_RETRANSMISSION for p in handshake)
    assert not any("retransmission" in n for n in notes(r))
    assert v.evidence and all(e.frames for e in v.evidence)


def test_simultaneous_open_applies_the_window_scale_of_the_crossing_syns() -> None:
    [r] = analyse("simultaneous-open.pcap")
    c = r.conn
    assert c.client.win_scale == c.client.syn_options.wscale == 10
    assert c.server.win_scale == c.server.syn_options.wscale == 10
    data = next(p for p in c.packets if not p.seg.flags & SYN and p.seg.flags & ACK)
    # the raw field is 63; the window the kernel meant is 63 << 10
    assert data.seg.win << c.client.win_scale == 64512


def test_normal_handshake_is_not_a_simultaneous_open() -> None:
    [r] = analyse("normal.pcap")
    assert not r.conn.simultaneous_open and r.verdict.rule != "simultaneous-open"


# ------------------------------------------------------------------ item 3
def test_simultaneous_close_both_sides_end_in_time_wait() -> None:
    t = truth("simultaneous-close")
    assert t["kernel"]["time_wait"] == {"client": True, "server": True}
    [r] = analyse("simultaneous-close.pcap")
    c, v = r.conn, r.verdict
    assert c.simultaneous_close
    assert (c.state_of(c.client), c.state_of(c.server)) == (t["expect"]["client_end"], t["expect"]["server_end"])
    assert (v.outcome, v.rule, v.confidence, v.ok) == ("closed", "simultaneous-close", CERTAIN, True)
    assert "closed first" not in v.summary and "first" not in v.explanation
    assert "both hold TIME-WAIT" in v.explanation
    assert not any("closes first" in n for n in notes(r))
    assert len(v.evidence[0].frames) == 2


def test_client_first_close_is_not_simultaneous() -> None:
    [r] = analyse("normal.pcap")
    c = r.conn
    assert not c.simultaneous_close
    assert (c.state_of(c.client), c.state_of(c.server)) == ("TIME-WAIT", "CLOSED")
    assert r.verdict.rule != "simultaneous-close"


# ------------------------------------------------------------------ item 4
def test_dead_peer_found_by_keepalive() -> None:
    t = truth("keepalive-dead")
    assert t["applications"]["client"]["errno"] == "ETIMEDOUT"
    probes = t["done"]["client_socket"]["TCP_KEEPCNT"]
    [r] = analyse("keepalive-dead.pcap")
    v = r.verdict
    assert (v.outcome, v.rule, v.confidence, v.side) == ("keepalive-timeout", "keepalive-timeout", CERTAIN, "path")
    assert f"sent {probes} keep-alive probes" in v.explanation and "ETIMEDOUT" in v.explanation
    assert "tcp_keepalive_probes" in v.explanation
    assert "SO_LINGER" not in v.explanation and "idle timeout on a firewall/NAT" not in v.explanation
    assert "198.18.2.2" in v.next_step and "application" not in v.next_step
    assert len(v.evidence[0].frames) == probes


def test_answered_keepalives_are_not_a_dead_peer() -> None:
    [r] = analyse("keepalive.pcap")
    assert r.verdict.outcome == "closed" and r.verdict.rule != "keepalive-timeout"


# ------------------------------------------------------------------ item 6
def test_synack_dropped_on_the_client_host() -> None:
    t = truth("synack-dropped-client")
    assert t["done"]["nft"]["namespace"] == "client" and t["done"]["nft"]["hook"] == "input"
    assert t["applications"]["client"]["errno"] == "ETIMEDOUT"
    [r] = analyse("synack-dropped-client.pcap")
    v = r.verdict
    assert (v.rule, v.side, v.confidence) == ("synack-dropped-on-client", "client", LIKELY)
    assert "return path" not in v.next_step
    assert "On the client 198.18.1.2" in v.next_step and "input" in v.next_step and "rp_filter" in v.next_step
    synacks = t["capture_counts"]["synacks_at_client_interface"]
    assert f"{synacks} captured here" in v.explanation


def test_synack_dropped_on_the_router_is_not_blamed_on_the_client() -> None:
    t = truth("synack-dropped-router")
    assert t["done"]["nft"]["namespace"] == "router" and t["capture_counts"]["synacks_at_client_interface"] == 0
    [r] = analyse("synack-dropped-router.pcap")
    v = r.verdict
    assert v.outcome == "no-answer" and v.side == "path" and "client" not in v.next_step


def test_synack_lost_captured_at_the_server_is_not_blamed_on_the_client() -> None:
    # the capture point is the server's: the SYN-ACK may have died anywhere on the way back
    [r] = analyse("synack-lost.pcap")
    assert r.verdict.rule != "synack-dropped-on-client"


# ------------------------------------------------------------------ items 7, 8
def test_identical_kernel_rsts_are_distinct_packets_on_an_ethernet_capture() -> None:
    t = truth("echo-rst")
    rsts = t["capture_counts"]["rst_frames"]
    assert t["kernel"]["counters"]["server"]["Tcp.OutRsts"] == rsts  # the server's kernel sent each one
    [r] = analyse("echo-rst.pcap")
    seen = [p for p in r.conn.packets if p.seg.flags & RST]
    assert len(seen) == rsts == frames_in_file("echo-rst.pcap", "tcp.flags.reset==1")


def test_synacks_with_the_same_bytes_are_both_kept() -> None:
    [r] = analyse("synack-dropped-client.pcap")
    assert len(r.conn.packets) == frames_in_file("synack-dropped-client.pcap", "tcp")


def test_copies_are_still_dropped_where_the_capture_records_packets_twice() -> None:
    for name in ("any.pcap", "any-sll.pcap", "loopback-dup.pcap"):
        [r] = analyse(name)
        assert len(r.conn.packets) * 2 == frames_in_file(name, "tcp"), name


def test_echo_rsts_are_one_abort_and_its_echoes() -> None:
    t = truth("echo-rst")
    assert t["expect"]["aborts"] == 1 and "SO_LINGER 0" in t["applications"]["server"]["closed_with"]
    [r] = analyse("echo-rst.pcap")
    v = r.verdict
    rsts = [p for p in r.conn.packets if p.seg.flags & RST]
    labels = [n for p in rsts for n in (p.notes or [])]
    assert labels[0] == "RST from server: connection aborted"
    assert all(n.startswith("RST echo") for n in labels[1:]) and len(labels) == len(rsts)
    assert v.history.count("r") == 1 and "R" not in v.history
    assert f"{len(rsts) - 1} more RSTs after its abort" in v.explanation


# ------------------------------------------------------------------ scripted exchanges
CLI_IP, SRV_IP = bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2])


def _judge(segments: list[Segment]):
    tracker, analyser = Tracker(), Analyser()
    for seg in segments:
        conn = tracker.feed(seg)
        analyser.on_packet(conn, conn.packets[-1])
    [conn] = list(tracker.drain())
    state = analyser.finish(conn)
    annotate(conn, state)
    return judge(conn, state)


def _seg(frame: int, t: float, from_client: bool, seq: int, ack: int, flags: int, ttl: int, length: int = 0) -> Segment:
    if from_client:
        return Segment(frame, t, CLI_IP, SRV_IP, 40000, 80, seq, ack, flags, 64000, length, ttl=ttl)
    return Segment(frame, t, SRV_IP, CLI_IP, 80, 40000, seq, ack, flags, 64000, length, ttl=ttl)


def _synacks_unanswered(client_ttl: int, server_ttl: int):
    return _judge(
        [
            _seg(1, 0.0, True, 1000, 0, SYN, client_ttl),
            _seg(2, 0.001, False, 5000, 1001, SYN | ACK, server_ttl),
            _seg(3, 1.0, True, 1000, 0, SYN, client_ttl),
            _seg(4, 1.001, False, 5000, 1001, SYN | ACK, server_ttl),
        ]
    )


def test_synack_drop_is_placed_on_the_client_only_when_the_ttls_place_the_capture() -> None:
    assert _synacks_unanswered(64, 63).rule == "synack-dropped-on-client"
    # both TTLs untouched: one link, the capture could sit at either end: cannot tell
    assert _synacks_unanswered(64, 64).rule != "synack-dropped-on-client"
    # the client's SYN was routed before the capture (server-side capture)
    assert _synacks_unanswered(63, 64).rule != "synack-dropped-on-client"


def test_rst_letters_once_per_direction_whatever_their_seq() -> None:
    # an abort, then the kernel's answers to segments in flight, each with a different seq
    segs = [
        _seg(1, 0.0, True, 1000, 0, SYN, 64),
        _seg(2, 0.001, False, 5000, 1001, SYN | ACK, 63),
        _seg(3, 0.002, True, 1001, 5001, ACK, 64),
        _seg(4, 0.003, True, 1001, 5001, ACK | PSH, 64, 100),
        _seg(5, 0.004, False, 5001, 1101, RST | ACK, 63),
    ]
    segs += [_seg(6 + i, 0.005 + i * 0.001, False, 5001 + i, 0, RST, 63) for i in range(4)]
    v = _judge(segs)
    assert v.history == "ShADr"
    assert "4 more RSTs after its abort" in v.explanation
