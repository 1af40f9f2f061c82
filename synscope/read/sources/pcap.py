"""Capture-file source: pcap, pcapng, and gzip around either, from a path or stdin.

Only the standard library: importing scapy costs close to a second of start-up,
and this reader is the hot path of ``synscope read``. The format is found from
the first bytes, never from the file name, and never by seeking, so a pipe
(``tcpdump -w - | synscope read -``) works like a file.

Faults in the middle of a file (a cut-off download, a corrupt length field, a
broken gzip stream) never raise out of the iterator: it stops, records where in
:attr:`CaptureReader.truncated_at`, and explains in :attr:`CaptureReader.warnings`.
Everything yielded before the fault is valid. Only :func:`open_capture` raises,
with :class:`CaptureError`, when there is no capture to read at all.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import zlib
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO, Final, Self

from synscope.core.model import FrameSink, RawFrame

__all__ = ["MAX_RECORD", "CaptureError", "CaptureReader", "open_capture"]

# Big reads keep the per-record cost at "unpack + slice"; 1 MiB is well past the
# point where a larger read stops helping and small enough to not matter for memory.
CHUNK = 1 << 20
# A record or block longer than this is taken as a corrupt length field, not as
# data: no link layer has frames this big, and trusting it would make us try to
# buffer gigabytes of garbage.
MAX_RECORD: Final = 256 << 20

_GZIP_MAGIC: Final = b"\x1f\x8b"
# Compressed bytes fed to zlib per call. Small enough that a damaged stream loses
# little (see _salvage), large enough that the per-call cost does not show.
_GZ_PIECE: Final = 1 << 16
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # zlib parses the gzip header and trailer itself

# pcap magic (as the first 4 bytes appear in the file) -> (byte order, units per
# second, record header length). The Kuznetzov "modified" pcap written by old
# patched libpcaps has 8 more bytes (ifindex, protocol, pkt_type) per record.
_PCAP_MAGICS: Final[dict[bytes, tuple[str, int, int]]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1_000_000, 24),
    b"\xa1\xb2\xcd\x34": (">", 1_000_000, 24),
}
_PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"  # a palindrome, so it reads the same in both orders
_PCAPNG_BOM: Final = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}

# Other formats people hand us by mistake: a precise message beats "not a pcap".
_OTHER_MAGICS: Final = (
    (b"\x28\xb5\x2f\xfd", "zstd-compressed; decompress it first (zstd -d)"),
    (b"\xfd7zXZ\x00", "xz-compressed; decompress it first (xz -d)"),
    (b"BZh", "bzip2-compressed; decompress it first (bzip2 -d)"),
    (b"\x04\x22\x4d\x18", "lz4-compressed; decompress it first (lz4 -d)"),
    (b"PK\x03\x04", "a zip archive; extract the capture from it first"),
    (b"snoop\x00\x00\x00", "a Solaris snoop capture; convert it with editcap first"),
)

# pcapng block types synscope reads; every other type is skipped by its length.
_SHB: Final = 0x0A0D0D0A
_IDB: Final = 1
_PB: Final = 2  # obsolete Packet Block, still written by some old tools
_SPB: Final = 3
_EPB: Final = 6

# Blocks that are no packet but that tshark (4.0) lists as frames, so they take
# a frame number here too: custom blocks (copiable or not), systemd journal entries.
_NUMBERED_NON_PACKETS: Final = frozenset((0x00000BAD, 0x40000BAD, 9))

_OPT_END: Final = 0
_OPT_FLAGS: Final = 2  # epb_flags / pack_flags
_OPT_TSRESOL: Final = 9
_OPT_TSOFFSET: Final = 14

# epb_flags direction bits (0 unknown, 1 inbound, 2 outbound, 3 invalid) ->
# RawFrame.pkttype in Linux PACKET_* numbering: 0 HOST, 4 OUTGOING, -1 unknown.
_DIRECTION_PKTTYPE: Final = (-1, 0, 4, -1)

_RES_NAMES: Final = {0: "s", 3: "ms", 6: "µs", 9: "ns", 12: "ps"}

# Frames stamped outside [1980, 2100) are counted and reported: a clock that was never set
# (1970 plus uptime, or zero) or a damaged field (0xFFFFFFFF is 2106-02-07). Times
# relative to other frames may still be right.
TS_PLAUSIBLE_MIN: Final = 315_532_800  # 1980-01-01
TS_PLAUSIBLE_MAX: Final = 4_102_444_800  # 2100-01-01


class _Structs:
    """Precompiled layouts for one byte order: compiling once keeps unpacking cheap."""

    __slots__ = ("blockhdr", "i64", "idb", "opt", "pb", "u16", "u32")

    def __init__(self, order: str) -> None:
        # (the per-packet numbers of pcap records and pcapng packet blocks are read with _u32_at)
        self.blockhdr = struct.Struct(order + "II")  # pcapng: type, total length
        self.pb = struct.Struct(order + "HHIIII")  # if_id, drops, ts_hi, ts_lo, cap, len
        self.idb = struct.Struct(order + "HHI")  # linktype, reserved, snaplen
        self.opt = struct.Struct(order + "HH")  # option code, length
        self.u16 = struct.Struct(order + "H")
        self.u32 = struct.Struct(order + "I")
        self.i64 = struct.Struct(order + "q")


_STRUCTS: Final = {"<": _Structs("<"), ">": _Structs(">")}


class CaptureError(Exception):
    """The input is not a readable capture; the message is one line for users."""


class _BadBlock(Exception):
    """A pcapng header block is malformed; the reader turns it into a warning."""


class _Input:
    """The raw bytes of a file or of stdin, counted, with room to put bytes back.

    Putting bytes back is how the format is detected on a pipe, which cannot seek.
    """

    __slots__ = ("_pending", "_read", "count", "error", "limit", "lost")

    def __init__(self, f: BinaryIO, streaming: bool) -> None:
        # On a pipe, read1 returns what has arrived instead of waiting for a whole
        # chunk, so frames of `tcpdump -U -w - | synscope read -` show as they come.
        read1 = getattr(f, "read1", None) if streaming else None
        self._read = read1 if read1 is not None else f.read
        self._pending = b""
        self.count = 0
        self.error: str | None = None
        self.lost = False  # the error cost data (as opposed to a harmless oddity)
        self.limit: int | None = None  # read no further than this many bytes (see open_capture)

    def unread(self, data: bytes) -> None:
        """Put `data` back in front of what comes next."""
        self._pending = data + self._pending

    def read(self, n: int) -> bytes:
        """Up to `n` bytes (fewer on a pipe); b"" at the end or after a read error."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self.limit is not None:
            n = min(n, self.limit - self.count)
            if n <= 0:
                return b""
        try:
            data = self._read(n)
        except (OSError, ValueError) as exc:  # ValueError: stream closed under us
            self.error = f"read error ({getattr(exc, 'strerror', None) or exc})"
            self.lost = True
            return b""
        if not data:  # None from a non-blocking stream counts as the end too
            return b""
        self.count += len(data)
        return data


