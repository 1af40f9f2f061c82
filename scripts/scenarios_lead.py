"""Verdict scenarios: who closed, who spoke first, what a capture point can see, and captures of
other stacks' behaviour that this kernel will not produce on demand (crafted, and labelled so).

Registered into scripts/make-pcaps by ``register(make_pcaps_module)``; each scenario writes
``pcaps/NAME.pcap`` and ``pcaps/NAME.truth.json``: what was done and what the applications saw,
written by this script and its socket programs (scripts/_agents_lead.py), never by synscope.
"""

from __future__ import annotations

import json
import os
import sys
from types import ModuleType
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
AGENTS = os.path.join(HERE, "_agents_lead.py")


def _truth(lab: Any, name: str, facts: dict[str, Any], *agent_files: str) -> str:
    """Write NAME.truth.json into the lab's folder from the scenario's facts and its agents' reports."""
    for path in agent_files:
        with open(path, encoding="utf-8") as f:
            facts.setdefault("applications", {})[os.path.basename(path).split(".")[0]] = json.load(f)
    out = f"{name}.truth.json"
    with open(os.path.join(lab.tmp, out), "w", encoding="utf-8") as f:
        json.dump(facts, f, indent=1, sort_keys=True)
        f.write("\n")
    return out


def _agent(lab: Any, ns: str, role: str, *args: object, ready: bool = False) -> Any:
    return lab.spawn(ns, ["python3", AGENTS, role] + [str(a) for a in args], wait_for=("stdout", "ready") if ready else None)


def register(mp: ModuleType) -> None:
    """Add this file's scenarios to make-pcaps (``mp`` is that script's module)."""
    scenario, CLI, SRV, S4 = mp.scenario, mp.CLI, mp.SRV, mp.S4

    @scenario("server-first.pcap", "server-first.truth.json")
    def server_first(lab: Any) -> list[str]:
        """The server speaks first; the client waits 1 s between its greeting and its command,
        and the server answers the command at once: no delay is the server's."""
        name = "server-first"
        out = os.path.join(lab.tmp, name + ".pcap")
        lab.three()
        srv_truth, cli_truth = os.path.join(lab.tmp, "server.json"), os.path.join(lab.tmp, "client.json")
        srv = _agent(lab, SRV, "server-first", "--port", 25, "--truth", srv_truth, ready=True)
        cap = lab.tcpdump(CLI, "c0", out)
        _agent(lab, CLI, "server-first-client", "--addr", S4, "--port", 25, "--think", 1.0, "--truth", cli_truth).wait(20)
        lab.wait(srv)
        lab.end_capture(cap)
        facts = {
            "scenario": "server speaks first (SMTP-like banner); client greets, thinks 1.0 s, sends a command; server answers at once",
            "capture_point": "client veth c0",
            "server_app_delay_s": 0.0,
            "client_think_s": 1.0,
        }
        return [name + ".pcap", _truth(lab, name, facts, srv_truth, cli_truth)]

    @scenario("rst-after-fin.pcap", "rst-after-fin.truth.json")
    def rst_after_fin(lab: Any) -> list[str]:
        """The server answers and closes (FIN); the client closes without reading the answer, so
        its kernel sends RST (data unread at close), after the server's FIN."""
        name = "rst-after-fin"
        out = os.path.join(lab.tmp, name + ".pcap")
        lab.three()
        srv_truth, cli_truth = os.path.join(lab.tmp, "server.json"), os.path.join(lab.tmp, "client.json")
        srv = _agent(lab, SRV, "close-unread-server", "--port", 80, "--truth", srv_truth, ready=True)
        cap = lab.tcpdump(CLI, "c0", out)
        _agent(lab, CLI, "close-unread-client", "--addr", S4, "--port", 80, "--think", 0.3, "--truth", cli_truth).wait(20)
        lab.wait(srv)
        lab.end_capture(cap)
        mp.expect(out, "tcp.flags.reset==1 && ip.src==" + mp.C4, 1, None, "RST from the client")
        facts = {
            "scenario": "server answers 2,000 B and closes; client closes 0.3 s later without reading: RST from the client after the server's FIN",
            "capture_point": "client veth c0",
            "closed_first": "server",
            "reset_by": "client",
            "reset_cause": "client application closed with unread data",
        }
        return [name + ".pcap", _truth(lab, name, facts, srv_truth, cli_truth)]

    @scenario("one-sided.pcap", "one-sided.truth.json")
    def one_sided(lab: Any) -> list[str]:
        """A normal exchange captured with `tcpdump -Q out` on the client: the client's packets only."""
        name = "one-sided"
        out = os.path.join(lab.tmp, name + ".pcap")
        lab.three()
        srv = _agent(lab, SRV, "plain-server", "--port", 80, ready=True)
        cap = lab.tcpdump(CLI, "c0", out, extra=("-Q", "out"))
        cli_truth = os.path.join(lab.tmp, "client.json")
        _agent(lab, CLI, "plain-client", "--addr", S4, "--port", 80, "--truth", cli_truth).wait(20)
        lab.wait(srv)
        lab.end_capture(cap)
        mp.expect(out, "ip.src==" + S4, 0, 0, "nothing from the server")
        facts = {
            "scenario": "normal exchange (client closes first); tcpdump -Q out on the client veth: only client-to-server packets",
            "capture_point": "client veth c0, outgoing direction only",
            "directions_captured": ["client->server"],
        }
        return [name + ".pcap", _truth(lab, name, facts, cli_truth)]

    @scenario("loopback-syn-retry.pcap", "loopback-syn-retry.truth.json")
    def loopback_syn_retry(lab: Any) -> list[str]:
        """Client and server on 127.0.0.1 in one namespace; an nft rule on lo drops the first SYN,
        so the client retransmits it after 1 s. Nothing is lost on a path: there is none."""
        name = "loopback-syn-retry"
        out = os.path.join(lab.tmp, name + ".pcap")
        ns = mp.PREFIX + "lo"
        lab.netns(ns)
        rules = """
table inet ssc {
  chain in { type filter hook input priority 0; iif lo tcp dport 8080 tcp flags & (syn|ack) == syn numgen inc mod 1000000 == 0 drop; }
}"""
        lab.nft(ns, rules)
        srv = _agent(lab, ns, "plain-server", "--addr", "127.0.0.1", "--port", 8080, ready=True)
        cap = lab.tcpdump(ns, "lo", out)
        cli_truth = os.path.join(lab.tmp, "client.json")
        _agent(lab, ns, "plain-client", "--addr", "127.0.0.1", "--port", 8080, "--truth", cli_truth).wait(20)
        lab.wait(srv)
        lab.end_capture(cap)
        mp.expect(out, "tcp.flags.syn==1 && tcp.flags.ack==0", 2, 2, "two SYNs")
        facts = {
            "scenario": "loopback: nft input rule on lo drops the first SYN to port 8080; the kernel retransmits it after about 1 s",
            "capture_point": "lo",
            "nft": {"namespace": "one namespace, both ends", "rule": rules.strip()},
            "syns_dropped_by": "local nft rule on lo (input)",
        }
        return [name + ".pcap", _truth(lab, name, facts, cli_truth)]

    @scenario("crafted-other-stacks.pcap", "crafted-other-stacks.truth.json")
    def crafted_other_stacks(lab: Any) -> list[str]:
        """CRAFTED with scapy: behaviour of other stacks and tools that this kernel will not produce."""
        name = "crafted-other-stacks"
        path = os.path.join(lab.tmp, name + ".pcap")
        facts = write_crafted_other_stacks(path)
        return [name + ".pcap", _truth(lab, name, facts)]


