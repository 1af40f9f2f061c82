"""Wireshark's ``tcp.analysis.*`` flags, with its definitions and in its check order.

Each detector below is one condition from Wireshark's
``tcp_analyze_sequence_number`` (epan/dissectors/packet-tcp.c), its prose
definition as docstring. ``fwd`` is the direction the segment travels in,
``rev`` the opposite one. All sequence comparisons are modulo 2^32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from synscope.core.model import ACK, FIN, RST, SYN
from synscope.core.seqnum import MASK, SCALE_UNKNOWN, UNSEEN, seq_gt, seq_le, seq_lt

A_RETRANSMISSION: Final = 1 << 0
A_FAST_RETRANSMISSION: Final = 1 << 1
A_SPURIOUS_RETRANSMISSION: Final = 1 << 2
A_OUT_OF_ORDER: Final = 1 << 3
A_DUPLICATE_ACK: Final = 1 << 4
A_LOST_SEGMENT: Final = 1 << 5
A_ACK_LOST_SEGMENT: Final = 1 << 6
A_ZERO_WINDOW: Final = 1 << 7
A_ZERO_WINDOW_PROBE: Final = 1 << 8
A_ZERO_WINDOW_PROBE_ACK: Final = 1 << 9
A_WINDOW_FULL: Final = 1 << 10
A_WINDOW_UPDATE: Final = 1 << 11
A_KEEP_ALIVE: Final = 1 << 12
A_KEEP_ALIVE_ACK: Final = 1 << 13
A_REUSED_PORTS: Final = 1 << 14

# names as tshark spells them after "tcp.analysis."; order = display order
FLAG_NAMES: Final[tuple[tuple[int, str], ...]] = (
    (A_REUSED_PORTS, "reused_ports"),
    (A_RETRANSMISSION, "retransmission"),
    (A_FAST_RETRANSMISSION, "fast_retransmission"),
    (A_SPURIOUS_RETRANSMISSION, "spurious_retransmission"),
    (A_OUT_OF_ORDER, "out_of_order"),
    (A_LOST_SEGMENT, "lost_segment"),
    (A_ACK_LOST_SEGMENT, "ack_lost_segment"),
    (A_DUPLICATE_ACK, "duplicate_ack"),
    (A_ZERO_WINDOW, "zero_window"),
    (A_ZERO_WINDOW_PROBE, "zero_window_probe"),
    (A_ZERO_WINDOW_PROBE_ACK, "zero_window_probe_ack"),
    (A_WINDOW_FULL, "window_full"),
    (A_WINDOW_UPDATE, "window_update"),
    (A_KEEP_ALIVE, "keep_alive"),
    (A_KEEP_ALIVE_ACK, "keep_alive_ack"),
)

# Wireshark: a retransmission within this long of the last duplicate ACK is "fast"
FAST_RETRANSMISSION_WINDOW: Final = 0.020
# Wireshark: ... and only after at least this many duplicate ACKs for exactly its seq came the other way
FAST_RETRANSMISSION_DUPACKS: Final = 2
# Wireshark: without a handshake RTT, a segment filling an old hole this soon after the
# highest one is "out of order" rather than a retransmission
DEFAULT_OOO_THRESHOLD: Final = 0.003

_SFR: Final = SYN | FIN | RST


def flag_names(bits: int) -> list[str]:
    """tshark's names of the flags set in ``bits``.

    tshark also sets ``tcp.analysis.retransmission`` on fast and spurious
    retransmissions, so a filter on it finds all three; so do we.
    """
    if bits & (A_FAST_RETRANSMISSION | A_SPURIOUS_RETRANSMISSION):
        bits |= A_RETRANSMISSION
    return [name for bit, name in FLAG_NAMES if bits & bit]


@dataclass(slots=True)
class SeqState:
    """Wireshark's per-direction analysis state (``tcp_analyze_seq_flow_info_t``)."""

    # UNSEEN until known (plain ints, not int | None: compiled, they stay unboxed)
    nextseq: int = UNSEEN  # highest seq+len seen (SYN/FIN count one)
    nextseq_time: float = 0.0
    maxseqtobeacked: int = UNSEEN  # highest contiguous seq that may be acked
    lastack: int = UNSEEN  # last ACK number this direction sent
    lastack_time: float = 0.0
    window: int = UNSEEN  # last window this direction advertised (scaled)
    lastsegmentflags: int = 0
    dupacknum: int = 0
    lastnondupack: int = 0

    # Written out (dataclass keeps it): two per connection, and the generated one runs as Python bytecode
    def __init__(self) -> None:
        self.nextseq = UNSEEN
        self.nextseq_time = 0.0
        self.maxseqtobeacked = UNSEEN
        self.lastack = UNSEEN
        self.lastack_time = 0.0
        self.window = UNSEEN
        self.lastsegmentflags = 0
        self.dupacknum = 0
        self.lastnondupack = 0


