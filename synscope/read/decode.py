"""Raw frame bytes → :class:`Segment` / :class:`IcmpError`.

This is the hot path for files of millions of packets, so it unpacks headers
with precompiled ``struct`` formats instead of scapy's dissection (about 100x
slower). Malformed input never raises: it is counted in :class:`DecodeStats`
and the frame is skipped, or decoded as far as its bytes go.
"""

from __future__ import annotations

import struct
from typing import Final

from synscope.core.headers import (
    ECN_MASK,
    ETH_HLEN,
    ETH_TYPE,
    ICMP4_NEXT_HOP_MTU,
    ICMP6_MTU,
    ICMP_HLEN,
    IP4_DST,
    IP4_FRAG,
    IP4_ID,
    IP4_MIN_HLEN,
    IP4_MORE_FRAGMENTS,
    IP4_NO_OPTIONS,
    IP4_OFFSET_MASK,
    IP4_PROTO,
    IP4_SRC,
    IP4_TOS,
    IP4_TOTAL_LEN,
    IP4_TTL,
    IP6_DST,
    IP6_HLEN,
    IP6_NEXT,
    IP6_SRC,
    TCP_ACK,
    TCP_DOFF,
    TCP_DPORT,
    TCP_FLAGS,
    TCP_MIN_HLEN,
    TCP_SEQ,
    TCP_SPORT,
    TCP_WIN,
)
from synscope.core.icmp import V4_FRAG_NEEDED, V4_UNREACH, V6_PACKET_TOO_BIG, quotes_tcp
from synscope.core.model import DecodeStats, IcmpError, RawFrame, Segment, flow_mix

_U16: Final = struct.Struct("!H")
_U16_LE: Final = struct.Struct("<H")
_U32: Final = struct.Struct("!I")
_U32_LE: Final = struct.Struct("<I")
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_IPV6: Final = struct.Struct("!IHBB16s16s")
_TCP: Final = struct.Struct("!HHIIBBH")  # ports, seq, ack, data offset, flags, window
_PORTS_SEQ: Final = struct.Struct("!HHI")

_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
_VLAN_TAGS: Final = (0x8100, 0x88A8, 0x9100, 0x9200)
_PROTO_TCP: Final = 6
_PROTO_ICMP: Final = 1
_PROTO_ICMP6: Final = 58
# IPv6 extension headers we step over to reach TCP (hop-by-hop, routing, destination options, mobility, HIP, shim6)
_V6_EXT: Final = frozenset({0, 43, 60, 135, 139, 140})
_V6_FRAG: Final = 44
_V6_AH: Final = 51
_NULL_AF_INET6: Final = frozenset({10, 24, 28, 30})
# where TCP starts in the usual frame (Ethernet, IPv4 without options): see _plain_tcp_header
_PLAIN_L4: Final = ETH_HLEN + IP4_MIN_HLEN

PAYLOAD_PREVIEW: Final = 64  # payload bytes kept per segment for previews
MAX_INTERNED: Final = 1 << 20  # distinct addresses shared before the table starts over (a spoofed flood)
_V4_CACHE: Final = 1024  # slots of the IPv4 address cache (a power of two)


