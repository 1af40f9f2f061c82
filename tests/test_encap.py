"""TCP inside encapsulations: decoded on the general path, keyed by 4-tuple and tunnel.

Frames are built with scapy (an encoder written apart from synscope's decoder), one small
conversation per encapsulation: SYN, SYN-ACK, ACK, 10 bytes of data, RST from the server.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import pytest
from scapy.contrib.erspan import ERSPAN, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, GRE_PPTP, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import HDLC, PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from synscope.core.model import RawFrame
from synscope.read.decode import MAX_ENCAP_DEPTH, Decoder
from synscope.read.pipeline import ConnReport, Pipeline
from synscope.read.tracker import flow_key
from tests.helpers import PCAPS, cli

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
CLIENT6, SERVER6 = "2001:db8:aa::1", "2001:db8:aa::2"
OUT_A, OUT_B = "198.18.250.1", "198.18.250.2"
OUT6_A, OUT6_B = "2001:db8:fa::1", "2001:db8:fa::2"

# wrap(inner IP packet, sent by the server?) → (linktype, frame bytes)
Wrap = Callable[[Packet, bool], tuple[int, bytes]]


def _outer4(rev: bool) -> Packet:
    return IP(src=OUT_B, dst=OUT_A) if rev else IP(src=OUT_A, dst=OUT_B)


def _outer6(rev: bool) -> Packet:
    return IPv6(src=OUT6_B, dst=OUT6_A) if rev else IPv6(src=OUT6_A, dst=OUT6_B)


# Every Ether() is given both addresses: without them scapy resolves the destination by
# sending ARP requests from this host
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _ether(**kw: object) -> Packet:
    return Ether(src=MAC_A, dst=MAC_B, **kw)


def _eth(p: Packet) -> tuple[int, bytes]:
    return 1, bytes(_ether() / p)


def _inner_eth(p: Packet) -> Packet:
    return _ether(type=0x86DD if p.version == 6 else 0x0800) / p


def _nflog(packet: bytes, family: int) -> bytes:
    """LINKTYPE_NFLOG: header, a prefix TLV, the payload TLV (little-endian length and type, padded to 4)."""
    prefix = struct.pack("<HH", 4 + 6, 10) + b"synsc\x00" + b"\x00\x00"
    payload = struct.pack("<HH", 4 + len(packet), 9) + packet + b"\x00" * (-len(packet) % 4)
    return bytes([family, 0, 0, 0]) + prefix + payload


def _teredo(auth: bool = False, origin: bool = False) -> Callable[[Packet, bool], Packet]:
    """Teredo (RFC 4380): UDP 3544 on the server's end, optional indicators, then IPv6."""
    head = b""
    if auth:  # type 1, client ID 4 bytes, authentication value 2 bytes, nonce, confirmation
        head += b"\x00\x01\x04\x02" + b"idid" + b"au" + b"nonce..." + b"\x00"
    if origin:  # type 0, obfuscated origin port and IPv4 address
        head += b"\x00\x00" + struct.pack(">H", 40000 ^ 0xFFFF) + bytes(b ^ 0xFF for b in bytes([198, 18, 9, 9]))

    def wrap(p: Packet, r: bool) -> Packet:
        return _outer4(r) / (UDP(sport=3544, dport=50001) if r else UDP(sport=50001, dport=3544)) / Raw(head + bytes(p))

    return wrap


def _ayiya(p: Packet, r: bool, opcode: int = 1) -> Packet:
    """AYIYA: identity 2^4 = 16 bytes, signature 5 * 4 = 20 bytes (SHA-1), opcode, next header, epoch."""
    header = bytes([0x41, 0x52, 0x10 | opcode, 41 if p.version == 6 else 4]) + struct.pack(">I", 1_700_000_000)
    return _outer4(r) / UDP(sport=5072, dport=5072) / Raw(header + b"I" * 16 + b"S" * 20) / p


