"""Differential test: synscope's per-packet analysis flags against tshark's, on every bundled capture.

Known divergences (docs/tshark-divergences.md) are encoded here and nowhere else:
- duplicates: synscope drops a packet captured twice (loopback AF_PACKET copies,
  -i any on a forwarding host); the comparison runs with --keep-duplicates so the
  analysis itself is compared frame by frame.
- time order: synscope analyses multi-interface pcapng files in timestamp order;
  for those, tshark's reference is computed on the reordercap'd file and mapped
  back to the original frame numbers.
Any other difference fails.
"""

from __future__ import annotations

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
    mismatches = diff_frames(theirs, ours)
    assert not mismatches, f"{name}: frames where synscope and tshark disagree (frame, tshark, synscope): {mismatches[:20]}"


def test_the_comparison_can_fail() -> None:
    """The oracle is not vacuous: on a capture with retransmissions tshark reports flags we must match."""
    theirs = tshark_flags(str(PCAPS / "bulk-loss.pcap"))
    assert any("fast_retransmission" in f for f in theirs.values())
    assert any("duplicate_ack" in f for f in theirs.values())
