"""Compact records of half-open connection attempts (a SYN, its retransmissions, the SYN-ACK).

A SYN flood opens a million attempts that never get a third kind of packet; as full
:class:`~synscope.read.tracker.Connection` records (two sides, packet records, segments, the
analysis state) each costs about 4.5 KB until the end of the capture. The tracker keeps such an
attempt as one ``bytes`` record instead, under a packed flow key, and makes the full connection
from it (:func:`segments` rebuilds its segments as the decoder made them, and the tracker feeds
them through its own code) when a packet that is not one of these arrives, or when it is
reported. Nothing here decides anything about TCP: it only stores and gives back segments.

Record layout: a header (id, opened_at, reused_from or -1), then per frame a fixed part
(:data:`_FRAME`) and the TCP options as captured.
"""

from __future__ import annotations

import struct
from typing import Final

from synscope.core.model import ACK, FIN, RST, SYN, Segment

# Frames of one attempt kept compact at most (a SYN sent 6 times and a few SYN-ACKs): the next
# one makes it a full connection
MAX_FRAMES: Final = 8
# id, opened_at, reused_from (-1: none)
_HEAD: Final = struct.Struct("<qqq")
HEAD_SIZE: Final = 24
# ts, frame, seq, ack, flags, win, ttl, ip_id, ecn, pkttype, source_index, bits, csum, options length
_FRAME: Final = struct.Struct("<dqIIHHBHBbIBBB")
FRAME_SIZE: Final = 40
_PORTS: Final = struct.Struct(">HH")
# a record's header and its first frame's fixed part (see new_record)
_HEAD_FRAME: Final = struct.Struct("<qqqdqIIHHBHBbIBBB")
# a frame's time, the first field of its fixed part
_TS: Final = struct.Struct("<d")
# a header field or a frame number (see _i64)
_I64: Final = struct.Struct("<q")
# offsets of fields in a frame's fixed part, for the few read without unpacking it
_SEQ_AT: Final = 16
_FLAGS_AT: Final = 24
_BITS_AT: Final = 37
_OPTLEN_AT: Final = 39
# bits of a frame
_FROM_FIRST: Final = 1  # sent by the first endpoint of the flow key
_TRUNCATED: Final = 2
_FRAGMENT: Final = 4
_KINDS: Final = SYN | ACK | FIN | RST


def pack_key(key: tuple) -> bytes:  # type: ignore[type-arg]
    """A 4-tuple flow key as one short bytes object (both addresses, then both ports, big-endian):
    a third of the memory of the tuple with its own address and port objects."""
    # (members declared: compiled, the joins are then native, where + of two objects is a generic
    # call; the ports as _PORTS packs them, without a method call)
    a: bytes = key[0]
    b: bytes = key[2]
    port_a: int = key[1]
    port_b: int = key[3]
    return a + b + bytes([port_a >> 8, port_a & 0xFF, port_b >> 8, port_b & 0xFF])


def from_first(seg: Segment, packed: bytes) -> bool:
    """Was ``seg`` sent by the first endpoint of the flow key packed as ``packed``?"""
    n = len(seg.src)
    # (the first port read byte by byte: compiled, native, where unpack_from is a method call and a tuple)
    return seg.src == packed[:n] and seg.sport == (packed[2 * n] << 8 | packed[2 * n + 1])


def storable(seg: Segment) -> bool:
    """A segment a compact record can hold exactly: no payload, no encapsulation, fields in the
    record's ranges."""
    return (
        seg.length == 0
        and not seg.payload
        and seg.encap is None
        and -128 <= seg.pkttype <= 127
        and 0 <= seg.source_index <= 0xFFFFFFFF
        and 0 <= seg.frame
        and len(seg.raw_options) <= 255
        and 0 <= seg.flags <= 0xFFFF
        and 0 <= seg.ecn <= 255
        and 0 <= seg.csum <= 255
    )


def opening(seg: Segment) -> bool:
    """A bare SYN that a compact record may start with."""
    return seg.flags & _KINDS == SYN and storable(seg)