ENCAPS: dict[str, tuple[Wrap, list[dict[str, object]]]] = {
    "vxlan": (lambda p, r: _eth(_outer4(r) / UDP(sport=41000, dport=4789) / VXLAN(vni=42) / _inner_eth(p)), [{"type": "vxlan", "vni": 42}]),
    "geneve-options": (
        lambda p, r: _eth(
            _outer4(r) / UDP(sport=41000, dport=6081) / GENEVE(vni=7, proto=0x6558, optionlen=2, options=b"\x01\x02\x03\x01abcd") / _inner_eth(p)
        ),
        [{"type": "geneve", "vni": 7}],
    ),
    "geneve-ip": (lambda p, r: _eth(_outer4(r) / UDP(sport=41000, dport=6081) / GENEVE(vni=8, proto=0x0800) / p), [{"type": "geneve", "vni": 8}]),
    "gre-ip": (lambda p, r: _eth(_outer4(r) / GRE(proto=0x0800) / p), [{"type": "gre"}]),
    "gretap-key-seq": (
        lambda p, r: _eth(_outer4(r) / GRE(key_present=1, key=1001, seqnum_present=1, sequence_number=5, chksum_present=1, proto=0x6558) / _inner_eth(p)),
        [{"type": "gre", "key": 1001}],
    ),
    "erspan-i": (lambda p, r: _eth(_outer4(False) / GRE(proto=0x88BE) / _inner_eth(p)), [{"type": "erspan", "erspan_type": 1}]),
    "erspan-ii": (
        lambda p, r: _eth(_outer4(False) / GRE(seqnum_present=1, sequence_number=3, proto=0x88BE) / ERSPAN_II(session_id=77) / _inner_eth(p)),
        [{"type": "erspan", "erspan_type": 2, "session": 77}],
    ),
    "erspan-iii": (
        lambda p, r: _eth(_outer4(False) / GRE(seqnum_present=1, proto=0x22EB) / ERSPAN_III(session_id=78, o=0) / _inner_eth(p)),
        [{"type": "erspan", "erspan_type": 3, "session": 78}],
    ),
    "erspan-iii-platform": (
        lambda p, r: _eth(_outer4(False) / GRE(seqnum_present=1, proto=0x22EB) / ERSPAN_III(session_id=79, o=1) / ERSPAN_PlatformSpecific() / _inner_eth(p)),
        [{"type": "erspan", "erspan_type": 3, "session": 79}],
    ),
    "pptp": (
        lambda p, r: _eth(
            _outer4(r) / GRE_PPTP(call_id=0x77 if r else 0x66, seqnum_present=1, sequence_number=3) / HDLC() / PPP(proto=0x21 if p.version == 4 else 0x57) / p
        ),
        [{"type": "pptp"}],
    ),
    "gre-udp": (lambda p, r: _eth(_outer4(r) / UDP(sport=41000, dport=4754) / GRE(proto=0x0800) / p), [{"type": "gre-udp"}]),
    "mpls-ip": (lambda p, r: _eth(MPLS(label=100 if r else 200, s=0) / MPLS(label=16, s=1) / p), [{"type": "mpls"}]),
    "mpls-pw-cw": (
        lambda p, r: _eth(MPLS(label=300, s=1) / Raw(b"\x00\x00\x00\x00") / _inner_eth(p)),
        [{"type": "mpls", "labels": [300]}],
    ),
    "vlan-mpls": (lambda p, r: _eth(Dot1Q(vlan=5) / MPLS(label=400, s=1) / p), [{"type": "vlan", "id": 5}, {"type": "mpls", "labels": [400]}]),
    "pppoe": (lambda p, r: _eth(PPPoE(sessionid=0x1234) / PPP(proto=0x0021 if p.version == 4 else 0x0057) / p), [{"type": "pppoe", "session": 0x1234}]),
    "qinq-pppoe": (
        lambda p, r: _eth(Dot1AD(vlan=20) / Dot1Q(vlan=30, type=0x8864) / PPPoE(sessionid=9) / PPP(proto=0x0021) / p),
        [{"type": "vlan", "id": 20}, {"type": "vlan", "id": 30}, {"type": "pppoe", "session": 9}],
    ),
    "nflog": (lambda p, r: (239, _nflog(bytes(p), 10 if p.version == 6 else 2)), []),
    "ppp-link": (lambda p, r: (9, b"\xff\x03\x00\x21" + bytes(p)), []),
    "4in4": (lambda p, r: _eth(_outer4(r) / p), [{"type": "ipip", "outer": f"{OUT_A} → {OUT_B}"}]),
    "4in6": (lambda p, r: _eth(_outer6(r) / p), [{"type": "ipip", "outer": f"{OUT6_A} → {OUT6_B}"}]),
    "4in4in6": (lambda p, r: _eth(_outer6(r) / _outer4(r) / p), [{"type": "ipip"}, {"type": "ipip"}]),
    "gtp-u": (
        lambda p, r: _eth(_outer4(r) / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=0x1111 if r else 0x2222) / p),
        [{"type": "gtp-u"}],
    ),
    "gtp-u-ext": (
        lambda p, r: _eth(_outer4(r) / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=5, E=1, next_ex=0x85) / GTPPDUSessionContainer(QFI=9) / p),
        [{"type": "gtp-u", "teid": 5}],
    ),
    "teredo": (lambda p, r: _eth(_teredo()(p, r)), [{"type": "teredo", "outer": f"{OUT_A} → {OUT_B}"}]),
    "teredo-origin": (lambda p, r: _eth(_teredo(origin=r)(p, r)), [{"type": "teredo"}]),
    "teredo-auth-origin": (lambda p, r: _eth(_teredo(auth=True, origin=True)(p, r)), [{"type": "teredo"}]),
    "ayiya": (lambda p, r: _eth(_ayiya(p, r)), [{"type": "ayiya", "outer": f"{OUT_A} → {OUT_B}"}]),
    "sll-vxlan": (
        lambda p, r: (
            113,
            b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 6 + b"\x00\x00\x08\x00" + bytes(_outer4(r) / UDP(dport=4789) / VXLAN(vni=5) / _inner_eth(p)),
        ),
        [{"type": "vxlan", "vni": 5}],
    ),
    "sll2-gre": (
        lambda p, r: (
            276,
            b"\x08\x00\x00\x00" + b"\x00\x00\x00\x02" + b"\x00\x01\x00\x06" + b"\x02" * 8 + bytes(_outer4(r) / GRE(key_present=1, key=3, proto=0x0800) / p),
        ),
        [{"type": "gre", "key": 3}],
    ),
}


