"""Hostile and broken captures: cut-off files, snaplen-cut packets, nonsense timestamps, terminal escapes.

Each test states what a user must get: what was read before a fault is all
reported, a warning says what happened and where, the exit code says so, and no
byte from the wire reaches the terminal unescaped.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synscope.core.exit_codes import ExitCode
from synscope.core.model import RawFrame
from synscope.read.analysis.flags import flag_names
from synscope.read.decode import Decoder
from synscope.read.pipeline import Pipeline, run
from synscope.read.sources.pcap import open_capture
from synscope.render.safe import escape_bytes, escape_text
from tests import craft
from tests.fuzzing import HOSTILE_PAYLOADS, UNSAFE, Layout, hostile_capture, read_all
from tests.helpers import cli, pcap
from tests.test_sources_pcap import epb, idb, shb

# ------------------------------------------------------------------ helpers


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def json_objects(lines) -> list[dict]:
    """JSON Lines as objects, without the "source" (file name) field."""
    out = []
    for line in lines:
        obj = json.loads(line)
        obj.pop("source", None)
        out.append(obj)
    return out


def records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every record (pcap) or block (pcapng) of an intact capture."""
    return Layout(data).records


def complete_prefix(data: bytes, cut: int) -> bytes:
    """The capture up to the last record that ends at or before `cut` (what a reader can still use)."""
    end = 0
    for off, length in records(data):
        if off + length <= cut:
            end = off + length
    if end == 0:  # no complete record: the file header (pcap) or section header and interfaces (pcapng)
        end = 24 if data[:4] != b"\x0a\x0d\x0d\x0a" else records(data)[0][1]
    return data[:end]


# ------------------------------------------------------------------ truncated files


