"""Zeek's TCP endpoint state machine, packet by packet, and its ``conn_state`` code from it.

Zeek keeps one state per endpoint (INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED,
CLOSED, RESET), moved by each packet's SYN, FIN and RST in
``TCPSessionAdapter::UpdateStateMachine`` (src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc):
``UpdateInactiveState``, ``UpdateSYN_SentState``, ``UpdateEstablishedState``,
``UpdateClosedState``; an endpoint in RESET stays there (``UpdateResetState`` only raises
weirds). The conn.log code is then read off the two final states by ``conn_state`` in
base/protocols/conn/main.zeek. Both are followed here to the letter for the parts that decide
the code (sequence numbers, weirds and timers are not), so that:

- an RST after both FINs keeps SF (``UpdateClosedState``: "If our peer was also closed, then
  don't change our state now on a RST");
- an endpoint that sent FIN then RST goes back to CLOSED when its peer's FIN follows
  (``UpdateEstablishedState``: "The peer sent a FIN followed by a RST ... this was actually
  normal termination");
- a connection seen from its SYN-ACK (no SYN) is established by the originator's ACK
  (``UpdateInactiveState``: "No SYN packet from originator but SYN/ACK from responder, and now
  a pure ACK"), so its code follows the data and FINs (S1, S2, S3, SF) rather than SHR, which
  stays for an originator that never became active.

Roles: synscope's client is Zeek's originator after Zeek's own flip (``^``): see
``verdict.history`` and docs/zeek.md for where the two guesses can differ.
"""

from __future__ import annotations

from typing import Final

from synscope.core.model import ACK, FIN, RST, SYN
from synscope.read.tracker import C2S, Connection

# TCP_ENDPOINT_* (src/analyzer/protocol/tcp/TCP_Endpoint.h), in Zeek's order
INACTIVE: Final = 0
SYN_SENT: Final = 1
SYN_ACK_SENT: Final = 2
PARTIAL: Final = 3
ESTABLISHED: Final = 4
CLOSED: Final = 5
RESET: Final = 6

_MASK: Final = 0xFFFFFFFF

NAMES: Final = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED", "RESET")


class Endpoint:
    """One side's state and the state before it (``TCP_Endpoint::SetState`` keeps both)."""

    __slots__ = ("prev", "state")

    def __init__(self) -> None:
        self.state = INACTIVE
        self.prev = INACTIVE

    def set(self, new: int) -> None:
        """``SetState``: the previous state changes only when the state does."""
        if new != self.state:
            self.prev = self.state
            self.state = new


def _inactive(ep: Endpoint, peer: Endpoint, orig: Endpoint, is_orig: bool, flags: int, length: int) -> bool:
    """``UpdateInactiveState`` (the roles flip of a SYN/SYN-ACK reversal aside: synscope's
    tracker already made the SYN-ACK's sender the server). True when it established an endpoint
    whose SYN was missed (Zeek then no longer calls the connection partial)."""
    if flags & SYN:
        if is_orig:
            ep.set(SYN_ACK_SENT if flags & ACK else SYN_SENT)
        else:
            if peer.state == SYN_SENT:
                peer.set(ESTABLISHED)
            ep.set(ESTABLISHED)
    if flags & FIN:
        ep.set(CLOSED)
    if flags & RST:
        ep.set(RESET)
    if ep.state == INACTIVE:  # no control flags to change the state
        if not is_orig and length == 0 and orig.state == SYN_SENT:
            pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
        elif flags & ACK and peer.state == ESTABLISHED:
            ep.set(ESTABLISHED)  # the SYN was missed: establish rather than call it partial
            return True
        else:
            ep.set(PARTIAL)
    return False


def _established(ep: Endpoint, peer: Endpoint, flags: int) -> None:
    """``UpdateEstablishedState`` (ESTABLISHED and PARTIAL)."""
    if flags & SYN and ep.state == PARTIAL and peer.state == INACTIVE and not flags & ACK:
        ep.set(SYN_SENT)  # SYN_after_partial
    if flags & FIN and not flags & RST:
        ep.set(CLOSED)
        if peer.state == RESET and peer.prev == CLOSED:
            peer.set(CLOSED)  # the peer's FIN then RST was a normal termination
    if flags & RST:
        ep.set(RESET)


class _Stream:
    """One direction's data as Zeek's reassembler holds it (relative sequence numbers: the first
    data byte is 1): delivered up to ``delivered``, blocks above a hole, acknowledged to ``trim``."""

    __slots__ = ("base", "blocks", "delivered", "fin_end", "trim")

    def __init__(self, base: int) -> None:
        self.base = base
        self.delivered = 1  # last_reassem_seq (Reassembler(1, ...))
        self.trim = 1  # trim_seq
        self.fin_end = -1  # FIN_seq: one past the FIN
        self.blocks: list[tuple[int, int]] = []

    def rel(self, seq: int) -> int:
        return (seq - self.base) & _MASK

    def absorb(self) -> None:
        """``BlockInserted``: deliver the blocks the delivered data now reaches."""
        blocks = self.blocks
        while blocks:
            low = min(blocks)
            if low[0] > self.delivered:
                return
            blocks.remove(low)
            if low[1] > self.delivered:
                self.delivered = low[1]

    def data(self, start: int, end: int) -> None:
        """``DataSent``: what was acknowledged already is trimmed, the rest delivered or held."""
        if end <= self.trim:
            return
        start = max(start, self.trim)
        if start <= self.delivered:
            self.delivered = max(self.delivered, end)
            self.absorb()
        else:
            self.blocks.append((start, end))

    def acked(self, up: int, partial: bool) -> int:
        """``AckReceived`` then ``TrimToSeq`` / ``Undelivered``: how many content gaps (``Gap``
        calls) an acknowledgment up to ``up`` reveals."""
        if self.fin_end >= 0 and up >= self.fin_end:
            up = self.fin_end - 1  # the FIN is not data
        if up <= self.trim:
            return 0
        self.trim = up
        if up <= self.delivered:
            return 0
        if up <= 2 and partial:
            return 0  # the faked-up start of a partial connection (Undelivered ignores it)
        gaps = 0
        for start, _end in sorted(self.blocks):
            if start >= up:
                break
            if start > self.delivered:
                gaps += 1
                self.delivered = start
            self.absorb()
        if up > self.delivered:
            gaps += 1
            self.delivered = up
        return gaps