def new_record(ident: int, opened_at: int, reused_from: int | None, seg: Segment, first: bool) -> bytes:
    """The record of an attempt opened by ``seg`` (``first``: see :func:`from_first`)."""
    # (the header and the first frame's fixed part packed at once: _HEAD then _FRAME, no padding
    # between them; one method call and one join fewer per attempt than packing them apart)
    options = seg.raw_options
    return (
        _HEAD_FRAME.pack(
            ident,
            opened_at,
            -1 if reused_from is None else reused_from,
            seg.ts,
            seg.frame,
            seg.seq,
            seg.ack,
            seg.flags,
            seg.win,
            seg.ttl,
            seg.ip_id,
            seg.ecn,
            seg.pkttype,
            seg.source_index,
            _bits(seg, first),
            seg.csum,
            len(options),
        )
        + options
    )


def _bits(seg: Segment, first: bool) -> int:
    """The bits of a frame (_FROM_FIRST, _TRUNCATED, _FRAGMENT)."""
    return (_FROM_FIRST if first else 0) | (_TRUNCATED if seg.truncated else 0) | (_FRAGMENT if seg.fragment else 0)


def _frame(seg: Segment, first: bool) -> bytes:
    bits = _bits(seg, first)
    options = seg.raw_options
    fixed = _FRAME.pack(
        seg.ts, seg.frame, seg.seq, seg.ack, seg.flags, seg.win, seg.ttl, seg.ip_id, seg.ecn, seg.pkttype, seg.source_index, bits, seg.csum, len(options)
    )
    return fixed + options


def header(record: bytes) -> tuple[int, int, int]:
    """(id, opened_at, reused_from or -1) of a record."""
    # (read byte by byte, as _HEAD packed them: compiled, native, where unpack_from is a method
    # call that makes a tuple and three ints)
    return _i64(record, 0), _i64(record, 8), _i64(record, 16)


def _u16(record: bytes, offset: int) -> int:
    """The little-endian unsigned 16-bit field at ``offset`` (struct's ``<H``)."""
    return record[offset] | record[offset + 1] << 8


def _u32(record: bytes, offset: int) -> int:
    """The little-endian unsigned 32-bit field at ``offset`` (struct's ``<I``)."""
    return record[offset] | record[offset + 1] << 8 | record[offset + 2] << 16 | record[offset + 3] << 24


def _i64(record: bytes, offset: int) -> int:
    """The little-endian signed 64-bit field at ``offset`` (struct's ``<q``)."""
    low = _u32(record, offset)
    high = _u32(record, offset + 4)
    # (the values a record holds, ids, positions, frame numbers and -1, from 32 bits: compiled,
    # native; one of more bits would be a Python long, whose every operation is a call)
    if high == 0:
        return low
    if high == 0xFFFFFFFF and low >= 0x80000000:
        return low - 0x100000000
    value: int = _I64.unpack_from(record, offset)[0]
    return value


def extended(record: bytes, seg: Segment, first: bool) -> bytes | None:
    """The record with ``seg`` added, if it is one more of the same attempt that a compact record
    may hold: the client's SYN again with the same ISN, or the other side's SYN-ACK (again with the
    ISN of its first one); None for anything else (the tracker makes the full connection then)."""
    if not storable(seg):
        return None
    kind = seg.flags & _KINDS
    frames, client_first, client_isn, server_isn = _attempt(record)
    if frames >= MAX_FRAMES:
        return None
    if first == client_first:
        if kind != SYN or seg.seq != client_isn:
            return None
    elif kind != SYN | ACK or (server_isn >= 0 and seg.seq != server_isn):
        return None
    return record + _frame(seg, first)


