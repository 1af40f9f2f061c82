"""Sequence-number arithmetic modulo 2^32 (RFC 9293 section 3.4)."""

from typing import Final

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