# A macOS (XNU) SYN: MSS, NOP, WS, NOP, NOP, TS, SACK-permitted, EOL (the order XNU writes them)
XNU_SYN_OPTIONS = [("MSS", 1460), ("NOP", None), ("WScale", 6), ("NOP", None), ("NOP", None), ("Timestamp", (1000, 0)), ("SAckOK", b""), ("EOL", None)]


def write_crafted_other_stacks(path: str) -> dict[str, Any]:
    """Three connections crafted with scapy (none is kernel traffic), and what each is:

    1. 198.18.1.2:50001 -> 198.18.2.2:443: a SYN with macOS's option layout, retransmitted with
       macOS's schedule (gaps 1, 1, 1, 1, 1, 2 s), no answer;
    2. 198.18.1.2:50002 -> 198.18.2.2:80: a handshake whose SYN-ACK carries window scale 255
       (RFC 7323 caps the shift at 14), then a request and an answer;
    3. 198.18.1.2:50003 -> 198.18.2.2:22: a SYN, then an RST from the client 0.3 ms later with
       no answer in between (a scanner, or an application cancelling its connect);
    4. 198.18.1.2:50004 -> 198.18.2.2:80: a SYN-ACK stamped 34 µs before the SYN it answers;
    5. 198.18.1.2:50005 -> 198.18.2.2:80: a request, then an RST in the server's name whose TTL
       (50) is not the TTL of the server's packets (63): forged on the path.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    cli, srv = "198.18.1.2", "198.18.2.2"
    eth = Ether(src="02:00:00:00:01:02", dst="02:00:00:00:01:01")
    back = Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
    t0 = 1_800_000_000.0
    pkts = []

    def add(pkt: Any, t: float) -> None:
        pkt.time = t
        pkts.append(pkt)

    # 1: macOS schedule
    t = t0
    for gap in (0, 1, 1, 1, 1, 1, 2):
        t += gap
        add(eth / IP(src=cli, dst=srv, ttl=64, id=0) / TCP(sport=50001, dport=443, flags="S", seq=1000, window=65535, options=XNU_SYN_OPTIONS), t)
    # 2: window scale 255
    t = t0 + 20
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50002, dport=80, flags="S", seq=5000, window=64240, options=[("MSS", 1460), ("WScale", 7)]), t)
    synack = TCP(sport=80, dport=50002, flags="SA", seq=9000, ack=5001, window=65535, options=[("MSS", 1460), ("WScale", 255)])
    add(back / IP(src=srv, dst=cli, ttl=63) / synack, t + 0.001)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50002, dport=80, flags="A", seq=5001, ack=9001, window=502), t + 0.002)
    req = b"GET / HTTP/1.0\r\n\r\n"
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50002, dport=80, flags="PA", seq=5001, ack=9001, window=502) / req, t + 0.003)
    add(back / IP(src=srv, dst=cli, ttl=63) / TCP(sport=80, dport=50002, flags="A", seq=9001, ack=5001 + len(req), window=4), t + 0.004)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50002, dport=80, flags="FA", seq=5001 + len(req), ack=9001, window=502), t + 0.005)
    add(back / IP(src=srv, dst=cli, ttl=63) / TCP(sport=80, dport=50002, flags="FA", seq=9001, ack=5002 + len(req), window=4), t + 0.006)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50002, dport=80, flags="A", seq=5002 + len(req), ack=9002, window=502), t + 0.007)
    # 3: the client's own RST 0.3 ms after its SYN
    t = t0 + 40
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50003, dport=22, flags="S", seq=7000, window=1024, options=[("MSS", 1460)]), t)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50003, dport=22, flags="R", seq=7001, window=0), t + 0.0003)
    # 4: a SYN-ACK stamped 34 µs before the SYN it answers (two captures merged with skewed clocks)
    t = t0 + 60
    add(back / IP(src=srv, dst=cli, ttl=63) / TCP(sport=80, dport=50004, flags="SA", seq=900, ack=501, window=65535, options=[("MSS", 1460)]), t)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50004, dport=80, flags="S", seq=500, window=64240, options=[("MSS", 1460)]), t + 0.000034)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50004, dport=80, flags="A", seq=501, ack=901, window=64240), t + 0.020)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50004, dport=80, flags="FA", seq=501, ack=901, window=64240), t + 0.030)
    add(back / IP(src=srv, dst=cli, ttl=63) / TCP(sport=80, dport=50004, flags="FA", seq=901, ack=502, window=65535), t + 0.050)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50004, dport=80, flags="A", seq=502, ack=902, window=64240), t + 0.0501)
    # 5: an established exchange cut by an RST "from the server" whose TTL (50) is not the server's (63)
    t = t0 + 80
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50005, dport=80, flags="S", seq=100, window=64240, options=[("MSS", 1460)]), t)
    add(back / IP(src=srv, dst=cli, ttl=63) / TCP(sport=80, dport=50005, flags="SA", seq=300, ack=101, window=65535, options=[("MSS", 1460)]), t + 0.001)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50005, dport=80, flags="A", seq=101, ack=301, window=64240), t + 0.002)
    add(eth / IP(src=cli, dst=srv, ttl=64) / TCP(sport=50005, dport=80, flags="PA", seq=101, ack=301, window=64240) / req, t + 0.003)
    add(back / IP(src=srv, dst=cli, ttl=63) / TCP(sport=80, dport=50005, flags="A", seq=301, ack=101 + len(req), window=65535), t + 0.004)
    add(back / IP(src=srv, dst=cli, ttl=50, id=4242) / TCP(sport=80, dport=50005, flags="RA", seq=301, ack=101 + len(req), window=0), t + 0.0045)
    wrpcap(path, pkts)
    return {
        "crafted": True,
        "connections": {
            "50001": {"what": "macOS SYN option layout and retry schedule, no answer", "syn_gaps_s": [1, 1, 1, 1, 1, 2], "os": "macOS (XNU), not Linux"},
            "50002": {"what": "SYN-ACK window scale 255", "window_shift_used": 14, "server_window_field": 4},
            "50003": {"what": "client RST 0.3 ms after its SYN, nothing from the server", "reset_by": "client", "server_answered": False},
            "50004": {"what": "SYN-ACK stamped 34 us before its SYN", "handshake_timing_trustworthy": False},
            "50005": {
                "what": "RST forged on the path: TTL 50, the server's packets TTL 63",
                "rst_sent_by": "a box on the path",
                "rst_ttl": 50,
                "server_ttl": 63,
            },
        },
    }


if __name__ == "__main__":
    sys.exit("run through scripts/make-pcaps")
