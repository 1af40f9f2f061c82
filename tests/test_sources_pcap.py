"""Capture-file reader: formats, compression, stdin, and how faults end a read.

Files are built byte by byte with struct so each test states exactly what is in
the capture it reads.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from synscope.read.sources import pcap as pcap_mod
from synscope.read.sources.pcap import CaptureError, open_capture

T0 = 1_700_000_000  # an epoch second in 2023


# ----- builders -----


def pcap_file(records, *, order="<", ns=False, linktype=1, snaplen=65535, modified=False):
    """A pcap file; records are (sec, frac, data) or (sec, frac, data, orig_len)."""
    if modified:
        magic = 0xA1B2CD34
    else:
        magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, data = rec[:3]
        orig = rec[3] if len(rec) > 3 else len(data)
        out.append(struct.pack(order + "IIII", sec, frac, len(data), orig))
        if modified:
            out.append(struct.pack(order + "IHBx", 2, 0x0800, 4))
        out.append(data)
    return b"".join(out)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + _pad(value)


def _opts(order: str, options) -> bytes:
    if not options:
        return b""
    return b"".join(_opt(order, c, v) for c, v in options) + struct.pack(order + "HH", 0, 0)


def block(order: str, btype: int, body: bytes) -> bytes:
    """A pcapng block: type, total length, body (padded), total length."""
    body = _pad(body)
    total = len(body) + 12
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def shb(order="<", options=()):
    bom = struct.pack(order + "I", 0x1A2B3C4D)
    body = bom + struct.pack(order + "HHq", 1, 0, -1) + _opts(order, options)
    return block(order, 0x0A0D0D0A, body)


def idb(linktype=1, snaplen=0, *, order="<", tsresol=None, tsoffset=None):
    options = []
    if tsresol is not None:
        options.append((9, bytes([tsresol])))
    if tsoffset is not None:
        options.append((14, struct.pack(order + "q", tsoffset)))
    body = struct.pack(order + "HHI", linktype, 0, snaplen) + _opts(order, options)
    return block(order, 1, body)


def epb(ifid, ticks, data, *, order="<", orig_len=None, flags=None, comment=None):
    options = []
    if comment is not None:
        options.append((1, comment))  # opt_comment before the flags: must be skipped
    if flags is not None:
        options.append((2, struct.pack(order + "I", flags)))
    orig = len(data) if orig_len is None else orig_len
    head = struct.pack(order + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), orig)
    return block(order, 6, head + _pad(data) + _opts(order, options))


def spb(data, orig_len=None, *, order="<"):
    orig = len(data) if orig_len is None else orig_len
    return block(order, 3, struct.pack(order + "I", orig) + data)


def pb(ifid, ticks, data, *, order="<", flags=None):
    options = [(2, struct.pack(order + "I", flags))] if flags is not None else []
    head = struct.pack(order + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(order, 2, head + _pad(data) + _opts(order, options))


def isb(order="<"):
    return block(order, 5, struct.pack(order + "III", 0, 0, 0))


def nrb(order="<"):
    rec = struct.pack(order + "HH", 1, 14) + bytes([10, 0, 0, 1]) + b"host.lan\0\0"
    return block(order, 4, rec + struct.pack(order + "HH", 0, 0))


def custom(order="<"):
    return block(order, 0x00000BAD, struct.pack(order + "I", 32473) + b"whatever")


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read_all(path: str):
    reader = open_capture(path)
    return reader, list(reader)


def pkt(i: int, size: int = 60) -> bytes:
    return bytes((i + k) & 0xFF for k in range(size))


# ----- pcap -----


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_microseconds_either_byte_order(tmp_path, order):
    data = pcap_file([(T0, 250_000, pkt(1)), (T0 + 1, 999_999, pkt(2), 1514)], order=order, linktype=113, snaplen=262144)
    reader, frames = read_all(write(tmp_path, "a.pcap", data))
    assert (reader.format, reader.compressed, reader.ts_resolution) == ("pcap", False, "µs")
    assert reader.linktypes == {113} and reader.snaplen == 262144
    assert [f.frame for f in frames] == [1, 2]
    assert frames[0].ts == pytest.approx(T0 + 0.25, abs=1e-6)
    assert frames[1].ts == pytest.approx(T0 + 1.999999, abs=1e-6)
    assert frames[1].data == pkt(2) and frames[1].orig_len == 1514
    assert all(f.linktype == 113 and f.pkttype == -1 for f in frames)
    assert reader.warnings == [] and reader.truncated_at is None
    assert reader.size == len(data) and reader.bytes_read == len(data)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_nanoseconds(tmp_path, order):
    data = pcap_file([(T0, 123_456_789, pkt(1)), (T0, 999_999_999, pkt(2))], order=order, ns=True)
    reader, frames = read_all(write(tmp_path, "ns.pcap", data))
    assert reader.ts_resolution == "ns"
    assert frames[0].ts == pytest.approx(T0 + 0.123456789, abs=1e-6)
    assert frames[1].ts == pytest.approx(T0 + 0.999999999, abs=1e-6)
    assert reader.warnings == []


def test_pcap_modified_kuznetzov_format(tmp_path):
    data = pcap_file([(T0, 1, pkt(1)), (T0, 2, pkt(2, 90))], modified=True)
    _reader, frames = read_all(write(tmp_path, "kuz.pcap", data))
    assert [f.data for f in frames] == [pkt(1), pkt(2, 90)]


def test_pcap_record_longer_than_snaplen_is_still_read(tmp_path):
    # tcpdump writes such files (snaplen changed mid-capture); only absurd lengths are faults
    data = pcap_file([(T0, 0, pkt(1, 3000))], snaplen=96)
    reader, frames = read_all(write(tmp_path, "big.pcap", data))
    assert len(frames[0].data) == 3000 and reader.warnings == []


def test_empty_pcap_with_only_a_header_has_no_frames(tmp_path):
    reader, frames = read_all(write(tmp_path, "hdr.pcap", pcap_file([])))
    assert frames == [] and reader.warnings == [] and reader.truncated_at is None


# ----- pcapng -----


def sample_pcapng(order="<"):
    """Two interfaces (Ethernet at µs, raw IP at ns), a 2^-20 one, flags and noise blocks."""
    return b"".join(
        [
            shb(order, options=[(4, b"synscope test")]),
            idb(1, 65535, order=order),  # no if_tsresol: microseconds
            idb(101, 0, order=order, tsresol=9),
            idb(276, 0, order=order, tsresol=0x80 | 20),
            nrb(order),
            epb(0, T0 * 10**6 + 500_000, pkt(1), order=order, flags=1),  # inbound
            epb(1, T0 * 10**9 + 123_456_789, pkt(2), order=order, flags=2, comment=b"out"),
            isb(order),
            epb(2, (T0 << 20) + (1 << 19), pkt(3), order=order, orig_len=1500),  # no flags
            epb(0, T0 * 10**6 + 600_000, pkt(4), order=order, flags=0),  # direction unknown
        ]
    )


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_direction(tmp_path, order):
    reader, frames = read_all(write(tmp_path, "multi.pcapng", sample_pcapng(order)))
    assert reader.format == "pcapng"
    assert reader.linktypes == {1, 101, 276}
    assert reader.ts_resolution == "mixed"
    assert [f.frame for f in frames] == [1, 2, 3, 4]
    assert [f.linktype for f in frames] == [1, 101, 276, 1]
    assert frames[0].ts == pytest.approx(T0 + 0.5, abs=1e-6)
    assert frames[1].ts == pytest.approx(T0 + 0.123456789, abs=1e-6)
    assert frames[2].ts == pytest.approx(T0 + 0.5, abs=1e-6)
    assert [f.pkttype for f in frames] == [0, 4, -1, -1]
    assert frames[2].orig_len == 1500 and frames[2].data == pkt(3)
    assert reader.warnings == [] and reader.truncated_at is None


def test_pcapng_header_info_is_known_before_reading(tmp_path):
    data = shb() + idb(1, 262144, tsresol=9) + epb(0, T0 * 10**9, pkt(1))
    reader = open_capture(write(tmp_path, "h.pcapng", data))
    assert (reader.linktypes, reader.ts_resolution, reader.snaplen) == ({1}, "ns", 262144)
    assert len(list(reader)) == 1


def test_pcapng_nanosecond_times_are_correctly_rounded(tmp_path):
    """Nanoseconds since 1970 are past 2**53: the time must be Python's correctly rounded
    ticks / 10**9 (the compiled reader must not divide them as doubles, which is off by one ulp
    for these: such a time would print as a different nanosecond)."""
    ticks = [1799503877288742455, 1714696061867387240, 1758820763460541090]
    assert all(t / 10**9 != float(t) / 1e9 for t in ticks)  # the cases where it matters
    data = shb() + idb(1, tsresol=9) + b"".join(epb(0, t, pkt(i + 1)) for i, t in enumerate(ticks))
    _reader, frames = read_all(write(tmp_path, "ns.pcapng", data))
    assert [f.ts for f in frames] == [t / 10**9 for t in ticks]


def test_pcapng_tsoffset_is_added(tmp_path):
    data = shb() + idb(1, tsoffset=T0) + epb(0, 2_500_000, pkt(1))
    _reader, frames = read_all(write(tmp_path, "off.pcapng", data))
    assert frames[0].ts == pytest.approx(T0 + 2.5, abs=1e-6)


def test_pcapng_simple_packet_block(tmp_path):
    data = b"".join(
        [
            shb(),
            idb(1, 64),
            epb(0, T0 * 10**6 + 7, pkt(1)),
            spb(pkt(2, 50)),  # shorter than snaplen: all of it, padding dropped
            spb(pkt(3, 64), orig_len=1500),  # cut at the interface's snaplen
        ]
    )
    _reader, frames = read_all(write(tmp_path, "spb.pcapng", data))
    assert [f.frame for f in frames] == [1, 2, 3]
    assert frames[1].data == pkt(2, 50) and frames[1].orig_len == 50
    assert frames[2].data == pkt(3, 64) and frames[2].orig_len == 1500
    # no timestamp in an SPB: it takes the previous packet's
    assert frames[1].ts == frames[2].ts == frames[0].ts


def test_pcapng_obsolete_packet_block(tmp_path):
    data = shb() + idb(1) + pb(0, T0 * 10**6 + 1, pkt(1), flags=2) + epb(0, T0 * 10**6, pkt(2))
    _reader, frames = read_all(write(tmp_path, "pb.pcapng", data))
    assert [(f.frame, f.data, f.pkttype) for f in frames] == [(1, pkt(1), 4), (2, pkt(2), -1)]


def test_pcapng_frames_count_across_sections_of_either_byte_order(tmp_path):
    data = b"".join(
        [
            shb("<"),
            idb(1, order="<"),
            epb(0, T0 * 10**6, pkt(1)),
            epb(0, T0 * 10**6, pkt(2)),
            # the new section is big-endian and declares its own interface 0
            shb(">"),
            idb(101, order=">", tsresol=9),
            epb(0, (T0 + 5) * 10**9, pkt(3), order=">"),
        ]
    )
    reader, frames = read_all(write(tmp_path, "sections.pcapng", data))
    assert [f.frame for f in frames] == [1, 2, 3]
    assert frames[2].linktype == 101
    assert frames[2].ts == pytest.approx(T0 + 5, abs=1e-6)
    assert reader.linktypes == {1, 101}


def test_pcapng_non_packet_blocks_tshark_numbers_keep_frame_numbers_in_step(tmp_path):
    # tshark gives custom blocks and systemd journal entries a frame.number of their own
    journal = block("<", 9, b"MESSAGE=hi\n")
    data = b"".join([shb(), idb(1), epb(0, 0, pkt(1)), custom(), isb(), journal, epb(0, 0, pkt(2))])
    reader, frames = read_all(write(tmp_path, "cb.pcapng", data))
    assert [f.frame for f in frames] == [1, 4]
    assert reader.frames == 4


def test_pcapng_block_lengths_that_disagree_stop_reading(tmp_path):
    good = shb() + idb(1) + epb(0, 0, pkt(1))
    bad = bytearray(epb(0, 0, pkt(2)))
    bad[-4:] = struct.pack("<I", 999)
    reader, frames = read_all(write(tmp_path, "len.pcapng", good + bytes(bad) + epb(0, 0, pkt(3))))
    assert len(frames) == 1
    assert reader.truncated_at == len(good)
    assert "block lengths disagree" in reader.warnings[0]


def test_pcapng_packet_for_undeclared_interface_stops_with_a_warning(tmp_path):
    data = shb() + idb(1) + epb(0, 0, pkt(1)) + epb(3, 0, pkt(2))
    reader, frames = read_all(write(tmp_path, "noif.pcapng", data))
    assert len(frames) == 1
    assert "interface 3" in reader.warnings[0]
    assert reader.truncated_at == len(data) - len(epb(3, 0, pkt(2)))


def test_pcapng_power_of_two_resolution_is_described(tmp_path):
    data = shb() + idb(1, tsresol=0x80 | 20)
    with open_capture(write(tmp_path, "p2.pcapng", data)) as reader:
        assert reader.ts_resolution == "2^-20 s"


# ----- gzip -----

CASES = {
    "pcap-le": lambda: pcap_file([(T0, i, pkt(i)) for i in range(50)]),
    "pcap-be-ns": lambda: pcap_file([(T0, i, pkt(i)) for i in range(50)], order=">", ns=True),
    "pcapng": sample_pcapng,
    "pcapng-be-spb": lambda: shb(">") + idb(1, order=">") + spb(pkt(1), order=">"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gzip_reads_the_same_frames(tmp_path, case):
    raw = CASES[case]()
    plain, plain_frames = read_all(write(tmp_path, "x.cap", raw))
    packed = gzip.compress(raw)
    # the extension says nothing: the magic decides
    reader, frames = read_all(write(tmp_path, "x.cap", packed))
    assert reader.compressed and not plain.compressed
    assert reader.format == plain.format
    assert frames == plain_frames
    assert reader.warnings == []
    assert reader.size == len(packed) and reader.bytes_read == len(packed)


def test_gzip_with_several_members_reads_them_all(tmp_path):
    raw = pcap_file([(T0, i, pkt(i)) for i in range(10)])
    packed = gzip.compress(raw[:100]) + gzip.compress(raw[100:]) + b"\0" * 64
    reader, frames = read_all(write(tmp_path, "multi.pcap.gz", packed))
    assert len(frames) == 10 and reader.warnings == []


def test_gzip_cut_off_keeps_frames_before_the_cut(tmp_path):
    raw = pcap_file([(T0, i, os.urandom(200)) for i in range(2000)])
    _plain, all_frames = read_all(write(tmp_path, "full.pcap", raw))
    packed = gzip.compress(raw)
    reader, frames = read_all(write(tmp_path, "cut.pcap.gz", packed[: len(packed) // 2]))
    assert 0 < len(frames) < 2000
    assert frames == all_frames[: len(frames)]
    assert reader.truncated_at is not None
    assert len(reader.warnings) == 1
    assert "gzip data ends early" in reader.warnings[0]
    assert f"after frame {len(frames)}" in reader.warnings[0]


def test_corrupt_gzip_stops_cleanly_after_salvaging_what_came_before(tmp_path):
    raw = pcap_file([(T0, i, pkt(i, 200)) for i in range(20000)])
    _plain, all_frames = read_all(write(tmp_path, "full.pcap", raw))
    packed = bytearray(gzip.compress(raw))
    middle = len(packed) // 2
    packed[middle : middle + 64] = b"\xff" * 64
    reader, frames = read_all(write(tmp_path, "bad.pcap.gz", bytes(packed)))
    assert 1000 < len(frames) < 20000
    # until shortly before the damage the frames are the real ones
    assert frames[:1000] == all_frames[:1000]
    assert reader.truncated_at is not None
    assert len(reader.warnings) == 1 and "corrupt gzip data" in reader.warnings[0]


def test_gzip_checksum_error_after_intact_data_is_reported(tmp_path):
    raw = pcap_file([(T0, i, pkt(i)) for i in range(10)])
    packed = bytearray(gzip.compress(raw))
    packed[-8] ^= 0xFF  # the CRC in the trailer
    reader, frames = read_all(write(tmp_path, "crc.pcap.gz", bytes(packed)))
    assert len(frames) == 10  # nothing before the trailer is lost
    assert "corrupt gzip data" in reader.warnings[0]


def test_trailing_garbage_after_gzip_is_a_warning_not_a_loss(tmp_path):
    raw = pcap_file([(T0, i, pkt(i)) for i in range(5)])
    reader, frames = read_all(write(tmp_path, "g.pcap.gz", gzip.compress(raw) + b"junk"))
    assert len(frames) == 5
    assert reader.truncated_at is None
    assert reader.warnings == [f"{reader.name}: trailing garbage after the gzip data ignored"]


# ----- stdin -----


class Dribble(io.RawIOBase):
    """A pipe-like stream: a few bytes per read, and seeking is impossible."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("seek on a pipe")

    def tell(self):
        raise io.UnsupportedOperation("tell on a pipe")

    def readinto(self, b) -> int:
        chunk = self._data[self._pos : self._pos + min(self._step, len(b))]
        b[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


class FakeStdin:
    def __init__(self, buffer) -> None:
        self.buffer = buffer


@pytest.mark.parametrize("compress", [False, True])
def test_stdin_from_a_real_pipe(monkeypatch, compress):
    raw = sample_pcapng()
    payload = gzip.compress(raw) if compress else raw
    rfd, wfd = os.pipe()

    def writer():
        with os.fdopen(wfd, "wb", buffering=0) as w:
            for i in range(0, len(payload), 37):  # arrives in small pieces, like tcpdump's
                w.write(payload[i : i + 37])

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(rfd, "rb") as r:
        monkeypatch.setattr(sys, "stdin", FakeStdin(r))
        reader = open_capture("-")
        frames = list(reader)
    thread.join()
    assert reader.name == "stdin" and reader.size is None
    assert reader.compressed is compress
    assert [f.frame for f in frames] == [1, 2, 3, 4]
    assert reader.warnings == []


@pytest.mark.parametrize("compress", [False, True])
def test_stdin_that_cannot_seek_and_arrives_bytes_at_a_time(monkeypatch, compress):
    raw = pcap_file([(T0, i, pkt(i)) for i in range(20)])
    payload = gzip.compress(raw) if compress else raw
    monkeypatch.setattr(sys, "stdin", FakeStdin(io.BufferedReader(Dribble(payload, 3))))
    reader = open_capture("-")
    frames = list(reader)
    assert len(frames) == 20 and frames[19].data == pkt(19)
    assert reader.bytes_read == len(payload)


def test_stdin_not_a_capture(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(io.BufferedReader(Dribble(b"Hello\n", 1))))
    with pytest.raises(CaptureError, match=r"^stdin: not a pcap or pcapng file"):
        open_capture("-")


# ----- files that are not captures -----


def test_text_file_is_not_a_capture(tmp_path):
    path = write(tmp_path, "x.txt", b"Hello, world\n")
    with pytest.raises(CaptureError) as err:
        open_capture(path)
    assert str(err.value) == f"{path}: not a pcap or pcapng file (starts with 48 65 6c 6c)"


def test_gzip_of_a_text_file_is_not_a_capture(tmp_path):
    path = write(tmp_path, "x.pcap.gz", gzip.compress(b"Hello, world\n"))
    with pytest.raises(CaptureError, match="gzip data is not a pcap or pcapng file"):
        open_capture(path)


def test_other_compression_is_named(tmp_path):
    path = write(tmp_path, "x.pcap.zst", b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    with pytest.raises(CaptureError, match="zstd-compressed; decompress it first"):
        open_capture(path)


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.pcap", b"")
    with pytest.raises(CaptureError, match=r"empty\.pcap: empty file$"):
        open_capture(path)


def test_empty_gzip(tmp_path):
    path = write(tmp_path, "empty.pcap.gz", gzip.compress(b""))
    with pytest.raises(CaptureError, match="empty file"):
        open_capture(path)


def test_header_cut_short(tmp_path):
    path = write(tmp_path, "short.pcap", pcap_file([])[:10])
    with pytest.raises(CaptureError, match=r"header cut short \(10 of 24 bytes\)"):
        open_capture(path)


def test_directory(tmp_path):
    with pytest.raises(CaptureError, match=r": is a directory$"):
        open_capture(str(tmp_path))


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError) as err:
        open_capture(path)
    assert str(err.value) == f"{path}: no such file"


def test_permission_denied(tmp_path):
    # root reads anything: run synscope as root without the capabilities that override file modes
    secret = tmp_path / "secret.pcap"
    secret.write_bytes(b"")
    secret.chmod(0)
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m", "synscope", "read", str(secret)]
    else:
        cmd = [sys.executable, "-m", "synscope", "read", str(secret)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 6
    assert proc.stderr == f"synscope: {secret}: permission denied\n"


# ----- faults in the middle of a file -----


def test_truncated_mid_record_keeps_earlier_frames(tmp_path):
    records = [(T0, i, pkt(i, 100)) for i in range(5)]
    full = pcap_file(records)
    third = 24 + 2 * (16 + 100)  # where record 3 starts
    path = write(tmp_path, "capture.pcap", full[: third + 16 + 40])  # cut in its data
    reader, frames = read_all(path)
    assert [f.frame for f in frames] == [1, 2]
    assert frames[1].data == pkt(1, 100)
    assert reader.truncated_at == third
    assert reader.warnings == [f"{path}: file ends mid-record at byte {third} (after frame 2); the rest is lost"]


def test_limit_reads_a_growing_file_as_it_was(tmp_path):
    """Workers of a split run read a file still being written only as far as it was when the
    parent opened it, so they all see the same frames."""
    records = [(T0, i, pkt(i, 100)) for i in range(5)]
    path = write(tmp_path, "growing.pcap", pcap_file(records[:3]))
    size = os.path.getsize(path)
    with open(path, "ab") as f:  # tcpdump goes on writing
        f.write(pcap_file(records[3:])[24:])
    reader = open_capture(path, limit=size)
    assert [f.frame for f in reader] == [1, 2, 3]
    assert reader.truncated_at is None and reader.warnings == []
    # the same with a cut inside a record: both workers report the same cut
    reader = open_capture(path, limit=size + 30)
    assert [f.frame for f in reader] == [1, 2, 3]
    assert reader.truncated_at == size


def test_truncated_inside_a_record_header(tmp_path):
    full = pcap_file([(T0, i, pkt(i, 100)) for i in range(3)])
    reader, frames = read_all(write(tmp_path, "c.pcap", full[: 24 + 116 + 5]))
    assert len(frames) == 1
    assert reader.truncated_at == 24 + 116
    assert "mid-record at byte 140 (after frame 1)" in reader.warnings[0]


def test_truncated_pcapng(tmp_path):
    head = shb() + idb(1)
    first = epb(0, 0, pkt(1))
    data = head + first + epb(0, 0, pkt(2))
    reader, frames = read_all(write(tmp_path, "c.pcapng", data[:-10]))
    assert len(frames) == 1
    assert reader.truncated_at == len(head) + len(first)


def test_absurd_record_length_stops_cleanly(tmp_path):
    good = pcap_file([(T0, 0, pkt(0))])
    bad = struct.pack("<IIII", T0, 0, 0x7FFFFFFF, 60) + pkt(1)
    reader, frames = read_all(write(tmp_path, "bad.pcap", good + bad))
    assert len(frames) == 1
    assert reader.truncated_at == len(good)
    assert "impossible record length 2147483647" in reader.warnings[0]


@pytest.mark.parametrize("length", [0, 8, 13, 0x7FFFFFF0])
def test_absurd_pcapng_block_length_stops_cleanly(tmp_path, length):
    good = shb() + idb(1) + epb(0, 0, pkt(0))
    bad = struct.pack("<II", 6, length) + b"\0" * 40
    reader, frames = read_all(write(tmp_path, "bad.pcapng", good + bad))
    assert len(frames) == 1
    assert reader.truncated_at == len(good)
    assert f"impossible block length {length}" in reader.warnings[0]


def test_invalid_microsecond_field_is_clamped_with_one_warning(tmp_path):
    records = [(T0, 1_500_000, pkt(0)), (T0, 10, pkt(1)), (T0 + 1, 4_000_000_000, pkt(2))]
    reader, frames = read_all(write(tmp_path, "us.pcap", pcap_file(records)))
    assert len(frames) == 3  # reading goes on
    assert T0 + 0.99 < frames[0].ts < T0 + 1
    assert frames[1].ts == pytest.approx(T0 + 0.00001, abs=1e-6)
    assert reader.warnings == [f"{reader.name}: 2 frames with invalid sub-second timestamp fields (clamped to just under the next second)"]
    assert reader.truncated_at is None


# ----- buffering -----


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_records_spanning_read_boundaries(tmp_path, monkeypatch, chunk, case):
    """Every byte position can be a chunk boundary: tiny reads must not change the frames."""
    raw = CASES[case]()
    path = write(tmp_path, "x.cap", raw)
    expected = list(open_capture(path))
    monkeypatch.setattr(pcap_mod, "CHUNK", chunk)
    assert list(open_capture(path)) == expected
    assert list(open_capture(write(tmp_path, "x.cap.gz", gzip.compress(raw)))) == expected


def test_record_larger_than_a_chunk(tmp_path):
    big = os.urandom(3 * pcap_mod.CHUNK + 17)
    reader, frames = read_all(write(tmp_path, "jumbo.pcap", pcap_file([(T0, 0, big), (T0, 1, b"x")])))
    assert frames[0].data == big and frames[1].data == b"x"


def test_stopping_early_closes_the_file(tmp_path):
    reader = open_capture(write(tmp_path, "a.pcap", pcap_file([(T0, i, pkt(i)) for i in range(9)])))
    for frame in reader:
        if frame.frame == 3:
            break
    reader.close()
    assert reader._file.closed
    assert reader.frames == 3


def test_pcapng_with_a_bad_byte_order_magic_is_not_a_capture(tmp_path):
    data = bytearray(shb() + idb(1))
    data[8:12] = b"\x01\x02\x03\x04"
    with pytest.raises(CaptureError, match=r"not a pcapng file \(bad byte-order magic 01 02 03 04\)"):
        open_capture(write(tmp_path, "bom.pcapng", bytes(data)))


def test_frame_data_is_plain_bytes(tmp_path):
    # later stages keep frames around: a memoryview would pin the whole 1 MiB read buffer
    for raw in (pcap_file([(T0, 0, pkt(1))]), sample_pcapng()):
        _reader, frames = read_all(write(tmp_path, "x.cap", raw))
        assert all(type(f.data) is bytes for f in frames)
