"""Sequence-number arithmetic modulo 2^32 (RFC 9293 section 3.4), and the one definition of
the numbers every view shows: relative sequence and ack numbers, and the scaled window."""

from typing import Final

from synscope.core.model import ACK, SYN

MOD: Final = 1 << 32
MASK: Final = MOD - 1
HALF: Final = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b, correct across wraparound."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    """a comes before b."""
    return a != b and ((a - b) & MASK) >= HALF


def seq_le(a: int, b: int) -> bool:
    """a comes before or equals b."""
    return a == b or ((a - b) & MASK) >= HALF


def seq_gt(a: int, b: int) -> bool:
    """a comes after b."""
    return a != b and ((a - b) & MASK) < HALF


def seq_ge(a: int, b: int) -> bool:
    """a comes after or equals b."""
    return ((a - b) & MASK) < HALF


def seq_add(a: int, n: int) -> int:
    """a + n modulo 2^32."""
    return (a + n) & MASK


# --------------------------------------------------------------- numbers as shown
# A sequence or ack number, a relative base or a window not seen yet. Wire values are never
# negative, so a plain int says "not seen" without Optional (compiled, it stays unboxed).
UNSEEN: Final = -1
# A side's window scale when it is not a shift count
SCALE_UNKNOWN: Final = -1  # the handshake was not seen, or the snaplen cut its options off
SCALE_NONE: Final = -2  # both SYNs seen, not both with the option: windows are not scaled (RFC 7323)


def relative(num: int, base: int) -> int:
    """``num`` relative to ``base`` (modulo 2^32), or ``num`` itself when ``base`` is UNSEEN
    (absolute numbers asked for, or nothing seen to count from)."""
    return num if base == UNSEEN else (num - base) & MASK


def shown_ack(ack: int, flags: int, base: int) -> int:
    """The acknowledgment number as shown (Wireshark's ``tcp.ack``): relative to the peer's
    ``base`` when the ACK flag is set; without it the field acknowledges nothing, so its raw
    value is shown as it is (a nonzero one is a broken or crafted segment worth seeing)."""
    return relative(ack, base) if flags & ACK else ack


def scaled_window(win: int, flags: int, shift: int) -> int:
    """The window in bytes (Wireshark's ``tcp.window_size``): the field shifted by the sender's
    scale once scaling is agreed; a SYN's window is never scaled (RFC 7323 section 2.2), and with
    the scale unknown or off (``shift`` < 0) the field is all there is."""
    return win << shift if shift >= 0 and not flags & SYN else win
