"""Address formatting: segments carry packed bytes, people read strings."""

from __future__ import annotations

import socket
from functools import lru_cache


@lru_cache(maxsize=65536)
def fmt_ip(packed: bytes) -> str:
    """Printable form of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if len(packed) == 16:
        return socket.inet_ntop(socket.AF_INET6, packed)
    return packed.hex()


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
