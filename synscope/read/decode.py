"""Raw frame bytes → :class:`Segment` / :class:`IcmpError`.

This is the hot path for files of millions of packets, so it unpacks headers
with precompiled ``struct`` formats instead of scapy's dissection (about 100x
slower). Malformed input never raises: it is counted in :class:`DecodeStats`
and the frame is skipped, or decoded as far as its bytes go.
"""

from __future__ import annotations

import struct
from typing import Final

from synscope.core.addr import MAX_INTERNED, AddressTable
from synscope.core.encap import NO_ID, Encap, Layer, direction_free
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
from synscope.core.model import CSUM_BAD, CSUM_GOOD, CSUM_PARTIAL, DecodeStats, IcmpError, RawFrame, Segment, ends_mix

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
# where TCP starts in the usual frame (Ethernet, IPv4 without options): see plain_tcp_header
_PLAIN_L4: Final = ETH_HLEN + IP4_MIN_HLEN
# segments whose checksums are always verified (the rest with --verify-checksums)
_CONTROL: Final = 0x07  # SYN, FIN, RST
TCP_CSUM: Final = 16  # offset of the TCP checksum field

# Encapsulations, followed on the general path only (decode_plain takes plain Ethernet + IPv4)
_ETH_MPLS: Final = 0x8847
_ETH_MPLS_MC: Final = 0x8848
_ETH_PPPOE_SESSION: Final = 0x8864
_ETH_TEB: Final = 0x6558  # transparent Ethernet bridging: an Ethernet frame (gretap, GENEVE, NVGRE)
_ETH_ERSPAN2: Final = 0x88BE  # ERSPAN type II, or type I without GRE's sequence number
_ETH_ERSPAN3: Final = 0x22EB
_ETH_PPP: Final = 0x880B  # PPP in PPTP's GRE
_PPP_IPV4: Final = 0x0021
_PPP_IPV6: Final = 0x0057
_PPP_MPLS: Final = 0x0281
_PROTO_IPIP: Final = 4
_PROTO_IPV6: Final = 41
_PROTO_GRE: Final = 47
_PROTO_UDP: Final = 17
_TUNNEL_PROTOS: Final = frozenset({_PROTO_IPIP, _PROTO_IPV6, _PROTO_GRE, _PROTO_UDP})
_UDP_VXLAN: Final = 4789
_UDP_GENEVE: Final = 6081
_UDP_GRE: Final = 4754  # GRE-in-UDP (RFC 8086)
_UDP_GTPU: Final = 2152
_UDP_TEREDO: Final = 3544  # IPv6 in UDP (RFC 4380); tshark's Teredo heuristic on other ports is off by default
_UDP_AYIYA: Final = 5072  # Anything In Anything (draft-massar-v6ops-ayiya)
_UDP_TUNNELS: Final = frozenset({_UDP_VXLAN, _UDP_GENEVE, _UDP_GRE, _UDP_GTPU, _UDP_TEREDO, _UDP_AYIYA})
_TEREDO_AUTH: Final = 1  # indicator types in front of the IPv6 packet
_TEREDO_ORIGIN: Final = 0
_AYIYA_FORWARD: Final = 1  # opcode of a packet carrying a payload
_GRE_CSUM: Final = 0x8000
_GRE_ROUTING: Final = 0x4000
_GRE_KEY: Final = 0x2000
_GRE_SEQ: Final = 0x1000
_GRE_ACK: Final = 0x0080  # PPTP's acknowledgment number present
_GTP_GPDU: Final = 0xFF
_GTP_MAX_EXTENSIONS: Final = 8
_MPLS_MAX_LABELS: Final = 16
_NFLOG_MAX_TLVS: Final = 64
_NFULA_PAYLOAD: Final = 9
MAX_ENCAP_DEPTH: Final = 8  # encapsulation layers followed into one frame; a deeper one is counted, not decoded
_MAX_STEPS: Final = 4 * MAX_ENCAP_DEPTH + 8  # headers stepped over per frame (a layer is a few)
# what the general path finds at the next offset
_NEXT_ETH: Final = 1  # an Ethernet header
_NEXT_TYPE: Final = 2  # a payload of a given ethertype
_NEXT_IP: Final = 3  # IPv4 or IPv6, by its first nibble
_NEXT_MPLS: Final = 4  # an MPLS label stack
_NEXT_PPP: Final = 5  # a PPP frame (HDLC address and control optional)
_NOT_TUNNEL: Final = -2

