"""Port lists and ranges as users type them: ``80``, ``22,80,443``, ``8000-8100``."""

from __future__ import annotations


class PortSpecError(ValueError):
    """A port specification that does not parse; the message says what is wrong."""


def parse_ports(spec: str) -> list[int]:
    """Ports in the order given, without duplicates; ranges are inclusive."""
    seen: dict[int, None] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise PortSpecError(f"empty item in port list {spec!r}")
        lo_txt, sep, hi_txt = part.partition("-")
        try:
            lo = int(lo_txt)
            hi = int(hi_txt) if sep else lo
        except ValueError:
            raise PortSpecError(f"{part!r} is not a port or a range like 8000-8100") from None
        for p in (lo, hi):
            if not 1 <= p <= 65535:
                raise PortSpecError(f"port {p} out of range 1-65535")
        if hi < lo:
            raise PortSpecError(f"range {part!r} runs backwards")
        for p in range(lo, hi + 1):
            seen[p] = None
    return list(seen)