def conversation(wrap: Wrap, v6: bool = False, t0: float = 1_000_000.0, sport: int = 40000) -> list[RawFrame]:
    """SYN, SYN-ACK, ACK, 10 data bytes, RST from the server, each wrapped."""
    c, s = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    ip = IPv6 if v6 else IP
    packets = [
        (ip(src=c, dst=s) / TCP(sport=sport, dport=80, flags="S", seq=100), False),
        (ip(src=s, dst=c) / TCP(sport=80, dport=sport, flags="SA", seq=500, ack=101), True),
        (ip(src=c, dst=s) / TCP(sport=sport, dport=80, flags="A", seq=101, ack=501), False),
        (ip(src=c, dst=s) / TCP(sport=sport, dport=80, flags="PA", seq=101, ack=501) / Raw(b"x" * 10), False),
        (ip(src=s, dst=c) / TCP(sport=80, dport=sport, flags="RA", seq=501, ack=111), True),
    ]
    frames = []
    for i, (p, rev) in enumerate(packets):
        lt, data = wrap(p, rev)
        frames.append(RawFrame(i + 1, t0 + i * 0.01, lt, data, len(data)))
    return frames


def run(frames: list[RawFrame]) -> tuple[list[ConnReport], Pipeline]:
    pipe = Pipeline()
    for f in frames:
        pipe.feed(f)
    return pipe.finish(), pipe


def _matches(layer: dict[str, object], want: dict[str, object]) -> bool:
    return all(layer.get(k) == v for k, v in want.items())


