"""Differential test: synscope's per-packet analysis flags against tshark's, on every bundled capture.

Known divergences (docs/tshark-divergences.md) are encoded here and nowhere else:
- duplicates: synscope drops a packet captured twice (loopback AF_PACKET copies,
  -i any on a forwarding host); the comparison runs with --keep-duplicates so the
  analysis itself is compared frame by frame.
- time order: synscope analyses multi-interface pcapng files in timestamp order;
  for those, tshark's reference is computed on the reordercap'd file and mapped
  back to the original frame numbers.
- simultaneous open: the SYN-ACK with which each side answers the other's crossing SYN repeats
  its own SYN's ISN; tshark calls it a retransmission, synscope a first transmission.
- tunnels: synscope keys a connection by its 4-tuple and the tunnel carrying it
  (VLAN IDs, VNI, GRE key...), tshark by the 4-tuple alone; on a capture with the
  same 4-tuple in two VNIs, tshark's reference is computed per VNI (PER_TUNNEL).
- MPTCP signalling ACKs: tshark does not call a pure ACK a duplicate when the MPTCP operations it
  carries changed (RFC 8684: the client's ACK echoing the server's ADD_ADDR); synscope's flag
  engine does not read MPTCP options and calls it one (MPTCP_SIGNAL_ACKS, frames checked by hand).
- an ACK for an earlier attempt before the SYN-ACK: after the server's ACK of an old connection's
  sequence numbers (and the client's RST to it), tshark calls the SYN-ACK that follows a reused port
  and the client's handshake ACK an ACK of an unseen segment; synscope reads them as this
  connection's handshake (STALE_ACK_AFTERMATH, frames checked by hand).
Any other difference fails.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import PCAPS
from tests.oracle import (
    diff_frames,
    have_tshark,
    per_tunnel_flags,
    synscope_flags,
    synscope_frames,
    synscope_json,
    time_sorted_flags,
    tshark_flags,
    tshark_tcp_frames,
)

CAPTURES = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
# captures holding one 4-tuple in several tunnels → the tshark field that tells the tunnels apart
PER_TUNNEL = {"vxlan-two-vni.pcap": "vxlan.vni"}
# captures whose TCP is inside an encapsulation (scripts/scenarios_encap.py): every one must be followed
# (capture, frame) pairs: a pure ACK echoing an MPTCP ADD_ADDR, with the seq/ack/window of the ACK before it
MPTCP_SIGNAL_ACKS = {("mptcp-subflows.pcap", 5)}
# (capture, frame) -> tshark flags there that follow from an ACK for an earlier attempt (frame 4) and
# the client's RST to it (frame 5): the new attempt's SYN-ACK and its handshake ACK
STALE_ACK_AFTERMATH = {("port-reuse-abandoned.pcap", 7): {"reused_ports"}, ("port-reuse-abandoned.pcap", 8): {"ack_lost_segment"}}
TUNNELLED = sorted(p.name for p in PCAPS.glob("*.truth.json") if '"encap"' in p.read_text())

pytestmark = pytest.mark.skipif(not have_tshark(), reason="tshark is the oracle; scripts/test installs it")


@pytest.mark.parametrize("name", CAPTURES)
def test_flags_match_tshark(name: str, tmp_path) -> None:
    path = str(PCAPS / name)
    ours = synscope_flags(path, ("--keep-duplicates",))
    assert ours, f"synscope found no TCP packets in {name}"
    if name in PER_TUNNEL:
        theirs = per_tunnel_flags(path, str(tmp_path), PER_TUNNEL[name])
    elif name.endswith(".pcapng"):
        theirs = time_sorted_flags(path, str(tmp_path))
    else:
        theirs = tshark_flags(path)
    for frame in simultaneous_open_answers(path):
        theirs[frame].discard("retransmission")
    for cap, frame in MPTCP_SIGNAL_ACKS:
        if cap == name:
            ours[frame].discard("duplicate_ack")
    for (cap, frame), extra in STALE_ACK_AFTERMATH.items():
        if cap == name:
            theirs[frame] -= extra
    mismatches = diff_frames(theirs, ours)
    assert not mismatches, f"{name}: frames where synscope and tshark disagree (frame, tshark, synscope): {mismatches[:20]}"


def simultaneous_open_answers(path: str) -> list[int]:
    """Frames of the first SYN-ACK from each side of a stream in which both sides sent a bare SYN."""
    cmd = ["tshark", "-n", "-r", path, "-Y", "tcp.flags.syn==1", "-T", "fields", "-e", "frame.number", "-e", "tcp.stream"]
    cmd += ["-e", "tcp.srcport", "-e", "tcp.flags.ack"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    syns: dict[str, set[str]] = {}
    answers: dict[tuple[str, str], int] = {}
    for line in out.splitlines():
        frame, stream, sport, ack = line.split("\t")
        if ack in ("0", "False"):
            syns.setdefault(stream, set()).add(sport)
        elif len(syns.get(stream, ())) == 2:
            answers.setdefault((stream, sport), int(frame))
    return list(answers.values())


def test_the_comparison_can_fail() -> None:
    """The oracle is not vacuous: on a capture with retransmissions tshark reports flags we must match."""
    theirs = tshark_flags(str(PCAPS / "bulk-loss.pcap"))
    assert any("fast_retransmission" in f for f in theirs.values())
    assert any("duplicate_ack" in f for f in theirs.values())


@pytest.mark.parametrize("name", CAPTURES)
def test_every_tcp_frame_tshark_lists_is_in_the_json(name: str) -> None:
    """Whatever carries it, a frame tshark shows as TCP (or an ICMP error quoting TCP) can be
    found in synscope's JSON by its number: capture copies too (``duplicate_of``)."""
    path = str(PCAPS / name)
    missing = sorted(tshark_tcp_frames(path) - synscope_frames(path))
    assert not missing, f"{name}: TCP frames tshark lists that synscope's JSON does not: {missing[:20]}"


