#!/usr/bin/env python3
"""An encapsulating relay for scripts/make-pcaps (scenarios_encap.py).

    ip netns exec NS python3 scripts/_agents_encap.py --tap cv --wire vc --encap gretap --side a

Frames the kernel sends on the TAP device ``--tap`` are wrapped in the encapsulation
``--encap`` (outer headers built with scapy) and sent on the veth ``--wire``; wrapped frames
arriving on the wire have their outer headers cut off and go to the TAP device. The relay on
the other end does the same with ``--side b``: the TCP traffic is the kernels', the tunnel
headers are this program's. Bounded by --timeout and --count. Prints "ready" once listening.
"""

import argparse
import hashlib
import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _pcap_agents import Port, log, ready
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Raw

# the outer (underlay) endpoints: side a, side b
OUTER4 = ("198.18.250.1", "198.18.250.2")
OUTER6 = ("2001:db8:250::1", "2001:db8:250::2")
# outer MAC addresses, given explicitly (scapy would otherwise resolve them with ARP)
MAC = ("02:00:00:00:fa:01", "02:00:00:00:fa:02")
UDP_SPORT = (49152, 49153)
GENEVE_OPTION = b"\x01\x02\x03\x01syns"  # class 0x0102, type 3, 4 bytes of data


def eth(side):
    return Ether(src=MAC[side], dst=MAC[1 - side])


def ip4(side, **kw):
    return IP(src=OUTER4[side], dst=OUTER4[1 - side], **kw)


# name → (carries the whole Ethernet frame?, builder(side, payload bytes, counter) → outer packet)
ENCAPS = {
    "geneve": (
        True,
        lambda s, p, n: eth(s) / ip4(s) / UDP(sport=UDP_SPORT[s], dport=6081) / GENEVE(vni=4242, proto=0x6558, optionlen=2, options=GENEVE_OPTION) / Raw(p),
    ),
    "gretap": (True, lambda s, p, n: eth(s) / ip4(s) / GRE(key_present=1, key=1001, seqnum_present=1, sequence_number=n, proto=0x6558) / Raw(p)),
    "gre": (False, lambda s, p, n: eth(s) / ip4(s) / GRE(proto=0x0800) / Raw(p)),
    "erspan1": (True, lambda s, p, n: eth(s) / ip4(s) / GRE(proto=0x88BE) / Raw(p)),
    "erspan2": (True, lambda s, p, n: eth(s) / ip4(s) / GRE(seqnum_present=1, sequence_number=n, proto=0x88BE) / ERSPAN_II(session_id=100, vlan=0) / Raw(p)),
    "erspan3": (
        True,
        lambda s, p, n: (
            eth(s) / ip4(s) / GRE(seqnum_present=1, sequence_number=n, proto=0x22EB) / ERSPAN_III(session_id=101, o=1) / ERSPAN_PlatformSpecific() / Raw(p)
        ),
    ),
    "gre-udp": (False, lambda s, p, n: eth(s) / ip4(s) / UDP(sport=UDP_SPORT[s], dport=4754) / GRE(proto=0x0800) / Raw(p)),
    "mpls": (False, lambda s, p, n: eth(s) / MPLS(label=1000 + s, s=0, ttl=64) / MPLS(label=16, s=1, ttl=64) / Raw(p)),
    "mpls-pw": (True, lambda s, p, n: eth(s) / MPLS(label=3000 + s, s=1, ttl=64) / Raw(b"\x00\x00" + (n & 0xFFFF).to_bytes(2, "big") + p)),
    "pppoe-qinq": (False, lambda s, p, n: eth(s) / Dot1AD(vlan=300) / Dot1Q(vlan=30) / PPPoE(sessionid=0x2A) / PPP(proto=0x0021) / Raw(p)),
    "ipip": (False, lambda s, p, n: eth(s) / ip4(s, proto=4) / Raw(p)),
    "4in6": (False, lambda s, p, n: eth(s) / IPv6(src=OUTER6[s], dst=OUTER6[1 - s], nh=4) / Raw(p)),
    "gtpu": (False, lambda s, p, n: eth(s) / ip4(s) / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=0x100 + s, gtp_type=255) / Raw(p)),
}


