"""``checksum_state`` adds 16-bit words where they lie; it must say what the definition says.

The definition, written the plain way below (``_by_definition``): the one's-complement sum of a
header or segment is the big-endian integer of its bytes modulo 0xFFFF, an odd segment padded with
a zero byte, the pseudo-header (addresses, protocol 6 and length; IPv6's in its own layout) in
front. Random segments of odd and even lengths, IPv4 (with its header) and IPv6, made valid,
offloaded (the checksum field holding the pseudo-header's sum) or broken, go both ways.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synscope.core.model import CSUM_BAD, CSUM_GOOD, CSUM_PARTIAL
from synscope.read.decode import TCP_CSUM, checksum_state, word_sum


def _by_definition(data: bytes, ip: int, l4: int, end: int, src: bytes, dst: bytes) -> int:
    """The checksum verdict from big integers (the form checksum_state replaced)."""
    if ip >= 0 and int.from_bytes(data[ip:l4], "big") % 0xFFFF:
        return CSUM_BAD
    length = end - l4
    if len(src) == 4:
        pseudo = src + dst + bytes((0, 6, length >> 8, length & 0xFF))
    else:
        pseudo = src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, 6))
    segment = data[l4:end] if not length & 1 else data[l4:end] + b"\0"
    if int.from_bytes(pseudo + segment, "big") % 0xFFFF == 0:
        return CSUM_GOOD
    if length >= 20 and (data[l4 + TCP_CSUM] << 8 | data[l4 + TCP_CSUM + 1]) % 0xFFFF == int.from_bytes(pseudo, "big") % 0xFFFF:
        return CSUM_PARTIAL
    return CSUM_BAD


def _fold(value: int) -> int:
    while value > 0xFFFF:
        value = (value & 0xFFFF) + (value >> 16)
    return value


@st.composite
def segments(draw: st.DrawFn) -> tuple[bytes, int, int, int, bytes, bytes]:
    """(frame bytes, ip, l4, end, src, dst) with the checksums valid, offloaded or broken."""
    v6 = draw(st.booleans())
    size = 16 if v6 else 4
    src, dst = draw(st.binary(min_size=size, max_size=size)), draw(st.binary(min_size=size, max_size=size))
    lead = draw(st.binary(max_size=15))  # whatever comes before (link header, odd offsets)
    iph = b"" if v6 else draw(st.binary(min_size=20, max_size=20))
    seg = bytearray(draw(st.binary(min_size=20, max_size=90)))
    length = len(seg)
    if v6:
        pseudo = src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, 6))
    else:
        pseudo = src + dst + bytes((0, 6, length >> 8, length & 0xFF))
        iph = iph[:10] + b"\0\0" + iph[12:]
        if draw(st.booleans()):  # a valid IPv4 header
            iph = iph[:10] + (0xFFFF - _fold(int.from_bytes(iph, "big") % 0xFFFF or 0xFFFF)).to_bytes(2, "big") + iph[12:]
    kind = draw(st.sampled_from(["valid", "offloaded", "any"]))
    if kind != "any":
        seg[TCP_CSUM : TCP_CSUM + 2] = b"\0\0"
        part = int.from_bytes(pseudo, "big") % 0xFFFF
        if kind == "valid":
            whole = bytes(seg) + (b"\0" if length & 1 else b"")
            part = 0xFFFF - (int.from_bytes(pseudo + whole, "big") % 0xFFFF)
        seg[TCP_CSUM : TCP_CSUM + 2] = (part & 0xFFFF).to_bytes(2, "big")
    data = lead + iph + bytes(seg) + draw(st.binary(max_size=5))  # bytes after the segment (padding)
    ip = -1 if v6 else len(lead)
    l4 = len(lead) + len(iph)
    return data, ip, l4, l4 + length, src, dst


@settings(max_examples=600, deadline=None)
@given(segments())
def test_checksum_state_matches_definition(case: tuple[bytes, int, int, int, bytes, bytes]) -> None:
    assert checksum_state(*case) == _by_definition(*case)


@given(st.binary(max_size=64), st.data())
def test_word_sum_is_the_integer_modulo(data: bytes, draw: st.DataObject) -> None:
    start = draw.draw(st.integers(0, len(data)))
    stop = draw.draw(st.integers(start, len(data)))
    assert word_sum(data, start, stop) % 0xFFFF == int.from_bytes(data[start:stop], "big") % 0xFFFF


def test_each_verdict_is_reached() -> None:
    """The generator above reaches every verdict (else the comparison proves little)."""
    seg = bytearray(20)
    src, dst = bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))
    pseudo = int.from_bytes(src + dst + bytes((0, 6, 0, 20)), "big") % 0xFFFF
    seg[TCP_CSUM : TCP_CSUM + 2] = pseudo.to_bytes(2, "big")
    assert checksum_state(bytes(seg), -1, 0, 20, src, dst) == CSUM_PARTIAL
    seg[TCP_CSUM : TCP_CSUM + 2] = (0xFFFF - pseudo).to_bytes(2, "big")
    assert checksum_state(bytes(seg), -1, 0, 20, src, dst) == CSUM_GOOD
    seg[0] = 1
    assert checksum_state(bytes(seg), -1, 0, 20, src, dst) == CSUM_BAD
