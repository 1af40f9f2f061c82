"""Checksums (issue 14, item 17): TX offload on the capturing host told apart from corruption.

checksum-offload.pcap is real (scripts/make-pcaps, scripts/scenarios_checksum.py): captured on the
client's veth with TX checksum offload on, so the client's segments carry only the pseudo-header
sum. Corruption is CRAFTED here (tests/craft.py, byte by byte): a kernel does not corrupt on demand.
tshark (``-o tcp.check_checksum:TRUE``) is the reference for which frames are bad.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from synscope.core.model import CSUM_BAD, CSUM_GOOD, CSUM_PARTIAL, CSUM_UNCHECKED, RawFrame, Segment
from synscope.read.decode import Decoder
from synscope.read.jsonl import connection_object
from synscope.read.pipeline import ConnReport
from synscope.read.sources.pcap import open_capture
from tests import craft
from tests.helpers import PCAPS, analyse_paths, cli, pcap

T0 = 1_700_000_000.0
C, S = "198.18.1.2", "198.18.2.2"
TSHARK = shutil.which("tshark")


def _tshark_bad(path: str) -> set[int]:
    """Frames tshark finds a bad TCP or IPv4 header checksum in."""
    out = subprocess.run(
        [
            TSHARK or "tshark",
            "-n",
            "-r",
            path,
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-Y",
            "tcp.checksum.status==0 || ip.checksum.status==0",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {int(x) for x in out.split()}


def _segments(path: str, verify_all: bool = True) -> list[Segment]:
    decoder = Decoder(verify_checksums=verify_all)
    out = []
    for frame in open_capture(path):
        seg = decoder.decode(frame)
        if isinstance(seg, Segment):
            out.append(seg)
    return out


def _report(path: Path, verify_all: bool = False) -> ConnReport:
    [r] = analyse_paths(path, verify_checksums=verify_all)
    return r


# ------------------------------------------------------------------ the real capture


def test_offload_capture_every_client_segment_partial() -> None:
    """Truth: tshark finds every client segment unfilled and no server one bad; synscope reads the
    client's as the offload signature (pseudo-header sum), the server's as good: none is bad."""
    truth = json.loads((PCAPS / "checksum-offload.truth.json").read_text())
    segs = _segments(pcap("checksum-offload.pcap"))
    client = [s for s in segs if s.src == bytes(map(int, C.split(".")))]
    server = [s for s in segs if s.src != client[0].src]
    assert len(client) == truth["client_segments"] == truth["client_segments_unfilled_tshark"]
    assert all(s.csum == CSUM_PARTIAL for s in client)
    assert all(s.csum == CSUM_GOOD for s in server) and truth["server_segments_bad_tshark"] == 0
    r = _report(Path(pcap("checksum-offload.pcap")))
    assert r.analysis.bad_checksums == () and connection_object(r)["bad_checksums"] == []
    assert "checksum" not in r.verdict.explanation and r.verdict.ok


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_offload_capture_matches_tshark() -> None:
    """The frames tshark calls bad are exactly the ones synscope does not call good."""
    path = pcap("checksum-offload.pcap")
    ours = {s.frame for s in _segments(path) if s.csum != CSUM_GOOD}
    assert ours == _tshark_bad(path)


def test_offload_note_once_per_run() -> None:
    """One note for the run, naming offload on the capturing host; exit status 0."""
    proc = cli("read", pcap("checksum-offload.pcap"))
    assert proc.returncode == 0
    assert proc.stderr.count("checksum offload on the capturing host") == 1, proc.stderr
    assert "bad checksums" not in proc.stderr


# ------------------------------------------------------------------ crafted corruption


def _corrupt(frame: bytes, at: int = -1) -> bytes:
    """CRAFTED damage: one byte of the frame flipped (default: the last)."""
    b = bytearray(frame)
    b[at] ^= 0x5A
    return bytes(b)


def _write(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    out = craft.pcap_header()
    for t, f in frames:
        sec = int(t)
        out += craft.pcap_record(sec, round((t - sec) * 1e6), f)
    path.write_bytes(out)
    return path


def test_crafted_corrupted_syn_resent_is_corruption(tmp_path: Path) -> None:
    """CRAFTED: the first SYN is damaged on the way (one byte flipped), the server ignores it, the
    client sends it again 1 s later and the handshake goes on: corrupted in transit."""
    conv = craft.conversation(C, S, 40000, 80, T0 + 1.0)
    frames = [(T0, _corrupt(conv[0][1])), *conv]
    path = _write(tmp_path / "x.pcap", frames)
    r = _report(path)
    assert r.analysis.bad_checksums == (1,)
    assert connection_object(r)["bad_checksums"] == [1]
    v = r.verdict
    assert "SYN #1 from the client has a bad checksum and the client sent it again (#2) with no answer in between" in v.explanation
    assert "corrupted in transit, the server discarded it" in v.explanation
    assert "corrupted in transit" in v.summary
    if TSHARK:
        assert _tshark_bad(str(path)) == {1}
    proc = cli("read", str(path))
    assert proc.returncode == 0 and "1 segments have bad checksums" in proc.stderr


def test_crafted_bad_but_answered_is_the_capture(tmp_path: Path) -> None:
    """CRAFTED: the SYN's captured copy is damaged, yet the server answers it: the packet reached
    it intact, the capture's copy is what is wrong."""
    conv = craft.conversation(C, S, 40000, 80, T0)
    conv[0] = (conv[0][0], _corrupt(conv[0][1]))
    r = _report(_write(tmp_path / "x.pcap", conv))
    assert r.analysis.bad_checksums == (1,)
    assert "yet the server answered it (#2)" in r.verdict.explanation
    assert "corrupted in transit" not in r.verdict.summary


