"""Small formatting helpers shared by verdicts and renderers."""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    """Human duration: ``12 µs``, ``0.21 ms``, ``12.3 ms``, ``1.02 s``, ``3 min 4 s``."""
    if seconds is None:
        return "-"
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 0.0001:
        return f"{sign}{s * 1e6:.0f} µs"
    if s < 0.001:
        return f"{sign}{s * 1e3:.2f} ms"
    if s < 1:
        return f"{sign}{s * 1e3:.1f} ms"
    if s < 120:
        return f"{sign}{s:.2f} s" if s < 10 else f"{sign}{s:.1f} s"
    minutes, rest = divmod(s, 60)
    if minutes < 120:
        return f"{sign}{minutes:.0f} min {rest:.0f} s"
    return f"{sign}{s / 3600:.1f} h"


def short_gap(seconds: float) -> str:
    """Backoff gap in the form engineers quote: ``1``, ``2``, ``0.2`` (seconds)."""
    if seconds >= 0.95:
        return f"{seconds:.0f}"
    return f"{seconds:.1f}" if seconds >= 0.1 else f"{seconds:.2f}"


def size(n: float) -> str:
    """Byte count: ``512 B``, ``1.5 KB``, ``3.2 MB`` (powers of 1000, as throughput is quoted)."""
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n:.0f} B"


def rate(bytes_per_s: float) -> str:
    """Throughput in bits per second, as links are quoted."""
    bits = bytes_per_s * 8
    for unit, factor in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= factor:
            return f"{bits / factor:.1f} {unit}"
    return f"{bits:.0f} bit/s"


def percent(x: float) -> str:
    """A share as ``7%`` or ``0.4%``."""
    p = x * 100
    return f"{p:.0f}%" if p >= 10 or p == 0 else f"{p:.1f}%"
