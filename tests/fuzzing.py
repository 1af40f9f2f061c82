"""Mutation fuzzer for the read path, shared by tests/test_fuzz.py (CI) and scripts/fuzz (long runs).

Seeds are the bundled captures plus a few CRAFTED ones (ICMPv6 errors, IPv6
extension headers, fragments, rich TCP options, hostile payloads). A case is a
seed with one to four mutations stacked on it. Mutators know the formats: they
find every length field (pcap record caplen / orig_len, pcapng block lengths and
option lengths, Ethernet type and VLAN tags, IP total length and IHL, IPv6
payload length and extension headers, TCP data offset and option lengths, the
header quoted in an ICMP error) and make it lie, besides blind bit flips,
overwrites, insertions, deletions, cuts and random records behind a valid
header. Case ``n`` of seed ``s`` is the same bytes on every machine.

The property (:func:`check_capture`): reading the bytes in-process —
open_capture → Pipeline → run → text timeline, tables and JSON — ends in
reports and/or a clean :class:`CaptureError` and one-line warnings. No
exception, no hang (a per-case alarm), JSON Lines that parse, and no control
character but ``\\n`` in anything meant for a terminal.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import signal
import struct
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synscope.read import jsonl as render_json
from synscope.read.pipeline import Pipeline, run
from synscope.read.sources.pcap import MAX_RECORD, CaptureError, open_capture
from synscope.render import table as render_table
from synscope.render import text as render_text
from tests import craft
from tests.craft import ACK, FIN, PSH, SYN

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
REGRESSIONS = ROOT / "tests" / "data" / "fuzz"

# Anything that may not reach a terminal: C0/C1 controls but \n, DEL, and the
# Unicode bidi overrides / line separators (the same set as render/safe.py).
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# Seeds bigger than this many records are cut down for speed (the full files are seeds too, rarely).
SEED_RECORDS = 48
TIME_LIMIT = 2.0


# ------------------------------------------------------------------ seeds


def _v6_ext_tcp() -> bytes:
    """IPv6 with hop-by-hop, destination options and a first-fragment header before TCP."""
    src, dst = "2001:db8:1::2", "2001:db8:2::2"
    inner = craft.ipv6_tcp(src, dst, 40000, 443, 1000, 0, SYN, options=craft.tcp_options(ts=(1, 0)))
    tcp = inner[40:]
    hbh = struct.pack("!BB", 60, 0) + b"\x01\x04\0\0\0\0"  # -> destination options, PadN
    dopt = struct.pack("!BB", 44, 0) + b"\x01\x04\0\0\0\0"  # -> fragment
    frag = struct.pack("!BBHI", 6, 0, 0x0001, 0x12345678)  # offset 0, more fragments
    body = hbh + dopt + frag + tcp
    hdr = struct.pack("!IHBB", 6 << 28, len(body), 0, 64) + inner[8:40]
    return craft.ether(hdr + body)


def _icmp4_quote() -> bytes:
    """An ICMP port-unreachable quoting a SYN (IP header + 8 bytes of TCP, as RFC 792 says)."""
    syn = craft.ipv4_tcp("198.18.1.2", "198.18.2.2", 40001, 81, 7777, 0, SYN)
    body = struct.pack("!BBHI", 3, 3, 0, 0) + syn[:28]
    body = body[:2] + struct.pack("!H", craft.checksum(body)) + body[4:]
    return craft.ether(craft.ipv4("198.18.1.1", "198.18.1.2", 1, body))


def _icmp6_quote() -> bytes:
    """An ICMPv6 packet-too-big quoting a whole TCP data segment."""
    seg = craft.ipv6_tcp("2001:db8:1::2", "2001:db8:2::2", 40002, 443, 1, 1, ACK | PSH, payload=b"x" * 100)
    body = struct.pack("!BBHI", 2, 0, 0, 1280) + seg
    hdr = struct.pack("!IHBB", 6 << 28, len(body), 58, 60)
    return craft.ether(hdr + bytes(15) + b"\x01" + bytes(15) + b"\x02" + body)


def _fragments() -> list[bytes]:
    """An IPv4 SYN in two fragments (first fragment carries the TCP header)."""
    syn = craft.ipv4_tcp("198.18.1.2", "198.18.2.2", 40003, 80, 5, 0, SYN, options=craft.tcp_options())
    tcp = syn[20:]
    first = bytearray(syn[:20] + tcp[:24])
    struct.pack_into("!HH", first, 2, 44, 0x2000)
    second = bytearray(syn[:20] + tcp[24:])
    struct.pack_into("!HH", second, 2, 20 + len(tcp) - 24, 3)
    return [craft.ether(bytes(first)), craft.ether(bytes(second))]


HOSTILE_PAYLOADS = (
    b"\x1b[31mRED\x1b[0m \x1b]0;pwned title\x07 \x1b[2J\x1b[H",  # colours, window title, clear screen
    b"line1\rOVERWRITE\x00nul\x08\x08bs\x7f del\x9b31m C1-CSI",
    "evil \u202eefil.exe \u2066iso\u2069 \u2028sep".encode(),  # bidi override / isolate, line separator
    b"\xff\xfe\xc3\x28 bad utf-8 \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf",
    b"\x1bP+q544e\x1b\\ DCS, \x1b[6n DSR, \x1b]52;c;ZXZpbA==\x07 OSC 52 clipboard",
)


def hostile_capture() -> bytes:
    """A CRAFTED pcap whose payloads are terminal escape sequences, CR, NUL, bidi overrides and bad UTF-8."""
    buf = io.BytesIO()
    w = craft.PcapWriter(buf)
    t = 1_700_000_000.0
    for i, payload in enumerate(HOSTILE_PAYLOADS):
        for ts, frame in craft.conversation("198.18.1.2", "198.18.2.2", 41000 + i, 80, t, request=payload, response=payload[::-1]):
            w.write(ts, frame)
        t += 1
    # and an IPv6 one with a hostile request
    for ts, frame in craft.conversation("2001:db8:1::2", "2001:db8:2::2", 42000, 80, t, request=HOSTILE_PAYLOADS[0]):
        w.write(ts, frame)
    return buf.getvalue()


def _crafted_seed() -> bytes:
    buf = io.BytesIO()
    w = craft.PcapWriter(buf)
    t = 1_700_000_100.0
    w.write(t, _v6_ext_tcp())
    w.write(t + 0.001, _icmp4_quote())
    w.write(t + 0.002, _icmp6_quote())
    for f in _fragments():
        w.write(t + 0.003, f)
    rich = craft.tcp_options(ts=(5, 6)) + b"\x05\x0a\0\0\0\x01\0\0\0\x02" + b"\x22\x06abcd" + b"\x01\x00"
    rich += b"\0" * (-len(rich) % 4)
    w.write(t + 0.004, craft.ether(craft.ipv4_tcp("198.18.3.1", "198.18.3.2", 50000, 22, 9, 0, SYN, options=rich), vlans=(7,)))
    w.write(t + 0.005, craft.ether(craft.ipv4_tcp("198.18.3.2", "198.18.3.1", 22, 50000, 90, 10, SYN | ACK, options=rich), vlans=(7, 8)))
    w.write(t + 0.006, craft.ether(craft.ipv4_tcp("198.18.3.1", "198.18.3.2", 50000, 22, 10, 91, ACK | FIN, payload=HOSTILE_PAYLOADS[0])))
    return buf.getvalue()


def _trim(data: bytes, records: int) -> bytes:
    """The pcap header and the first `records` records of a pcap file."""
    lay = Layout(data)
    if lay.kind != "pcap" or len(lay.records) <= records:
        return data
    return data[: lay.records[records][0]]


def load_seeds(full: bool = False) -> list[tuple[str, bytes]]:
    """(name, bytes) of every seed; big captures are cut to SEED_RECORDS records unless `full`."""
    seeds = []
    for path in sorted(PCAPS.iterdir()):
        if path.suffix not in (".pcap", ".pcapng", ".gz"):
            continue
        data = path.read_bytes()
        if not full:
            data = _trim(data, SEED_RECORDS)
        seeds.append((path.name, data))
    seeds.append(("crafted-edge-cases.pcap", _crafted_seed()))
    seeds.append(("crafted-hostile-payloads.pcap", hostile_capture()))
    return seeds


# ------------------------------------------------------------------ layout: where the fields are


@dataclass(slots=True)
class Field:
    """One header field of a seed: where it is, how wide, which byte order, what it is."""

    offset: int
    size: int  # 1, 2, 4 or 8
    order: str  # "<", ">" or "!"
    kind: str  # e.g. "pcap.caplen", "ip.total_length", "tcp.doff"


class Layout:
    """Parses a (well-formed) capture just enough to list its fields for targeted mutation.

    Tolerant: anything it cannot parse just yields fewer fields.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.kind = ""
        self.fields: list[Field] = []
        self.records: list[tuple[int, int]] = []  # (record offset, record length incl. header)
        self.packets: list[tuple[int, int, int]] = []  # (data offset, caplen, linktype)
        try:
            if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
                self._pcap("<")
            elif data[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
                self._pcap(">")
            elif data[:4] == b"\x0a\x0d\x0d\x0a":
                self._pcapng()
        except (struct.error, IndexError):
            pass
        for off, cap, lt in self.packets:
            try:
                self._packet(off, cap, lt)
            except (struct.error, IndexError):
                pass

    def _add(self, offset: int, size: int, order: str, kind: str) -> None:
        if offset + size <= len(self.data):
            self.fields.append(Field(offset, size, order, kind))

    def _pcap(self, o: str) -> None:
        self.kind = "pcap"
        data = self.data
        self._add(4, 2, o, "pcap.version")
        self._add(16, 4, o, "pcap.snaplen")
        self._add(20, 4, o, "pcap.linktype")
        lt = struct.unpack_from(o + "I", data, 20)[0] & 0x03FFFFFF
        pos = 24
        while pos + 16 <= len(data):
            _sec, _frac, cap, _olen = struct.unpack_from(o + "IIII", data, pos)
            self._add(pos, 4, o, "pcap.ts_sec")
            self._add(pos + 4, 4, o, "pcap.ts_frac")
            self._add(pos + 8, 4, o, "pcap.caplen")
            self._add(pos + 12, 4, o, "pcap.origlen")
            self.records.append((pos, 16 + cap))
            self.packets.append((pos + 16, min(cap, len(data) - pos - 16), lt))
            pos += 16 + cap

    def _pcapng(self) -> None:
        self.kind = "pcapng"
        data = self.data
        pos = 0
        o = "<"
        linktypes: list[int] = []
        while pos + 12 <= len(data):
            if data[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
                o = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                linktypes = []
                self._add(pos + 8, 4, o, "pcapng.bom")
                self._add(pos + 12, 2, o, "pcapng.major")
                self._add(pos + 16, 8, o, "pcapng.section_length")
            btype, blen = struct.unpack_from(o + "II", data, pos)
            if blen < 12 or pos + blen > len(data):
                break
            self._add(pos, 4, o, "pcapng.block_type")
            self._add(pos + 4, 4, o, "pcapng.block_length")
            self._add(pos + blen - 4, 4, o, "pcapng.block_length_trailer")
            self.records.append((pos, blen))
            opts = None
            if btype == 1:
                linktypes.append(struct.unpack_from(o + "H", data, pos + 8)[0])
                self._add(pos + 8, 2, o, "pcapng.idb_linktype")
                self._add(pos + 12, 4, o, "pcapng.idb_snaplen")
                opts = pos + 16
            elif btype in (6, 2):
                ifid_size = 4 if btype == 6 else 2
                ifid = struct.unpack_from(o + ("I" if btype == 6 else "H"), data, pos + 8)[0]
                self._add(pos + 8, ifid_size, o, "pcapng.interface_id")
                self._add(pos + 12, 4, o, "pcapng.ts_high")
                self._add(pos + 16, 4, o, "pcapng.ts_low")
                self._add(pos + 20, 4, o, "pcapng.caplen")
                self._add(pos + 24, 4, o, "pcapng.origlen")
                cap = struct.unpack_from(o + "I", data, pos + 20)[0]
                lt = linktypes[ifid] if ifid < len(linktypes) else 1
                self.packets.append((pos + 28, min(cap, blen - 32), lt))
                opts = pos + 28 + ((cap + 3) & ~3)
            elif btype == 3:
                self._add(pos + 8, 4, o, "pcapng.spb_origlen")
                self.packets.append((pos + 12, blen - 16, linktypes[0] if linktypes else 1))
            elif btype == 0x0A0D0D0A:
                opts = pos + 24
            if opts is not None:
                end = pos + blen - 4
                while opts + 4 <= end:
                    code, olen = struct.unpack_from(o + "HH", data, opts)
                    self._add(opts, 2, o, "pcapng.option_code")
                    self._add(opts + 2, 2, o, "pcapng.option_length")
                    if code == 0:
                        break
                    if btype == 1 and code == 9:
                        self._add(opts + 4, 1, o, "pcapng.if_tsresol")
                    if btype == 1 and code == 14:
                        self._add(opts + 4, 8, o, "pcapng.if_tsoffset")
                    opts += 4 + ((olen + 3) & ~3)
            pos += blen

    def _packet(self, off: int, cap: int, lt: int) -> None:
        data = self.data
        end = off + cap
        if lt == 1:
            pos = off + 12
            self._add(pos, 2, "!", "eth.type")
            etype = struct.unpack_from("!H", data, pos)[0]
            while etype in (0x8100, 0x88A8) and pos + 6 <= end:
                self._add(pos + 2, 2, "!", "vlan.tci")
                self._add(pos + 4, 2, "!", "vlan.type")
                pos += 4
                etype = struct.unpack_from("!H", data, pos)[0]
            l3 = pos + 2
        elif lt == 113:
            self._add(off, 2, "!", "sll.pkttype")
            self._add(off + 14, 2, "!", "sll.protocol")
            l3 = off + 16
        elif lt == 276:
            self._add(off, 2, "!", "sll2.protocol")
            l3 = off + 20
        elif lt in (0, 108):
            self._add(off, 4, "<", "null.family")
            l3 = off + 4
        else:
            l3 = off
        self._ip(l3, end, "")

    def _ip(self, l3: int, end: int, prefix: str) -> None:
        data = self.data
        if l3 >= end:
            return
        version = data[l3] >> 4
        if version == 4:
            self._add(l3, 1, "!", prefix + "ip.version_ihl")
            self._add(l3 + 2, 2, "!", prefix + "ip.total_length")
            self._add(l3 + 6, 2, "!", prefix + "ip.frag")
            self._add(l3 + 9, 1, "!", prefix + "ip.proto")
            ihl = (data[l3] & 15) * 4
            proto = data[l3 + 9]
            l4 = l3 + ihl
        elif version == 6:
            self._add(l3, 4, "!", prefix + "ip6.vtcfl")
            self._add(l3 + 4, 2, "!", prefix + "ip6.payload_length")
            self._add(l3 + 6, 1, "!", prefix + "ip6.next_header")
            proto = data[l3 + 6]
            l4 = l3 + 40
            for _ in range(8):
                if proto in (0, 43, 60, 44, 51) and l4 + 2 <= end:
                    self._add(l4, 1, "!", prefix + "ip6ext.next_header")
                    self._add(l4 + 1, 1, "!", prefix + "ip6ext.length")
                    if proto == 44:
                        self._add(l4 + 2, 2, "!", prefix + "ip6frag.offset")
                        nxt, l4 = data[l4], l4 + 8
                    elif proto == 51:
                        nxt, l4 = data[l4], l4 + (data[l4 + 1] + 2) * 4
                    else:
                        nxt, l4 = data[l4], l4 + (data[l4 + 1] + 1) * 8
                    proto = nxt
                else:
                    break
        else:
            return
        if proto == 6 and l4 + 14 <= end:
            self._add(l4, 2, "!", prefix + "tcp.sport")
            self._add(l4 + 2, 2, "!", prefix + "tcp.dport")
            self._add(l4 + 4, 4, "!", prefix + "tcp.seq")
            self._add(l4 + 8, 4, "!", prefix + "tcp.ack")
            self._add(l4 + 12, 1, "!", prefix + "tcp.doff")
            self._add(l4 + 13, 1, "!", prefix + "tcp.flags")
            hlen = (data[l4 + 12] >> 4) * 4
            i, oend = l4 + 20, min(l4 + hlen, end)
            while i < oend:
                kind = data[i]
                self._add(i, 1, "!", prefix + "tcp.option_kind")
                if kind == 0:
                    break
                if kind == 1:
                    i += 1
                    continue
                self._add(i + 1, 1, "!", prefix + "tcp.option_length")
                if i + 1 >= oend or data[i + 1] < 2:
                    break
                i += data[i + 1]
        elif proto in (1, 58) and l4 + 8 <= end and not prefix:
            self._add(l4, 1, "!", "icmp.type")
            self._add(l4 + 1, 1, "!", "icmp.code")
            self._ip(l4 + 8, end, "quoted.")


# ------------------------------------------------------------------ mutators

Mutator = Callable[[random.Random, bytearray, Layout], None]

_INTERESTING = {
    1: (0, 1, 2, 3, 4, 5, 6, 0x0F, 0x10, 0x11, 0x2C, 0x3A, 0x40, 0x45, 0x46, 0x4F, 0x50, 0x60, 0x7F, 0x80, 0xF0, 0xFF),
    2: (0, 1, 4, 8, 20, 40, 54, 60, 0x0800, 0x86DD, 0x8100, 0x88A8, 0x2000, 0x1FFF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF),
    4: (
        0,
        1,
        4,
        12,
        16,
        28,
        32,
        54,
        60,
        0xFFFF,
        0x10000,
        0x7FFFFFFF,
        0x80000000,
        0xFFFFFFFC,
        0xFFFFFFFF,
        MAX_RECORD,
        MAX_RECORD + 4,
        999_999,
        1_000_000,
        0xFFFFFFFF - 1,
        4_354_819_200 & 0xFFFFFFFF,
    ),
    8: (0, 1, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF),
}


def _read_field(buf: bytearray, f: Field) -> int:
    return int.from_bytes(buf[f.offset : f.offset + f.size], "little" if f.order == "<" else "big")


def _write_field(buf: bytearray, f: Field, value: int) -> None:
    value &= (1 << (8 * f.size)) - 1
    buf[f.offset : f.offset + f.size] = value.to_bytes(f.size, "little" if f.order == "<" else "big")


def lie(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Give one header field (a length, most often) a wrong but plausible or extreme value."""
    fields = [f for f in lay.fields if f.offset + f.size <= len(buf)]
    if not fields:
        return flip(rng, buf, lay)
    lengths = [f for f in fields if "len" in f.kind or f.kind.endswith(("doff", "version_ihl"))]
    f = rng.choice(lengths if lengths and rng.random() < 0.6 else fields)
    old = _read_field(buf, f)
    choice = rng.random()
    if choice < 0.45:
        value = rng.choice(_INTERESTING[f.size])
    elif choice < 0.8:
        value = old + rng.choice((-8, -4, -2, -1, 1, 2, 4, 8, 16, 40))
    elif choice < 0.9:
        value = old * 2 if rng.random() < 0.5 else old // 2
    else:
        value = rng.getrandbits(8 * f.size)
    if f.kind.endswith(("doff", "version_ihl")) and rng.random() < 0.7:
        # keep the other nibble: a lying data offset / IHL, not a wrecked version
        value = (old & 0xF0) | (value & 0x0F) if f.kind.endswith("version_ihl") else (value & 0xF0) | (old & 0x0F)
    _write_field(buf, f, value)
    if f.kind == "pcapng.block_length" and rng.random() < 0.5:
        # a lie told consistently: trailer agrees, so only the contents can give it away
        for g in lay.fields:
            if g.kind == "pcapng.block_length_trailer" and g.offset > f.offset:
                if g.offset + 4 <= len(buf):
                    _write_field(buf, g, value)
                break


def flip(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Flip 1-8 random bits (mostly past the file header)."""
    if not buf:
        return
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)


def overwrite(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Overwrite 1-16 bytes at a random place with random or interesting bytes."""
    if not buf:
        return
    i = rng.randrange(len(buf))
    n = rng.randint(1, 16)
    fill = rng.choice((lambda: rng.getrandbits(8), lambda: 0, lambda: 0xFF, lambda: rng.choice((0x1B, 0x0D, 0x00, 0x9B, 0x7F))))
    for j in range(i, min(len(buf), i + n)):
        buf[j] = fill()


def truncate(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Cut the file: anywhere, or just inside a record (header or data)."""
    if not buf:
        return
    if lay.records and rng.random() < 0.6:
        start, length = rng.choice(lay.records)
        cut = start + rng.randrange(max(1, length))
    else:
        cut = rng.randrange(len(buf) + 1)
    del buf[cut:]


def insert(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Insert 1-64 random bytes (shifts every later record: framing is lost)."""
    i = rng.randrange(len(buf) + 1)
    buf[i:i] = rng.randbytes(rng.randint(1, 64))


def delete(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Delete 1-64 bytes."""
    if not buf:
        return
    i = rng.randrange(len(buf))
    del buf[i : i + rng.randint(1, 64)]


def splice(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Duplicate a whole record, or move one: repeated frames, time going backwards."""
    if len(lay.records) < 2:
        return insert(rng, buf, lay)
    start, length = rng.choice(lay.records)
    rec = bytes(buf[start : start + length])
    at = rng.choice(lay.records)[0]
    if at <= len(buf):
        buf[at:at] = rec


def random_records(rng: random.Random, buf: bytearray, lay: Layout) -> None:
    """Keep the file header; replace the rest with random records (valid framing, random contents)."""
    if lay.kind != "pcap":
        del buf[rng.randrange(len(buf) + 1) :]
        buf.extend(rng.randbytes(rng.randint(0, 512)))
        return
    hdr = bytes(buf[:24])
    del buf[:]
    buf.extend(hdr)
    o = "<" if hdr[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    for _ in range(rng.randint(1, 30)):
        data = rng.randbytes(rng.choice((0, 1, 14, 20, 34, 54, 60, 74, rng.randint(0, 300))))
        if data and rng.random() < 0.7:  # mostly Ethernet + IPv4/IPv6 + TCP-ish, to get past the first checks
            head = bytearray(data.ljust(54, b"\0"))
            head[12:14] = rng.choice((b"\x08\x00", b"\x86\xdd", b"\x81\x00"))
            head[14] = rng.choice((0x45, 0x46, 0x4F, 0x60, 0x40))
            head[23] = rng.choice((6, 1, 58, 17))
            data = bytes(head)
        orig = len(data) if rng.random() < 0.7 else rng.getrandbits(32)
        buf.extend(struct.pack(o + "IIII", 1_700_000_000 + rng.randint(-5, 5), rng.getrandbits(20), len(data), orig))
        buf.extend(data)


MUTATORS: dict[str, tuple[Mutator, float]] = {
    # name: (function, weight)
    "lie": (lie, 5.0),
    "flip": (flip, 3.0),
    "overwrite": (overwrite, 2.0),
    "truncate": (truncate, 1.5),
    "insert": (insert, 1.0),
    "delete": (delete, 1.0),
    "splice": (splice, 1.0),
    "random-records": (random_records, 0.5),
}
_NAMES = list(MUTATORS)
_WEIGHTS = [MUTATORS[n][1] for n in _NAMES]


def mutate(seed: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """One case: 1-4 stacked mutations of `seed`; gzip seeds are mutated inside, outside or both."""
    gz = seed[:2] == b"\x1f\x8b"
    inner = seed
    if gz:
        try:
            inner = gzip.decompress(seed)
        except (OSError, EOFError, zlib.error):  # already damaged: mutate it as it is
            gz = False
    where = rng.random() if gz else 0.0  # < 0.7: mutate the decompressed capture, then gzip it again
    buf = bytearray(inner if where < 0.7 else seed)
    lay = Layout(bytes(buf))
    names = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        name = rng.choices(_NAMES, _WEIGHTS)[0]
        MUTATORS[name][0](rng, buf, lay)
        names.append(name)
        if rng.random() < 0.5:
            lay = Layout(bytes(buf))
    out = bytes(buf)
    if gz and where < 0.7:
        out = gzip.compress(out, mtime=0)
        names.append("gzip")
        if where > 0.6:  # and damage the compressed stream too
            b = bytearray(out)
            (flip if rng.random() < 0.5 else truncate)(rng, b, Layout(b""))
            out = bytes(b)
            names.append("gzip-damage")
    elif not gz and rng.random() < 0.03:
        out = gzip.compress(out, mtime=0)  # same mutation behind gzip
        names.append("gzip")
    return out, names


def case_rng(seed_index: int, case: int, base: int = 0) -> random.Random:
    """The deterministic random source of one case."""
    return random.Random(f"{base}:{seed_index}:{case}")


# ------------------------------------------------------------------ the property


class Hang(Exception):
    """The per-case time limit passed."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


@dataclass(slots=True)
class Finding:
    """A case that broke the property."""

    kind: str  # exception | hang | memory | bad-json | negative-duration | control-char | multi-line-message | exit-code
    detail: str


@dataclass(slots=True)
class Result:
    """What reading one case produced (for tests that look closer than the property)."""

    error: str | None = None
    reports: int = 0
    warnings: tuple[str, ...] = ()
    truncated_at: int | None = None
    text: str = ""
    json_lines: tuple[str, ...] = ()


def read_all(path: str, keep_payload: bool = True, max_conns: int | None = None, absolute: bool = False) -> Result:
    """Read a capture in-process with the read-path stages and render every report every way:
    JSON line, summary table row, full text timeline (with payload previews). Raises whatever
    the read path raises."""
    try:
        reader = open_capture(path)
    except CaptureError as e:
        return Result(error=str(e))
    pipeline = Pipeline(keep_payload=keep_payload, max_conns=max_conns)
    out_json = io.StringIO()
    text = io.StringIO()
    reports = []
    with reader:
        for r in run([(reader.path, reader)], pipeline):
            render_json.write_connection(r, out_json, absolute)
            render_text.write_connection(r, text, absolute=absolute, payload=keep_payload)
            reports.append(r)
    if reports:
        render_table.summary_table([render_table.table_row(r) for r in reports], min(r.conn.first_ts for r in reports), text)
    return Result(
        reports=len(reports),
        warnings=tuple(reader.warnings),
        truncated_at=reader.truncated_at,
        text=text.getvalue(),
        json_lines=tuple(out_json.getvalue().splitlines()),
    )


@dataclass(slots=True)
class CliResult:
    """`synscope ARGS` run in-process: exit code, stdout, stderr."""

    code: int
    stdout: str
    stderr: str


def cli_in_process(*args: str) -> CliResult:
    """Run the click command in this process (the same code as the installed command, without a fork).

    Re-raises any exception the command let out (click would print a traceback);
    :class:`Hang` from the alarm goes through too.
    """
    from click.testing import CliRunner

    from synscope.cli.main import main

    res = CliRunner().invoke(main, list(args), catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return CliResult(res.exit_code, res.stdout, res.stderr)


def check_result(res: Result) -> Finding | None:
    """The output half of the property: one-line messages, parseable JSON, terminal-safe text."""
    if res.error is not None:
        if "\n" in res.error or UNSAFE.search(res.error):
            return Finding("multi-line-message", repr(res.error))
        return None
    for w in res.warnings:
        if "\n" in w or UNSAFE.search(w):
            return Finding("multi-line-message", repr(w))
    bad = check_json_lines(res.json_lines)
    if bad:
        return bad
    if res.reports != len(res.json_lines):
        return Finding("bad-json", f"{res.reports} reports but {len(res.json_lines)} JSON lines")
    return check_text(res.text, "text output")


def check_json_lines(lines: tuple[str, ...] | list[str]) -> Finding | None:
    """Every line one JSON object (JSON Lines), with sane times."""
    for line in lines:
        try:
            obj = json.loads(line, parse_constant=_no_constants)
        except ValueError as e:
            return Finding("bad-json", f"{e}: {line[:200]!r}")
        if not isinstance(obj, dict):
            return Finding("bad-json", f"not an object: {line[:200]!r}")
        if "start" in obj and "end" in obj and obj["end"] < obj["start"]:
            return Finding("negative-duration", f"end {obj['end']} before start {obj['start']} in connection {obj.get('id')}")
    return None


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def check_text(text: str, what: str) -> Finding | None:
    """No control character but \\n, no bidi override, in text meant for a terminal."""
    m = UNSAFE.search(text)
    if m:
        i = m.start()
        return Finding("control-char", f"{m.group()!r} in {what}: {text[max(0, i - 60) : i + 20]!r}")
    return None


# Exit codes `synscope read` may end with on any input (synscope/exit_codes.py).
READ_EXIT_CODES = frozenset((0, 5, 6))


def check_cli(path: str) -> Finding | None:
    """`read --all --payload --stats` and `read --json`, in-process: documented exit code, one-line
    messages, safe text, valid JSON Lines."""
    for args in (("read", "--all", "--payload", "--stats", path), ("read", "--json", path)):
        res = cli_in_process(*args)
        if res.code not in READ_EXIT_CODES:
            return Finding("exit-code", f"{' '.join(args[:-1])}: exit code {res.code}; stderr {res.stderr[-300:]!r}")
        if "Traceback" in res.stderr:
            return Finding("exception", res.stderr)
        for line in res.stderr.splitlines():
            bad = check_text(line, "stderr")
            if bad:
                return bad
        if "--json" in args:
            bad = check_json_lines(res.stdout.splitlines())
        else:
            bad = check_text(res.stdout, "stdout")
        if bad:
            return bad
    return None


def check_capture(data: bytes, path: Path, time_limit: float = TIME_LIMIT, absolute: bool = False, cli: bool = True) -> Finding | None:
    """Write `data` to `path` and check the property on it, through the stages and (if `cli`)
    through the CLI in-process. None when it holds."""
    path.write_bytes(data)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit * (2 if cli else 1))
    try:
        found = check_result(read_all(str(path), absolute=absolute))
        if found is None and cli:
            found = check_cli(str(path))
    except Hang:
        return Finding("hang", f"no result after {time_limit} s")
    except MemoryError:
        return Finding("memory", "MemoryError")
    except Exception:
        return Finding("exception", traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return found


def signature(f: Finding) -> str:
    """A short key to group findings: the exception type and the innermost frame of synscope code."""
    if f.kind != "exception":
        return f.kind
    lines = f.detail.strip().splitlines()
    where = [line.strip() for line in lines if line.strip().startswith("File ") and "synscope" in line]
    return f"{lines[-1][:120]} @ {where[-1] if where else '?'}"


def regression_inputs() -> list[Path]:
    """Crashers found by the fuzzer, fixed, and kept as regression inputs."""
    return sorted(p for p in REGRESSIONS.glob("*") if p.is_file() and p.suffix != ".md") if REGRESSIONS.is_dir() else []


def tmp_dir() -> Path:
    """A scratch directory on tmpfs when there is one (cases are written to a file each)."""
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else Path("/tmp")
    d = base / f"synscope-fuzz-{os.getpid()}"
    d.mkdir(exist_ok=True)
    return d