def test_data_checked_only_when_asked(tmp_path: Path) -> None:
    """CRAFTED: a damaged data segment (the request) is not checked by default (the fast path
    stays flat), and is with --verify-checksums."""
    conv = craft.conversation(C, S, 40000, 80, T0)
    conv[3] = (conv[3][0], _corrupt(conv[3][1]))  # the GET
    path = _write(tmp_path / "x.pcap", conv)
    assert _report(path).analysis.bad_checksums == ()
    assert _report(path, verify_all=True).analysis.bad_checksums == (4,)
    proc = cli("read", "--json", "--verify-checksums", str(path))
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[0])["bad_checksums"] == [4]


def test_ipv4_header_checksum(tmp_path: Path) -> None:
    """CRAFTED: a SYN whose IPv4 header checksum is wrong (the TTL byte flipped after it was summed)."""
    frame = craft.ether(craft.ipv4_tcp(C, S, 40000, 80, 1, 0, craft.SYN))
    seg = Decoder().decode(RawFrame(1, T0, 1, _corrupt(frame, 14 + 8), len(frame)))
    assert isinstance(seg, Segment) and seg.csum == CSUM_BAD
    seg = Decoder().decode(RawFrame(1, T0, 1, frame, len(frame)))
    assert isinstance(seg, Segment) and seg.csum == CSUM_GOOD


def test_cut_frame_not_checked_and_ipv6() -> None:
    """A frame cut by the snaplen cannot be summed: unchecked, never called bad. IPv6 sums too."""
    frame = craft.ether(craft.ipv4_tcp(C, S, 40000, 80, 1, 0, craft.SYN, options=craft.tcp_options()))
    seg = Decoder().decode(RawFrame(1, T0, 1, frame[:-4], len(frame)))
    assert isinstance(seg, Segment) and seg.csum == CSUM_UNCHECKED
    v6 = craft.ether(craft.ipv6_tcp("2001:db8::1", "2001:db8::2", 40000, 80, 1, 0, craft.SYN))
    seg = Decoder().decode(RawFrame(1, T0, 1, v6, len(v6)))
    assert isinstance(seg, Segment) and seg.csum == CSUM_GOOD
    seg = Decoder().decode(RawFrame(1, T0, 1, _corrupt(v6), len(v6)))
    assert isinstance(seg, Segment) and seg.csum == CSUM_BAD


def test_fin_checked_by_default(tmp_path: Path) -> None:
    """CRAFTED: a FIN's captured copy damaged: checked without --verify-checksums (a control segment)."""
    conv = craft.conversation(C, S, 40000, 80, T0)
    conv[7] = (conv[7][0], _corrupt(conv[7][1]))  # the client's FIN
    r = _report(_write(tmp_path / "x.pcap", conv))
    assert r.analysis.bad_checksums == (8,)
    assert "FIN #8 from the client has a bad checksum, yet the server answered it (#9)" in r.verdict.explanation