def is_zero_window_probe(seglen: int, seq: int, fwd: SeqState, rev: SeqState) -> bool:
    """Zero window probe: exactly one byte at the next expected sequence number while
    the other side advertises a zero window."""
    return seglen == 1 and seq == fwd.nextseq and rev.window == 0


def is_zero_window(window: int, flags: int) -> bool:
    """Zero window: the receive window is zero and none of SYN, FIN, RST is set."""
    return window == 0 and not flags & _SFR


def is_lost_segment(seq: int, flags: int, fwd: SeqState) -> bool:
    """Previous segment not captured: this segment starts beyond the next expected
    sequence number (checked only once something was seen; never for RST)."""
    return fwd.nextseq != UNSEEN and seq_gt(seq, fwd.nextseq) and not flags & RST


def is_keep_alive(seglen: int, seq: int, flags: int, fwd: SeqState) -> bool:
    """Keep-alive: 0 or 1 byte starting one byte before the next expected sequence number;
    never SYN, FIN or RST."""
    return seglen <= 1 and fwd.nextseq != UNSEEN and seq == (fwd.nextseq - 1) & MASK and not flags & _SFR


def is_window_update(seglen: int, window: int, seq: int, ack: int, flags: int, fwd: SeqState) -> bool:
    """Window update: no data, same seq and ack as before, a new non-zero window."""
    return seglen == 0 and window != 0 and window != fwd.window and seq == fwd.nextseq and ack == fwd.lastack and not flags & _SFR


def is_window_full(seglen: int, seq: int, flags: int, rev: SeqState, rev_scale: int) -> bool:
    """Window full: data that reaches exactly the right edge of the window the other
    side advertised (only when that side's window scaling is known)."""
    if seglen == 0 or rev_scale == SCALE_UNKNOWN or flags & _SFR or rev.lastack == UNSEEN or rev.window == UNSEEN:
        return False
    return (seq + seglen) & MASK == (rev.lastack + rev.window) & MASK


def _repeats_ack(seglen: int, seq: int, ack: int, flags: int, fwd: SeqState) -> bool:
    return seglen == 0 and seq == fwd.nextseq and ack == fwd.lastack and not flags & _SFR


def is_keep_alive_ack(seglen: int, window: int, seq: int, ack: int, flags: int, fwd: SeqState, rev: SeqState) -> bool:
    """Keep-alive ACK: repeats the previous ACK and window, and the last segment the
    other way was a keep-alive."""
    return window != 0 and window == fwd.window and bool(rev.lastsegmentflags & A_KEEP_ALIVE) and _repeats_ack(seglen, seq, ack, flags, fwd)


def is_zero_window_probe_ack(seglen: int, window: int, seq: int, ack: int, flags: int, fwd: SeqState, rev: SeqState) -> bool:
    """Zero window probe ACK: repeats the previous ACK (or it plus one) and the zero
    window, and the last segment the other way was a zero window probe."""
    return (
        seglen == 0
        and window == 0
        and fwd.window == 0
        and seq == fwd.nextseq
        and fwd.lastack != UNSEEN
        and (ack == fwd.lastack or ack == (fwd.lastack + 1) & MASK)
        and bool(rev.lastsegmentflags & A_ZERO_WINDOW_PROBE)
        and not flags & _SFR
    )


def is_duplicate_ack(seglen: int, window: int, seq: int, ack: int, flags: int, fwd: SeqState) -> bool:
    """Duplicate ACK: no data, and the same window, seq and ack as the previous segment."""
    return window != 0 and window == fwd.window and _repeats_ack(seglen, seq, ack, flags, fwd)


def is_ack_lost_segment(ack: int, flags: int, rev: SeqState) -> bool:
    """ACKed unseen segment: acknowledges beyond the highest contiguous sequence number
    seen the other way, so segments the capture missed were delivered."""
    return bool(flags & ACK) and rev.maxseqtobeacked != UNSEEN and seq_gt(ack, rev.maxseqtobeacked)


def classify_retransmission(ts: float, seq: int, seglen: int, syn_fin: int, fwd: SeqState, rev: SeqState, irtt: float | None) -> int:
    """The retransmission family, for a segment carrying data, SYN or FIN.

    - spurious retransmission: all of its data was already acknowledged;
    - fast retransmission: below the next expected seq, at least two duplicate ACKs
      the other way for exactly this seq, within 20 ms of the last of them;
    - out of order: below the next expected seq, not ending exactly at it (SYN and FIN
      count one), and sooner after the highest segment than the handshake RTT
      (3 ms if unknown; a timestamp going backwards never counts as sooner);
    - retransmission: below the next expected seq otherwise.
    """
    not_advanced = fwd.nextseq != UNSEEN and seq_lt(seq, fwd.nextseq)
    if seglen > 0 and rev.lastack != UNSEEN and seq_le((seq + seglen) & MASK, rev.lastack):
        return A_SPURIOUS_RETRANSMISSION
    if not_advanced and rev.dupacknum >= FAST_RETRANSMISSION_DUPACKS and rev.lastack == seq and 0 <= ts - rev.lastack_time < FAST_RETRANSMISSION_WINDOW:
        return A_FAST_RETRANSMISSION
    threshold = irtt if irtt else DEFAULT_OOO_THRESHOLD
    if not_advanced and 0 <= ts - fwd.nextseq_time < threshold and fwd.nextseq != (seq + seglen + syn_fin) & MASK:
        return A_OUT_OF_ORDER
    if not_advanced:
        return A_RETRANSMISSION
    return 0