def cut_points(data: bytes, which: str) -> list[tuple[str, int]]:
    """Cuts mid record header and mid packet data, early, in the middle and near the end."""
    recs = records(data)
    hdr = 16 if which == "pcap" else 8
    points = []
    for k in (1, len(recs) // 2, len(recs) - 1):
        off, length = recs[k]
        points.append((f"record {k} header", off + hdr // 2))
        points.append((f"record {k} data", off + min(length - 1, hdr + 20)))
        points.append((f"record {k} last byte", off + length - 1))
    return points


@pytest.mark.parametrize("name", ["rst-midstream.pcap", "normal.pcapng", "half-close.pcap"])
def test_cut_file_reports_everything_before_the_cut(tmp_path, name: str) -> None:
    data = Path(pcap(name)).read_bytes()
    which = "pcapng" if name.endswith("pcapng") else "pcap"
    for where, cut in cut_points(data, which):
        cut_file = write(tmp_path, "cut", data[:cut])
        prefix = complete_prefix(data, cut)
        prefix_file = write(tmp_path, "prefix", prefix)
        got, want = read_all(cut_file), read_all(prefix_file)
        assert got.error is None, where
        assert json_objects(got.json_lines) == json_objects(want.json_lines), where
        assert got.truncated_at == len(prefix), where
        [warning] = [w for w in got.warnings if "mid-record" in w]
        assert f"file ends mid-record at byte {len(prefix)}" in warning, (where, warning)
        assert want.truncated_at is None and not want.warnings
        proc = cli("read", "--json", cut_file)
        assert proc.returncode == ExitCode.PARTIAL_INPUT, (where, proc.stderr)
        assert "Traceback" not in proc.stderr and f"byte {len(prefix)}" in proc.stderr
        assert json_objects(proc.stdout.splitlines()) == json_objects(want.json_lines), where


@pytest.mark.parametrize("name", ["rst-midstream.pcap", "normal.pcapng"])
def test_cut_gzip_reports_everything_decompressed_before_the_cut(tmp_path, name: str) -> None:
    raw = Path(pcap(name)).read_bytes()
    gz = gzip.compress(raw, mtime=0)
    for frac in (0.3, 0.6, 0.9, 0.995):
        cut = int(len(gz) * frac)
        available = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(gz[:cut])  # what zcat would give
        prefix = complete_prefix(raw, len(available))
        got = read_all(write(tmp_path, "cut.gz", gz[:cut]))
        want = read_all(write(tmp_path, "prefix", prefix))
        assert got.error is None
        assert json_objects(got.json_lines) == json_objects(want.json_lines), frac
        assert got.truncated_at == len(prefix)
        assert any("gzip data ends early" in w and f"byte {len(prefix)} of the decompressed data" in w for w in got.warnings), got.warnings
        proc = cli("read", "--json", str(tmp_path / "cut.gz"))
        assert proc.returncode == ExitCode.PARTIAL_INPUT and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("name", "cut"), [("normal.pcap", 10), ("normal.pcap", 23), ("normal.pcapng", 20), ("normal.pcap.gz", 15)])
def test_cut_inside_the_file_header_is_bad_input(tmp_path, name: str, cut: int) -> None:
    """Nothing can be read before the cut: one-line error and BAD_INPUT, not PARTIAL_INPUT."""
    data = Path(pcap(name)).read_bytes()
    proc = cli("read", write(tmp_path, "cut", data[:cut]))
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and ("cut short" in lines[0] or "ends early" in lines[0] or "empty" in lines[0]), lines


def test_cut_at_a_record_boundary_is_a_whole_file(tmp_path) -> None:
    data = Path(pcap("rst-midstream.pcap")).read_bytes()
    off, _ = records(data)[10]
    proc = cli("read", "--json", write(tmp_path, "short.pcap", data[:off]))
    assert proc.returncode == ExitCode.OK and "warning" not in proc.stderr


# ------------------------------------------------------------------ snaplen-truncated packets


def with_snaplen(data: bytes, snaplen: int) -> bytes:
    """The capture as `tcpdump -s SNAPLEN` would have written it: records cut, orig_len kept."""
    lay = Layout(data)
    assert lay.kind == "pcap"
    o = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out = bytearray(data[:16] + struct.pack(o + "I", snaplen) + data[20:24])
    for off, _length in lay.records:
        sec, frac, cap, orig = struct.unpack_from(o + "IIII", data, off)
        keep = min(cap, snaplen)
        out += struct.pack(o + "IIII", sec, frac, keep, orig) + data[off + 16 : off + 16 + keep]
    return bytes(out)


def per_frame(path: str) -> tuple[dict[int, tuple], list]:
    """frame -> (connection id, analysis flags, outcome, TCP payload length, truncated), and the reports."""
    reader = open_capture(path)
    reports = list(run([(path, reader)], Pipeline()))
    out = {}
    for r in reports:
        for p in r.conn.packets:
            out[p.seg.frame] = (r.conn.id, tuple(flag_names(p.analysis)), r.verdict.outcome, p.seg.length, p.seg.truncated)
    return out, reports


# IPv4 over Ethernet: 54 bytes end with the bare TCP header, 60 with 6 bytes of options.
# IPv6 needs 20 more; Linux cooked v2 (any.pcap) 6 more than Ethernet.
SNAPLEN_CASES = [
    (n, s)
    for n in (
        "normal.pcap",
        "bulk-loss.pcap",
        "reorder.pcap",
        "zero-window.pcap",
        "half-close.pcap",
        "rst-midstream.pcap",
        "wraparound.pcap",
        "synack-lost.pcap",
        "keepalive.pcap",
        "refused-retry.pcap",
        "vlan.pcap",
        "port-reuse.pcap",
    )
    for s in (54, 60)
] + [("ipv6.pcap", 74), ("ipv6.pcap", 80), ("any.pcap", 60), ("qinq.pcap", 62), ("nanosecond.pcap", 54)]


@pytest.mark.parametrize(("name", "snaplen"), SNAPLEN_CASES)
def test_snaplen_cut_packets_are_decoded_flagged_and_never_loss(tmp_path, name: str, snaplen: int) -> None:
    full, full_reports = per_frame(pcap(name))
    cut_path = write(tmp_path, "snap.pcap", with_snaplen(Path(pcap(name)).read_bytes(), snaplen))
    cut, cut_reports = per_frame(cut_path)
    assert set(cut) == set(full), "a packet was lost to the snaplen"
    scale_unknown = {r.conn.id for r in cut_reports if r.conn.client.win_scale == -1}
    for frame, (conn, flags, outcome, length, _trunc) in full.items():
        c_conn, c_flags, c_outcome, c_length, c_trunc = cut[frame]
        if c_conn in scale_unknown:
            # the snaplen cut the SYN's window-scale option: "window full" cannot be judged (tshark neither)
            flags = tuple(f for f in flags if f != "window_full")
        assert (c_conn, c_flags, c_outcome) == (conn, flags, outcome), f"frame {frame}"
        assert c_length == length, f"frame {frame}: payload length must come from the IP header"
    assert any(v[4] for v in cut.values()), "nothing flagged as truncated"
    assert [r.verdict.history for r in cut_reports] == [r.verdict.history for r in full_reports]
    for a, b in zip(cut_reports, full_reports, strict=True):
        for fa, fb in zip(a.analysis.facts, b.analysis.facts, strict=True):
            assert (fa.retransmitted_segments, fa.lost_segments, fa.payload_bytes) == (fb.retransmitted_segments, fb.lost_segments, fb.payload_bytes)
    proc = cli("read", "--all", cut_path)
    assert proc.returncode == 0
    assert "Headers only:" in proc.stdout and "cut short by the capture's snaplen" in proc.stdout
    assert "malformed" not in proc.stderr


def test_snaplen_cut_icmp_error_counts_as_truncated_not_malformed(tmp_path) -> None:
    """An ICMP error whose quoted header the snaplen cut off cannot be tied to a connection,
    but it is a capture limit, not a broken packet."""
    path = write(tmp_path, "icmp54.pcap", with_snaplen(Path(pcap("icmp-prohibited.pcap")).read_bytes(), 54))
    pipeline = Pipeline()
    reader = open_capture(path)
    list(run([(path, reader)], pipeline))
    assert pipeline.decoder.stats.malformed == 0
    assert pipeline.decoder.stats.truncated == 2  # the SYN (options cut) and the ICMP error
    proc = cli("read", path)
    assert "malformed" not in proc.stderr


@pytest.mark.parametrize(
    ("linktype", "data"),
    [
        (1, bytes(12)),  # Ethernet without its type
        (1, craft.ether(b"\x45" + bytes(10))),  # IPv4 header cut
        (1, craft.ether(craft.ipv6_tcp("2001:db8::1", "2001:db8::2", 1, 2, 3, 4, 2))[:40]),
        (113, bytes(10)),
        (276, bytes(10)),
        (0, b"\x02\0"),
    ],
)
def test_frames_cut_below_their_headers(linktype: int, data: bytes) -> None:
    d = Decoder()
    assert d.decode(RawFrame(1, 0.0, linktype, data, len(data) + 100)) is None
    assert (d.stats.truncated, d.stats.malformed) == (1, 0)
    d = Decoder()  # the same bytes with nothing cut off are a broken frame
    assert d.decode(RawFrame(1, 0.0, linktype, data, len(data))) is None
    assert (d.stats.truncated, d.stats.malformed) == (0, 1)


def test_window_scale_unknown_when_the_snaplen_cut_the_syn_options(tmp_path) -> None:
    path = write(tmp_path, "n54.pcap", with_snaplen(Path(pcap("normal.pcap")).read_bytes(), 54))
    _, [report] = per_frame(path)
    assert report.conn.client.win_scale != -2 and report.conn.server.win_scale != -2


# ------------------------------------------------------------------ nonsense timestamps

T = 1_700_000_000


def conversation_at(stamps: list[tuple[int, int]], nanosecond: bool = False) -> bytes:
    """normal-shaped connection (10 frames) with the given raw (sec, frac) record stamps."""
    frames = [f for _, f in craft.conversation("198.18.1.2", "198.18.2.2", 41000, 80, 0.0)]
    assert len(stamps) == len(frames)
    return craft.pcap_header(nanosecond=nanosecond) + b"".join(craft.pcap_record(s, f, fr) for (s, f), fr in zip(stamps, frames, strict=True))


TIMESTAMP_CASES = {
    "backwards": (
        [(T, 0), (T - 5, 0), (T - 5, 100), (T + 1, 0), (T - 100, 0), (T + 2, 0), (T + 2, 10), (T + 3, 0), (T + 3, 5), (T + 3, 9)],
        "stamped earlier than a frame before them",
    ),
    "usec-overflow": (
        [(T, 0), (T, 1_500_000), (T, 4_294_967_295), (T + 1, 999_999), (T + 1, 1_000_000), (T + 2, 0), (T + 2, 1), (T + 3, 0), (T + 3, 5), (T + 3, 9)],
        "invalid sub-second timestamp fields",
    ),
    "year-2106": ([(0xFFFFFFFF, i * 100) for i in range(10)], "after 2100"),
    "zero": ([(0, 0)] * 10, "before 1980"),
    "year-2106-then-zero": ([(0xFFFFFFFF, 0), (0xFFFFFFFF, 100), (0, 0), (0, 10), (0xFFFFFFFF, 300)] + [(T, i) for i in range(5)], "before 1980"),
}


@pytest.mark.parametrize("case", list(TIMESTAMP_CASES))
def test_nonsense_timestamps_are_reported_and_durations_stay_sane(tmp_path, case: str) -> None:
    stamps, warning = TIMESTAMP_CASES[case]
    path = write(tmp_path, f"{case}.pcap", conversation_at(stamps))
    proc = cli("read", "--json", path)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "Traceback" not in proc.stderr
    assert warning in proc.stderr, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert objs
    for o in objs:
        assert o["end"] >= o["start"], "negative connection duration"
        for p in o["packets"]:
            assert p["rto"] is None or p["rto"] >= 0 if "rto" in p else True
    text = cli("read", "--all", "--stats", path)
    assert text.returncode == ExitCode.OK and not UNSAFE.search(text.stdout)


def test_nanosecond_field_overflow_is_clamped(tmp_path) -> None:
    path = write(tmp_path, "ns.pcap", conversation_at([(T, 1_000_000_000 + i) for i in range(10)], nanosecond=True))
    res = read_all(path)
    assert any("invalid sub-second" in w for w in res.warnings)
    assert T < json.loads(res.json_lines[0])["end"] <= T + 1  # clamped to T + 0.999999999


def test_pcapng_absurd_offsets_and_resolutions(tmp_path) -> None:
    frames = [f for _, f in craft.conversation("198.18.1.2", "198.18.2.2", 41000, 80, 0.0)]
    data = (
        shb()
        + idb(1, tsoffset=-(1 << 62))
        + idb(1, tsresol=0x80 | 64)
        + b"".join(epb(i % 2, (1 << 64) - 1 - i if i % 2 else i, f) for i, f in enumerate(frames))
    )
    res = read_all(write(tmp_path, "odd.pcapng", data))
    assert res.error is None
    assert any("before 1980 or after 2100" in w for w in res.warnings), res.warnings
    for line in res.json_lines:
        o = json.loads(line)
        assert o["end"] >= o["start"]


def test_rtts_never_negative_when_time_goes_backwards(tmp_path) -> None:
    path = write(tmp_path, "back.pcap", conversation_at(TIMESTAMP_CASES["backwards"][0]))
    [obj] = [json.loads(line) for line in cli("read", "--json", path).stdout.splitlines()]
    for key in ("handshake_rtt", "handshake_rtt_server_leg", "handshake_rtt_client_leg"):
        assert obj[key] is None or obj[key] >= 0, (key, obj[key])
    for d in ("c2s", "s2c"):
        assert obj[d]["rtt"] is None or obj[d]["rtt"]["min"] >= 0, obj[d]["rtt"]


# ------------------------------------------------------------------ terminal safety

# What must never reach a terminal from the wire: C0 controls but \n, DEL, C1 controls,
# bidi overrides / isolates / marks, line separators, lone surrogates.
TERMINAL_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("hostile") / "hostile-payloads.pcap"
    path.write_bytes(hostile_capture())
    return str(path)


@pytest.mark.parametrize("args", [("--payload", "--all"), ("--payload", "--all", "--stats", "--absolute"), ("--payload", "--conn", "1")])
def test_no_control_character_from_the_wire_reaches_stdout(hostile: str, args: tuple[str, ...]) -> None:
    proc = cli("read", *args, hostile)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert not TERMINAL_UNSAFE.search(proc.stdout), TERMINAL_UNSAFE.search(proc.stdout)
    assert not TERMINAL_UNSAFE.search(proc.stderr)
    # the payloads are there, visibly escaped
    assert r'"\x1b[31mRED\x1b[0m \x1b]0;pwned title\x07' in proc.stdout
    if "--conn" not in args:
        assert r"line1\rOVERWRITE\x00nul\x08\x08bs\x7f del\xc2\x9b31m" in proc.stdout or r"\x9b31m" in proc.stdout
        assert r"\xe2\x80\xae" in proc.stdout  # U+202E RIGHT-TO-LEFT OVERRIDE, as bytes


def test_json_stays_valid_whatever_the_payload(hostile: str) -> None:
    proc = cli("read", "--json", "--payload", hostile)
    assert proc.returncode == ExitCode.OK
    lines = proc.stdout.splitlines()
    assert len(lines) == len(HOSTILE_PAYLOADS) + 1
    for line in lines:
        assert line.isascii()
        json.loads(line)


def test_escape_bytes_output_is_printable_ascii() -> None:
    everything = bytes(range(256))
    out = escape_bytes(everything, limit=256)
    assert out.isascii() and out.isprintable()
    assert escape_bytes(b"a\\x1b") == "a\\\\x1b"  # a literal backslash cannot fake an escape


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("tab\there", "tab\\x09here"),
        ("\x1b[2J", "\\x1b[2J"),
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
        ("\u2066isolate\u2069", "\\u2066isolate\\u2069"),
        ("mark\u200e\u200f\u061c", "mark\\u200e\\u200f\\u061c"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("surrogate\udc9b", "surrogate\\udc9b"),
        ("c1\x9b31m", "c1\\x9b31m"),
        ("line\nbreak", "line\nbreak"),
        ("plain ünïcödé 名前", "plain ünïcödé 名前"),
    ],
)
def test_escape_text(text: str, escaped: str) -> None:
    assert escape_text(text) == escaped


@settings(max_examples=500, derandomize=True)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())) | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_escape_text_is_always_safe_and_encodable(text: str) -> None:
    out = escape_text(text)
    assert not TERMINAL_UNSAFE.search(out)
    out.encode("utf-8")  # strict: no lone surrogate left


