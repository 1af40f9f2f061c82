"""Records passed between pipeline stages.

Every stage takes and returns these plain records, never scapy packets, so each
stage can be tested without a socket, a capture file or root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from synscope.core.encap import Encap
from synscope.core.icmp import icmp_reason

# TCP flag bits as they sit in the header's flags byte (plus NS/AE in the high nibble).
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80
# What the decoder found of a segment's checksums (IPv4 header and TCP): not checked (data segments
# unless asked, frames cut by the snaplen, fragments), valid, wrong, or holding only the
# pseudo-header sum (TX checksum offload: captured on the sender before the NIC filled it in)
CSUM_UNCHECKED: Final = 0
CSUM_GOOD: Final = 1
CSUM_BAD: Final = 2
CSUM_PARTIAL: Final = 3
AE: Final = 0x100  # AccECN (RFC 9768; the former NS bit), kept above the flags byte

_FLAG_LETTERS: Final = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A"), (URG, "U"), (ECE, "E"), (CWR, "C"))


def flag_string(flags: int) -> str:
    """Flags as the compact letters tcpdump and Zeek use, e.g. ``SA`` or ``FA``."""
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit) or "."


def flow_mix(low_port: int, high_port: int, low_last: int, high_last: int) -> int:
    """A 16-bit hash of four numbers of a 4-tuple (ports, last address bytes)."""
    # multiplied, not summed: Linux gives connect() even ports, so parities alone split badly;
    # factors under 2**30, which compiled code multiplies natively (larger ones go through PyLong)
    return ((low_port * 0x1E3779B1 + high_port * 0x05EBCA77 + low_last * 0x02B2AE3D + high_last * 0x27D4EB2F) & 0xFFFFFFFF) >> 16


def ends_mix(port_a: int, port_b: int, last_a: int, last_b: int) -> int:
    """:func:`flow_mix` of a 4-tuple's two ends (port, last byte of the address) in either order:
    the bucket a split run deals the 4-tuple's connections by. Exclusive or first and sum second,
    the other way round from the tracker's FlowKeys slot, so a worker's buckets do not pick its
    slots."""
    return flow_mix(port_a ^ port_b, port_a + port_b, last_a ^ last_b, last_a + last_b)


class FrameSink:
    """What a capture reader offers each record before it makes it a RawFrame.

    The pipeline handles the common frames this way, straight from the reader's buffer: it
    decodes and tracks them, or, in a worker of a split run, counts and passes over the ones
    another worker tracks (see Pipeline.consume). A native class, not a callable: compiled,
    the call takes its arguments unboxed.
    """

    def consume(self, buf: bytes, offset: int, caplen: int, orig_len: int, linktype: int, ts: float, frame: int, pkttype: int) -> bool:
        """True: the frame at ``buf[offset:offset + caplen]`` (record number ``frame``) was
        dealt with here; False: make it a RawFrame and hand it on as usual."""
        return False


class LinkType(IntEnum):
    """pcap LINKTYPE_* values synscope decodes."""

    NULL = 0  # BSD loopback: 4-byte address family in host byte order
    ETHERNET = 1
    RAW = 101  # raw IPv4 or IPv6, version from the first nibble
    LOOP = 108  # OpenBSD loopback: address family in network byte order
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276
    # DLT_RAW as some platforms number it in pcap files
    RAW_ALT12 = 12
    RAW_ALT14 = 14


@dataclass(slots=True)
class RawFrame:
    """One captured record, undecoded, as a source hands it over."""

    frame: int  # 1-based record number in its file: tshark's frame.number
    ts: float  # epoch seconds
    linktype: int
    data: bytes  # captured bytes (may be shorter than orig_len)
    orig_len: int  # length on the wire
    # SLL packet type / pcapng direction: 4 means "outgoing" (PACKET_OUTGOING); -1 unknown
    pkttype: int = -1

    # Written out (dataclass keeps it): compiled, it is a native constructor; the one the
    # dataclass module generates runs as Python bytecode, once per frame.
    def __init__(self, frame: int, ts: float, linktype: int, data: bytes, orig_len: int, pkttype: int = -1) -> None:
        self.frame = frame
        self.ts = ts
        self.linktype = linktype
        self.data = data
        self.orig_len = orig_len
        self.pkttype = pkttype


@dataclass(slots=True)
class TcpOptions:
    """Decoded TCP options; absent options stay None / False."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    ts_val: int | None = None
    ts_ecr: int | None = None
    tfo_cookie: bytes | None = None  # b"" for a cookie request
    unknown: tuple[int, ...] = ()  # kinds we do not decode, by number
    malformed: bool = False  # an option's length ran past the header
    kinds: tuple[int, ...] = ()  # every option's kind in the order sent, NOPs included (the sender's layout)

    # Written out (dataclass keeps it): one per SYN, and the generated one runs as Python bytecode
    def __init__(
        self,
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sack_blocks: tuple[tuple[int, int], ...] = (),
        ts_val: int | None = None,
        ts_ecr: int | None = None,
        tfo_cookie: bytes | None = None,
        unknown: tuple[int, ...] = (),
        malformed: bool = False,
        kinds: tuple[int, ...] = (),
    ) -> None:
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr
        self.tfo_cookie = tfo_cookie
        self.unknown = unknown
        self.malformed = malformed
        self.kinds = kinds

    def describe(self) -> str:
        """Short human form, like ``mss 1460 sack ts ws 7``."""
        parts: list[str] = []
        if self.mss is not None:
            parts.append(f"mss {self.mss}")
        if self.sack_permitted:
            parts.append("sack")
        if self.ts_val is not None:
            parts.append("ts")
        if self.wscale is not None:
            # RFC 7323: a shift over 14 is used as 14; say so rather than show an impossible scale
            parts.append(f"ws {self.wscale}" if self.wscale <= 14 else f"ws {self.wscale} (invalid, used as 14)")
        if self.sack_blocks:
            parts.append("sack-blocks " + ",".join(f"{a}-{b}" for a, b in self.sack_blocks))
        if self.tfo_cookie is not None:
            parts.append("tfo" + (" cookie-request" if not self.tfo_cookie else f" cookie {self.tfo_cookie.hex()}"))
        for kind in self.unknown:
            parts.append(f"opt{kind}")
        if self.malformed:
            parts.append("malformed-options")
        return " ".join(parts)


