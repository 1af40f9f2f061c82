"""Verdict scenarios (issue 14): reject rules answering with ICMP, a failed ARP lookup, a capture
cut right after the SYN. Registered into scripts/make-pcaps by register(); each writes its
capture and, from what the script did and what the applications saw, NAME.truth.json.

Topology and helpers are make-pcaps': client 198.18.1.2 -- router -- server 198.18.2.2.
"""

import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "_agents_verdict.py")
# an address on the server's link that nobody owns: the router's ARP for it fails
NOBODY = "198.18.2.77"


def register(mk):
    """Add this file's scenarios to make-pcaps (module ``mk``); returns their names for ORDER."""

    def connect(ns, addr, port, http=False, timeout=10.0):
        """One connect() by the agent: what the application saw (errno, time, bytes)."""
        args = ["python3", AGENT, "connect", "--addr", addr, "--port", str(port), "--timeout", str(timeout)]
        r = mk.nsx(ns, *args + (["--http"] if http else []), timeout=timeout + 20)
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        mk.say(f"  app: {seen}")
        return seen

    def write_truth(lab, name, truth):
        path = os.path.join(lab.tmp, name)
        with open(path, "w") as f:
            json.dump(truth, f, indent=1, sort_keys=True)
            f.write("\n")
        return name

    @mk.scenario("reject-port.pcap")
    def reject_port(lab):
        """nft `reject` (default: ICMP port-unreachable) on the router for port 84; port 81 closed
        on the server (RST) as the counterpart in the same capture."""
        out = os.path.join(lab.tmp, "reject-port.pcap")
        lab.three()
        rules = "table inet sv1v { chain filt { type filter hook forward priority 0; tcp dport 84 reject; }\n}"
        lab.nft(mk.RTR, rules)
        cap = lab.tcpdump(mk.CLI, "c0", out)
        rejected = connect(mk.CLI, mk.S4, 84)
        time.sleep(0.2)
        closed = connect(mk.CLI, mk.S4, 81)
        lab.end_capture(cap)
        mk.expect(out, f"icmp.type==3 && icmp.code==3 && ip.src=={mk.R4C}", 1, None, "ICMP 3/3 from the router")
        mk.expect(out, "tcp.flags.reset==1", 1, 1, "RST for port 81")
        truth = {
            "capture": "client veth c0",
            "connections": [
                {
                    "server_port": 84,
                    "done": f"nft on the router ({mk.R4C}), forward hook: {rules}",
                    "reject_at": mk.R4C,
                    "reject_kind": "reject rule (nft reject: ICMP port-unreachable)",
                    "reached_server": False,
                    "listener": False,
                    "app": rejected,
                },
                {"server_port": 81, "done": "nothing listens on the server", "reject_at": None, "reached_server": True, "listener": False, "app": closed},
            ],
        }
        return ["reject-port.pcap", write_truth(lab, "reject-port.truth.json", truth)]

    @mk.scenario("reject-reset.pcap")
    def reject_reset(lab):
        """nft `reject with tcp reset` on the router for port 86: the router answers the SYN with an
        RST in the server's name; port 80 is served by the server (its SYN-ACK's TTL is the host's)
        and port 81 is closed on the server (the server's own RST), in the same capture."""
        out = os.path.join(lab.tmp, "reject-reset.pcap")
        lab.three()
        rules = "table inet sv1r { chain filt { type filter hook forward priority 0; tcp dport 86 reject with tcp reset; }\n}"
        lab.nft(mk.RTR, rules)
        srv = mk.http_server(lab, mode="http-close")
        cap = lab.tcpdump(mk.CLI, "c0", out)
        served = connect(mk.CLI, mk.S4, 80, http=True)
        lab.wait(srv)
        time.sleep(0.2)
        reset = connect(mk.CLI, mk.S4, 86)
        time.sleep(0.2)
        closed = connect(mk.CLI, mk.S4, 81)
        lab.end_capture(cap)
        mk.expect(out, "tcp.flags.reset==1 && tcp.srcport==86", 1, 1, "the router's RST for port 86")
        mk.expect(out, "tcp.flags.reset==1 && tcp.srcport==81", 1, 1, "the server's RST for port 81")
        truth = {
            "capture": "client veth c0",
            "connections": [
                {"server_port": 80, "done": "HTTP server answers", "reset_by": None, "reached_server": True, "listener": True, "app": served},
                {
                    "server_port": 86,
                    "done": f"nft on the router ({mk.R4C}), forward hook: {rules}",
                    "reset_by": mk.R4C,
                    "reached_server": False,
                    "listener": False,
                    "app": reset,
                },
                {"server_port": 81, "done": "nothing listens on the server", "reset_by": mk.S4, "reached_server": True, "listener": False, "app": closed},
            ],
        }
        return ["reject-reset.pcap", write_truth(lab, "reject-reset.truth.json", truth)]

    @mk.scenario("reject-server.pcap")
    def reject_server(lab):
        """nft on the server itself rejects port 85 with ICMP host-unreachable; port 80 is served
        normally (the counterpart)."""
        out = os.path.join(lab.tmp, "reject-server.pcap")
        lab.three()
        rules = "table ip sv1v { chain inp { type filter hook input priority 0; tcp dport 85 reject with icmp type host-unreachable; }\n}"
        lab.nft(mk.SRV, rules)
        srv = mk.http_server(lab, mode="http-close")
        cap = lab.tcpdump(mk.CLI, "c0", out)
        rejected = connect(mk.CLI, mk.S4, 85)
        time.sleep(0.2)
        served = connect(mk.CLI, mk.S4, 80, http=True)
        lab.wait(srv)
        lab.end_capture(cap)
        mk.expect(out, f"icmp.type==3 && icmp.code==1 && ip.src=={mk.S4}", 1, None, "ICMP 3/1 from the server")
        truth = {
            "capture": "client veth c0",
            "connections": [
                {
                    "server_port": 85,
                    "done": f"nft on the server ({mk.S4}), input hook: {rules}",
                    "reject_at": mk.S4,
                    "reject_kind": "reject rule (nft reject with icmp type host-unreachable)",
                    "arp_failed": False,
                    "app": rejected,
                },
                {"server_port": 80, "done": "HTTP server answers", "reject_at": None, "app": served},
            ],
        }
        return ["reject-server.pcap", write_truth(lab, "reject-server.truth.json", truth)]

    @mk.scenario("arp-fail.pcap")
    def arp_fail(lab):
        """A SYN to an address on the server's link that nobody owns: the router's ARP fails and it
        answers host-unreachable seconds later (no rule anywhere)."""
        out = os.path.join(lab.tmp, "arp-fail.pcap")
        lab.three()
        cap = lab.tcpdump(mk.CLI, "c0", out)
        seen = connect(mk.CLI, NOBODY, 80, timeout=15.0)
        lab.end_capture(cap)
        mk.expect(out, f"icmp.type==3 && icmp.code==1 && ip.src=={mk.R4C}", 1, None, "ICMP 3/1 from the router")
        neigh = mk.sh("ip", "-n", mk.RTR, "neigh", "show", NOBODY, check=False, quiet=True).stdout.strip()
        truth = {
            "capture": "client veth c0",
            "connections": [
                {
                    "server": NOBODY,
                    "server_port": 80,
                    "done": f"no host owns {NOBODY}; no firewall rule anywhere",
                    "reject_at": None,
                    "arp_failed_at": mk.R4C,
                    "router_neigh_entry": neigh,
                    "app": seen,
                }
            ],
        }
        return ["arp-fail.pcap", write_truth(lab, "arp-fail.truth.json", truth)]

    @mk.scenario("capture-cut.pcap")
    def capture_cut(lab):
        """tcpdump -c 1: the capture holds the SYN and stops; the connection itself worked."""
        out = os.path.join(lab.tmp, "capture-cut.pcap")
        lab.three()
        srv = mk.http_server(lab, mode="http-close")
        cap = lab.tcpdump(mk.CLI, "c0", out, extra=["-c", "1"])
        seen = connect(mk.CLI, mk.S4, 80, http=True)
        lab.wait(srv)
        lab.wait(cap)
        mk.expect(out, "frame", 1, 1, "one frame")
        truth = {
            "capture": "client veth c0, tcpdump -c 1 (stops after the first packet)",
            "connections": [{"server_port": 80, "done": "HTTP server answers; the capture stopped after the SYN", "app": seen}],
        }
        return ["capture-cut.pcap", write_truth(lab, "capture-cut.truth.json", truth)]

    return ["reject-port", "reject-reset", "reject-server", "arp-fail", "capture-cut"]
