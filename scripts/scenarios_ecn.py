"""ECN scenarios (issue 14, item 11) for scripts/make-pcaps, each with a designed truth.

Topology and helpers are make-pcaps': client 198.18.1.2 -- router -- server 198.18.2.2, captured on
the client's veth ``c0``. The client asks for ECN (``net.ipv4.tcp_ecn=1``) in every scenario:

- ecn-congestion: the server (tcp_ecn=1) sends a bulk download through the router, which sets CE
  on a random 3% of the ECT(0) packets it forwards towards the client: an nft rule (``ip ecn set
  ce``) standing in for an AQM marking, since this kernel has none of fq_codel, codel, red, pie or
  cake. The kernels' TCP answers it for real (ECE echoes, CWR). The truth is the client's IpExt InCEPkts (CE-marked packets it received: all of them
  pass the capture point, which is after the marking hop) and the server's TcpExt TCPDeliveredCE.
- ecn-clean: ECN negotiated, a small HTTP exchange with no queue anywhere: no congestion.
- ecn-declined: the server has tcp_ecn=0: it answers the ECN-setup SYN with a plain SYN-ACK.

Registered by make-pcaps with ``register()``.
"""

import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENTS = os.path.join(HERE, "_pcap_agents.py")
M = None  # the make-pcaps module, set by register()

SIZE = 300000  # bytes of the download
# share of the ECT(0) packets towards the client the router marks CE
MARK_PERCENT = 3
SNAPLEN = "96"  # headers only: the file stays small
IPEXT = ("InNoECTPkts", "InECT1Pkts", "InECT0Pkts", "InCEPkts")
TCPEXT = ("TCPDeliveredCE", "TCPDelivered", "TCPRetransFail", "TCPFastRetrans", "TCPTimeouts")


def register(mod):
    """Add these scenarios to make-pcaps' table and run order."""
    global M
    M = mod
    for name, fn in (("ecn-congestion", ecn_congestion), ("ecn-clean", ecn_clean), ("ecn-declined", ecn_declined)):
        mod.SCENARIOS[name] = (fn, [name + ".pcap", name + ".truth.json"])
        mod.ORDER.append(name)


def counters(ns):
    """The ECN counters of one namespace (IpExt and TcpExt)."""
    groups = M.kernel_counters(ns)
    out = {"IpExt." + k: groups["IpExt"][k] for k in IPEXT}
    out.update(("TcpExt." + k, groups["TcpExt"].get(k, 0)) for k in TCPEXT)
    out.update(("Tcp." + k, groups["Tcp"][k]) for k in ("OutSegs", "RetransSegs"))
    return out


def delta(before, after):
    return {k: after[k] - before[k] for k in after}


def run_client(mode, timeout=30.0, **kw):
    """The client agent to completion: what the application saw (exit status, bytes received)."""
    args = ["python3", AGENTS, "client", "--mode", mode, "--addr", M.S4, "--port", "80"]
    for k, v in kw.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    r = M.nsx(M.CLI, *args, timeout=timeout, check=False)
    got = None
    for line in r.stderr.splitlines():
        print("    |", line, flush=True)
        if line.startswith("client: got "):
            got = int(line.split()[2])
    return {"exit": r.returncode, "bytes_received": got}


