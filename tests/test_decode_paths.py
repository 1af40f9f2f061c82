"""The decoder's two readings of a frame agree field by field.

The usual frame (Ethernet, IPv4 without options, TCP) is read byte by byte at named offsets
(synscope.core.headers) by the fast path; anything else goes through the general path's
``struct`` formats. The same frame behind an 802.1Q tag takes the general path, so every frame
of the bundled captures, and crafted ones with the fields a wrong offset would swap (ECN bits,
IP ID, TTL, options, a cut-short frame), is decoded both ways and compared, and the split run's
flow hash read from the raw bytes is compared with the one computed from the decoded segment.
"""

from __future__ import annotations

import struct

import pytest

from synscope.core.model import RawFrame, Segment
from synscope.read.decode import Decoder, plain_tcp_header, plain_tcp_mix
from synscope.read.pipeline import shard_mix
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import flow_key
from tests.craft import ACK, PSH, SYN, ether, ipv4, ipv4_tcp, tcp_options
from tests.helpers import PCAPS

ETHERNET = 1
VLAN = struct.pack("!HH", 0x8100, 42)
FIELDS = (
    "frame",
    "ts",
    "src",
    "dst",
    "sport",
    "dport",
    "seq",
    "ack",
    "flags",
    "win",
    "length",
    "ttl",
    "ip_id",
    "raw_options",
    "truncated",
    "fragment",
    "payload",
    "ecn",
    "pkttype",
    "csum",
)


def _bundled_frames() -> list[RawFrame]:
    frames = []
    for path in sorted(PCAPS.iterdir()):
        if path.suffix in (".pcap", ".pcapng", ".gz"):
            reader = open_capture(str(path))
            frames.extend(f for f in reader if f.linktype == ETHERNET)
    return frames


def _crafted_frames() -> list[RawFrame]:
    """Frames whose fields sit next to each other and differ: a swapped offset shows."""
    c, s = "198.18.0.2", "198.18.1.2"
    tos_ecn = ipv4_tcp(c, s, 40000, 80, 0x01020304, 0x05060708, PSH | ACK, win=0x0A0B, payload=b"x" * 30, ttl=37, ip_id=0xBEEF)
    tos_ecn = tos_ecn[:1] + bytes([0x02]) + tos_ecn[2:]  # ECT(0) in the TOS byte (checksum not checked)
    syn = ipv4_tcp(c, s, 40001, 443, 0xFFFFFFFF, 0, SYN, options=tcp_options(ts=(1, 2)), ttl=255, ip_id=1)
    tcp = ipv4_tcp(c, s, 40002, 80, 7, 8, ACK)[20:]
    plain = ipv4(c, s, 6, b"\x01\x01\x01\x00" + tcp)  # room for 4 bytes of IP options (NOPs, EOL)
    with_ip_options = bytes([0x46]) + plain[1:]  # header length 24: the 4 bytes are options
    raw = [ether(tos_ecn), ether(syn), ether(with_ip_options)]
    frames = [RawFrame(i + 1, 1e9 + i, ETHERNET, data, len(data)) for i, data in enumerate(raw)]
    cut = ether(tos_ecn)
    frames.append(RawFrame(9, 1e9 + 9, ETHERNET, cut[:60], len(cut)))  # snaplen cut inside the payload
    return frames


def _general(frame: RawFrame) -> object:
    """The frame decoded by the general path: the same bytes behind an 802.1Q tag."""
    data = frame.data[:12] + VLAN + frame.data[12:]
    tagged = RawFrame(frame.frame, frame.ts, ETHERNET, data, frame.orig_len + len(VLAN), frame.pkttype)
    return Decoder(keep_payload=True, verify_checksums=True).decode(tagged)


@pytest.mark.parametrize("source", ["bundled", "crafted"])
def test_fast_and_general_paths_read_the_same_fields(source: str) -> None:
    frames = _bundled_frames() if source == "bundled" else _crafted_frames()
    fast_decoded = 0
    for frame in frames:
        data = frame.data
        fast = Decoder(keep_payload=True, verify_checksums=True).decode_plain(data, 0, len(data), frame.frame, frame.ts, frame.pkttype)
        if fast is None:
            continue
        fast_decoded += 1
        slow = _general(frame)
        assert isinstance(slow, Segment), f"frame {frame.frame}"
        for name in FIELDS:
            assert getattr(fast, name) == getattr(slow, name), f"frame {frame.frame}: {name}"
        key = flow_key(slow.src, slow.sport, slow.dst, slow.dport)
        assert plain_tcp_header(data, 0, len(data)) >= 0 and plain_tcp_mix(data, 0) == shard_mix(key)
    # most bundled frames are the usual kind; of the crafted ones, all but the IP-options one
    assert fast_decoded >= (1000 if source == "bundled" else 3)


def test_frames_the_fast_path_passes_over_are_decoded_in_general() -> None:
    """IPv4 options (or anything else unusual) leave the fast path, and the general path takes them."""
    frame = _crafted_frames()[2]
    assert Decoder().decode_plain(frame.data, 0, len(frame.data), 1, 0.0, -1) is None
    assert plain_tcp_header(frame.data, 0, len(frame.data)) == -1
    seg = Decoder().decode(frame)
    assert isinstance(seg, Segment) and (seg.sport, seg.dport, seg.seq, seg.ack) == (40002, 80, 7, 8)
