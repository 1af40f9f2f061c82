"""Differential test: synscope's per-packet analysis flags against tshark's, on every bundled capture.

Known divergences (docs/tshark-divergences.md) are encoded here and nowhere else:
- duplicates: synscope drops a packet captured twice (loopback AF_PACKET copies,
  -i any on a forwarding host); the comparison runs with --keep-duplicates so the
  analysis itself is compared frame by frame.
- time order: synscope analyses multi-interface pcapng files in timestamp order;
  for those, tshark's reference is computed on the reordercap'd file and mapped
  back to the original frame numbers.
- simultaneous open: the SYN-ACK with which each side answers the other's crossing SYN repeats
  its own SYN's ISN; tshark calls it a retransmission, synscope a first transmission.
Any other difference fails.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import PCAPS
from tests.oracle import diff_frames, have_tshark, synscope_flags, time_sorted_flags, tshark_flags

CAPTURES = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))

pytestmark = pytest.mark.skipif(not have_tshark(), reason="tshark is the oracle; scripts/test installs it")


@pytest.mark.parametrize("name", CAPTURES)
def test_flags_match_tshark(name: str, tmp_path) -> None:
    path = str(PCAPS / name)
    ours = synscope_flags(path, ("--keep-duplicates",))
    assert ours, f"synscope found no TCP packets in {name}"
    theirs = time_sorted_flags(path, str(tmp_path)) if name.endswith(".pcapng") else tshark_flags(path)
    for frame in simultaneous_open_answers(path):
        theirs[frame].discard("retransmission")
    mismatches = diff_frames(theirs, ours)
    assert not mismatches, f"{name}: frames where synscope and tshark disagree (frame, tshark, synscope): {mismatches[:20]}"


def simultaneous_open_answers(path: str) -> list[int]:
    """Frames of the first SYN-ACK from each side of a stream in which both sides sent a bare SYN."""
    cmd = ["tshark", "-n", "-r", path, "-Y", "tcp.flags.syn==1", "-T", "fields", "-e", "frame.number", "-e", "tcp.stream"]
    cmd += ["-e", "tcp.srcport", "-e", "tcp.flags.ack"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    syns: dict[str, set[str]] = {}
    answers: dict[tuple[str, str], int] = {}
    for line in out.splitlines():
        frame, stream, sport, ack = line.split("\t")
        if ack in ("0", "False"):
            syns.setdefault(stream, set()).add(sport)
        elif len(syns.get(stream, ())) == 2:
            answers.setdefault((stream, sport), int(frame))
    return list(answers.values())


def test_the_comparison_can_fail() -> None:
    """The oracle is not vacuous: on a capture with retransmissions tshark reports flags we must match."""
    theirs = tshark_flags(str(PCAPS / "bulk-loss.pcap"))
    assert any("fast_retransmission" in f for f in theirs.values())
    assert any("duplicate_ack" in f for f in theirs.values())