def test_tunnelled_captures_are_all_here() -> None:
    """The captures of scripts/scenarios_encap.py are bundled (the tests above cover each)."""
    assert len(TUNNELLED) >= 15, TUNNELLED


def test_same_tuple_in_two_vnis_is_one_conversation_to_tshark() -> None:
    """Why PER_TUNNEL exists: without it tshark flags the second VNI's SYN as a reused 4-tuple."""
    flags = tshark_flags(str(PCAPS / "vxlan-two-vni.pcap"))
    assert any("reused_ports" in f for f in flags.values())


@pytest.mark.parametrize("name", ["loopback-dup.pcap", "any.pcap"])
def test_capture_copies_are_listed_not_analysed(name: str) -> None:
    """A frame dropped as a capture copy is in its connection's packets, marked with the frame
    of its first copy, without analysis flags; --keep-duplicates analyses it instead."""
    path = str(PCAPS / name)
    packets = {p["frame"]: p for conn in synscope_json(path) for p in conn["packets"]}
    copies = [p for p in packets.values() if "duplicate_of" in p]
    assert len(copies) == len(packets) // 2  # every packet of these captures was seen twice
    for p in copies:
        first = packets[p["duplicate_of"]]
        assert first["frame"] < p["frame"] and "duplicate_of" not in first
        assert (p["flags"], p["seq"], p["ack"], p["len"]) == (first["flags"], first["seq"], first["ack"], first["len"])
        assert p["analysis"] == [] and p["note"] == f"captured twice (copy of frame {first['frame']})"
    kept = [p for conn in synscope_json(path, ("--keep-duplicates",)) for p in conn["packets"]]
    assert len(kept) == len(packets) and not any("duplicate_of" in p for p in kept)


@pytest.mark.parametrize("ports", [(50001, 3544), (3544, 50001), (50001, 50002)], ids=["to-3544", "from-3544", "other-ports"])
def test_teredo_followed_where_tshark_follows_it(ports: tuple[int, int], tmp_path) -> None:
    """Teredo is on UDP port 3544 at either end for tshark by default (its heuristic for other
    ports is off): the TCP frames tshark finds inside are exactly the ones synscope finds."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    frames = []
    for i, flags in enumerate(["S", "SA", "A"]):
        back = i == 1
        a, b = ("198.18.250.2", "198.18.250.1") if back else ("198.18.250.1", "198.18.250.2")
        sport, dport = (ports[1], ports[0]) if back else ports
        inner = IPv6(src="2001:db8:aa::2", dst="2001:db8:aa::1") if back else IPv6(src="2001:db8:aa::1", dst="2001:db8:aa::2")
        if back:
            tcp = TCP(sport=80, dport=40000, flags=flags, seq=500, ack=101)
        else:
            tcp = TCP(sport=40000, dport=80, flags=flags, seq=100 + (i > 0), ack=501 if i else 0)
        f = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=a, dst=b) / UDP(sport=sport, dport=dport) / inner / tcp
        f.time = 1_700_000_000 + i * 0.01
        frames.append(f)
    path = str(tmp_path / "teredo-ports.pcap")
    wrpcap(path, frames)
    theirs = tshark_tcp_frames(path)
    assert theirs == ({1, 2, 3} if 3544 in ports else set())
    assert synscope_frames(path) == theirs