@pytest.mark.parametrize("name", sorted(ENCAPS))
@pytest.mark.parametrize("v6", [False, True], ids=["inner4", "inner6"])
def test_inner_connection_followed(name: str, v6: bool) -> None:
    """The inner handshake, data and RST make one connection, whichever way the outer header points."""
    wrap, want = ENCAPS[name]
    if v6 and name in ("qinq-pppoe", "ppp-link"):
        pytest.skip("IPv4-only wrapper")
    if not v6 and name.startswith("teredo"):
        pytest.skip("Teredo carries IPv6 only")
    reports, pipe = run(conversation(wrap, v6))
    assert len(reports) == 1, f"{name}: {len(reports)} connections, decode stats {pipe.decoder.stats}"
    r = reports[0]
    assert [p.seg.frame for p in r.conn.packets] == [1, 2, 3, 4, 5]
    assert r.verdict.history == "ShADr"
    assert (r.conn.client.port, r.conn.server.port) == (40000, 80)
    layers = r.conn.encap.objects() if r.conn.encap is not None else []
    assert len(layers) == len(want), layers
    for layer, w in zip(layers, want, strict=True):
        assert _matches(layer, w), (layer, w)
    assert pipe.decoder.stats.tunnelled == (5 if want else 0)
    assert not pipe.decoder.stats.encap_skipped


def test_same_tuple_in_two_vnis_is_two_connections() -> None:
    vxlan = ENCAPS["vxlan"][0]

    def vni(n: int) -> Wrap:
        return lambda p, r: _eth(_outer4(r) / UDP(dport=4789) / VXLAN(vni=n) / _inner_eth(p))

    frames = conversation(vni(42)) + conversation(vni(43), t0=1_000_000.001)
    frames.sort(key=lambda f: f.ts)
    reports, _ = run(frames)
    assert sorted(r.conn.encap.objects()[0]["vni"] for r in reports if r.conn.encap) == [42, 43]
    assert all(len(r.conn.packets) == 5 and r.verdict.history == "ShADr" for r in reports)
    # and one VNI, both directions (the outer header reversed on the replies): one connection
    assert len(run(conversation(vxlan))[0]) == 1


def test_same_tuple_in_two_vlans_is_two_connections() -> None:
    def vlan(n: int) -> Wrap:
        return lambda p, r: _eth(Dot1Q(vlan=n) / p)

    frames = sorted(conversation(vlan(100)) + conversation(vlan(200), t0=1_000_000.002), key=lambda f: f.ts)
    reports, _ = run(frames)
    assert sorted(r.conn.encap.objects()[0]["id"] for r in reports if r.conn.encap) == [100, 200]


def test_per_direction_ids_do_not_split_a_connection() -> None:
    """MPLS labels and GTP-U TEIDs differ per direction: shown, not keyed."""
    for name in ("mpls-ip", "gtp-u", "pptp"):
        reports, _ = run(conversation(ENCAPS[name][0]))
        assert len(reports) == 1, name
        assert reports[0].conn.encap is not None
    mpls = run(conversation(ENCAPS["mpls-ip"][0]))[0][0].conn.encap
    assert mpls is not None and mpls.objects() == [{"type": "mpls", "labels": [200, 16]}]  # the client's first packet


def test_icmp_error_inside_tunnel_tied_to_inner_connection() -> None:
    wrap = ENCAPS["vxlan"][0]
    frames = conversation(wrap)[:1]
    quote = IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=80, flags="S", seq=100)
    lt, data = wrap(IP(src="10.0.0.254", dst=CLIENT) / ICMP(type=3, code=13) / bytes(quote)[:28], True)
    frames.append(RawFrame(2, 1_000_000.5, lt, data, len(data)))
    reports, _ = run(frames)
    assert len(reports) == 1 and [e.name for e in reports[0].conn.icmp] == ["admin-prohibited"]
    # the same error in another VNI names another tunnel's connection: not this one
    other = lambda p, r: _eth(_outer4(r) / UDP(dport=4789) / VXLAN(vni=99) / _inner_eth(p))  # noqa: E731
    lt, data = other(IP(src="10.0.0.254", dst=CLIENT) / ICMP(type=3, code=13) / bytes(quote)[:28], True)
    reports, pipe = run([*conversation(wrap)[:1], RawFrame(2, 1_000_000.5, lt, data, len(data))])
    assert reports[0].conn.icmp == [] and len(pipe.tracker.orphan_icmp) == 1