def _attempt(record: bytes) -> tuple[int, bool, int, int]:
    """(frames, client first (see :func:`from_first`), client ISN, ISN of the first SYN-ACK or -1)
    of a record: what :func:`extended` and :func:`answers_earlier` decide on."""
    offset = HEAD_SIZE
    frames = 0
    client_first = True
    client_isn = -1
    server_isn = -1
    size = len(record)
    while offset < size:
        # (the four fields wanted, read where _FRAME packs them: compiled, native, where
        # unpack_from makes a tuple of all fourteen)
        seq = _u32(record, offset + _SEQ_AT)
        flags = _u16(record, offset + _FLAGS_AT)
        bits = record[offset + _BITS_AT]
        optlen = record[offset + _OPTLEN_AT]
        if frames == 0:
            client_first = bool(bits & _FROM_FIRST)
            client_isn = seq
        elif flags & _KINDS == SYN | ACK and server_isn < 0:
            server_isn = seq
        frames += 1
        offset += FRAME_SIZE + optlen
    return frames, client_first, client_isn, server_isn


def segments(packed: bytes, record: bytes, a: bytes | None = None, b: bytes | None = None) -> list[Segment]:
    """The segments of a record, as the decoder made them, in capture order; ``a`` and ``b``: the
    two addresses of the flow key (``packed``'s), when the caller has them as shared objects."""
    n = (len(packed) - 4) // 2
    if a is None:
        a = packed[:n]
    if b is None:
        b = packed[n : 2 * n]
    # (the ports read as _PORTS packs them, big-endian: compiled, native, where unpack_from is a
    # method call and a tuple)
    port_a = packed[2 * n] << 8 | packed[2 * n + 1]
    port_b = packed[2 * n + 2] << 8 | packed[2 * n + 3]
    out: list[Segment] = []
    offset = HEAD_SIZE
    size = len(record)
    while offset < size:
        # (the integer fields read where _FRAME packs them: compiled, native, where unpack_from
        # makes a tuple of fourteen objects to take apart again; the time alone is unpacked)
        ts: float = _TS.unpack_from(record, offset)[0]
        frame = _i64(record, offset + 8)
        seq = _u32(record, offset + _SEQ_AT)
        ack = _u32(record, offset + 20)
        flags = _u16(record, offset + _FLAGS_AT)
        win = _u16(record, offset + 26)
        ttl = record[offset + 28]
        ip_id = _u16(record, offset + 29)
        ecn = record[offset + 31]
        pkttype = record[offset + 32]
        if pkttype >= 128:  # (a signed byte)
            pkttype -= 256
        index = _u32(record, offset + 33)
        bits = record[offset + _BITS_AT]
        csum = record[offset + 38]
        optlen = record[offset + _OPTLEN_AT]
        offset += FRAME_SIZE
        options = record[offset : offset + optlen]
        offset += optlen
        if bits & _FROM_FIRST:
            src, sport, dst, dport = a, port_a, b, port_b
        else:
            src, sport, dst, dport = b, port_b, a, port_a
        truncated = bool(bits & _TRUNCATED)
        fragment = bool(bits & _FRAGMENT)
        seg = Segment(frame, ts, src, dst, sport, dport, seq, ack, flags, win, 0, ttl, ip_id, options, truncated, fragment, b"", ecn, pkttype, index)
        seg.csum = csum
        out.append(seg)
    return out


def answers_earlier(record: bytes, seg: Segment, first: bool) -> bool:
    """Is ``seg`` (a SYN-ACK; ``first``: see :func:`from_first`), for the attempt in ``record``, an
    answer to an earlier attempt on its ports (see ``Tracker._answers_earlier``)? The record names
    one (reused_from), holds no SYN-ACK yet, and ``seg`` comes from the other side than the SYN and
    does not acknowledge it (a record's SYN has no data: ISN + 1)."""
    if _i64(record, 16) < 0:  # (reused_from: see header())
        return False
    _frames, client_first, client_isn, server_isn = _attempt(record)
    if server_isn >= 0:
        return False
    return first != client_first and seg.ack != (client_isn + 1) & 0xFFFFFFFF


def unpack_key(packed: bytes) -> tuple:  # type: ignore[type-arg]
    """The flow key tuple that :func:`pack_key` packed."""
    n = (len(packed) - 4) // 2
    port_a, port_b = _PORTS.unpack_from(packed, 2 * n)
    return (packed[:n], int(port_a), packed[n : 2 * n], int(port_b))