# ------------------------------------------------------------------ inputs crafted to be expensive (reproducers, not fixed here)


def _retransmission_storm(in_flight: int, retransmissions: int) -> bytes:
    """One connection: `in_flight` unacknowledged data segments, then each of them sent again, over and over."""
    c, s = "198.18.1.2", "198.18.2.2"
    frames = [
        craft.ipv4_tcp(c, s, 40000, 80, 0, 0, craft.SYN),
        craft.ipv4_tcp(s, c, 80, 40000, 0, 1, craft.SYN | craft.ACK),
        craft.ipv4_tcp(c, s, 40000, 80, 1, 1, craft.ACK),
    ]
    frames += [craft.ipv4_tcp(c, s, 40000, 80, 1 + 10 * i, 1, craft.ACK | craft.PSH, payload=b"x" * 10) for i in range(in_flight)]
    frames += [frames[3 + i % in_flight] for i in range(retransmissions)]
    t = T
    out = [craft.pcap_header()]
    for i, f in enumerate(frames):
        out.append(craft.pcap_record(t + i // 1000, (i % 1000) * 1000, craft.ether(f)))
    return b"".join(out)


def _cpu_seconds(path: str) -> float:
    import time

    t = time.process_time()
    reader = open_capture(path)
    list(run([(path, reader)], Pipeline()))
    return time.process_time() - t


def test_retransmission_cost_does_not_grow_with_the_flight(tmp_path) -> None:
    few = _cpu_seconds(write(tmp_path, "few.pcap", _retransmission_storm(50, 4000)))
    many = _cpu_seconds(write(tmp_path, "many.pcap", _retransmission_storm(4000, 4000)))
    assert many < 4 * few + 0.5, f"4,000 in flight: {many:.2f} s; 50 in flight: {few:.2f} s"


def test_icmp_errors_for_unknown_connections_are_not_all_kept(tmp_path) -> None:
    out = [craft.pcap_header()]
    for i in range(30_000):
        quoted = craft.ipv4_tcp("198.18.1.2", f"198.19.{i >> 8 & 255}.{i & 255}", 1024 + i % 60000, 80, i, 0, craft.SYN)[:28]
        body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
        out.append(craft.pcap_record(T + i // 1000, (i % 1000) * 1000, craft.ether(craft.ipv4("198.18.1.1", "198.18.1.2", 1, body))))
    path = write(tmp_path, "icmp-flood.pcap", b"".join(out))
    pipeline = Pipeline()
    reader = open_capture(path)
    list(run([(path, reader)], pipeline))
    assert pipeline.decoder.stats.icmp_errors == 30_000
    assert len(pipeline.tracker.orphan_icmp) <= 10_000
