"""Address formatting: segments carry packed bytes, people read strings."""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Final

# The decimal text of each byte value, for IPv4 addresses
_OCTETS: Final = tuple([str(i) for i in range(256)])


def ip_string(packed: bytes) -> str:
    """:func:`fmt_ip` without its cache, for callers that keep their own (a SYN flood's spoofed
    sources are each formatted once: the cache only misses). IPv4 is written here as
    ``inet_ntop`` writes it (compiled, four table lookups and one string; ``inet_ntop`` parses its
    arguments and formats through sprintf, and the ``socket`` attributes are looked up per call)."""
    if len(packed) == 4:
        return f"{_OCTETS[packed[0]]}.{_OCTETS[packed[1]]}.{_OCTETS[packed[2]]}.{_OCTETS[packed[3]]}"
    if len(packed) == 16:
        return socket.inet_ntop(socket.AF_INET6, packed)
    return packed.hex()


@lru_cache(maxsize=65536)
def fmt_ip(packed: bytes) -> str:
    """Printable form of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address."""
    return ip_string(packed)


def fmt_endpoint(packed: bytes, port: int) -> str:
    """``ip:port``, IPv6 in brackets as in URLs."""
    ip = fmt_ip(packed)
    return f"[{ip}]:{port}" if len(packed) == 16 else f"{ip}:{port}"


def parse_ip(text: str) -> bytes:
    """Packed bytes of a literal IPv4 or IPv6 address; ValueError otherwise."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, text)
        except OSError:
            continue
    raise ValueError(f"not an IP address: {text!r}")