# Teredo (RFC 4380): the client's end on a high port, the server's on 3544. Every packet from side
# a carries an authentication indicator (client ID "s5", 4 bytes of authentication value, nonce,
# confirmation), every one from side b an origin indication (side a's obfuscated port and
# address), so the capture shows both indicators in front of the IPv6 packet.
TEREDO_PORT = (49152, 3544)
TEREDO_AUTH = b"\x00\x01\x02\x04" + b"s5" + b"auth" + b"nonce-01" + b"\x00"
TEREDO_ORIGIN = b"\x00\x00" + (UDP_SPORT[0] ^ 0xFFFF).to_bytes(2, "big") + bytes(int(x) ^ 0xFF for x in OUTER4[0].split("."))
# AYIYA: identity 2^4 = 16 bytes (the sender's inner IPv6 address), SHA-1 signature (5 * 4 bytes),
# authentication method 1, opcode 1 (forward), next header 41 (IPv6), epoch time
AYIYA_IDENTITY = (bytes.fromhex("20010db80010" + "0" * 18 + "02"), bytes.fromhex("20010db80010" + "0" * 18 + "03"))


def teredo(s, p):
    indicator = TEREDO_AUTH if s == 0 else TEREDO_ORIGIN
    return eth(s) / ip4(s) / UDP(sport=TEREDO_PORT[s], dport=TEREDO_PORT[1 - s]) / Raw(indicator + p)


def ayiya(s, p, n):
    header = bytes([0x41, 0x52, 0x11, 41]) + (1_800_000_000 + n).to_bytes(4, "big") + AYIYA_IDENTITY[s]
    return eth(s) / ip4(s) / UDP(sport=5072, dport=5072) / Raw(header + hashlib.sha1(p).digest() + p)


ENCAPS["teredo"] = (False, lambda s, p, n: teredo(s, p))
ENCAPS["ayiya"] = (False, ayiya)
# encapsulations carrying the kernels' IPv6 (the others carry IPv4)
INNER_V6 = frozenset({"teredo", "ayiya"})


def header_length(name, side=0):
    """Outer bytes in front of the payload of what ``side`` sends: the same for every one of its frames."""
    _, build = ENCAPS[name]
    return len(bytes(build(side, b"", 0)))


def relayed_v6(f):
    """An IPv6 frame from the TAP that goes through: TCP and ICMPv6 errors (no neighbour discovery
    or MLD: the neighbours are static)."""
    return len(f) > 54 and f[12:14] == b"\x86\xdd" and (f[20] == 6 or (f[20] == 58 and f[54] < 128))


def tap_mac(name):
    with open(f"/sys/class/net/{name}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tap", required=True)
    p.add_argument("--wire", required=True)
    p.add_argument("--encap", required=True, choices=sorted(ENCAPS))
    p.add_argument("--side", choices=["a", "b"], required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--count", type=int, default=1000)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 15)
    side = 0 if a.side == "a" else 1
    whole_frame, build = ENCAPS[a.encap]
    hlen = header_length(a.encap, 1 - side)  # what the other side's relay puts in front
    inner_v6 = a.encap in INNER_V6
    tap, wire = Port("tap:" + a.tap), Port("if:" + a.wire)
    mac = tap_mac(a.tap)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ready()
    sys.stdout.flush()
    deadline = time.monotonic() + a.timeout
    sent = received = 0
    while not stop and time.monotonic() < deadline and sent + received < a.count:
        try:
            r, _, _ = select.select([tap.fd, wire.fd], [], [], 0.05)
        except InterruptedError:
            continue
        if tap.fd in r:
            f = tap.read()
            if f and (relayed_v6(f) if inner_v6 else len(f) > 14 and f[12:14] == b"\x08\x00"):  # IPv4 only (no ARP: static neighbours)
                sent += 1
                wire.write(bytes(build(side, f if whole_frame else f[14:], sent)))
        if wire.fd in r:
            f = wire.read()
            if f and len(f) > hlen and f[6:12] == bytes.fromhex(MAC[1 - side].replace(":", "")):
                received += 1
                # the kernel moved the outer VLAN tag of a received frame into metadata: one tag less
                inner = f[hlen - 4 :] if a.encap == "pppoe-qinq" else f[hlen:]
                if not whole_frame:  # an IP packet: give it an Ethernet header for the TAP device
                    inner = mac + b"\x02\x00\x00\x00\xfb\x01" + (b"\x86\xdd" if inner[:1] >= b"\x60" else b"\x08\x00") + inner
                tap.write(inner)
    log(f"encap relay {a.encap} side {a.side}: {sent} frames wrapped, {received} unwrapped")


if __name__ == "__main__":
    main()