class Decoder:
    """Turns :class:`RawFrame` records into segments and ICMP errors, counting what it skips."""

    def __init__(self, keep_payload: bool = False) -> None:
        self.stats = DecodeStats()
        self.keep_payload = keep_payload
        self._addresses: dict[bytes, bytes] = {}
        # IPv4 addresses read as integers → their shared bytes object, direct-mapped: a hit
        # costs no bytes object and no dict lookup
        self._v4_keys: list[int] = [-1] * _V4_CACHE
        self._v4_addresses: list[bytes] = [b""] * _V4_CACHE

    def decode(self, frame: RawFrame) -> Segment | IcmpError | None:
        """Decode one frame; None for anything that is not TCP or a TCP-quoting ICMP error."""
        data = frame.data
        lt = frame.linktype
        pkttype = frame.pkttype
        if lt == 1:  # the usual frame, decoded in one go; anything else below
            seg = self.decode_plain(data, 0, len(data), frame.frame, frame.ts, pkttype)
            if seg is not None:
                return seg
        stats = self.stats
        stats.frames += 1
        try:
            if lt == 1:
                off, ethertype = 12, 0
                if len(data) < 14:
                    self._short(frame)
                    return None
                ethertype = _U16.unpack_from(data, 12)[0]
                off = 14
                while ethertype in _VLAN_TAGS:
                    if len(data) < off + 4:
                        self._short(frame)
                        return None
                    ethertype = _U16.unpack_from(data, off + 2)[0]
                    off += 4
                if ethertype == _ETH_IPV4:
                    version = 4
                elif ethertype == _ETH_IPV6:
                    version = 6
                else:
                    stats.not_tcp += 1
                    return None
            elif lt == 113:  # Linux cooked v1
                if len(data) < 16:
                    self._short(frame)
                    return None
                pkttype = _U16.unpack_from(data, 0)[0]
                ethertype = _U16.unpack_from(data, 14)[0]
                off = 16
                version = 4 if ethertype == _ETH_IPV4 else 6 if ethertype == _ETH_IPV6 else 0
            elif lt == 276:  # Linux cooked v2
                if len(data) < 20:
                    self._short(frame)
                    return None
                ethertype = _U16.unpack_from(data, 0)[0]
                pkttype = data[10]
                off = 20
                version = 4 if ethertype == _ETH_IPV4 else 6 if ethertype == _ETH_IPV6 else 0
            elif lt in (101, 12, 14, 228, 229):
                off = 0
                version = (data[0] >> 4) if data else 0
            elif lt == 0 or lt == 108:
                if len(data) < 4:
                    self._short(frame)
                    return None
                af = _U32.unpack_from(data, 0)[0] if lt == 108 else _U32_LE.unpack_from(data, 0)[0]
                if af > 0xFFFF:  # written on a big-endian host
                    af = _U32.unpack_from(data, 0)[0]
                off = 4
                version = 4 if af == 2 else 6 if af in _NULL_AF_INET6 else 0
            else:
                stats.unknown_linktype[lt] = stats.unknown_linktype.get(lt, 0) + 1
                return None
            if version == 4:
                return self._ipv4(frame, data, off, pkttype)
            if version == 6:
                return self._ipv6(frame, data, off, pkttype)
            stats.not_tcp += 1
            return None
        except (struct.error, IndexError):
            self._short(frame)
            return None

    def decode_plain(self, buf: bytes, offset: int, caplen: int, frame_no: int, ts: float, pkttype: int) -> Segment | None:
        """The usual frame (see :func:`_plain_tcp_header`) decoded from ``buf[offset:offset +
        caplen]`` where it lies (a reader's buffer, or a frame's bytes); None, with nothing
        counted, for any other frame (:meth:`decode` takes those).

        Fields are read byte by byte: compiled, that is a few native operations each, where a
        ``struct`` unpack makes an object of every field (and of the tuple).
        """
        hlen = _plain_tcp_header(buf, offset, caplen)
        if hlen < 0:
            return None
        ip = offset + ETH_HLEN
        tcp = ip + IP4_MIN_HLEN
        self.stats.frames += 1
        src = self._v4_address(buf, ip + IP4_SRC)
        dst = self._v4_address(buf, ip + IP4_DST)
        return self._segment(
            frame_no,
            ts,
            buf,
            offset,
            caplen,
            _PLAIN_L4,
            ETH_HLEN + (buf[ip + IP4_TOTAL_LEN] << 8 | buf[ip + IP4_TOTAL_LEN + 1]),
            hlen,
            src,
            dst,
            (buf[tcp + TCP_SPORT] << 8 | buf[tcp + TCP_SPORT + 1]),
            (buf[tcp + TCP_DPORT] << 8 | buf[tcp + TCP_DPORT + 1]),
            (buf[tcp + TCP_SEQ] << 24 | buf[tcp + TCP_SEQ + 1] << 16 | buf[tcp + TCP_SEQ + 2] << 8 | buf[tcp + TCP_SEQ + 3]),
            (buf[tcp + TCP_ACK] << 24 | buf[tcp + TCP_ACK + 1] << 16 | buf[tcp + TCP_ACK + 2] << 8 | buf[tcp + TCP_ACK + 3]),
            buf[tcp + TCP_DOFF],
            buf[tcp + TCP_FLAGS],
            (buf[tcp + TCP_WIN] << 8 | buf[tcp + TCP_WIN + 1]),
            buf[ip + IP4_TTL],
            (buf[ip + IP4_ID] << 8 | buf[ip + IP4_ID + 1]),
            buf[ip + IP4_TOS] & ECN_MASK,
            pkttype,
            False,
        )

    def _v4_address(self, buf: bytes, at: int) -> bytes:
        """The shared bytes object of the IPv4 address at ``buf[at:at + 4]``."""
        value = buf[at] << 24 | buf[at + 1] << 16 | buf[at + 2] << 8 | buf[at + 3]
        slot = (value ^ (value >> 10) ^ (value >> 20)) & (_V4_CACHE - 1)
        keys = self._v4_keys
        if keys[slot] == value:
            return self._v4_addresses[slot]
        address = self._intern(buf[at : at + 4])
        keys[slot] = value
        self._v4_addresses[slot] = address
        return address

    def _intern(self, address: bytes) -> bytes:
        """One bytes object per address, shared by every segment: a long capture holds millions."""
        intern = self._addresses
        if len(intern) >= MAX_INTERNED:  # a spoofed flood: start over
            intern.clear()
            self._v4_keys = [-1] * _V4_CACHE
        return intern.setdefault(address, address)

    def count_passed(self, buf: bytes, offset: int, caplen: int) -> None:
        """Count a frame :func:`plain_tcp_flow_mix` read and the caller passed over, as
        :meth:`decode` would have counted it (a TCP segment; truncated if the snaplen cut its IP packet)."""
        stats = self.stats
        stats.frames += 1
        stats.tcp += 1
        if caplen < ETH_HLEN + (buf[offset + ETH_HLEN + IP4_TOTAL_LEN] << 8 | buf[offset + ETH_HLEN + IP4_TOTAL_LEN + 1]):
            stats.truncated += 1

    def _short(self, frame: RawFrame) -> None:
        """Too few bytes to decode: the capture's snaplen cut the frame (counted as truncated,
        as tcpdump's "[|tcp]"), or the frame itself is broken (malformed)."""
        if frame.orig_len > len(frame.data):
            self.stats.truncated += 1
        else:
            self.stats.malformed += 1

    def _ipv4(self, frame: RawFrame, data: bytes, off: int, pkttype: int) -> Segment | IcmpError | None:
        stats = self.stats
        if len(data) < off + 20:
            self._short(frame)
            return None
        vihl, tos, total, ip_id, frag, ttl, proto, _csum, src, dst = _IPV4.unpack_from(data, off)
        ihl = (vihl & 0x0F) * 4
        if ihl < IP4_MIN_HLEN or (vihl >> 4) != 4:
            stats.malformed += 1
            return None
        if total == 0:  # TSO-offloaded packets captured on the sender carry length 0
            total = len(data) - off if frame.orig_len <= len(data) else frame.orig_len - off
        if total < ihl:
            stats.malformed += 1
            return None
        if frag & IP4_OFFSET_MASK:  # a non-first fragment: no transport header in it
            stats.fragments += 1
            return None
        first_fragment = bool(frag & IP4_MORE_FRAGMENTS)
        if first_fragment:
            stats.fragments += 1
        l4 = off + ihl
        end = off + total
        if proto == _PROTO_TCP:
            return self._tcp(frame, data, l4, end, src, dst, ttl, ip_id, tos & 3, pkttype, first_fragment)
        if proto == _PROTO_ICMP:
            return self._icmp(frame, data, l4, end, src, ttl, 4)
        stats.not_tcp += 1
        return None

    def _ipv6(self, frame: RawFrame, data: bytes, off: int, pkttype: int) -> Segment | IcmpError | None:
        stats = self.stats
        if len(data) < off + 40:
            self._short(frame)
            return None
        vtc, plen, nxt, hlim, src, dst = _IPV6.unpack_from(data, off)
        if vtc >> 28 != 6:
            stats.malformed += 1
            return None
        ecn = (vtc >> 20) & 3
        l4 = off + 40
        end = l4 + plen if plen else off + max(frame.orig_len, len(data)) - off
        l4, nxt, fragmented = _skip_v6_ext(data, l4, nxt)
        if l4 < 0:
            self._short(frame)
            return None
        if fragmented == 2:
            stats.fragments += 1
            return None
        if nxt == _PROTO_TCP:
            return self._tcp(frame, data, l4, end, src, dst, hlim, 0, ecn, pkttype, fragmented == 1)
        if nxt == _PROTO_ICMP6:
            return self._icmp(frame, data, l4, end, src, hlim, 6)
        stats.not_tcp += 1
        return None

    def _tcp(
        self,
        frame: RawFrame,
        data: bytes,
        l4: int,
        end: int,
        src: bytes,
        dst: bytes,
        ttl: int,
        ip_id: int,
        ecn: int,
        pkttype: int,
        fragment: bool,
    ) -> Segment | None:
        stats = self.stats
        have = len(data)
        if have < l4 + TCP_WIN + 2:  # without flags and window there is nothing to follow
            self._short(frame)
            return None
        if have < l4 + TCP_MIN_HLEN:
            sport, dport, seq, ack, doff, flags, win = _TCP.unpack_from(data + bytes(20), l4)
        else:
            sport, dport, seq, ack, doff, flags, win = _TCP.unpack_from(data, l4)
        hlen = (doff >> 4) * 4
        if hlen < TCP_MIN_HLEN or l4 + hlen > end:
            stats.malformed += 1
            return None
        return self._segment(
            frame.frame,
            frame.ts,
            data,
            0,
            have,
            l4,
            end,
            hlen,
            self._intern(src),
            self._intern(dst),
            sport,
            dport,
            seq,
            ack,
            doff,
            flags,
            win,
            ttl,
            ip_id,
            ecn,
            pkttype,
            fragment,
        )

    def _segment(
        self,
        frame_no: int,
        ts: float,
        data: bytes,
        base: int,
        have: int,
        l4: int,
        end: int,
        hlen: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        doff: int,
        flags: int,
        win: int,
        ttl: int,
        ip_id: int,
        ecn: int,
        pkttype: int,
        fragment: bool,
    ) -> Segment:
        """A segment from its fields; ``data[base:base + have]`` holds the frame's captured
        bytes, and ``l4`` / ``end`` (where TCP starts, where the IP packet ends) count from ``base``."""
        stats = self.stats
        length = end - l4 - hlen
        truncated = have < end
        if truncated:
            stats.truncated += 1
        stats.tcp += 1
        # (slice bounds kept in order: compiled, a slice that ends before it starts is an error)
        options = base + l4 + TCP_MIN_HLEN
        options_end = base + max(min(l4 + hlen, have), l4 + TCP_MIN_HLEN)
        seg = Segment(
            frame_no,
            ts,
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            flags | ((doff & 1) << 8),
            win,
            length,
            ttl,
            ip_id,
            data[options:options_end] if hlen > TCP_MIN_HLEN else b"",
            truncated or have < l4 + TCP_MIN_HLEN,
            fragment,
        )
        seg.ecn = ecn
        seg.pkttype = pkttype
        if self.keep_payload and length:
            seg.payload = data[base + l4 + hlen : base + max(min(end, have, l4 + hlen + PAYLOAD_PREVIEW), l4 + hlen)]
        return seg

    def _icmp(self, frame: RawFrame, data: bytes, l4: int, end: int, router: bytes, ttl: int, version: int) -> IcmpError | None:
        stats = self.stats
        if len(data) < l4 + ICMP_HLEN:
            self._short(frame)
            return None
        itype, code = data[l4], data[l4 + 1]
        if not quotes_tcp(version, itype):
            stats.not_tcp += 1
            return None
        mtu = None
        if version == 4 and itype == V4_UNREACH and code == V4_FRAG_NEEDED:
            mtu = _U16.unpack_from(data, l4 + ICMP4_NEXT_HOP_MTU)[0] or None
        elif version == 6 and itype == V6_PACKET_TOO_BIG:
            mtu = _U32.unpack_from(data, l4 + ICMP6_MTU)[0]
        q = l4 + ICMP_HLEN  # the quoted packet
        if version == 4:
            if len(data) < q + IP4_MIN_HLEN:
                self._short(frame)
                return None
            if data[q] >> 4 != 4:
                stats.malformed += 1
                return None
            qihl = (data[q] & 0x0F) * 4
            if data[q + IP4_PROTO] != _PROTO_TCP or qihl < IP4_MIN_HLEN:
                stats.not_tcp += 1
                return None
            qsrc, qdst = data[q + IP4_SRC : q + IP4_SRC + 4], data[q + IP4_DST : q + IP4_DST + 4]
            qt = q + qihl
        else:
            if len(data) < q + IP6_HLEN:
                self._short(frame)
                return None
            if data[q] >> 4 != 6:
                stats.malformed += 1
                return None
            qsrc, qdst = data[q + IP6_SRC : q + IP6_SRC + 16], data[q + IP6_DST : q + IP6_DST + 16]
            qt, qnxt, _frag = _skip_v6_ext(data, q + IP6_HLEN, data[q + IP6_NEXT])
            if qt < 0 or qnxt != _PROTO_TCP:
                stats.not_tcp += 1
                return None
        if len(data) < qt + TCP_SEQ:  # RFC 792 promises 8 bytes of the transport header; be lenient
            self._short(frame)
            return None
        sport, dport = _U16.unpack_from(data, qt + TCP_SPORT)[0], _U16.unpack_from(data, qt + TCP_DPORT)[0]
        seq = _U32.unpack_from(data, qt + TCP_SEQ)[0] if len(data) >= qt + TCP_ACK else None
        stats.icmp_errors += 1
        return IcmpError(frame.frame, frame.ts, router, version, itype, code, qsrc, qdst, sport, dport, seq, ttl, mtu)