def _clean(e: Endpoint) -> bool:
    """``is_clean`` (TCP_Reassembler.cc): established, or closed straight from established."""
    return e.state == ESTABLISHED or (e.state == CLOSED and e.prev == ESTABLISHED)


class ZeekWalk:
    """What one pass over a connection's packets gives: both endpoints' final states and the
    content gaps (packet index, direction whose data was missing) in the order Zeek reports them."""

    __slots__ = ("gaps", "orig", "resp", "with_gaps")

    def __init__(self, orig: Endpoint, resp: Endpoint, gaps: list[tuple[int, int]], with_gaps: bool) -> None:
        self.orig = orig
        self.resp = resp
        self.gaps = gaps
        self.with_gaps = with_gaps  # False: the gaps were not looked for


def walk(conn: Connection, gaps: bool = True) -> ZeekWalk:
    """Zeek's per-packet processing (``TCPSessionAdapter::Process``): the state machine, then the
    acknowledgment (which may reveal a content gap in the peer's data: data ACKed but never seen,
    history ``G``/``g`` when both endpoints are established or cleanly closing), then the data."""
    orig, resp = Endpoint(), Endpoint()
    found: list[tuple[int, int]] = []
    # made at the first packet that moves one (an ACK, data or a FIN): a bare SYN moves neither,
    # and most connections of a SYN flood are nothing else
    streams: tuple[_Stream, ...] | None = None
    partial = False
    seen = [False, False]
    for index, pkt in enumerate(conn.packets):
        if pkt.duplicate_of:
            continue  # a capture copy is not a packet the endpoints sent again
        seg = pkt.seg
        flags = seg.flags
        is_orig = pkt.dir == C2S
        ep, peer = (orig, resp) if is_orig else (resp, orig)
        d = 0 if is_orig else 1
        if not seen[d]:  # SetPartialStatus
            if is_orig:
                partial = not flags & SYN or bool(flags & ACK)
            elif not partial:
                partial = not flags & SYN
            seen[d] = True
        st = ep.state
        if st == INACTIVE:
            if _inactive(ep, peer, orig, is_orig, flags, seg.length):
                partial = False
        elif flags & (SYN | FIN | RST):
            if st == SYN_SENT or st == SYN_ACK_SENT:  # UpdateSYN_SentState
                if flags & FIN:
                    ep.set(CLOSED)
                if flags & RST:
                    ep.set(RESET)
            elif st == ESTABLISHED or st == PARTIAL:
                _established(ep, peer, flags)
            elif st == CLOSED:  # UpdateClosedState: an RST after both FINs changes nothing
                if flags & RST and peer.state != CLOSED:
                    ep.set(RESET)
        if not gaps or not flags & (ACK | FIN) and not seg.length:
            continue
        if streams is None:
            streams = (_Stream(conn.client.base), _Stream(conn.server.base))
        mine, theirs = streams[d], streams[1 - d]
        if flags & FIN:
            mine.fin_end = mine.rel(seg.seq) + seg.length + 1 + (1 if flags & SYN else 0)
        if flags & ACK:
            up = (seg.ack - theirs.base) & _MASK
            if up > theirs.trim:  # (most ACKs move nothing: skip the call)
                n = theirs.acked(up, partial)
                if n and _clean(peer) and _clean(ep):  # TCP_Reassembler::Gap
                    found.extend([(index, 1 - d)] * n)
        if seg.length and not flags & RST:
            start = mine.rel(seg.seq) + (1 if flags & SYN else 0)
            mine.data(start, start + seg.length)
    return ZeekWalk(orig, resp, found, gaps)


def endpoint_states(conn: Connection) -> tuple[Endpoint, Endpoint]:
    """The originator's and the responder's final states, packet by packet in capture order."""
    w = walk(conn, gaps=False)
    return w.orig, w.resp


def _rstos0_history(history: str) -> bool:
    """``/\\^?S[^HAFGIQ]*R.*/ == c$history`` (a Zeek pattern compared with ``==`` matches the whole string)."""
    h = history[1:] if history.startswith("^") else history
    if not h.startswith("S"):
        return False
    for ch in h[1:]:
        if ch == "R":
            return True
        if ch in "HAFGIQ":
            return False
    return False


def zeek_conn_state(orig: Endpoint, resp: Endpoint, orig_size: int, resp_size: int, history: str) -> str:
    """``conn_state`` of base/protocols/conn/main.zeek for TCP, line for line."""
    os, rs = orig.state, resp.state
    o_inactive = os == INACTIVE or os == PARTIAL
    r_inactive = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os == SYN_SENT or os == SYN_ACK_SENT or (os == RESET and orig_size == 0 and resp_size == 0):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os == RESET:
        if r_inactive:
            return "RSTOS0" if _rstos0_history(history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os == CLOSED:
        return "SF"
    if os == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"