def write_truth(lab, name, truth):
    with open(os.path.join(lab.tmp, name), "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write("\n")
    return name


def ecn_lab(lab, server_ecn):
    lab.three(v6=False)
    lab.sysctl(M.CLI, "net.ipv4.tcp_ecn=1")
    lab.sysctl(M.SRV, f"net.ipv4.tcp_ecn={server_ecn}")


def ecn_congestion(lab):
    """Bulk download through an fq_codel (ecn) bottleneck: CE marks, ECE echoes, CWR."""
    name = "ecn-congestion"
    out = os.path.join(lab.tmp, name + ".pcap")
    ecn_lab(lab, 1)
    rules = (
        "table ip s1ecn {\n chain cemark {\n  type filter hook forward priority 0;\n"
        f"  oifname r0 ip ecn ect0 numgen random mod 100 < {MARK_PERCENT} counter ip ecn set ce\n }}\n}}\n"
    )
    lab.nft(M.RTR, rules)
    srv = M.http_server(lab, mode="bulk", size=SIZE, cc="cubic")
    cap = lab.tcpdump(M.CLI, "c0", out, snaplen=SNAPLEN)
    before = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    app = run_client("bulk", cc="cubic")
    lab.wait(srv)
    time.sleep(0.2)
    after = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    lab.end_capture(cap)
    marks = M.nsx(M.RTR, "nft", "list", "ruleset", quiet=True).stdout
    client_d, server_d = delta(before[M.CLI], after[M.CLI]), delta(before[M.SRV], after[M.SRV])
    if client_d["IpExt.InCEPkts"] < 1:
        raise M.Fail(f"no CE marks reached the client: {client_d}")
    M.expect(out, "ip.dsfield.ecn==3", client_d["IpExt.InCEPkts"], client_d["IpExt.InCEPkts"], "CE-marked packets (the client's InCEPkts)")
    M.expect(out, "tcp.flags.ece==1 && tcp.flags.syn==0", 1, None, "ECE echoes from the client")
    M.expect(out, "tcp.flags.cwr==1 && tcp.flags.syn==0", 1, None, "CWR from the server")
    truth = {
        "capture": f"client veth c0, snaplen {SNAPLEN}",
        "done": (
            f"client and server net.ipv4.tcp_ecn=1; {SIZE}-byte download; the router marks CE on {MARK_PERCENT}% of the"
            " ECT(0) packets it forwards towards the client, by an nft rule standing in for an AQM (this kernel has no"
            f" fq_codel, codel, red or pie qdisc): {rules}"
        ),
        "ecn_negotiation": "negotiated",
        "congestion": True,
        "ce_marked_to_client": client_d["IpExt.InCEPkts"],
        "marking_hop": "router r0 (before the capture point)",
        "router_nft_counters": marks,
        "kernel_counters_delta": {"client": client_d, "server": server_d},
        "app": app,
        "bytes_sent_by_server_app": SIZE,
    }
    return [name + ".pcap", write_truth(lab, name + ".truth.json", truth)]


def _exchange(lab, name, server_ecn, outcome):
    out = os.path.join(lab.tmp, name + ".pcap")
    ecn_lab(lab, server_ecn)
    srv = M.http_server(lab, mode="http", size=20000)
    cap = lab.tcpdump(M.CLI, "c0", out)
    before = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    app = run_client("http")
    lab.wait(srv)
    time.sleep(0.2)
    after = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    lab.end_capture(cap)
    client_d, server_d = delta(before[M.CLI], after[M.CLI]), delta(before[M.SRV], after[M.SRV])
    if client_d["IpExt.InCEPkts"] or server_d["IpExt.InCEPkts"]:
        raise M.Fail(f"CE marks where none were designed: {client_d} {server_d}")
    M.expect(out, "tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.flags.ece==1 && tcp.flags.cwr==1", 1, 1, "ECN-setup SYN")
    M.expect(out, "tcp.flags.syn==1 && tcp.flags.ack==1 && tcp.flags.ece==1", 1 if server_ecn else 0, 1 if server_ecn else 0, "SYN-ACK with ECE")
    truth = {
        "capture": "client veth c0",
        "done": f"client net.ipv4.tcp_ecn=1, server net.ipv4.tcp_ecn={server_ecn}; one HTTP exchange (20000-byte body), no queue on the path",
        "ecn_negotiation": outcome,
        "congestion": False,
        "ce_marked_to_client": client_d["IpExt.InCEPkts"],
        "kernel_counters_delta": {"client": client_d, "server": server_d},
        "app": app,
    }
    return [name + ".pcap", write_truth(lab, name + ".truth.json", truth)]


def ecn_clean(lab):
    """ECN negotiated, no congestion."""
    return _exchange(lab, "ecn-clean", 1, "negotiated")


def ecn_declined(lab):
    """The server does not do ECN (tcp_ecn=0): it declines."""
    return _exchange(lab, "ecn-declined", 0, "declined")