@dataclass(slots=True)
class Segment:
    """One TCP segment as decoded from a frame.

    Addresses are packed bytes (4 or 16) to keep decoding cheap; render them
    with :func:`synscope.core.addr.fmt_ip`.
    """

    frame: int
    ts: float
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    win: int  # raw, unscaled window field
    length: int  # TCP payload length (from the IP length, not the captured bytes)
    ttl: int = 0  # IPv4 TTL / IPv6 hop limit
    ip_id: int = 0
    raw_options: bytes = b""  # decoded lazily: most segments never need it
    truncated: bool = False  # capture cut the packet short (snaplen)
    fragment: bool = False  # IPv4 first fragment (more fragments follow)
    payload: bytes = b""  # the first bytes of payload that were captured (preview)
    ecn: int = 0  # IP ECN bits
    pkttype: int = -1
    source_index: int = 0  # which input file, when several are read in one call
    _options: TcpOptions | None = None
    encap: Encap | None = None  # the tunnel / VLAN / MPLS... layers it came through (None: a plain frame)
    csum: int = 0  # CSUM_UNCHECKED, CSUM_GOOD, CSUM_BAD or CSUM_PARTIAL (see synscope.read.decode)

    # Written out (dataclass keeps it): compiled, it is a native constructor; the one the
    # dataclass module generates runs as Python bytecode, once per segment.
    def __init__(
        self,
        frame: int,
        ts: float,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        win: int,
        length: int,
        ttl: int = 0,
        ip_id: int = 0,
        raw_options: bytes = b"",
        truncated: bool = False,
        fragment: bool = False,
        payload: bytes = b"",
        ecn: int = 0,
        pkttype: int = -1,
        source_index: int = 0,
        _options: TcpOptions | None = None,
        encap: Encap | None = None,
    ) -> None:
        self.frame = frame
        self.ts = ts
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.win = win
        self.length = length
        self.ttl = ttl
        self.ip_id = ip_id
        self.raw_options = raw_options
        self.truncated = truncated
        self.fragment = fragment
        self.payload = payload
        self.ecn = ecn
        self.pkttype = pkttype
        self.source_index = source_index
        self._options = _options
        self.encap = encap
        self.csum = CSUM_UNCHECKED

    @property
    def options(self) -> TcpOptions:
        """TCP options, decoded on first use."""
        if self._options is None:
            self._options = parse_tcp_options(self.raw_options)
        return self._options


