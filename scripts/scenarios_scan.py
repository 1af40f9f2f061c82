"""Port-scan capture (issue 14): a scanned host, two scanners, and two clients that are not scanners.

port-scan.pcap   client 198.18.1.2 -- router -- server 198.18.2.2 (make-pcaps' topology), captured
                 on the client's veth. The server has real kernel listeners on 22, 80 and 443, an
                 nft rule on its input hook dropping 8000-8009 (filtered: silence) and one
                 rejecting 8443 with ICMP admin-prohibited; every other port is closed (RST).
                 - 198.18.1.2 SYN-scans 20-99, 443, 8000-8009, 8443 with crafted SYNs (raw
                   socket; one source port for all, 2 ms apart, as nmap -sS): its own kernel
                   sends the RST after each SYN-ACK (no socket owns the port), the half-open
                   pattern; then nmap-style OS-detection probes (FIN, NULL, Xmas to an open
                   and a closed port, ACK to a closed port, ECN-setup SYN with window 3).
                 - 198.18.1.3 connect()-scans the same ports with real sockets (closed at once).
                 - 198.18.1.4 makes 30 connections to port 80 one after the other (a busy client).
                 - 198.18.1.5 uses three services of the host, 22, 80 and 443, once each.
                 - 198.18.1.6 sweeps port 22 on 198.18.2.2 and 12 more addresses of the server
                   host (198.18.2.10-21, nothing listens there: RST) with crafted SYNs (a
                   horizontal scan).
Truth: the designed port states, what each scanner saw per port, what the clients saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_agents_scan.py")
OPEN = [22, 80, 443]
FILTERED = list(range(8000, 8010))
REJECTED = [8443]
SCANNED = [*range(20, 100), 443, *FILTERED, *REJECTED]
SYN_SCANNER, CONNECT_SCANNER, BUSY, SERVICES, SWEEPER = "198.18.1.2", "198.18.1.3", "198.18.1.4", "198.18.1.5", "198.18.1.6"
# more addresses of the server host for the horizontal scan (port 22 listens on 198.18.2.2 only)
EXTRA_HOSTS = [f"198.18.2.{n}" for n in range(10, 22)]
SWEEP_PORT = 22
BUSY_COUNT = 30


def register(mk) -> list[str]:
    """Add the scan scenario to make-pcaps (module ``mk``); returns its name for ORDER."""

    def run(ns: str, *args, timeout: float = 60.0) -> dict:
        argv = ["python3", AGENT, *map(str, args)]
        r = mk.nsx(ns, *argv, timeout=timeout)
        got = json.loads(r.stdout.strip().splitlines()[-1])
        mk.say(f"  {args[0]}: {json.dumps(got)[:300]}")
        return got

    @mk.scenario("port-scan.pcap", "port-scan.truth.json")
    def port_scan(lab):
        out = os.path.join(lab.tmp, "port-scan.pcap")
        lab.three()
        lab.addr(mk.CLI, "c0", *(f"{a}/24" for a in (CONNECT_SCANNER, BUSY, SERVICES, SWEEPER)))
        lab.addr(mk.SRV, "s0", *(f"{a}/24" for a in EXTRA_HOSTS))
        filt = ",".join(map(str, FILTERED))
        rules = (
            "table inet s2scan { chain inp { type filter hook input priority 0; "
            f"tcp dport {{ {filt} }} drop; tcp dport {REJECTED[0]} reject with icmp type admin-prohibited; }}\n}}"
        )
        lab.nft(mk.SRV, rules)
        listen = ["python3", AGENT, "listen", "--addr", mk.S4, "--ports", ",".join(map(str, OPEN)), "--timeout", "60"]
        srv = lab.spawn(mk.SRV, listen, wait_for=("stdout", "ready"))
        cap = lab.tcpdump(mk.CLI, "c0", out)
        ports = ",".join(map(str, SCANNED))
        syn = run(mk.CLI, "syn-scan", "--addr", mk.S4, "--src", SYN_SCANNER, "--ports", ports, "--os-open", 80, "--os-closed", 81)
        time.sleep(0.5)
        conn = run(mk.CLI, "connect-scan", "--addr", mk.S4, "--src", CONNECT_SCANNER, "--ports", ports, "--timeout", 2.5)
        time.sleep(0.5)
        busy = run(mk.CLI, "connect-many", "--addr", mk.S4, "--src", BUSY, "--port", 80, "--count", BUSY_COUNT, "--gap", 0.01)
        time.sleep(0.5)
        services = run(mk.CLI, "connect-many", "--addr", mk.S4, "--src", SERVICES, "--ports", ",".join(map(str, OPEN)), "--gap", 0.05)
        time.sleep(0.5)
        sweep = run(mk.CLI, "syn-sweep", "--addrs", ",".join([mk.S4, *EXTRA_HOSTS]), "--src", SWEEPER, "--port", SWEEP_PORT, "--sport", 46000)
        time.sleep(0.5)
        lab.end_capture(cap)
        srv.send_signal(signal.SIGINT)
        try:
            srv_out, _ = srv.communicate(timeout=10)
        except subprocess.TimeoutExpired as e:
            raise mk.Fail("listener did not stop") from e
        lines = [x for x in (srv.early["stdout"] + srv_out).decode().splitlines() if x.startswith("{")]
        listener = json.loads(lines[-1]) if lines else None
        closed = sorted(set(SCANNED) - set(OPEN) - set(FILTERED) - set(REJECTED))
        if syn["answered_synack"] != sorted(set(OPEN) & set(SCANNED)) or conn["connected"] != sorted(set(OPEN) & set(SCANNED)):
            raise mk.Fail(f"open ports seen: syn {syn['answered_synack']}, connect {conn['connected']}")
        if sweep["answered_synack"] != [mk.S4] or len(sweep["answered_rst"]) != len(EXTRA_HOSTS):
            raise mk.Fail(f"horizontal scan not as designed: {sweep}")
        if syn["silent"] != FILTERED or conn["timeout"] != FILTERED or syn["answered_rst"] != closed:
            raise mk.Fail("filtered/closed ports not as designed")
        mk.expect(out, f"ip.src=={SYN_SCANNER} && tcp.srcport==45678 && tcp.flags.reset==1", 3, 3, "scanner kernel RST after each SYN-ACK (22, 80, 443)")
        truth = {
            "capture": "client veth c0",
            "made_by": "scripts/scenarios_scan.py; the SYN scan and OS-detection probes are crafted (raw socket), the rest real sockets",
            "target": mk.S4,
            "designed": {
                "open": OPEN,
                "filtered_drop": FILTERED,
                "rejected_icmp_admin_prohibited": REJECTED,
                "closed": "every other port",
                "nft_server": rules,
            },
            "scanned_ports": SCANNED,
            "scanned_open": sorted(set(OPEN) & set(SCANNED)),
            "scanned_closed": closed,
            "scanned_filtered": FILTERED,
            "scanned_rejected": REJECTED,
            "scanners": [
                {"ip": SYN_SCANNER, "kind": "syn", "crafted": True, "saw": syn},
                {"ip": CONNECT_SCANNER, "kind": "connect", "crafted": False, "saw": conn},
            ],
            "horizontal": {
                "ip": SWEEPER,
                "kind": "syn",
                "crafted": True,
                "port": SWEEP_PORT,
                "hosts": [mk.S4, *EXTRA_HOSTS],
                "open_on": [mk.S4],
                "saw": sweep,
            },
            "not_scanners": [
                {"ip": BUSY, "what": f"{BUSY_COUNT} connections to port 80 one after the other", "saw": busy},
                {"ip": SERVICES, "what": "one connection to each of 22, 80, 443", "saw": services},
            ],
            "listener": listener,
        }
        with open(os.path.join(lab.tmp, "port-scan.truth.json"), "w") as f:
            json.dump(truth, f, indent=1)
            f.write("\n")
        return ["port-scan.pcap", "port-scan.truth.json"]

    return ["port-scan"]