def test_every_prefix_of_every_frame_decodes_without_error() -> None:
    """Cut anywhere (snaplen) or broken, a frame is counted, never a traceback."""
    for name, (wrap, _) in ENCAPS.items():
        for f in conversation(wrap):
            for n in range(len(f.data)):
                dec = Decoder()
                dec.decode(RawFrame(1, 1.0, f.linktype, f.data[:n], len(f.data)))
                s = dec.stats
                assert s.frames == 1, name


def test_nesting_is_bounded_and_counted() -> None:
    p: Packet = IP(src=CLIENT, dst=SERVER) / TCP(sport=1, dport=2, flags="S")
    for _ in range(MAX_ENCAP_DEPTH + 4):
        p = _outer4(False) / p
    dec = Decoder()
    data = bytes(_ether() / p)
    assert dec.decode(RawFrame(1, 1.0, 1, data, len(data))) is None
    assert sum(dec.stats.encap_skipped.values()) == 1


def test_unknown_payload_in_tunnel_is_counted() -> None:
    dec = Decoder()
    data = bytes(_ether() / _outer4(False) / GRE(proto=0x1234) / Raw(b"\x00" * 40))
    assert dec.decode(RawFrame(1, 1.0, 1, data, len(data))) is None
    assert dec.stats.encap_skipped == {"gre carrying ethertype 0x1234": 1}


def test_plain_frame_keeps_the_four_tuple_key() -> None:
    """The fast path's key is untouched: a plain frame has no encapsulation and a 4-member key."""
    f = conversation(lambda p, r: _eth(p))[0]
    seg = Decoder().decode(f)
    assert seg is not None and seg.encap is None
    assert len(flow_key(seg.src, seg.sport, seg.dst, seg.dport)) == 4


def test_erspan_has_no_return_direction_but_keys_by_session() -> None:
    wrap = ENCAPS["erspan-ii"][0]
    reports, _ = run(conversation(wrap))
    assert len(reports) == 1
    text = reports[0].conn.encap.describe() if reports[0].conn.encap else ""
    assert text == f"erspan type II session 77 ({OUT_A} → {OUT_B})"


assert ERSPAN  # (imported so scapy binds GRE 0x88BE to ERSPAN)