def _plain_tcp_header(buf: bytes, o: int, caplen: int) -> int:
    """The TCP header length of the usual frame at ``buf[o:o + caplen]`` -- Ethernet, IPv4
    without options, not a fragment, TCP with its whole header captured and inside the IP
    packet -- or -1 for any other frame."""
    if caplen < _PLAIN_L4 + TCP_MIN_HLEN:
        return -1
    ip = o + ETH_HLEN
    hlen = (buf[ip + IP4_MIN_HLEN + TCP_DOFF] >> 4) * 4
    if (
        (buf[o + ETH_TYPE] << 8 | buf[o + ETH_TYPE + 1]) != _ETH_IPV4
        or buf[ip] != IP4_NO_OPTIONS
        or buf[ip + IP4_PROTO] != _PROTO_TCP
        or (buf[ip + IP4_FRAG] << 8 | buf[ip + IP4_FRAG + 1]) & (IP4_MORE_FRAGMENTS | IP4_OFFSET_MASK)
        or hlen < TCP_MIN_HLEN
        or hlen + IP4_MIN_HLEN > (buf[ip + IP4_TOTAL_LEN] << 8 | buf[ip + IP4_TOTAL_LEN + 1])
    ):
        return -1
    return hlen


def plain_tcp_flow_mix(buf: bytes, offset: int, caplen: int) -> int:
    """:func:`~synscope.core.model.flow_mix` of the 4-tuple of an Ethernet frame that
    :meth:`Decoder.decode_plain` decodes, read without decoding it; -1 for any other frame.

    It runs for every frame a worker of a split run passes over: the bytes it needs are read
    where they lie, addresses as integers, nothing built.
    """
    if _plain_tcp_header(buf, offset, caplen) < 0:
        return -1
    ip = offset + ETH_HLEN
    src = buf[ip + IP4_SRC] << 24 | buf[ip + IP4_SRC + 1] << 16 | buf[ip + IP4_SRC + 2] << 8 | buf[ip + IP4_SRC + 3]
    dst = buf[ip + IP4_DST] << 24 | buf[ip + IP4_DST + 1] << 16 | buf[ip + IP4_DST + 2] << 8 | buf[ip + IP4_DST + 3]
    tcp = ip + IP4_MIN_HLEN
    sport = buf[tcp + TCP_SPORT] << 8 | buf[tcp + TCP_SPORT + 1]
    dport = buf[tcp + TCP_DPORT] << 8 | buf[tcp + TCP_DPORT + 1]
    if src < dst or (src == dst and sport <= dport):  # flow_key's order: big-endian ints compare as the bytes do
        return flow_mix(sport, dport, src & 0xFF, dst & 0xFF)
    return flow_mix(dport, sport, dst & 0xFF, src & 0xFF)


def _skip_v6_ext(data: bytes, off: int, nxt: int) -> tuple[int, int, int]:
    """Step over IPv6 extension headers. Returns (offset, next header, fragment state).

    Fragment state: 0 none, 1 first fragment, 2 later fragment. Offset -1 when
    the headers run past the captured bytes.
    """
    fragmented = 0
    for _ in range(16):  # bounded: a hostile chain of extension headers cannot loop us
        if nxt in _V6_EXT:
            if len(data) < off + 2:
                return -1, nxt, fragmented
            nxt, off = data[off], off + (data[off + 1] + 1) * 8
        elif nxt == _V6_FRAG:
            if len(data) < off + 8:
                return -1, nxt, fragmented
            frag_off = _U16.unpack_from(data, off + 2)[0]
            fragmented = 2 if frag_off & 0xFFF8 else 1
            nxt, off = data[off], off + 8
        elif nxt == _V6_AH:
            if len(data) < off + 2:
                return -1, nxt, fragmented
            nxt, off = data[off], off + (data[off + 1] + 2) * 4
        else:
            return off, nxt, fragmented
    return -1, nxt, fragmented
