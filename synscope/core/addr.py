"""Address formatting: segments carry packed bytes, people read strings."""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Final

# The decimal text of each byte value, for IPv4 addresses
_OCTETS: Final = tuple([str(i) for i in range(256)])
# distinct addresses an AddressTable shares before it starts over (a spoofed flood)
MAX_INTERNED: Final = 1 << 20
_V4_CACHE: Final = 1024  # slots of AddressTable's IPv4 cache (a power of two)


class AddressTable:
    """One bytes object per packed address, shared by every segment a decoder makes (a long
    capture holds millions) and by the segments the tracker rebuilds from compact attempts: a
    flood's server address is then one object, found by identity in every table keyed by it.
    Data both stages hold (the pipeline hands the decoder's table to the tracker), so neither
    stage calls the other."""

    def __init__(self) -> None:
        self._addresses: dict[bytes, bytes] = {}
        # IPv4 addresses → their shared bytes object, direct-mapped by their value: a hit costs
        # no bytes object and no dict lookup (b"": an empty slot)
        self._v4: list[bytes] = [b""] * _V4_CACHE

    def v4(self, buf: bytes, at: int) -> bytes:
        """The shared bytes object of the IPv4 address at ``buf[at:at + 4]``."""
        b0, b1, b2, b3 = buf[at], buf[at + 1], buf[at + 2], buf[at + 3]
        value = b0 << 24 | b1 << 16 | b2 << 8 | b3
        slot = (value ^ (value >> 10) ^ (value >> 20)) & (_V4_CACHE - 1)
        # the cached address compared byte by byte (compiled, native reads), not by a number kept
        # beside it: a list holds its numbers as objects, and most addresses are over 2**30
        cached = self._v4[slot]
        if len(cached) == 4 and cached[3] == b3 and cached[2] == b2 and cached[1] == b1 and cached[0] == b0:
            return cached
        address = self.intern(buf[at : at + 4])
        self._v4[slot] = address
        return address

    def intern(self, address: bytes) -> bytes:
        """The shared bytes object equal to ``address``."""
        table = self._addresses
        if len(table) >= MAX_INTERNED:  # a spoofed flood: start over
            table.clear()
            self._v4 = [b""] * _V4_CACHE
        return table.setdefault(address, address)

    def at(self, buf: bytes, at: int, size: int) -> bytes:
        """The shared bytes object of the address of ``size`` bytes (4 or 16) at ``buf[at:]``."""
        if size == 4:
            return self.v4(buf, at)
        return self.intern(buf[at : at + size])


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
