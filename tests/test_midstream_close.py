"""Connections whose start the capture did not see: picked up mid-stream and closed by both sides,
or first seen at the server's SYN-ACK.

CRAFTED: the frames of ``craft.conversation`` (handshake, request, response, the client's FIN
first) with the first three, the handshake, left out: the capture started after it. That is the
designed truth these tests hold the verdict to: no handshake in the capture, client and server
known only from the ports, the client (ephemeral port) closed first. Zeek calls such a
connection SF like a complete one; the verdict must not claim a handshake it never saw, nor be
certain of which side closed first when the roles rest on a port guess.
"""

from __future__ import annotations

from pathlib import Path

from synscope.read.evidence import CERTAIN, LIKELY, POSSIBLE
from tests.craft import ACK, FIN, MAC_CLIENT, MAC_SERVER, SYN, PcapWriter, conversation, ether, ipv4_tcp
from tests.helpers import analyse_paths

CLIENT, SERVER = "198.18.1.2", "198.18.2.2"
CPORT, SPORT = 40000, 80
HANDSHAKE_FRAMES = 3


def _write(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    with path.open("wb") as f:
        out = PcapWriter(f)
        for t, frame in frames:
            out.write(t, frame)
    return path


def test_closed_midstream_connection_claims_no_handshake(tmp_path: Path) -> None:
    whole = conversation(CLIENT, SERVER, CPORT, SPORT, 1_000_000.0)
    path = _write(tmp_path / "late-start.pcap", whole[HANDSHAKE_FRAMES:])
    [r] = analyse_paths(path)
    v = r.verdict
    assert v.conn_state == "SF" and v.outcome == "closed"
    assert "handshake," not in v.explanation  # the old wording: "Normal connection: handshake, ..."
    assert v.explanation.startswith("Picked up mid-stream")
    assert f"{CLIENT}:{CPORT} taken as the client" in v.explanation
    assert "the client first" in v.explanation
    # the close is in the packets; which side is the client is a guess from the ports
    assert v.confidence == LIKELY
    first_frame = r.conn.packets[0].seg.frame
    assert v.evidence[0].frames == (first_frame,) and "no SYN" in v.evidence[0].fact


def test_counterpart_with_the_handshake_stays_certain(tmp_path: Path) -> None:
    path = _write(tmp_path / "whole.pcap", conversation(CLIENT, SERVER, CPORT, SPORT, 1_000_000.0))
    [r] = analyse_paths(path)
    v = r.verdict
    assert v.outcome == "closed" and v.confidence == CERTAIN
    assert v.explanation.startswith("Normal connection: handshake,")


def test_simultaneous_close_midstream_claims_no_handshake(tmp_path: Path) -> None:
    """Both FINs cross (neither acknowledges the other's) on a connection seen from mid-stream."""
    t = 1_000_000.0

    def frame(from_client: bool, flags: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
        if from_client:
            return ether(ipv4_tcp(CLIENT, SERVER, CPORT, SPORT, seq, ack, flags, payload=payload), src=MAC_CLIENT, dst=MAC_SERVER)
        return ether(ipv4_tcp(SERVER, CLIENT, SPORT, CPORT, seq, ack, flags, payload=payload), src=MAC_SERVER, dst=MAC_CLIENT)

    frames = [
        (t, frame(True, ACK | 0x08, 1001, 5001, b"ping")),
        (t + 0.01, frame(False, ACK, 5001, 1005)),
        (t + 0.02, frame(True, FIN | ACK, 1005, 5001)),
        (t + 0.021, frame(False, FIN | ACK, 5001, 1005)),
        (t + 0.03, frame(True, ACK, 1006, 5002)),
        (t + 0.031, frame(False, ACK, 5002, 1006)),
    ]
    [r] = analyse_paths(_write(tmp_path / "crossing.pcap", frames))
    v = r.verdict
    assert v.rule == "simultaneous-close"
    assert "handshake," not in v.explanation and v.explanation.startswith("Picked up mid-stream")
    assert "no SYN" in v.evidence[0].fact


def test_lone_synack_names_the_missing_syn_not_a_port_guess(tmp_path: Path) -> None:
    """A SYN-ACK is the first packet (the SYN was not captured): its sender is the server, so
    nothing is guessed from the ports; what the capture lacks is the SYN. The old verdict read
    "picked up mid-stream, roles guessed from ports ... the capture starts after the handshake"."""
    t = 1_000_000.0
    synack = ether(ipv4_tcp(SERVER, CLIENT, SPORT, CPORT, 7000, 1001, SYN | ACK), src=MAC_SERVER, dst=MAC_CLIENT)
    later = ether(ipv4_tcp(CLIENT, SERVER, CPORT + 1, SPORT, 5000, 0, SYN), src=MAC_CLIENT, dst=MAC_SERVER)
    r, _ = analyse_paths(_write(tmp_path / "lone.pcap", [(t, synack), (t + 3.0, later)]))
    v = r.verdict
    assert v.rule == "synack-without-syn" and v.confidence == POSSIBLE
    assert "guessed" not in v.explanation and not r.conn.roles_guessed
    assert "asymmetric routing" in v.explanation
    assert (r.conn.client.ip, r.conn.client.port) == (r.conn.packets[0].seg.dst, CPORT)
    assert v.evidence[0].frames == (1,)