class _Gunzip:
    """Decompresses the gzip members (``cat a.gz b.gz`` makes several) of an _Input.

    zlib is used directly rather than gzip.GzipFile: on a cut-off file GzipFile
    raises EOFError and drops what it decompressed in that call, while here
    everything up to the cut is handed over and :attr:`error` says what happened.
    """

    __slots__ = ("_d", "_inp", "error", "lost")

    def __init__(self, inp: _Input) -> None:
        self._inp = inp
        self._d: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS)
        self.error: str | None = None
        self.lost = False

    @property
    def count(self) -> int:
        """Compressed bytes read so far: what file size and progress refer to."""
        return self._inp.count

    def _fail(self, message: str, lost: bool = True) -> bytes:
        self.error = message
        self.lost = lost
        self._d = None
        return b""

    def read(self, n: int) -> bytes:
        """Up to `n` decompressed bytes; b"" at the end or after a fault."""
        while True:
            d = self._d
            if d is None:
                return b""
            if d.unconsumed_tail:  # output was capped at n last time
                data = d.unconsumed_tail
            elif d.eof:  # a member ended: another may follow
                data = d.unused_data or self._inp.read(_GZ_PIECE)
                # zero padding after the last member is common (tape blocking);
                # gzip(1) ignores it too
                while data and not data.strip(b"\0"):
                    data = self._inp.read(_GZ_PIECE)
                if not data:
                    self._d = None
                    if self._inp.error:
                        return self._fail(self._inp.error, self._inp.lost)
                    return b""
                data = data.lstrip(b"\0")
                if not _GZIP_MAGIC.startswith(data[:2]):
                    return self._fail("trailing garbage after the gzip data ignored", False)
                d = self._d = zlib.decompressobj(_GZIP_WBITS)
            else:
                data = self._inp.read(_GZ_PIECE)
                if not data:
                    # input ended inside a member: hand over what zlib still holds
                    tail = d.flush()
                    self._fail(self._inp.error or "the gzip data ends early (cut-off file)")
                    return tail
            saved = d.copy()  # a few µs per 64 KiB: buys salvage if this piece is bad
            try:
                out = d.decompress(data, n)
            except zlib.error as exc:
                # zlib drops the whole call's output on an error; replay the piece
                # in small steps to hand over everything before the damage, as zcat does
                out = _salvage(saved, data)
                self._fail(f"corrupt gzip data ({exc})")
            if out:
                return out