@dataclass(slots=True)
class IcmpError:
    """An ICMP or ICMPv6 error that quotes a TCP header."""

    frame: int
    ts: float
    router: bytes  # who sent the error
    version: int  # 4 or 6
    type: int
    code: int
    # the quoted (offending) packet: it was sent by src:sport towards dst:dport
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int | None  # quoted sequence number, when the quote is long enough
    ttl: int = 0  # TTL of the ICMP packet itself (hops back to the router)
    mtu: int | None = None  # packet-too-big / frag-needed
    source_index: int = 0
    encap: Encap | None = None  # the layers the ICMP error came through (it names a connection inside them)

    @property
    def name(self) -> str:
        """Readable name such as ``admin-prohibited`` (nmap's reason vocabulary)."""
        return icmp_reason(self.version, self.type, self.code)


@dataclass(slots=True)
class DecodeStats:
    """What the decoder skipped, so nothing is dropped silently."""

    frames: int = 0
    tcp: int = 0
    icmp_errors: int = 0
    not_tcp: int = 0
    malformed: int = 0
    truncated: int = 0
    fragments: int = 0
    unknown_linktype: dict[int, int] = field(default_factory=dict)
    tunnelled: int = 0  # TCP segments and ICMP errors found inside an encapsulation
    # encapsulations not followed, by description ("gre protocol 0x880b", "udp 4789 too short"...)
    encap_skipped: dict[str, int] = field(default_factory=dict)


def _u32(raw: bytes, i: int) -> int:
    """The big-endian 32-bit number at ``raw[i:i + 4]``."""
    return (raw[i] << 24) | (raw[i + 1] << 16) | (raw[i + 2] << 8) | raw[i + 3]


def parse_tcp_options(raw: bytes) -> TcpOptions:
    """Decode TCP options; a length running past the end marks them malformed, never raises."""
    opts = TcpOptions()
    unknown: list[int] = []
    kinds: list[int] = []
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == 0:  # end of option list
            break
        kinds.append(kind)
        if kind == 1:  # no-op padding
            i += 1
            continue
        if i + 1 >= n:
            opts.malformed = True
            break
        olen = raw[i + 1]
        if olen < 2 or i + olen > n:
            opts.malformed = True
            break
        # (fields read byte by byte from raw: compiled, native operations, where a slice and
        # int.from_bytes make objects and call through Python; every SYN comes this way)
        b = i + 2
        if kind == 2 and olen == 4:
            opts.mss = (raw[b] << 8) | raw[b + 1]
        elif kind == 3 and olen == 3:
            opts.wscale = raw[b]
        elif kind == 4 and olen == 2:
            opts.sack_permitted = True
        elif kind == 5 and (olen - 2) % 8 == 0:
            opts.sack_blocks = tuple((_u32(raw, j), _u32(raw, j + 4)) for j in range(b, i + olen, 8))
        elif kind == 8 and olen == 10:
            opts.ts_val = _u32(raw, b)
            opts.ts_ecr = _u32(raw, b + 4)
        elif kind == 34:
            opts.tfo_cookie = bytes(raw[b : i + olen])
        elif kind == 254 and olen >= 4 and raw[b] == 0xF9 and raw[b + 1] == 0x89:  # experimental TFO (RFC 6994)
            opts.tfo_cookie = bytes(raw[b + 2 : i + olen])
        else:
            unknown.append(kind)
        i += olen
    opts.unknown = tuple(unknown)
    opts.kinds = tuple(kinds)
    return opts


# what replaces a timestamp option's values in describe_key()
_NO_TIMESTAMPS: Final = bytes(8)


def describe_key(raw: bytes) -> bytes:
    """``raw`` with the values of its timestamp options zeroed: options with the same key are
    described alike (TcpOptions.describe() shows that a timestamp is there, not its values), so
    the description of a SYN's options can be looked up by it. The options are walked as
    parse_tcp_options() walks them; only bytes it reads as timestamp values are zeroed."""
    key = raw
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n:
            break
        olen = raw[i + 1]
        if olen < 2 or i + olen > n:
            break
        if kind == 8 and olen == 10:
            key = key[: i + 2] + _NO_TIMESTAMPS + key[i + 10 :]
        i += olen
    return key
