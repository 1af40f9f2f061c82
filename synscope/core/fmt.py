"""Small formatting helpers shared by verdicts and renderers."""

from __future__ import annotations

import math
from typing import Final

# Below this, x * 10**places is within 2**-14 of the exact product (one rounding, ulp at most 2**-13)
_SCALED_LIMIT: Final = 1e12
# A scaled number this close to a half is left to format(): rounding it needs the exact product
_NEAR_HALF: Final = 1e-3
# (typed tuple[X, ...]: compiled, a tuple of fixed length is a C struct, boxed into a new Python
# tuple, its seven numbers each made an object, whenever it is indexed by a variable: twice per
# number written, 1 % of a SYN flood's run)
SCALES: Final[tuple[int, ...]] = (1, 10, 100, 1000, 10000, 100000, 1000000)
FIXED_SPECS: Final[tuple[str, ...]] = (".0f", ".1f", ".2f", ".3f", ".4f", ".5f", ".6f")


def scaled_round(magnitude: float, places: int) -> int:
    """``magnitude`` (>= 0) times 10**places, rounded to a whole number as ``format()`` rounds the
    exact binary value; -1 where the double product cannot tell (too large, or too near a half)."""
    scaled = magnitude * SCALES[places]
    if not scaled < _SCALED_LIMIT:  # (NaN too)
        return -1
    whole: int = int(scaled)
    frac = scaled - whole
    if -_NEAR_HALF < frac - 0.5 < _NEAR_HALF:
        return -1
    return whole + 1 if frac > 0.5 else whole


def fixed(x: float, places: int) -> str:
    """``format(x, f".{places}f")`` for ``places`` 0-6, written from integers where that is exact
    (compiled, a format spec is parsed on every call; this is a few native operations)."""
    negative = math.copysign(1.0, x) < 0
    n = scaled_round(-x if negative else x, places)
    if n < 0:
        return format(x, FIXED_SPECS[places])
    sign = "-" if negative else ""
    if places == 0:
        return sign + str(n)
    scale = SCALES[places]
    # (%, not n - units * scale: compiled, a product of a number of 2**30 or more is left to
    # CPython, whose multiplication of such numbers checks for signals, and mypyc aborts the
    # process ("fatal: out of memory") when it fails; a Ctrl-C during a run hit that)
    return f"{sign}{n // scale}.{str(n % scale + scale)[1:]}"


def duration(seconds: float | None) -> str:
    """Human duration: ``12 µs``, ``0.21 ms``, ``12.3 ms``, ``1.02 s``, ``3 min 4 s``."""
    if seconds is None:
        return "-"
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 0.0001:
        return sign + fixed(s * 1e6, 0) + " µs"
    if s < 0.001:
        return sign + fixed(s * 1e3, 2) + " ms"
    if s < 1:
        return sign + fixed(s * 1e3, 1) + " ms"
    if s < 120:
        return sign + fixed(s, 2) + " s" if s < 10 else sign + fixed(s, 1) + " s"
    minutes, rest = divmod(s, 60)
    if minutes < 120:
        return f"{sign}{fixed(minutes, 0)} min {fixed(rest, 0)} s"
    return sign + fixed(s / 3600, 1) + " h"


def short_gap(seconds: float) -> str:
    """Backoff gap in the form engineers quote: ``1``, ``2``, ``0.2`` (seconds)."""
    if seconds >= 0.95:
        return fixed(seconds, 0)
    return fixed(seconds, 1) if seconds >= 0.1 else fixed(seconds, 2)


def size(n: float) -> str:
    """Byte count: ``512 B``, ``1.5 KB``, ``3.2 MB`` (powers of 1000, as throughput is quoted)."""
    return _scaled(n, " GB", " MB", " KB", " B")


def rate(bytes_per_s: float) -> str:
    """Throughput in bits per second, as links are quoted."""
    return _scaled(bytes_per_s * 8, " Gbit/s", " Mbit/s", " kbit/s", " bit/s")


def _scaled(x: float, giga: str, mega: str, kilo: str, one: str) -> str:
    """``x`` in powers of 1000 with the unit of its size, one decimal (whole units: none)."""
    # (a chain of tests, not a loop over a table of pairs: compiled, each pair was unpacked through
    # the iterator protocol, for a sentence of most connections)
    if x >= 1e9:
        return fixed(x / 1e9, 1) + giga
    if x >= 1e6:
        return fixed(x / 1e6, 1) + mega
    if x >= 1e3:
        return fixed(x / 1e3, 1) + kilo
    return fixed(x, 0) + one


def percent(x: float) -> str:
    """A share as ``7%`` or ``0.4%``."""
    p = x * 100
    return fixed(p, 0) + "%" if p >= 10 or p == 0 else fixed(p, 1) + "%"