PAYLOAD_PREVIEW: Final = 64  # payload bytes kept per segment for previews


class Decoder:
    """Turns :class:`RawFrame` records into segments and ICMP errors, counting what it skips."""

    def __init__(self, keep_payload: bool = False, verify_checksums: bool = False) -> None:
        self.stats = DecodeStats()
        self.keep_payload = keep_payload
        # checksums of every segment (--verify-checksums); otherwise of SYN, FIN and RST segments only
        self.verify_all = verify_checksums
        # one bytes object per address (the pipeline shares the table with the tracker)
        self.addresses = AddressTable()
        # encapsulation descriptions → their shared Encap; tunnels (direction-free) → key id
        self._encaps: dict[tuple[Layer, ...], Encap] = {}
        self._encap_keys: dict[tuple[tuple[str, int, bytes, bytes], ...], int] = {}
        self._last_encap_key = 0
        # what _ip_tunnel found after a tunnel header (two results without a tuple per frame)
        self._next = 0
        self._next_type = 0

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
                return self._dissect(frame, data, 0, _NEXT_ETH, 0, pkttype)
            if lt == 113:  # Linux cooked v1: the protocol field is an ethertype
                if len(data) < 16:
                    self._short(frame)
                    return None
                return self._dissect(frame, data, 16, _NEXT_TYPE, _U16.unpack_from(data, 14)[0], _U16.unpack_from(data, 0)[0])
            if lt == 276:  # Linux cooked v2
                if len(data) < 20:
                    self._short(frame)
                    return None
                return self._dissect(frame, data, 20, _NEXT_TYPE, _U16.unpack_from(data, 0)[0], data[10])
            if lt in (101, 12, 14, 228, 229):
                return self._dissect(frame, data, 0, _NEXT_IP, 0, pkttype)
            if lt == 0 or lt == 108:
                if len(data) < 4:
                    self._short(frame)
                    return None
                af = _U32.unpack_from(data, 0)[0] if lt == 108 else _U32_LE.unpack_from(data, 0)[0]
                if af > 0xFFFF:  # written on a big-endian host
                    af = _U32.unpack_from(data, 0)[0]
                if af != 2 and af not in _NULL_AF_INET6:
                    stats.not_tcp += 1
                    return None
                return self._dissect(frame, data, 4, _NEXT_IP, 0, pkttype)
            if lt == 9 or lt == 50:  # PPP, PPP in HDLC-like framing
                return self._dissect(frame, data, 0, _NEXT_PPP, 0, pkttype)
            if lt == 239:
                return self._nflog(frame, data, pkttype)
            stats.unknown_linktype[lt] = stats.unknown_linktype.get(lt, 0) + 1
            return None
        except (struct.error, IndexError):
            self._short(frame)
            return None

    # ------------------------------------------------------------ the general path
    def _dissect(self, frame: RawFrame, data: bytes, off: int, nxt: int, etype: int, pkttype: int) -> Segment | IcmpError | None:
        """Step through link, tunnel and label headers from ``off`` (what is there: ``nxt``, and
        for _NEXT_TYPE the ethertype ``etype``) to the TCP segment or ICMP error inside, noting
        each encapsulation layer on the way. Bounded: MAX_ENCAP_DEPTH layers, then counted."""
        stats = self.stats
        layers: list[Layer] = []
        tunnel_type = False  # the ethertype in hand was named by a tunnel header (GRE, GENEVE)
        for _ in range(_MAX_STEPS):
            if len(layers) > MAX_ENCAP_DEPTH:
                self._skip("nested deeper than " + str(MAX_ENCAP_DEPTH))
                return None
            if nxt == _NEXT_ETH:
                if len(data) < off + 14:
                    self._short(frame)
                    return None
                etype = _U16.unpack_from(data, off + 12)[0]
                off += 14
                nxt = _NEXT_TYPE
                tunnel_type = False
            elif nxt == _NEXT_TYPE:
                if etype in _VLAN_TAGS:
                    if len(data) < off + 4:
                        self._short(frame)
                        return None
                    layers.append(("vlan", _U16.unpack_from(data, off)[0] & 0x0FFF, b"", b"", ()))
                    etype = _U16.unpack_from(data, off + 2)[0]
                    off += 4
                elif etype == _ETH_IPV4 or etype == _ETH_IPV6:
                    nxt = _NEXT_IP
                elif etype == _ETH_MPLS or etype == _ETH_MPLS_MC:
                    nxt = _NEXT_MPLS
                elif etype == _ETH_PPPOE_SESSION:
                    if len(data) < off + 6:
                        self._short(frame)
                        return None
                    layers.append(("pppoe", _U16.unpack_from(data, off + 2)[0], b"", b"", ()))
                    off += 6
                    nxt = _NEXT_PPP
                elif etype == _ETH_TEB:
                    nxt = _NEXT_ETH
                elif etype == _ETH_PPP:
                    nxt = _NEXT_PPP
                else:
                    if tunnel_type:  # the tunnel header names a payload not followed here
                        self._skip(f"{layers[-1][0]} carrying ethertype 0x{etype:04x}")
                    else:  # an Ethernet frame's ARP, LLDP...: just not TCP
                        stats.not_tcp += 1
                    return None
            elif nxt == _NEXT_PPP:
                if len(data) < off + 2:
                    self._short(frame)
                    return None
                if data[off] == 0xFF and data[off + 1] == 0x03:  # HDLC address and control
                    off += 2
                if len(data) < off + 1:
                    self._short(frame)
                    return None
                proto = data[off]
                if proto & 1:  # protocol field compressed to one byte
                    off += 1
                else:
                    if len(data) < off + 2:
                        self._short(frame)
                        return None
                    proto = _U16.unpack_from(data, off)[0]
                    off += 2
                if proto == _PPP_IPV4 or proto == _PPP_IPV6:
                    nxt = _NEXT_IP
                elif proto == _PPP_MPLS:
                    nxt = _NEXT_MPLS
                else:
                    stats.not_tcp += 1  # LCP, IPCP, CHAP...: PPP's own traffic
                    return None
            elif nxt == _NEXT_MPLS:
                labels: list[int] = []
                while True:
                    if len(data) < off + 4:
                        self._short(frame)
                        return None
                    entry = _U32.unpack_from(data, off)[0]
                    off += 4
                    labels.append(entry >> 12)
                    if entry & 0x100:  # bottom of stack
                        break
                    if len(labels) >= _MPLS_MAX_LABELS:
                        self._skip("mpls stack deeper than " + str(_MPLS_MAX_LABELS))
                        return None
                layers.append(("mpls", NO_ID, b"", b"", tuple(labels)))
                if len(data) < off + 1:
                    self._short(frame)
                    return None
                # what is below the stack is not said anywhere: Wireshark's guess by the first nibble
                first = data[off] >> 4
                if first == 4 or first == 6:
                    nxt = _NEXT_IP
                elif first == 0:  # an Ethernet pseudowire's control word
                    off += 4
                    nxt = _NEXT_ETH
                else:
                    nxt = _NEXT_ETH
            else:  # _NEXT_IP
                if len(data) < off + 1:
                    self._short(frame)
                    return None
                inner = self._ip_tunnel(frame, data, off, layers)
                if inner == _NOT_TUNNEL:  # TCP, ICMP or anything else: this IP header is the last
                    return self._final_ip(frame, data, off, pkttype, layers)
                if inner < 0:  # skipped, and counted
                    return None
                off = inner
                nxt = self._next
                etype = self._next_type
                tunnel_type = nxt == _NEXT_TYPE
        self._skip("too many headers")
        return None

    def _final_ip(self, frame: RawFrame, data: bytes, off: int, pkttype: int, layers: list[Layer]) -> Segment | IcmpError | None:
        """The innermost IP packet: its TCP segment or ICMP error, with the layers it came through."""
        encap = self._encap(layers) if layers else None
        version = data[off] >> 4
        if version == 4:
            item = self._ipv4(frame, data, off, pkttype, encap)
        elif version == 6:
            item = self._ipv6(frame, data, off, pkttype, encap)
        else:
            # behind VLAN tags alone (link-layer framing, no tunnel) it is what it is on plain Ethernet
            if layers and layers[-1][0] != "vlan":
                self._skip(f"{layers[-1][0]} carrying neither IPv4 nor IPv6")
            else:
                self.stats.not_tcp += 1
            return None
        if item is not None and encap is not None:
            self.stats.tunnelled += 1
        return item

    def _ip_tunnel(self, frame: RawFrame, data: bytes, off: int, layers: list[Layer]) -> int:
        """If the IP packet at ``off`` is a tunnel this decoder follows (IP-in-IP, GRE, VXLAN,
        GENEVE, GRE-in-UDP, GTP-U, Teredo, AYIYA), note its layer and return where its payload starts (what is
        there in ``_next`` / ``_next_type``); _NOT_TUNNEL when it is not one; -1 when it is one
        that cannot be followed (counted)."""
        version = data[off] >> 4
        if version == 4:
            if len(data) < off + 20:
                return _NOT_TUNNEL  # (_ipv4 counts it)
            proto = data[off + 9]
            if proto not in _TUNNEL_PROTOS or _U16.unpack_from(data, off + 6)[0] & 0x1FFF:
                return _NOT_TUNNEL  # (a later fragment of a tunnel packet has no tunnel header: _ipv4 counts it)
            l4 = off + (data[off] & 0x0F) * 4
            src = self.addresses.intern(data[off + 12 : off + 16])
            dst = self.addresses.intern(data[off + 16 : off + 20])
        elif version == 6:
            if len(data) < off + 40:
                return _NOT_TUNNEL
            l4, proto, fragmented = _skip_v6_ext(data, off + 40, data[off + 6])
            if l4 < 0 or proto not in _TUNNEL_PROTOS or fragmented == 2:
                return _NOT_TUNNEL
            src = self.addresses.intern(data[off + 8 : off + 24])
            dst = self.addresses.intern(data[off + 24 : off + 40])
        else:
            return _NOT_TUNNEL
        if proto == _PROTO_IPIP or proto == _PROTO_IPV6:
            layers.append(("ipip", NO_ID, src, dst, ()))
            self._next = _NEXT_IP
            return l4
        if proto == _PROTO_GRE:
            return self._gre(frame, data, l4, src, dst, layers, "gre")
        # UDP: a tunnel on its well-known port (either end: replies come from it)
        if len(data) < l4 + 8:
            self._short(frame)
            return -1
        sport = _U16.unpack_from(data, l4)[0]
        dport = _U16.unpack_from(data, l4 + 2)[0]
        port = dport if dport in _UDP_TUNNELS else sport if sport in _UDP_TUNNELS else 0
        u = l4 + 8
        if port == 0:
            self.stats.not_tcp += 1
            return -1
        if port == _UDP_GRE:
            return self._gre(frame, data, u, src, dst, layers, "gre-udp")
        if port == _UDP_TEREDO:
            return self._teredo(frame, data, u, src, dst, layers)
        if len(data) < u + 8:
            self._short(frame)
            return -1
        if port == _UDP_VXLAN:
            layers.append(("vxlan", _U32.unpack_from(data, u + 4)[0] >> 8, src, dst, ()))
            self._next = _NEXT_ETH
            return u + 8
        if port == _UDP_AYIYA:
            return self._ayiya(data, u, src, dst, layers)
        if port == _UDP_GENEVE:
            if data[u] >> 6 != 0:
                self._skip(f"geneve version {data[u] >> 6}")
                return -1
            layers.append(("geneve", _U32.unpack_from(data, u + 4)[0] >> 8, src, dst, ()))
            self._next = _NEXT_TYPE
            self._next_type = _U16.unpack_from(data, u + 2)[0]
            return u + 8 + (data[u] & 0x3F) * 4  # past the options
        return self._gtpu(frame, data, u, src, dst, layers)

    def _gre(self, frame: RawFrame, data: bytes, g: int, src: bytes, dst: bytes, layers: list[Layer], kind: str) -> int:
        """A GRE header at ``g`` (RFC 2784/2890; version 1 is PPTP's, RFC 2637): see _ip_tunnel."""
        if len(data) < g + 4:
            self._short(frame)
            return -1
        flags = _U16.unpack_from(data, g)[0]
        proto = _U16.unpack_from(data, g + 2)[0]
        version = flags & 7
        if version > 1 or flags & _GRE_ROUTING:
            self._skip(f"gre version {version}" if version > 1 else "gre with source routing")
            return -1
        o = g + 4
        if flags & _GRE_CSUM:
            o += 4
        key = NO_ID
        if flags & _GRE_KEY:
            if len(data) < o + 4:
                self._short(frame)
                return -1
            key = _U32.unpack_from(data, o)[0]
            o += 4
        sequenced = bool(flags & _GRE_SEQ)
        if sequenced:
            o += 4
        if version == 1:  # PPTP: the key field is payload length and call ID; PPP inside
            if flags & _GRE_ACK:
                o += 4
            layers.append(("pptp", key & 0xFFFF if key != NO_ID else NO_ID, src, dst, ()))
            self._next = _NEXT_PPP
            return o
        if proto == _ETH_ERSPAN2:
            if not sequenced:  # type I: no ERSPAN header, the mirrored frame follows
                layers.append(("erspan", NO_ID, src, dst, (1,)))
            else:
                if len(data) < o + 8:
                    self._short(frame)
                    return -1
                layers.append(("erspan", _U16.unpack_from(data, o + 2)[0] & 0x03FF, src, dst, (2,)))
                o += 8
            self._next = _NEXT_ETH
            return o
        if proto == _ETH_ERSPAN3:
            if len(data) < o + 12:
                self._short(frame)
                return -1
            layers.append(("erspan", _U16.unpack_from(data, o + 2)[0] & 0x03FF, src, dst, (3,)))
            o += 20 if data[o + 11] & 1 else 12  # O bit: an 8-byte platform subheader follows
            self._next = _NEXT_ETH
            return o
        layers.append((kind, key, src, dst, ()))
        self._next = _NEXT_TYPE
        self._next_type = proto
        return o

    def _teredo(self, frame: RawFrame, data: bytes, u: int, src: bytes, dst: bytes, layers: list[Layer]) -> int:
        """Teredo at ``u`` (RFC 4380 section 5.1.1): an optional authentication indicator (type 1:
        ID and authentication lengths, client ID, authentication value, 8-byte nonce,
        confirmation byte), then an optional origin indication (type 0: 8 bytes), then the IPv6
        packet; as Wireshark's Teredo dissector reads them, in that order."""
        o = u
        if len(data) >= o + 2 and _U16.unpack_from(data, o)[0] == _TEREDO_AUTH:
            if len(data) < o + 4:
                self._short(frame)
                return -1
            o += 13 + data[o + 2] + data[o + 3]
        if len(data) >= o + 2 and _U16.unpack_from(data, o)[0] == _TEREDO_ORIGIN:
            o += 8
        if len(data) < o + 1:
            self._short(frame)
            return -1
        if data[o] >> 4 != 6:
            self._skip("teredo carrying no IPv6")
            return -1
        layers.append(("teredo", NO_ID, src, dst, ()))
        self._next = _NEXT_IP
        return o

    def _ayiya(self, data: bytes, u: int, src: bytes, dst: bytes, layers: list[Layer]) -> int:
        """AYIYA at ``u``: identity length 2^n and signature length 4n bytes in the first two
        bytes, the opcode in the low nibble of the third, the payload's IP protocol in the
        fourth, 4 bytes of epoch time; a forward (opcode 1) carries IPv6 (41) or IPv4 (4)
        after the identity and the signature. (The caller checked the 8-byte header is there.)"""
        if data[u + 2] & 0x0F != _AYIYA_FORWARD:  # a heartbeat, a query: no packet inside
            self.stats.not_tcp += 1
            return -1
        proto = data[u + 3]
        if proto != _PROTO_IPV6 and proto != _PROTO_IPIP:
            self._skip(f"ayiya carrying ip protocol {proto}")
            return -1
        layers.append(("ayiya", NO_ID, src, dst, ()))
        self._next = _NEXT_IP
        return u + 8 + (1 << (data[u] >> 4)) + (data[u + 1] >> 4) * 4

    def _gtpu(self, frame: RawFrame, data: bytes, u: int, src: bytes, dst: bytes, layers: list[Layer]) -> int:
        """A GTP-U header at ``u`` (3GPP TS 29.281): a G-PDU carries the user's IP packet."""
        flags = data[u]
        if flags >> 5 != 1 or not flags & 0x10:  # version 1, protocol type GTP (not GTP')
            self._skip("gtp-u version " + str(flags >> 5))
            return -1
        if data[u + 1] != _GTP_GPDU:  # echo, error indication, end marker: no user packet
            self.stats.not_tcp += 1
            return -1
        teid = _U32.unpack_from(data, u + 4)[0]
        o = u + 8
        if flags & 0x07:  # sequence number, N-PDU number, next extension header type
            if len(data) < o + 4:
                self._short(frame)
                return -1
            ext = data[o + 3]
            o += 4
            for _ in range(_GTP_MAX_EXTENSIONS):
                if ext == 0:
                    break
                if len(data) < o + 1:
                    self._short(frame)
                    return -1
                size = data[o] * 4
                if size == 0:
                    self._skip("gtp-u extension of length 0")
                    return -1
                if len(data) < o + size:
                    self._short(frame)
                    return -1
                ext = data[o + size - 1]
                o += size
            else:
                self._skip("gtp-u extension chain too long")
                return -1
        layers.append(("gtp-u", teid, src, dst, ()))
        self._next = _NEXT_IP
        return o

    def _nflog(self, frame: RawFrame, data: bytes, pkttype: int) -> Segment | IcmpError | None:
        """LINKTYPE_NFLOG: a 4-byte header, then TLVs (length and type in the host's byte order);
        the packet is the NFULA_PAYLOAD one."""
        o = 4
        for _ in range(_NFLOG_MAX_TLVS):
            if len(data) < o + 4:
                break
            size = _U16_LE.unpack_from(data, o)[0]
            tlv_type = _U16_LE.unpack_from(data, o + 2)[0]
            if size < 4 or o + size > len(data) + 3:  # written on a big-endian host
                size = _U16.unpack_from(data, o)[0]
                tlv_type = _U16.unpack_from(data, o + 2)[0]
            if size < 4:
                break
            if tlv_type == _NFULA_PAYLOAD:
                return self._dissect(frame, data[: o + size], o + 4, _NEXT_IP, 0, pkttype)
            o += (size + 3) & ~3
        self.stats.not_tcp += 1
        return None

    def _skip(self, what: str) -> None:
        """An encapsulation this decoder does not follow, counted by its description."""
        skipped = self.stats.encap_skipped
        skipped[what] = skipped.get(what, 0) + 1

    def _encap(self, layers: list[Layer]) -> Encap:
        """The shared :class:`Encap` of these layers, with the key id of their tunnel."""
        description = tuple(layers)
        encap = self._encaps.get(description)
        if encap is None:
            if len(self._encaps) >= MAX_INTERNED:  # (ids go on growing: old keys never collide)
                self._encaps.clear()
                self._encap_keys.clear()
            tunnel = direction_free(description)
            key = self._encap_keys.get(tunnel, 0)
            if not key:
                self._last_encap_key += 1
                key = self._encap_keys[tunnel] = self._last_encap_key
            encap = self._encaps[description] = Encap(key, description)
        return encap

    def decode_plain(self, buf: bytes, offset: int, caplen: int, frame_no: int, ts: float, pkttype: int, hlen: int = -1) -> Segment | None:
        """The usual frame (see :func:`plain_tcp_header`) decoded from ``buf[offset:offset +
        caplen]`` where it lies (a reader's buffer, or a frame's bytes); None, with nothing
        counted, for any other frame (:meth:`decode` takes those).

        Fields are read byte by byte: compiled, that is a few native operations each, where a
        ``struct`` unpack makes an object of every field (and of the tuple).
        """
        if hlen < 0:  # (``hlen``: plain_tcp_header's answer, when the caller has it already)
            hlen = plain_tcp_header(buf, offset, caplen)
            if hlen < 0:
                return None
        ip = offset + ETH_HLEN
        tcp = ip + IP4_MIN_HLEN
        self.stats.frames += 1
        src = self.addresses.v4(buf, ip + IP4_SRC)
        dst = self.addresses.v4(buf, ip + IP4_DST)
        # (a field's later bytes at "tcp + (TCP_SEQ + 1)": compiled, the constants in parentheses are
        # added at build time, so each byte's offset costs one addition, not two)
        return self._segment(
            frame_no,
            ts,
            buf,
            offset,
            caplen,
            _PLAIN_L4,
            ETH_HLEN + (buf[ip + IP4_TOTAL_LEN] << 8 | buf[ip + (IP4_TOTAL_LEN + 1)]),
            hlen,
            src,
            dst,
            (buf[tcp + TCP_SPORT] << 8 | buf[tcp + (TCP_SPORT + 1)]),
            (buf[tcp + TCP_DPORT] << 8 | buf[tcp + (TCP_DPORT + 1)]),
            (buf[tcp + TCP_SEQ] << 24 | buf[tcp + (TCP_SEQ + 1)] << 16 | buf[tcp + (TCP_SEQ + 2)] << 8 | buf[tcp + (TCP_SEQ + 3)]),
            (buf[tcp + TCP_ACK] << 24 | buf[tcp + (TCP_ACK + 1)] << 16 | buf[tcp + (TCP_ACK + 2)] << 8 | buf[tcp + (TCP_ACK + 3)]),
            buf[tcp + TCP_DOFF],
            buf[tcp + TCP_FLAGS],
            (buf[tcp + TCP_WIN] << 8 | buf[tcp + (TCP_WIN + 1)]),
            buf[ip + IP4_TTL],
            (buf[ip + IP4_ID] << 8 | buf[ip + (IP4_ID + 1)]),
            buf[ip + IP4_TOS] & ECN_MASK,
            pkttype,
            False,
            ETH_HLEN,
        )

    def count_passed(self, buf: bytes, offset: int, caplen: int) -> None:
        """Count a frame :func:`plain_tcp_mix` read and the caller passed over, as
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

    def _ipv4(self, frame: RawFrame, data: bytes, off: int, pkttype: int, encap: Encap | None) -> Segment | IcmpError | None:
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
            return self._tcp(frame, data, l4, end, src, dst, ttl, ip_id, tos & 3, pkttype, first_fragment, encap, off)
        if proto == _PROTO_ICMP:
            return self._icmp(frame, data, l4, end, src, ttl, 4, encap)
        stats.not_tcp += 1
        return None

    def _ipv6(self, frame: RawFrame, data: bytes, off: int, pkttype: int, encap: Encap | None) -> Segment | IcmpError | None:
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
            return self._tcp(frame, data, l4, end, src, dst, hlim, 0, ecn, pkttype, fragmented == 1, encap, -1)
        if nxt == _PROTO_ICMP6:
            return self._icmp(frame, data, l4, end, src, hlim, 6, encap)
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
        encap: Encap | None,
        ip: int,
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
        seg = self._segment(
            frame.frame,
            frame.ts,
            data,
            0,
            have,
            l4,
            end,
            hlen,
            self.addresses.intern(src),
            self.addresses.intern(dst),
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
            ip,
        )
        seg.encap = encap
        return seg

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
        ip: int,
    ) -> Segment:
        """A segment from its fields; ``data[base:base + have]`` holds the frame's captured
        bytes, and ``l4`` / ``end`` (where TCP starts, where the IP packet ends) and ``ip`` (where
        the IPv4 header starts; -1 for IPv6) count from ``base``."""
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
        if (flags & _CONTROL or self.verify_all) and not truncated and not fragment and length >= 0:
            seg.csum = checksum_state(data, base + ip if ip >= 0 else -1, base + l4, base + end, src, dst)
        if self.keep_payload and length:
            seg.payload = data[base + l4 + hlen : base + max(min(end, have, l4 + hlen + PAYLOAD_PREVIEW), l4 + hlen)]
        return seg

    def _icmp(self, frame: RawFrame, data: bytes, l4: int, end: int, router: bytes, ttl: int, version: int, encap: Encap | None) -> IcmpError | None:
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
        err = IcmpError(frame.frame, frame.ts, router, version, itype, code, qsrc, qdst, sport, dport, seq, ttl, mtu)
        err.encap = encap
        return err


def checksum_state(data: bytes, ip: int, l4: int, end: int, src: bytes, dst: bytes) -> int:
    """CSUM_GOOD, CSUM_BAD or CSUM_PARTIAL for the segment at ``data[l4:end]`` (and the IPv4
    header at ``data[ip:l4]``; ``ip`` -1 for IPv6), whose bytes must all be there.

    A one's-complement sum of 16-bit words is that sum modulo 0xFFFF (2**16 is 1 modulo 0xFFFF):
    a valid header or segment sums to 0 there. PARTIAL: the IPv4 header is valid and the TCP
    checksum field holds the pseudo-header's sum alone, what a sender with TX checksum offload
    hands its NIC (and a capture on that sender records). The words are added where they lie
    (see :func:`word_sum`): every SYN, FIN and RST is checked, and slices, joins and big
    integers cost several objects each.
    """
    if ip >= 0 and word_sum(data, ip, l4) % 0xFFFF:
        return CSUM_BAD
    length = end - l4
    # the pseudo-header: addresses, then protocol and length (IPv4: 0, 6, 16-bit length; IPv6:
    # 32-bit length, 0, 0, 0, 6), all in whole words
    pseudo = word_sum(src, 0, len(src)) + word_sum(dst, 0, len(dst)) + _PROTO_TCP + (length >> 16) + (length & 0xFFFF)
    # the segment padded with a zero byte to whole words
    padded = word_sum(data, l4, end - (length & 1)) + (data[end - 1] << 8 if length & 1 else 0)
    if (pseudo + padded) % 0xFFFF == 0:
        return CSUM_GOOD
    if length >= TCP_MIN_HLEN and (data[l4 + TCP_CSUM] << 8 | data[l4 + TCP_CSUM + 1]) % 0xFFFF == pseudo % 0xFFFF:
        return CSUM_PARTIAL
    return CSUM_BAD


def word_sum(data: bytes, start: int, stop: int) -> int:
    """The sum of the big-endian 16-bit words of ``data[start:stop]``, aligned on ``stop`` as
    ``int.from_bytes`` aligns them (an odd first byte stands alone): that integer and this sum
    are equal modulo 0xFFFF. Read byte by byte: compiled, a native loop that makes no object."""
    total = 0
    if (stop - start) & 1:
        total = data[start]
        start += 1
    for i in range(start, stop, 2):
        total += data[i] << 8 | data[i + 1]
    return total


def plain_tcp_header(buf: bytes, o: int, caplen: int) -> int:
    """The TCP header length of the usual frame at ``buf[o:o + caplen]`` -- Ethernet, IPv4
    without options, not a fragment, TCP with its whole header captured and inside the IP
    packet -- or -1 for any other frame."""
    if caplen < _PLAIN_L4 + TCP_MIN_HLEN:
        return -1
    ip = o + ETH_HLEN
    hlen = (buf[ip + (IP4_MIN_HLEN + TCP_DOFF)] >> 4) * 4
    if (
        (buf[o + ETH_TYPE] << 8 | buf[o + (ETH_TYPE + 1)]) != _ETH_IPV4
        or buf[ip] != IP4_NO_OPTIONS
        or buf[ip + IP4_PROTO] != _PROTO_TCP
        or (buf[ip + IP4_FRAG] << 8 | buf[ip + (IP4_FRAG + 1)]) & (IP4_MORE_FRAGMENTS | IP4_OFFSET_MASK)
        or hlen < TCP_MIN_HLEN
        or hlen + IP4_MIN_HLEN > (buf[ip + IP4_TOTAL_LEN] << 8 | buf[ip + (IP4_TOTAL_LEN + 1)])
    ):
        return -1
    return hlen


def plain_tcp_mix(buf: bytes, offset: int) -> int:
    """:func:`~synscope.read.pipeline.shard_mix` of the 4-tuple of an Ethernet frame that
    :func:`plain_tcp_header` accepted, read without decoding it.

    It runs for every frame a worker of a split run passes over: only the bytes it needs are
    read where they lie (the ports and the last byte of each address: the mix takes the ends in
    either order, so neither address is read whole to put them in order), nothing built.
    """
    ip = offset + ETH_HLEN
    tcp = ip + IP4_MIN_HLEN
    sport = buf[tcp + TCP_SPORT] << 8 | buf[tcp + TCP_SPORT + 1]
    dport = buf[tcp + TCP_DPORT] << 8 | buf[tcp + TCP_DPORT + 1]
    return ends_mix(sport, dport, buf[ip + IP4_SRC + 3], buf[ip + IP4_DST + 3])


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