def _salvage(d: zlib._Decompress, data: bytes) -> bytes:
    """Decompress `data` in small steps, keeping the output made before an error.

    Steps of 256 bytes, and the step that fails once more byte by byte, so at
    most a few bytes' worth of output before the damage is lost.
    """
    parts = []
    for step in (256, 1):
        for i in range(0, len(data), step):
            saved = d.copy()
            try:
                parts.append(d.decompress(data[i : i + step]))
            except zlib.error:
                d, data = saved, data[i : i + step]
                break
        else:
            break  # no error at all: nothing more to replay
    return b"".join(parts)


def _describe_resolution(code: int) -> str:
    """Human name of a pcapng if_tsresol value, e.g. "µs" or "2^-20 s"."""
    if code & 0x80:
        return f"2^-{code & 0x7F} s"
    return _RES_NAMES.get(code, f"10^-{code} s")


class CaptureReader:
    """An open capture file; iterate it for :class:`~synscope.core.model.RawFrame` records.

    Create it with :func:`open_capture`. It can be iterated once. Attributes
    describe the file and are filled in as reading goes on:

    - ``path``: as given (``"-"`` for stdin); ``name`` is what messages call it.
    - ``format``: ``"pcap"`` or ``"pcapng"``; ``compressed``: gzip around it.
    - ``ts_resolution``: ``"µs"``, ``"ns"``...; for pcapng the first interface's,
      or ``"mixed"`` once interfaces differ.
    - ``linktypes``: every link type declared (pcap header, pcapng interfaces).
    - ``snaplen``: from the pcap header or the first pcapng interface (0: none).
    - ``size``: file size in bytes, None for stdin or a pipe; ``bytes_read``:
      bytes of the file read so far (compressed bytes for gzip), for progress.
    - ``frames``: the last frame number reached: records yielded so far, plus
      the pcapng custom and systemd-journal blocks, which tshark numbers too.
    - ``warnings``: one line each, for the user; ``truncated_at``: byte offset
      (in the decompressed stream for gzip) where the record that could not be
      read starts, or None when the whole file was read.
    """

    def __init__(
        self,
        path: str,
        name: str,
        f: BinaryIO,
        streaming: bool,
        size: int | None,
        owns_file: bool,
    ) -> None:
        self.path = path
        self.name = name
        self.size = size
        self.format = ""
        self.compressed = False
        self.ts_resolution = ""
        self.linktypes: set[int] = set()
        self.snaplen: int | None = None
        self.warnings: list[str] = []
        self.truncated_at: int | None = None
        self.frames = 0
        self._file = f
        self._owns_file = owns_file
        self._inp = _Input(f, streaming)
        self._src: _Input | _Gunzip = self._inp
        self._buf = b""  # bytes read but not parsed yet start at _buf[_pos]
        self._pos = 0
        self._base = 0  # stream offset of _buf[0], for messages and truncated_at
        self._gen: Generator[RawFrame, None, None] | None = None
        # pcap
        self._linktype = 0
        self._units = 1_000_000
        self._hdrlen = 16
        self._order = "<"
        # pcapng: per interface (linktype, units per second, offset in units, snaplen)
        self._ifaces: list[tuple[int, int, int, int]] = []
        self._resolutions: list[str] = []
        # a consumer that can take frames straight from the read buffer (the pipeline: see
        # FrameSink) sets this before reading; every record is offered to it before it is made a
        # RawFrame (pcap; pcapng while it has one interface), and one it takes is not yielded (it
        # keeps its number)
        self.sink: FrameSink | None = None
        self._one_interface = True  # pcapng: no section declared a second one (frames stay in file order)
        # the latest time of the frames the sink took (time_ordered() needs it)
        self.passed_newest = float("-inf")

    # ----- public -----

    @property
    def interfaces(self) -> int:
        """pcapng: interfaces declared so far in the current section (1 for pcap)."""
        return len(self._ifaces) if self.format == "pcapng" else 1

    @property
    def bytes_read(self) -> int:
        """Bytes of the input consumed so far (compressed bytes for a gzip file)."""
        return self._src.count

    def __iter__(self) -> Iterator[RawFrame]:
        if self._gen is None:
            self._gen = self._pcap_frames() if self.format == "pcap" else self._pcapng_frames()
        return self._gen

    def close(self) -> None:
        """Stop reading and close the file (stdin is left open)."""
        if self._gen is not None:
            self._gen.close()  # runs the reader's cleanup
        self._close_file()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = self.format + (".gz" if self.compressed else "")
        return f"<CaptureReader {self.name!r} {kind} frames={self.frames}>"

    # ----- header parsing, done by open_capture -----

    def _close_file(self) -> None:
        if self._owns_file:
            self._file.close()

    def _fill(self, n: int) -> bytes:
        """Read until at least `n` unparsed bytes are buffered (or the input ends)."""
        while len(self._buf) - self._pos < n:
            chunk = self._src.read(CHUNK)
            if not chunk:
                break
            self._buf = self._buf[self._pos :] + chunk
            self._base += self._pos
            self._pos = 0
        return self._buf[self._pos : self._pos + n]

    def _start(self) -> None:
        """Detect the format and parse the file header, or raise CaptureError."""
        name = self.name
        head = b""
        while len(head) < 4:  # a pipe may deliver the first bytes in pieces
            chunk = self._inp.read(CHUNK)
            if not chunk:
                break
            head += chunk
        if not head:
            if self._inp.error:
                raise CaptureError(f"{name}: {self._inp.error}")
            raise CaptureError(f"{name}: empty file")
        if head.startswith(_GZIP_MAGIC):
            self.compressed = True
            self._inp.unread(head)  # the decompressor must see the gzip header too
            self._src = _Gunzip(self._inp)
            head = self._fill(4)
            if not head:
                err = self._src.error
                raise CaptureError(f"{name}: " + (err if err else "empty file (inside gzip)"))
        else:
            self._buf = head
        magic = head[:4]
        if magic in _PCAP_MAGICS:
            self._start_pcap(magic)
        elif magic == _PCAPNG_MAGIC:
            self._start_pcapng()
        else:
            inside = "gzip data is" if self.compressed else "file is"
            for prefix, what in _OTHER_MAGICS:
                if head.startswith(prefix):
                    raise CaptureError(f"{name}: {inside} {what}")
            what = "the gzip data is not" if self.compressed else "not"
            raise CaptureError(f"{name}: {what} a pcap or pcapng file (starts with {magic.hex(' ')})")

    def _start_pcap(self, magic: bytes) -> None:
        order, units, hdrlen = _PCAP_MAGICS[magic]
        hdr = self._fill(24)
        if len(hdr) < 24:
            raise CaptureError(f"{self.name}: pcap file header cut short ({len(hdr)} of 24 bytes)")
        major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(order + "HHiIII", hdr, 4)
        if major != 2:
            raise CaptureError(f"{self.name}: unsupported pcap version {major}.{minor}")
        self.format = "pcap"
        self.ts_resolution = "ns" if units == 1_000_000_000 else "µs"
        self.snaplen = snaplen
        # the top bits carry FCS-length flags; libpcap masks them off the same way
        self._linktype = linktype & 0x03FFFFFF
        self.linktypes.add(self._linktype)
        self._units = units
        self._hdrlen = hdrlen
        self._order = order
        self._pos += 24

    def _start_pcapng(self) -> None:
        name = self.name
        hdr = self._fill(12)
        if len(hdr) < 12:
            raise CaptureError(f"{name}: pcapng section header cut short ({len(hdr)} bytes)")
        order = _PCAPNG_BOM.get(hdr[8:12])
        if order is None:
            raise CaptureError(f"{name}: not a pcapng file (bad byte-order magic {hdr[8:12].hex(' ')})")
        (blen,) = struct.unpack_from(order + "I", hdr, 4)
        if blen < 28 or blen > MAX_RECORD or blen % 4:
            raise CaptureError(f"{name}: pcapng section header has an impossible length {blen}")
        block = self._fill(blen)
        if len(block) < blen:
            raise CaptureError(f"{name}: pcapng section header cut short ({len(block)} of {blen} bytes)")
        self._check_section(block, 0, order)
        self.format = "pcapng"
        self._order = order
        self._pos += blen
        # Take in the interface descriptions that came with the header, so
        # linktypes and ts_resolution are known before the first frame. Only what
        # is already buffered: on a live pipe, waiting here would delay opening.
        st = _STRUCTS[order]
        while True:
            buf, pos = self._buf, self._pos
            if pos + 12 > len(buf):
                break
            btype, blen = st.blockhdr.unpack_from(buf, pos)
            if btype != _IDB or blen < 20 or blen % 4 or pos + blen > len(buf):
                break
            if st.u32.unpack_from(buf, pos + blen - 4)[0] != blen:
                break  # the iterator meets it again and reports it
            try:
                self._add_interface(buf, pos, blen, st)
            except _BadBlock:
                break  # the iterator meets it again and reports it
            self._pos += blen

    def _check_section(self, buf: bytes, pos: int, order: str) -> None:
        """Validate a section header block whose bytes are all in `buf`."""
        major = _STRUCTS[order].u16.unpack_from(buf, pos + 12)[0]
        if major != 1:
            minor = _STRUCTS[order].u16.unpack_from(buf, pos + 14)[0]
            raise CaptureError(f"{self.name}: unsupported pcapng version {major}.{minor}")

    def _add_interface(self, buf: bytes, pos: int, blen: int, st: _Structs) -> None:
        """Record an Interface Description Block whose bytes are all in `buf`."""
        if blen < 20:
            raise _BadBlock(f"interface description block too short ({blen} bytes)")
        linktype, _reserved, snaplen = st.idb.unpack_from(buf, pos + 8)
        res_code = 6  # the format's default: microseconds
        units = 1_000_000
        offset = 0
        opos, oend = pos + 16, pos + blen - 4
        while opos + 4 <= oend:
            code, olen = st.opt.unpack_from(buf, opos)
            if code == _OPT_END:
                break
            if code == _OPT_TSRESOL and olen >= 1:
                res_code = buf[opos + 4]
                exp = res_code & 0x7F
                if exp > 100:  # 10^-100 s is corruption, not a clock
                    raise _BadBlock(f"interface has an impossible if_tsresol {res_code:#x}")
                units = 1 << exp if res_code & 0x80 else 10**exp
            elif code == _OPT_TSOFFSET and olen >= 8:
                offset = st.i64.unpack_from(buf, opos + 4)[0]
            opos += 4 + ((olen + 3) & ~3)
        # The offset is in seconds; kept in timestamp units so that one integer
        # division gives a correctly rounded float.
        self._ifaces.append((linktype, units, offset * units, snaplen))
        if len(self._ifaces) > 1:
            self._one_interface = False
        self.linktypes.add(linktype)
        if self.snaplen is None:
            self.snaplen = snaplen
        desc = _describe_resolution(res_code)
        self._resolutions.append(desc)
        first = self._resolutions[0]
        self.ts_resolution = first if all(r == first for r in self._resolutions) else "mixed"

    # ----- reading -----

    def _refill(self, buf: bytes, pos: int, need: int) -> bytes:
        """Drop the parsed part of `buf`; read until `need` bytes are in or input ends.

        Returns the new buffer, whose first byte is the old ``buf[pos]``. Pieces
        are joined once, so a huge record arriving in small pipe reads costs one copy.
        """
        self._base += pos
        parts = [buf[pos:]]
        have = len(buf) - pos
        read = self._src.read
        while have < need:
            chunk = read(max(CHUNK, need - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def _where(self, offset: int) -> str:
        unit = " of the decompressed data" if self.compressed else ""
        return f"at byte {offset}{unit} (after frame {self.frames})"

    def _stop(self, offset: int, what: str) -> None:
        """End reading at a fault: remember where, and tell the user in one line."""
        self.truncated_at = offset
        self.warnings.append(f"{self.name}: {what} {self._where(offset)}; the rest is lost")

    def _cut(self, offset: int) -> None:
        """The input ended (or failed) inside the record starting at `offset`."""
        err = self._src.error
        if err and self._src.lost:
            self._stop(offset, f"{err}; reading stopped mid-record")
        else:
            self._stop(offset, "file ends mid-record")

    def _ended(self, offset: int) -> None:
        """The input ended between records: fine, unless the source had a fault."""
        err = self._src.error
        if err is None:
            return
        if self._src.lost:
            self._stop(offset, err)
        else:
            self.warnings.append(f"{self.name}: {err}")

    def _finish(self, buf: bytes, pos: int, frame: int, bad_frac: int, odd_ts: int = 0) -> None:
        self.frames = frame
        self._buf, self._pos = buf, pos
        if bad_frac:
            frames = "1 frame" if bad_frac == 1 else f"{bad_frac} frames"
            self.warnings.append(f"{self.name}: {frames} with invalid sub-second timestamp fields (clamped to just under the next second)")
        if odd_ts:
            frames = "1 frame" if odd_ts == 1 else f"{odd_ts} frames"
            self.warnings.append(
                f"{self.name}: {frames} stamped before 1980 or after 2100 (capture clock not set, or damaged timestamps): "
                "dates are wrong, and times across them may be too"
            )
        self._close_file()

    def _pcap_frames(self) -> Generator[RawFrame, None, None]:
        """The pcap record loop: flat, local variables only, as it is the hot path."""
        hl = self._hdrlen
        limit = self._units  # a sub-second field at or past this is invalid
        scale = float(limit)
        lt = self._linktype
        refill = self._refill
        sink = self.sink
        little = self._order == "<"
        buf, pos = self._buf, self._pos
        n = len(buf)
        frame = 0
        bad_frac = 0
        odd_ts = 0
        ts_min, ts_max = TS_PLAUSIBLE_MIN, TS_PLAUSIBLE_MAX
        try:
            while True:
                if pos + hl > n:
                    buf = refill(buf, pos, hl)
                    pos = 0
                    n = len(buf)
                    if n < hl:
                        self.frames = frame
                        if n:
                            self._cut(self._base)
                        else:
                            self._ended(self._base)
                        return
                sec = _u32_at(buf, pos, little)
                frac = _u32_at(buf, pos + 4, little)
                cap = _u32_at(buf, pos + 8, little)
                olen = _u32_at(buf, pos + 12, little)
                end = pos + hl + cap
                if end > n:
                    self.frames = frame
                    if cap > MAX_RECORD:
                        self._stop(self._base + pos, f"impossible record length {cap}")
                        return
                    buf = refill(buf, pos, hl + cap)
                    pos = 0
                    n = len(buf)
                    end = hl + cap
                    if end > n:
                        self._cut(self._base)
                        return
                if frac >= limit:
                    bad_frac += 1
                    frac = limit - 1
                if sec < ts_min or sec >= ts_max:
                    odd_ts += 1
                frame += 1
                ts = sec + frac / scale
                if sink is not None and sink.consume(buf, pos + hl, cap, olen, lt, ts, frame, -1):
                    pos = end
                    continue
                yield RawFrame(frame, ts, lt, buf[pos + hl : end], olen)
                pos = end
        finally:
            self._finish(buf, pos, frame, bad_frac, odd_ts)

    def _pcapng_frames(self) -> Generator[RawFrame, None, None]:
        """The pcapng block loop: yields packet blocks, header blocks update state."""
        st = _STRUCTS[self._order]
        u32, opt = st.u32.unpack_from, st.opt.unpack_from
        little = self._order == "<"
        ifaces = self._ifaces
        refill = self._refill
        sink = self.sink
        buf, pos = self._buf, self._pos
        n = len(buf)
        frame = 0
        last_ts = 0.0  # Simple Packet Blocks have no timestamp: they get the previous one
        # declared: compiled, these fields are then native ints, not objects (see _ticks_to_seconds)
        btype: int
        blen: int
        ifid: int
        hi: int
        lo: int
        cap: int
        olen: int
        odd_ts = 0
        ts_min, ts_max = TS_PLAUSIBLE_MIN, TS_PLAUSIBLE_MAX
        try:
            while True:
                if pos + 12 > n:
                    buf = refill(buf, pos, 12)
                    pos = 0
                    n = len(buf)
                    if n < 12:
                        self.frames = frame
                        if n:
                            self._cut(self._base)
                        else:
                            self._ended(self._base)
                        return
                btype = _u32_at(buf, pos, little)
                blen = _u32_at(buf, pos + 4, little)
                if btype == _SHB:
                    # A new section may switch byte order: read its length in it.
                    order = _PCAPNG_BOM.get(buf[pos + 8 : pos + 12])
                    if order is None:
                        self.frames = frame
                        self._stop(
                            self._base + pos,
                            "section header with a bad byte-order magic",
                        )
                        return
                    st = _STRUCTS[order]
                    u32, opt = st.u32.unpack_from, st.opt.unpack_from
                    little = order == "<"
                    blen = _u32_at(buf, pos + 4, little)
                if blen < 12 or blen > MAX_RECORD or blen & 3:
                    self.frames = frame
                    self._stop(self._base + pos, f"impossible block length {blen}")
                    return
                end = pos + blen
                if end > n:
                    buf = refill(buf, pos, blen)
                    pos = 0
                    n = len(buf)
                    end = blen
                    if end > n:
                        self.frames = frame
                        self._cut(self._base)
                        return
                if _u32_at(buf, end - 4, little) != blen:
                    # the trailing copy of the length is the one check that catches a
                    # corrupt length before we parse garbage; Wireshark stops here too
                    self.frames = frame
                    self._stop(self._base + pos, f"block lengths disagree ({blen} and {u32(buf, end - 4)[0]})")
                    return

                if btype == _EPB:
                    if blen < 32:
                        self.frames = frame
                        self._stop(self._base + pos, f"packet block too short ({blen} bytes)")
                        return
                    ifid = _u32_at(buf, pos + 8, little)
                    hi = _u32_at(buf, pos + 12, little)
                    lo = _u32_at(buf, pos + 16, little)
                    cap = _u32_at(buf, pos + 20, little)
                    olen = _u32_at(buf, pos + 24, little)
                    padded = (cap + 3) & ~3
                    if padded + 32 > blen:
                        self.frames = frame
                        self._stop(
                            self._base + pos,
                            f"packet block claims {cap} bytes in a {blen}-byte block",
                        )
                        return
                    if ifid >= len(ifaces):
                        self.frames = frame
                        self._stop(self._base + pos, f"packet for undeclared interface {ifid}")
                        return
                    lt, units, offset, _snap = ifaces[ifid]
                    last_ts = _ticks_to_seconds(((hi << 32) | lo) + offset, units)
                    if not ts_min <= last_ts < ts_max:
                        odd_ts += 1
                    pkttype = -1
                    if blen > padded + 32:  # options present: look for epb_flags
                        opos = pos + 28 + padded
                        oend = end - 4
                        while opos + 4 <= oend:
                            code, ol = opt(buf, opos)
                            if code == _OPT_FLAGS and ol == 4:
                                pkttype = _DIRECTION_PKTTYPE[u32(buf, opos + 4)[0] & 3]
                                break
                            if code == _OPT_END:
                                break
                            opos += 4 + ((ol + 3) & ~3)
                    frame += 1
                    # (only while frames are read in file order: time_ordered() reorders them
                    # once a second interface is declared, and the sink would not see that order)
                    if sink is not None and self._one_interface and sink.consume(buf, pos + 28, cap, olen, lt, last_ts, frame, pkttype):
                        if last_ts > self.passed_newest:
                            self.passed_newest = last_ts
                        pos = end
                        continue
                    yield RawFrame(
                        frame,
                        last_ts,
                        lt,
                        buf[pos + 28 : pos + 28 + cap],
                        olen,
                        pkttype,
                    )

                elif btype == _SPB:
                    if blen < 16:
                        self.frames = frame
                        self._stop(
                            self._base + pos,
                            f"simple packet block too short ({blen} bytes)",
                        )
                        return
                    if not ifaces:
                        self.frames = frame
                        self._stop(self._base + pos, "packet for undeclared interface 0")
                        return
                    lt, _units, _offset, snap = ifaces[0]
                    olen = u32(buf, pos + 8)[0]
                    # captured length is implied: the block body, or less if the packet
                    # was shorter (padding) or the interface snaplen cut it
                    cap = min(olen, blen - 16)
                    if snap and cap > snap:
                        cap = snap
                    frame += 1
                    yield RawFrame(frame, last_ts, lt, buf[pos + 12 : pos + 12 + cap], olen)

                elif btype == _IDB:
                    try:
                        self._add_interface(buf, pos, blen, st)
                    except _BadBlock as exc:
                        self.frames = frame
                        self._stop(self._base + pos, str(exc))
                        return

                elif btype == _SHB:
                    if blen < 28:
                        self.frames = frame
                        self._stop(self._base + pos, f"section header too short ({blen} bytes)")
                        return
                    major = st.u16.unpack_from(buf, pos + 12)[0]
                    if major != 1:
                        self.frames = frame
                        self._stop(
                            self._base + pos,
                            f"section of unsupported pcapng version {major}",
                        )
                        return
                    # interface ids restart at 0 in every section
                    ifaces = self._ifaces = []

                elif btype == _PB:
                    if blen < 32:
                        self.frames = frame
                        self._stop(self._base + pos, f"packet block too short ({blen} bytes)")
                        return
                    ifid, _drops, hi, lo, cap, olen = st.pb.unpack_from(buf, pos + 8)
                    padded = (cap + 3) & ~3
                    if padded + 32 > blen or ifid >= len(ifaces):
                        self.frames = frame
                        self._stop(self._base + pos, "malformed packet block")
                        return
                    lt, units, offset, _snap = ifaces[ifid]
                    last_ts = _ticks_to_seconds(((hi << 32) | lo) + offset, units)
                    if not ts_min <= last_ts < ts_max:
                        odd_ts += 1
                    pkttype = -1
                    opos = pos + 28 + padded
                    oend = end - 4
                    while opos + 4 <= oend:
                        code, ol = opt(buf, opos)
                        if code == _OPT_FLAGS and ol == 4:
                            pkttype = _DIRECTION_PKTTYPE[u32(buf, opos + 4)[0] & 3]
                            break
                        if code == _OPT_END:
                            break
                        opos += 4 + ((ol + 3) & ~3)
                    frame += 1
                    yield RawFrame(
                        frame,
                        last_ts,
                        lt,
                        buf[pos + 28 : pos + 28 + cap],
                        olen,
                        pkttype,
                    )
                elif btype in _NUMBERED_NON_PACKETS:
                    # not a packet, but tshark gives it a frame number: keep in step
                    frame += 1
                # other blocks (names, statistics, secrets, local use...) are skipped
                pos = end
        finally:
            self._finish(buf, pos, frame, 0, odd_ts)


# Integers below this are exact doubles: a quotient of two of them is correctly rounded in
# floating point, as Python's int / int is
_EXACT: Final = 1 << 53


def _u32_at(buf: bytes, at: int, little: bool) -> int:
    """The unsigned 32-bit number at ``buf[at:at + 4]``: compiled, a few native operations,
    where a ``struct`` unpack makes an object of each number and of the tuple."""
    if little:
        return buf[at] | buf[at + 1] << 8 | buf[at + 2] << 16 | buf[at + 3] << 24
    return buf[at] << 24 | buf[at + 1] << 16 | buf[at + 2] << 8 | buf[at + 3]


def _ticks_to_seconds(ticks: int, units: int) -> float:
    """``ticks / units`` correctly rounded, as CPython's int / int is, even past 2**53 ticks
    (nanoseconds since 1970 are): compiled code divides native ints as doubles, which is only
    exact below 2**53, so larger ones go through Python's division."""
    if -_EXACT < ticks < _EXACT and units < _EXACT:
        return ticks / units
    return _py_truediv(ticks, units)


def _py_truediv(a: Any, b: Any) -> float:
    """Python's int / int (``Any``: compiled code leaves the division to Python)."""
    return float(a / b)


def open_capture(path: str, limit: int | None = None) -> CaptureReader:
    """Open a pcap or pcapng file, gzipped or not; ``"-"`` reads stdin.

    The header is read and checked here, so a file that is not a capture fails
    before any output: raises :class:`CaptureError` with a one-line message.
    Iterate the returned reader for frames. ``limit``: read at most this many bytes
    of the file (a file still being written looks the same to every reader given it).
    """
    if path == "-":
        stdin = sys.stdin
        f = getattr(stdin, "buffer", None) if stdin is not None else None
        if f is None:
            raise CaptureError("stdin: not available")
        isatty = getattr(f, "isatty", None)
        if isatty is not None and isatty():
            raise CaptureError("stdin: is a terminal; pipe a capture in, e.g. tcpdump -w - | synscope read -")
        reader = CaptureReader(path, "stdin", f, streaming=True, size=None, owns_file=False)
    else:
        try:
            # unbuffered: we read 1 MiB at a time, a second buffer would only copy
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise CaptureError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise CaptureError(f"{path}: is a directory") from None
        except PermissionError:
            raise CaptureError(f"{path}: permission denied") from None
        except OSError as exc:
            raise CaptureError(f"{path}: cannot open ({exc.strerror or exc})") from None
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):  # where open() itself does not refuse
            f.close()
            raise CaptureError(f"{path}: is a directory")
        regular = stat.S_ISREG(st.st_mode)
        # a FIFO or process substitution (<(tcpdump -w - ...)) behaves like stdin
        size = st.st_size if regular else None
        reader = CaptureReader(path, path, f, streaming=not regular, size=size, owns_file=True)
    reader._inp.limit = limit
    try:
        reader._start()
    except BaseException:
        reader._close_file()
        raise
    return reader
