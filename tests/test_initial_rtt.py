"""The handshake RTT is measured from the SYN the SYN-ACK answers, as tshark's
``tcp.analysis.initial_rtt`` (its most recent SYN): a SYN sent again after a timeout must not put
the timeout into the round trip. loopback-syn-retry.pcap used to report a 1.01 s handshake RTT
(from the first SYN) where the answered SYN was 54 µs before the handshake's ACK; busy.pcap and
accept-abort.pcap had 1.02 s and 4.12 s for 89 µs and 40.4 ms."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import analyse, pcap
from tests.oracle import have_tshark

# captures with SYNs sent again before their answer, and plain ones
CAPTURES = ["loopback-syn-retry.pcap", "busy.pcap", "accept-abort.pcap", "accept-overflow.pcap", "normal.pcap", "synack-lost.pcap"]


def tshark_initial_rtts(name: str) -> dict[tuple[int, int], float]:
    """(client port, server port) → tshark's initial RTT, for every stream that has one."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            pcap(name),
            "-Y",
            "tcp.analysis.initial_rtt && tcp.flags.syn == 0",
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.analysis.initial_rtt",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rtts: dict[tuple[int, int], float] = {}
    for line in out.splitlines():
        a, b, rtt = line.split("\t")
        ports = (int(a), int(b))
        rtts.setdefault(ports, float(rtt))
        rtts.setdefault(ports[::-1], float(rtt))
    return rtts


@pytest.mark.skipif(not have_tshark(), reason="needs tshark")
@pytest.mark.parametrize("name", CAPTURES)
def test_handshake_rtt_is_tsharks_initial_rtt(name: str) -> None:
    rtts = tshark_initial_rtts(name)
    compared = 0
    for r in analyse(name):
        c = r.conn
        if c.handshake_rtt is None or c.reused_from is not None:
            continue
        ports = (c.client.port, c.server.port)
        assert ports in rtts, f"{name} #{c.id}: tshark has no initial RTT"
        assert c.handshake_rtt == pytest.approx(rtts[ports], abs=2e-6), f"{name} #{c.id}"
        # the two legs are the two halves of the same round trip (the SYN-ACK answering that SYN)
        if c.server_leg is not None and c.client_leg is not None and c.server.syn_count == 1:
            assert c.server_leg + c.client_leg == pytest.approx(c.handshake_rtt, abs=2e-6), f"{name} #{c.id}"
        compared += 1
    assert compared > 0


def test_a_syn_sent_again_is_not_part_of_the_rtt() -> None:
    [r] = analyse("loopback-syn-retry.pcap")
    c = r.conn
    assert c.client.syn_count == 2
    assert c.server_leg is not None and c.server_leg < 0.01  # not the 1 s SYN timeout
    assert c.syn_ts is not None and c.answered_syn_ts is not None and c.answered_syn_ts - c.syn_ts > 0.9