def test_run_note_names_the_encapsulation_not_followed(tmp_path) -> None:
    from scapy.utils import wrpcap

    frame = _ether() / _outer4(False) / GRE(proto=0x1234) / Raw(b"\x00" * 40)
    frame.time = 1_700_000_000
    path = tmp_path / "unknown.pcap"
    wrpcap(str(path), [frame])
    proc = cli("read", str(path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "1 frames inside an encapsulation not followed (gre carrying ethertype 0x1234)" in proc.stderr


def test_json_says_what_carried_it() -> None:
    """Both JSON writers (the object and the fast text) say the same about the tunnel."""
    from synscope.read.jsonl import compact, connection_line, connection_object

    reports, _ = run(conversation(ENCAPS["qinq-pppoe"][0]))
    line = connection_line(reports[0])
    assert line == compact(connection_object(reports[0]))
    assert connection_object(reports[0])["encap"] == [
        {"type": "vlan", "id": 20},
        {"type": "vlan", "id": 30},
        {"type": "pppoe", "session": 9},
    ]


TRUTHS = sorted(p.name for p in PCAPS.glob("*.truth.json") if '"encap"' in p.read_text())


@pytest.mark.parametrize("truth", TRUTHS)
def test_tunnel_captures_against_their_truth(truth: str) -> None:
    """Each capture of scripts/scenarios_encap.py: the connections its script made, each with
    the encapsulation the script set up (the truth file), and nothing else."""
    want = json.loads((PCAPS / truth).read_text())["connections"]
    got = [json.loads(line) for line in cli("read", "--json", str(PCAPS / truth.replace(".truth.json", ".pcap"))).stdout.splitlines()]
    assert len(got) == len(want)
    for conn, w in zip(got, want, strict=True):
        assert f"{conn['client']['ip']}:{conn['client']['port']}".startswith(w["client"])
        assert f"{conn['server']['ip']}:{conn['server']['port']}" == w["server"]
        assert conn["state"] == "SF" and conn["ok"], conn["verdict"]
        assert len(conn["encap"]) == len(w["encap"])
        for layer, wl in zip(conn["encap"], w["encap"], strict=True):
            assert _matches(layer, wl), (layer, wl)


def test_arp_in_a_vlan_or_tunnel_is_just_not_tcp() -> None:
    """An Ethernet frame's own ARP (tagged, or inside VXLAN) is ordinary traffic, not an
    encapsulation left unfollowed: counted as not TCP, no note."""
    arp = _ether(type=0x0806) / Raw(b"\x00" * 28)
    for data in (bytes(_ether() / Dot1Q(vlan=5, type=0x0806) / Raw(b"\x00" * 28)), bytes(_ether() / _outer4(False) / UDP(dport=4789) / VXLAN(vni=1) / arp)):
        dec = Decoder()
        assert dec.decode(RawFrame(1, 1.0, 1, data, len(data))) is None
        assert dec.stats.not_tcp == 1 and not dec.stats.encap_skipped


# ------------------------------------------------------------------ Teredo and AYIYA: what is not followed


def _decode_one(p: Packet) -> Decoder:
    dec = Decoder()
    data = bytes(_ether() / p)
    assert dec.decode(RawFrame(1, 1.0, 1, data, len(data))) is None
    return dec


SYN6 = IPv6(src=CLIENT6, dst=SERVER6) / TCP(sport=40000, dport=80, flags="S")


def test_teredo_only_on_its_port_as_tshark_by_default() -> None:
    """tshark's Teredo heuristic (any UDP port) is off by default: IPv6 in UDP between two other
    ports is not Teredo to it, nor to synscope (test_tshark_diff checks tshark's side)."""
    dec = _decode_one(_outer4(False) / UDP(sport=50001, dport=50002) / SYN6)
    assert dec.stats.not_tcp == 1 and dec.stats.tunnelled == 0


def test_teredo_carrying_no_ipv6_is_counted() -> None:
    dec = _decode_one(_outer4(False) / UDP(sport=50001, dport=3544) / IP(src=CLIENT, dst=SERVER) / TCP(sport=1, dport=2))
    assert dec.stats.encap_skipped == {"teredo carrying no IPv6": 1}


def test_ayiya_without_a_packet_or_with_another_protocol_is_counted() -> None:
    heartbeat = _ayiya(SYN6, False, opcode=0)
    heartbeat[Raw].load = heartbeat[Raw].load[:44]  # header, identity, signature: nothing inside
    dec = _decode_one(heartbeat)
    assert dec.stats.not_tcp == 1 and not dec.stats.encap_skipped
    udp_inside = bytes([0x41, 0x52, 0x11, 17]) + b"\x00" * 4 + b"I" * 16 + b"S" * 20 + b"\x00" * 8
    dec = _decode_one(_outer4(False) / UDP(sport=5072, dport=5072) / Raw(udp_inside))
    assert dec.stats.encap_skipped == {"ayiya carrying ip protocol 17": 1}


def test_teredo_and_ayiya_headers_fuzzed_never_raise() -> None:
    """Every byte of the Teredo indicators and the AYIYA header set to a few values: each frame
    is decoded or counted (a segment, a skip, a short frame), never an exception."""
    import random

    rng = random.Random(16)
    for name in ("teredo-auth-origin", "ayiya"):
        frame = conversation(ENCAPS[name][0], v6=True)[0]
        udp = 14 + 20 + 8  # Ethernet, outer IPv4, UDP
        for at in range(udp, udp + 48):
            for value in (0, 1, 0xFF, rng.randrange(256)):
                data = bytearray(frame.data)
                data[at] = value
                dec = Decoder()
                item = dec.decode(RawFrame(1, 1.0, 1, bytes(data), len(data)))
                s = dec.stats
                assert item is not None or s.not_tcp or s.encap_skipped or s.truncated or s.malformed or s.fragments, (name, at, value, s)