DETECTORS: Final = (
    is_zero_window_probe,
    is_zero_window,
    is_lost_segment,
    is_keep_alive,
    is_window_update,
    is_window_full,
    is_keep_alive_ack,
    is_zero_window_probe_ack,
    is_duplicate_ack,
    is_ack_lost_segment,
    classify_retransmission,
)
"""The checks in the order Wireshark runs them (documentation; :func:`analyse_segment` runs them)."""


def analyse_segment(
    ts: float,
    frame: int,
    seq: int,
    ack: int,
    seglen: int,
    flags: int,
    window: int,
    fwd: SeqState,
    rev: SeqState,
    rev_scale: int,
    irtt: float | None,
) -> int:
    """Run the cascade on one segment and update both directions' state.

    ``window`` is already scaled. Returns the flag bits; on a duplicate ACK, ``fwd.dupacknum``
    is its number and ``fwd.lastnondupack`` the frame of the ACK it duplicates.
    """
    bits = 0
    # Each detector is only asked when it can fire (most need no data, or data):
    # the order among those asked is Wireshark's.
    if seglen == 1 and is_zero_window_probe(seglen, seq, fwd, rev):
        bits = A_ZERO_WINDOW_PROBE  # Wireshark skips the other forward checks
    else:
        if window == 0 and is_zero_window(window, flags):
            bits |= A_ZERO_WINDOW
        if fwd.nextseq != UNSEEN and seq != fwd.nextseq:
            if is_lost_segment(seq, flags, fwd):
                bits |= A_LOST_SEGMENT
            if seglen <= 1 and is_keep_alive(seglen, seq, flags, fwd):
                bits |= A_KEEP_ALIVE
        if seglen == 0:
            if window != fwd.window:
                if is_window_update(seglen, window, seq, ack, flags, fwd):
                    bits |= A_WINDOW_UPDATE
            elif rev.lastsegmentflags and is_keep_alive_ack(seglen, window, seq, ack, flags, fwd, rev):
                bits |= A_KEEP_ALIVE_ACK
            elif rev.lastsegmentflags and is_zero_window_probe_ack(seglen, window, seq, ack, flags, fwd, rev):
                bits |= A_ZERO_WINDOW_PROBE_ACK
            elif is_duplicate_ack(seglen, window, seq, ack, flags, fwd):
                fwd.dupacknum += 1
                bits |= A_DUPLICATE_ACK
        elif rev_scale != SCALE_UNKNOWN and is_window_full(seglen, seq, flags, rev, rev_scale):
            bits |= A_WINDOW_FULL
    if ack != fwd.lastack:
        fwd.lastnondupack = frame
        fwd.dupacknum = 0
    if rev.maxseqtobeacked != UNSEEN and is_ack_lost_segment(ack, flags, rev):
        bits |= A_ACK_LOST_SEGMENT
        rev.maxseqtobeacked = rev.nextseq
    occupies = seglen > 0 or flags & (SYN | FIN)
    if occupies and not bits & A_KEEP_ALIVE:
        bits |= classify_retransmission(ts, seq, seglen, 1 if flags & (SYN | FIN) else 0, fwd, rev, irtt)
    if not bits & A_ZERO_WINDOW_PROBE:  # probes do not advance the sequence space
        # Any segment beyond the highest one moves it on, a bare ACK too (Wireshark does):
        # after an ACK whose seq shows an unseen FIN, that FIN's retransmission is one.
        nextseq = (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & MASK
        if fwd.nextseq == UNSEEN or seq_gt(nextseq, fwd.nextseq):
            fwd.nextseq = nextseq
            fwd.nextseq_time = ts
        if occupies and (fwd.maxseqtobeacked == UNSEEN or seq_gt(seq, fwd.maxseqtobeacked)):
            fwd.maxseqtobeacked = fwd.nextseq
    if (fwd.maxseqtobeacked == UNSEEN or seq == fwd.maxseqtobeacked) and not bits & A_ZERO_WINDOW_PROBE:
        fwd.maxseqtobeacked = fwd.nextseq
    fwd.window = window
    if flags & ACK:
        fwd.lastack = ack
        fwd.lastack_time = ts
    fwd.lastsegmentflags = bits
    return bits
