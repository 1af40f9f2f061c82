"""Explicit Congestion Notification per connection: negotiation, IP codepoints, ECE and CWR.

RFC 3168: the client asks for ECN with an ECN-setup SYN (ECE + CWR), the server agrees with a
SYN-ACK carrying ECE and not CWR. Then senders mark data ECT(0) (or ECT(1)) in the IP header, a
congested hop's AQM (fq_codel, RED with ``ecn``) sets CE instead of dropping, the receiver echoes
ECE on its ACKs until the sender answers with CWR (it reduced its congestion window).
AccECN (RFC 9768) asks with AE + CWR + ECE on the SYN; once agreed, those three bits on later
segments are a counter (ACE), not echoes, so they are not read as ECE / CWR here.

Fed from the analysis stage for segments with an ECN codepoint or an ECE / CWR flag, and for the
SYNs of a connection that showed one: an ordinary data segment of a connection without ECN costs
one test, and such a connection holds no EcnFacts at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from synscope.core.model import ACK, AE, CWR, ECE, SYN

# IP ECN codepoints (the low two bits of the TOS / traffic class byte)
NOT_ECT: Final = 0
ECT1: Final = 1
ECT0: Final = 2
CE: Final = 3
# frame numbers kept per kind (the first ones)
ECN_FRAMES: Final = 8
# the ECN-setup bits of a SYN or SYN-ACK
SETUP_BITS: Final = AE | CWR | ECE
NO_SYN: Final = -1

# negotiation outcomes (JSON "ecn"."negotiation")
UNKNOWN: Final = "unknown"  # no SYN captured
NOT_REQUESTED: Final = "not-requested"  # SYN without ECN setup bits
REQUESTED: Final = "requested"  # ECN-setup SYN, no SYN-ACK captured
NEGOTIATED: Final = "negotiated"  # RFC 3168: SYN ECE+CWR, SYN-ACK ECE without CWR
DECLINED: Final = "declined"  # SYN-ACK without ECE
ACCECN: Final = "accecn"  # RFC 9768: SYN AE+CWR+ECE, SYN-ACK with one of the AccECN codes
REFLECTED: Final = "reflected"  # SYN-ACK repeats the SYN's setup bits: a reflector or broken middlebox
NONSTANDARD: Final = "nonstandard"  # setup bits that no RFC defines
# SYN-ACK (AE, CWR, ECE) codes that accept AccECN (RFC 9768, table 2): (0,1,0) (0,1,1) (1,0,0) (1,1,0)
_ACCECN_SYNACK: Final = frozenset({CWR, CWR | ECE, AE, AE | CWR})


@dataclass(slots=True)
class EcnFacts:
    """What one direction's segments carried: IP ECN codepoints, ECE and CWR (with frame numbers)."""

    setup: int = NO_SYN  # AE/CWR/ECE of the last SYN (client) or SYN-ACK (server); NO_SYN: none seen
    setup_frame: int = 0
    ect0: int = 0
    ect1: int = 0
    ce: int = 0
    ce_frames: list[int] = field(default_factory=list)
    ece: int = 0  # non-SYN segments with ECE
    ece_frames: list[int] = field(default_factory=list)
    cwr: int = 0  # non-SYN segments with CWR
    cwr_frames: list[int] = field(default_factory=list)
    ect_data: int = 0  # data segments with ECT(0), ECT(1) or CE

    # Written out (dataclass keeps it): two per connection, and the generated one runs as Python bytecode
    def __init__(self) -> None:
        self.setup = NO_SYN
        self.setup_frame = 0
        self.ect0 = 0
        self.ect1 = 0
        self.ce = 0
        self.ce_frames = []
        self.ece = 0
        self.ece_frames = []
        self.cwr = 0
        self.cwr_frames = []
        self.ect_data = 0


def observe(facts: EcnFacts, ecn: int, flags: int, frame: int, length: int) -> None:
    """Count one segment's ECN codepoint and ECE / CWR flags, or note a SYN's setup bits."""
    if ecn:
        if ecn == CE:
            facts.ce += 1
            if len(facts.ce_frames) < ECN_FRAMES:
                facts.ce_frames.append(frame)
        elif ecn == ECT0:
            facts.ect0 += 1
        else:
            facts.ect1 += 1
        if length:
            facts.ect_data += 1
    if flags & SYN:
        # the client's last SYN (Linux drops the setup bits from a retransmitted SYN), the server's SYN-ACK
        if not flags & ACK or facts.setup == NO_SYN:
            facts.setup = flags & SETUP_BITS
            facts.setup_frame = frame
        return
    if flags & ECE:
        facts.ece += 1
        if len(facts.ece_frames) < ECN_FRAMES:
            facts.ece_frames.append(frame)
    if flags & CWR:
        facts.cwr += 1
        if len(facts.cwr_frames) < ECN_FRAMES:
            facts.cwr_frames.append(frame)


def negotiation(client: EcnFacts, server: EcnFacts, syn_seen: bool) -> str:
    """The ECN negotiation the handshake shows (one of the outcome names above). ``syn_seen``: the
    capture holds the client's SYN (one without setup bits is noted only once ECN showed)."""
    syn = client.setup
    if syn == NO_SYN:
        return NOT_REQUESTED if syn_seen else UNKNOWN
    if syn == 0:
        return NOT_REQUESTED
    if syn not in (ECE | CWR, SETUP_BITS):
        return NONSTANDARD
    answer = server.setup
    if answer == NO_SYN:
        return REQUESTED
    if answer == syn or answer == SETUP_BITS:
        return REFLECTED
    if answer == ECE:
        return NEGOTIATED  # classic ECN (an AccECN server answering a classic SYN, or a classic server)
    if answer == 0:
        return DECLINED
    if syn == SETUP_BITS and answer in _ACCECN_SYNACK:
        return ACCECN
    return NONSTANDARD


def in_use(outcome: str) -> bool:
    """Both ends agreed to ECN (classic or AccECN)."""
    return outcome == NEGOTIATED or outcome == ACCECN
