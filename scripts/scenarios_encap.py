"""make-pcaps scenarios: TCP inside tunnels and overlays (VXLAN, GENEVE, GRE, ERSPAN, MPLS, PPPoE...).

``register(mp)`` adds them to make-pcaps (``mp`` is that script's module, for its Lab helpers).

- VXLAN is the kernel's own device (``ip link add ... type vxlan``): real kernel TCP in real
  kernel tunnels, captured on the underlay veth.
- This kernel has none of the other tunnel devices (geneve, gretap, ipip, erspan... are
  "Unknown device type"): there the TCP is the kernels', carried between a TAP device in each
  namespace and the underlay veth by a small userspace relay that adds and removes the outer
  headers (scripts/_agents_encap.py).
Each capture is one HTTP exchange; beside it, NAME.truth.json says what was set up.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ENCAP_AGENT = os.path.join(HERE, "_agents_encap.py")

UNDER_A, UNDER_B = "198.18.250.1", "198.18.250.2"  # VXLAN underlay
OVER_C, OVER_S = "198.18.251.1", "198.18.251.2"  # addresses inside the overlay
RELAY_C, RELAY_S = "198.18.10.2", "198.18.10.3"  # TAP addresses of the relay scenarios
RELAY_C6, RELAY_S6 = "2001:db8:10::2", "2001:db8:10::3"  # (the ones carrying IPv6)
CLIENT_PORT = 45000

# relay encapsulation → (file, what tshark must find on every TCP frame, layers synscope reports,
# one line for the truth file)
RELAYED = {
    "geneve": ("geneve.pcap", "geneve.vni==4242", [{"type": "geneve", "vni": 4242}], "GENEVE VNI 4242, 8 bytes of options, Ethernet inside (UDP 6081)"),
    "gretap": (
        "gretap.pcap",
        "gre.key==1001 && gre.sequence_number",
        [{"type": "gre", "key": 1001}],
        "GRE with key 1001 and sequence numbers, transparent Ethernet bridging (0x6558)",
    ),
    "gre": ("gre.pcap", "gre.proto==0x0800", [{"type": "gre"}], "plain GRE carrying IPv4"),
    "erspan1": (
        "erspan1.pcap",
        "gre.proto==0x88be && !erspan.version",
        [{"type": "erspan", "erspan_type": 1}],
        "ERSPAN type I (GRE 0x88BE without sequence number)",
    ),
    "erspan2": ("erspan2.pcap", "erspan.spanid==100", [{"type": "erspan", "erspan_type": 2, "session": 100}], "ERSPAN type II, session 100"),
    "erspan3": (
        "erspan3.pcap",
        "erspan.spanid==101",
        [{"type": "erspan", "erspan_type": 3, "session": 101}],
        "ERSPAN type III, session 101, with the platform-specific subheader",
    ),
    "gre-udp": ("gre-udp.pcap", "udp.port==4754 && gre", [{"type": "gre-udp"}], "GRE-in-UDP (UDP 4754) carrying IPv4"),
    "mpls": ("mpls.pcap", "mpls.label==16", [{"type": "mpls"}], "MPLS two-label stack (1000 or 1001 by direction, then 16), IPv4 below"),
    "mpls-pw": ("mpls-pw.pcap", "mpls && pwethcw", [{"type": "mpls"}], "MPLS Ethernet pseudowire with control word (label 3000 or 3001 by direction)"),
    "pppoe-qinq": (
        "pppoe-qinq.pcap",
        "ieee8021ad.id==300 && vlan.id==30 && pppoe.session_id==0x2a",
        [{"type": "vlan", "id": 300}, {"type": "vlan", "id": 30}, {"type": "pppoe", "session": 42}],
        "PPPoE session 0x2a inside 802.1ad 300 + 802.1Q 30, PPP IPv4",
    ),
    "ipip": ("ipip.pcap", "ip.proto==4", [{"type": "ipip", "outer": "198.18.250.1 → 198.18.250.2"}], "IPv4 in IPv4 (protocol 4)"),
    "4in6": ("4in6.pcap", "ipv6.nxt==4", [{"type": "ipip", "outer": "2001:db8:250::1 → 2001:db8:250::2"}], "IPv4 in IPv6 (next header 4)"),
    "gtpu": ("gtpu.pcap", "gtp.teid", [{"type": "gtp-u"}], "GTP-U G-PDUs (UDP 2152), TEID 0x100 / 0x101 by direction"),
    "teredo": (
        "teredo.pcap",
        "teredo && ipv6",
        [{"type": "teredo", "outer": "198.18.250.1 → 198.18.250.2"}],
        "Teredo (IPv6 in UDP, client end 49152, server end 3544); client → server packets carry an authentication indicator,"
        " server → client ones an origin indication; inner addresses from 2001:db8::/32, not Teredo's 2001::/32",
    ),
    "ayiya": (
        "ayiya.pcap",
        "ayiya && ipv6",
        [{"type": "ayiya", "outer": "198.18.250.1 → 198.18.250.2"}],
        "AYIYA (UDP 5072 both ends) forwarding IPv6 (next header 41): 16-byte identity (the sender's inner address), SHA-1 signature",
    ),
}
# the relay scenarios whose kernels talk IPv6 through the tunnel (the others IPv4)
INNER_V6 = frozenset({"teredo", "ayiya"})


def register(mp):
    """Add the scenarios to make-pcaps' table and order."""

    def write_truth(lab, name, truth):
        with open(os.path.join(lab.tmp, name.replace(".pcap", ".truth.json")), "w") as f:
            json.dump(truth, f, indent=1, ensure_ascii=False)
            f.write("\n")

    def vxlan_common(lab, name, vnis):
        """Kernel VXLAN: underlay namespaces ua/ub joined by a veth; one VXLAN device per VNI
        made in each (its UDP socket stays there) and moved into an overlay namespace of its own,
        client side and server side, so two VNIs can hold the same addresses and 4-tuple."""
        out = os.path.join(lab.tmp, name)
        ua, ub = lab.netns(mp.PREFIX + "ua"), lab.netns(mp.PREFIX + "ub")
        lab.veth(ua, "u0", ub, "u1")
        for ns, dev, addr in ((ua, "u0", UNDER_A), (ub, "u1", UNDER_B)):
            lab.sysctl(ns, f"net.ipv6.conf.{dev}.disable_ipv6=1")
            lab.addr(ns, dev, addr + "/24")
        lab.neigh(ua, "u0", ub, "u1", [UNDER_B], [UNDER_A])
        servers = []
        for vni in vnis:
            cns, sns = lab.netns(mp.PREFIX + f"c{vni}"), lab.netns(mp.PREFIX + f"s{vni}")
            for under, dev, local, remote, over_ns, addr in ((ua, "u0", UNDER_A, UNDER_B, cns, OVER_C), (ub, "u1", UNDER_B, UNDER_A, sns, OVER_S)):
                vx = f"vx{vni}"
                mp.nsx(under, "ip", "link", "add", vx, "type", "vxlan", "id", str(vni), "local", local, "remote", remote, "dstport", "4789", "dev", dev)
                mp.nsx(under, "ip", "link", "set", vx, "netns", over_ns)
                lab.sysctl(over_ns, f"net.ipv6.conf.{vx}.disable_ipv6=1")
                lab.offloads_off(over_ns, vx)
                lab.addr(over_ns, vx, addr + "/24")
                mp.nsx(over_ns, "ip", "link", "set", vx, "up")
            lab.neigh(cns, f"vx{vni}", sns, f"vx{vni}", [OVER_S], [OVER_C])
            servers.append((cns, sns))
        cap = lab.tcpdump(ua, "u0", out, filt="udp port 4789")
        for cns, sns in servers:
            srv = mp.http_server(lab, ns=sns, mode="http-close")
            mp.client(lab, "http-reuse", addr=OVER_S, ns=cns, src_port=CLIENT_PORT, tries=1)
            lab.wait(srv)
        lab.end_capture(cap)
        write_truth(
            lab,
            name,
            {
                "made_by": "real kernel TCP through kernel VXLAN devices (ip link add ... type vxlan), captured on the underlay veth u0",
                "underlay": f"{UNDER_A} (side a, capture point) ↔ {UNDER_B}, UDP 4789",
                "connections": [
                    {
                        "client": f"{OVER_C}:{CLIENT_PORT}",
                        "server": f"{OVER_S}:80",
                        "encap": [{"type": "vxlan", "vni": vni, "outer": f"{UNDER_A} → {UNDER_B}"}],
                        "exchange": "HTTP/1.0 GET, response, server closes first (http-reuse client role)",
                    }
                    for vni in vnis
                ],
            },
        )
        return out

    @mp.scenario("vxlan.pcap")
    def vxlan(lab):
        out = vxlan_common(lab, "vxlan.pcap", [42])
        mp.expect(out, "vxlan.vni==42 && tcp", 8, None, "TCP frames inside VXLAN 42")
        return ["vxlan.pcap", "vxlan.truth.json"]

    @mp.scenario("vxlan-two-vni.pcap")
    def vxlan_two_vni(lab):
        out = vxlan_common(lab, "vxlan-two-vni.pcap", [42, 43])
        for vni in (42, 43):
            mp.expect(
                out,
                f"vxlan.vni=={vni} && tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.srcport=={CLIENT_PORT}",
                1,
                1,
                f"one SYN from :{CLIENT_PORT} in VNI {vni}",
            )
        return ["vxlan-two-vni.pcap", "vxlan-two-vni.truth.json"]

    def relayed(lab, encap):
        """Kernel TCP between TAP devices in two namespaces; the relay in each wraps what its
        TAP sends in ``encap`` onto the veth vc==vs and unwraps what comes back."""
        name, dfilter, layers, what = RELAYED[encap]
        out = os.path.join(lab.tmp, name)
        cli, srv = lab.netns(mp.CLI), lab.netns(mp.SRV)
        lab.veth(cli, "vc", srv, "vs")
        for ns, v in ((cli, "vc"), (srv, "vs")):
            lab.sysctl(ns, f"net.ipv6.conf.{v}.disable_ipv6=1")
            mp.nsx(ns, "ip", "link", "set", v, "promisc", "on")
        v6 = encap in INNER_V6
        addr_c, addr_s = (RELAY_C6, RELAY_S6) if v6 else (RELAY_C, RELAY_S)
        for ns, tap in ((cli, "cv"), (srv, "sv")):
            mp.nsx(ns, "ip", "tuntap", "add", "mode", "tap", "name", tap)
            if v6:  # no router solicitations, no duplicate address detection: static neighbours
                lab.sysctl(ns, f"net.ipv6.conf.{tap}.accept_ra=0", f"net.ipv6.conf.{tap}.router_solicitations=0", f"net.ipv6.conf.{tap}.accept_dad=0")
            else:
                lab.sysctl(ns, f"net.ipv6.conf.{tap}.disable_ipv6=1")
            lab.offloads_off(ns, tap)
            mp.nsx(ns, "ip", "link", "set", tap, "mtu", "1400")  # room for the outer headers
        relays = [
            lab.spawn(ns, ["python3", ENCAP_AGENT, "--tap", tap, "--wire", wire, "--encap", encap, "--side", side], wait_for=("stdout", "ready"), timeout=20)
            for ns, tap, wire, side in ((cli, "cv", "vc", "a"), (srv, "sv", "vs", "b"))
        ]
        lab.addr(cli, "cv", addr_c + ("/64" if v6 else "/24"))
        lab.addr(srv, "sv", addr_s + ("/64" if v6 else "/24"))
        mp.nsx(cli, "ip", "link", "set", "cv", "up")
        mp.nsx(srv, "ip", "link", "set", "sv", "up")
        lab.neigh(cli, "cv", srv, "sv", [addr_s], [addr_c])
        server = mp.http_server(lab, addr="::" if v6 else "0.0.0.0")
        cap = lab.tcpdump(cli, "vc", out, filt=None)
        mp.client(lab, "http", addr=addr_s)
        lab.wait(server)
        lab.end_capture(cap)
        for r in relays:
            lab.stop_agent(r)
        mp.expect(out, f"tcp && {dfilter}", 8, None, what)
        mp.expect(out, f"tcp && !({dfilter})", 0, 0, "no TCP outside it")
        write_truth(
            lab,
            name,
            {
                "made_by": "real kernel TCP between TAP devices; outer headers added and removed by a userspace relay (scripts/_agents_encap.py) on each side",
                "encapsulation": what,
                "capture_point": "client-side veth vc",
                "connections": [
                    {
                        "client": addr_c,
                        "server": f"{addr_s}:80",
                        "encap": layers,
                        "exchange": "HTTP/1.0 GET, response, client closes first (http client role)",
                    }
                ],
            },
        )
        return [name, name.replace(".pcap", ".truth.json")]

    for encap in RELAYED:

        def make(lab, encap=encap):
            return relayed(lab, encap)

        make.__name__ = encap.replace("-", "_")
        mp.scenario(RELAYED[encap][0])(make)

    for key in ["vxlan", "vxlan-two-vni", *RELAYED]:
        mp.ORDER.append(key)
