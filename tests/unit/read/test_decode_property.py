"""The fast decoder and the general one must read every frame the same way (hypothesis).

``Decoder.decode_plain`` reads the usual frame (Ethernet, IPv4 without options, TCP) field by
field straight from a reader's buffer: ``Pipeline.consume`` hands it frames where they lie,
at an offset in the reader's block. Everything else goes through the general path
(``_ipv4`` / ``_tcp`` via ``Decoder.decode``). Two hand-written readers of one header drift
apart silently, so here the same bytes go both ways and every field of the records (and the
decoder's counters) must be equal, or both must reject the frame.

The general path is forced by an 802.1Q tag between the MAC addresses and the ethertype:
the fast path takes no tagged frame, and the general one steps over the tag and reads the
same IPv4 packet. Frames are generated field by field (TTL, ECN/DSCP, IP ID, fragment
bits, TCP flags including NS, options, payload) and then broken: wrong header and total
lengths, other versions and protocols, cut short by a snaplen, bytes overwritten.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from synscope.core.model import IcmpError, RawFrame, Segment
from synscope.read.decode import Decoder
from synscope.read.pipeline import Pipeline
from tests.craft import tcp_options

MACS = bytes(range(12))
VLAN_TAG = struct.pack("!HH", 0x8100, 42)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
VALID_OPTIONS = [
    b"",
    tcp_options(),
    tcp_options(ts=(123456789, 987654321)),
    tcp_options(mss=None, sack=False, wscale=None, ts=(1, 2)),
    b"\x05\x0a" + bytes(8) + b"\x01\x01",  # one SACK block
    b"\x22\x02\x01\x01",  # TFO cookie request
    b"\x02\x04\x05",  # MSS cut short by the header end: malformed
]


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, int, int, bool]:
    """(captured bytes, length on the wire, packet type, whether it is the usual frame)."""
    usual = True
    options = draw(st.one_of(st.sampled_from(VALID_OPTIONS), st.binary(max_size=40)))
    options += bytes(-len(options) % 4)
    payload = draw(st.binary(max_size=120))
    doff = (20 + len(options)) // 4
    if draw(st.integers(0, 9)) == 0:  # a data offset that lies
        doff = draw(st.integers(0, 15))
        usual = False
    total = 20 + 4 * doff + len(payload) if doff * 4 >= 20 else 40
    if draw(st.integers(0, 7)) == 0:  # an IP total length that lies (0: TSO on the sender)
        total = draw(st.one_of(st.just(0), st.integers(0, 80), U16))
        usual = False
    vihl, proto, ethertype = 0x45, 6, 0x0800
    if draw(st.integers(0, 15)) == 0:
        vihl = draw(st.integers(0, 255))  # IP options, another version, a nonsense IHL
        usual = False
    if draw(st.integers(0, 15)) == 0:
        proto = draw(st.sampled_from([1, 17, 0, 255]))
        usual = False
    if draw(st.integers(0, 15)) == 0:
        ethertype = draw(st.sampled_from([0x86DD, 0x0806, 0x8100, 0x0801]))
        usual = False
    frag = draw(st.sampled_from([0, 0x4000, 0x8000, 0xC000]))  # DF and the reserved bit
    if draw(st.integers(0, 7)) == 0:
        frag = draw(U16)  # more fragments, an offset
    if frag & 0x3FFF:  # more fragments, or not the first: the general path's business
        usual = False
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        vihl,
        draw(st.integers(0, 255)),  # DSCP and ECN
        total,
        draw(U16),  # IP ID
        frag,
        draw(st.integers(0, 255)),  # TTL
        proto,
        draw(U16),  # checksum: nobody checks it
        draw(st.binary(min_size=4, max_size=4)),
        draw(st.binary(min_size=4, max_size=4)),
    )
    flags = draw(st.integers(0, 0x1FF))  # with NS, the low bit of the data offset byte
    tcp = struct.pack("!HHIIBBHHH", draw(U16), draw(U16), draw(U32), draw(U32), (doff & 0xF) << 4 | flags >> 8, flags & 0xFF, draw(U16), draw(U16), draw(U16))
    trailer = draw(st.binary(max_size=12))  # Ethernet padding after the IP packet
    frame = MACS + struct.pack("!H", ethertype) + ip + tcp + options + payload + trailer
    for _ in range(draw(st.integers(0, 3)) if draw(st.integers(0, 3)) == 0 else 0):  # bytes overwritten
        at = draw(st.integers(0, len(frame) - 1))
        frame = frame[:at] + bytes([draw(st.integers(0, 255))]) + frame[at + 1 :]
        usual = False
    caplen = len(frame)
    if draw(st.integers(0, 3)) == 0:  # a snaplen cut it short
        caplen = draw(st.integers(0, len(frame)))
        if caplen < 14 + 20 + 4 * doff:
            usual = False
    return frame[:caplen], len(frame), draw(st.sampled_from([-1, 0, 4])), usual


def tagged(data: bytes) -> bytes:
    """The same frame with an 802.1Q tag after the MAC addresses (only the general path reads it)."""
    return data[:12] + VLAN_TAG + data[12:] if len(data) > 12 else data


def decode_both(data: bytes, orig_len: int, pkttype: int) -> tuple[Decoder, Decoder, object, object]:
    fast, general = Decoder(keep_payload=True, verify_checksums=True), Decoder(keep_payload=True, verify_checksums=True)
    a = fast.decode(RawFrame(7, 1.5, 1, data, orig_len, pkttype))
    b = general.decode(RawFrame(7, 1.5, 1, tagged(data), orig_len + 4, pkttype))
    # the tagged copy's record came through a VLAN tag, and is counted as carried (tunnelled): the
    # one difference the tag makes, checked here and then set aside for the comparison
    carried = 1 if b is not None and len(data) > 12 else 0
    assert general.stats.tunnelled == carried
    if b is not None and len(data) > 12:
        assert isinstance(b, (Segment, IcmpError)) and b.encap is not None and b.encap.layers[0][0] == "vlan"
    general.stats.tunnelled = 0
    return fast, general, a, b


def fields(record: object) -> dict[str, object]:
    """Every field of a record by name, the lazily decoded options included (for a readable diff)."""
    if not isinstance(record, Segment):
        return {"record": record}
    # (compiled with mypyc, a record class has no __slots__ but lists its attributes in __mypyc_attrs__)
    names = getattr(Segment, "__slots__", None) or Segment.__mypyc_attrs__  # type: ignore[attr-defined]
    # (encap names the layers a frame came through: the general path's copy carries one VLAN tag
    # by construction, so its encap is compared on its own, below)
    out = {name: getattr(record, name) for name in names if name not in ("_options", "encap")}
    out["options"] = record.options
    return out


@settings(max_examples=1000, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_fast_and_general_decoders_agree_field_by_field(frame: tuple[bytes, int, int, bool]) -> None:
    data, orig_len, pkttype, usual = frame
    fast, general, a, b = decode_both(data, orig_len, pkttype)
    assert fields(a) == fields(b)
    assert fast.stats == general.stats
    if usual:  # the frames it exists for must take the fast path (else this test compares nothing)
        assert Decoder().decode_plain(data, 0, len(data), 7, 1.5, pkttype) is not None


def usual_frame(options: bytes = b"\x02\x04\x05\xb4", payload: bytes = b"hello", ttl: int = 57, tos: int = 0xB9) -> bytes:
    """An Ethernet + IPv4 + TCP frame of the kind the fast path exists for."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 40 + len(options) + len(payload), 0x1234, 0x4000, ttl, 6, 0, bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2]))
    doff = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 0xFFFFFFF0, 77, doff << 4 | 1, 0x12, 29200, 0, 0) + options
    return MACS + b"\x08\x00" + ip + tcp + payload


@settings(max_examples=300, derandomize=True, deadline=None)
@given(frames(), st.binary(max_size=64), st.binary(max_size=64))
@example((usual_frame(options=tcp_options(ts=(1, 2)))[:60], 100, 0, False), b"\xee" * 7, b"\xff" * 40)  # options cut by the snaplen
def test_the_fast_path_reads_a_frame_where_it_lies_in_a_reader_buffer(frame: tuple[bytes, int, int, bool], before: bytes, after: bytes) -> None:
    """Pipeline.consume passes the reader's whole block and an offset: the bytes around the frame
    (the previous and next records) must change nothing, and nothing past the captured length is read."""
    data, _, pkttype, _ = frame
    alone = Decoder(keep_payload=True).decode_plain(data, 0, len(data), 7, 1.5, pkttype)
    inside = Decoder(keep_payload=True).decode_plain(before + data + after, len(before), len(data), 7, 1.5, pkttype)
    assert fields(alone) == fields(inside)


def test_a_usual_frame_is_decoded_with_every_field() -> None:
    """One hand-checked frame, so the property above is not comparing two equal mistakes."""
    data = usual_frame() + bytes(3)  # (with Ethernet padding)
    seg = Decoder(keep_payload=True).decode_plain(data, 0, len(data), 9, 2.0, 0)
    assert seg is not None
    assert (seg.src, seg.dst, seg.sport, seg.dport) == (bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2]), 40000, 443)
    assert (seg.seq, seg.ack, seg.flags, seg.win, seg.length) == (0xFFFFFFF0, 77, 0x112, 29200, 5)
    assert (seg.ttl, seg.ip_id, seg.ecn, seg.fragment, seg.truncated) == (57, 0x1234, 1, False, False)
    assert (seg.options.mss, seg.payload, seg.pkttype, seg.frame, seg.ts) == (1460, b"hello", 0, 9, 2.0)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), max_size=6))
def test_pipeline_consume_tracks_what_feed_tracks(batch: list[tuple[bytes, int, int, bool]]) -> None:
    """A reader hands the usual frames to Pipeline.consume (fast path), the rest to feed(); a
    pipeline fed every frame the general way must end up with the same connections and counts."""
    fast, general = Pipeline(dedup=False), Pipeline(dedup=False)
    block = b"".join(data for data, _, _, _ in batch)  # one reader buffer holding every record
    at = 0
    for number, (data, orig_len, pkttype, _) in enumerate(batch, 1):
        ts = 1.0 + number / 64
        if not fast.consume(block, at, len(data), orig_len, 1, ts, number, pkttype):
            fast.feed(RawFrame(number, ts, 1, data, orig_len, pkttype))
        general.feed(RawFrame(number, ts, 1, tagged(data), orig_len + 4, pkttype))
        at += len(data)

    def seen(p: Pipeline) -> list[list[dict[str, object]]]:
        return [[fields(pkt.seg) for pkt in report.conn.packets] for report in p.finish()]

    assert seen(fast) == seen(general)
    # every record of the tagged copies came through a VLAN tag: counted as carried, set aside
    carried = general.decoder.stats
    assert carried.tunnelled == carried.tcp + carried.icmp_errors
    carried.tunnelled = 0
    assert fast.decoder.stats == general.decoder.stats
    assert fast.stats == general.stats
