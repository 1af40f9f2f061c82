"""TCP state-machine scenarios for scripts/make-pcaps (issue 14 items 2, 3, 4, 6, 7, 8).

Each scenario makes a real kernel capture and writes pcaps/NAME.truth.json beside it from
what it did (nft rules, sysctls, socket options), what the applications saw (errno, bytes,
which side closed) and the kernel's counters: never from synscope's output.

make-pcaps calls register(module) with itself; scenarios use its Lab helpers.
"""

import json
import os
import signal
import time

AGENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_agents_tcpsm.py")
# the crossing topology: client c0 == r0 [hold relay] r1 == s0 server, one subnet
XC, XS = "198.18.3.2", "198.18.3.3"
# kernel counters worth a delta in the truth files
COUNTERS = (
    "Tcp.OutRsts",
    "Tcp.AttemptFails",
    "Tcp.EstabResets",
    "Tcp.RetransSegs",
    "TcpExt.TCPKeepAlive",
    "TcpExt.TCPAbortOnTimeout",
    "TcpExt.TCPAbortOnData",
    "TcpExt.TCPAbortOnClose",
    "TcpExt.TCPAbortOnLinger",
    "TcpExt.TCPSynRetrans",
    "TcpExt.TW",
    "TcpExt.TCPTimeouts",
)

M = None  # the make-pcaps module, set by register()


def register(module):
    """Add this file's scenarios to make-pcaps' table; returns their names in run order."""
    global M
    M = module
    names = []
    for fn, files in SCENARIOS:
        module.scenario(*files)(fn)
        names.append(fn.__name__.rstrip("_").replace("_", "-"))
    return names


# ------------------------------------------------------------------ helpers
def agent(lab, ns, role, *args, ready=False, timeout=10.0):
    argv = ["python3", AGENTS, role] + [str(a) for a in args]
    return lab.spawn(ns, argv, wait_for=("stdout", "ready") if ready else None, timeout=timeout)


def finish(lab, p, timeout=40.0):
    """Wait for an agent and return the JSON line it printed last."""
    try:
        out, err = p.communicate(timeout=timeout)
    except Exception as e:
        p.kill()
        p.communicate()
        raise M.Fail(f"agent {p.args[4:7]} did not finish") from e
    for line in (err or b"").decode(errors="replace").strip().splitlines():
        print("    |", line, flush=True)
    text = (p.early.get("stdout", b"") + (out or b"")).decode(errors="replace")
    lines = [x for x in text.splitlines() if x.startswith("{")]
    if not lines:
        raise M.Fail(f"agent {p.args[4:7]} printed no result")
    return json.loads(lines[-1])


def counters(ns):
    """Tcp / TcpExt counters of one namespace (/proc/net/snmp and /proc/net/netstat), as "Group.Name"."""
    return {f"{group}.{k}": v for group, values in M.kernel_counters(ns).items() for k, v in values.items()}


def delta(before, after):
    return {k: after[k] - before[k] for k in COUNTERS if k in after and after[k] != before.get(k)}


def sockets(ns):
    """ss -tan of one namespace (states of every TCP socket), as lines."""
    return [x for x in M.nsx(ns, "ss", "-tan", quiet=True).stdout.splitlines()[1:] if x.strip()]


def write_truth(lab, name, truth):
    path = os.path.join(lab.tmp, name + ".truth.json")
    with open(path, "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write("\n")
    return name + ".truth.json"


def crossing_lab(lab):
    """client c0 (XC) == r0 [hold relay] r1 == s0 server (XS): the router does no kernel forwarding."""
    cli, rtr, srv = M.CLI, M.RTR, M.SRV
    for n in (cli, rtr, srv):
        lab.netns(n)
    lab.veth(cli, "c0", rtr, "r0")
    lab.veth(rtr, "r1", srv, "s0")
    for i in ("r0", "r1"):
        lab.sysctl(rtr, f"net.ipv6.conf.{i}.disable_ipv6=1")
        M.nsx(rtr, "ip", "link", "set", i, "promisc", "on")
    lab.addr(cli, "c0", XC + "/24")
    lab.addr(srv, "s0", XS + "/24")
    lab.neigh(cli, "c0", srv, "s0", [XS], [XC])


# ------------------------------------------------------------------ item 2: simultaneous open
def simultaneous_open(lab):
    name = "simultaneous-open"
    out = os.path.join(lab.tmp, name + ".pcap")
    crossing_lab(lab)
    rel = agent(lab, M.RTR, "hold", "--left", "r0", "--right", "r1", "--hold", "syn", "--timeout", 20, ready=True)
    cap = lab.tcpdump(M.CLI, "c0", out)
    start = time.time() + 1.0
    close_at = start + 1.0
    a = agent(lab, M.CLI, "peer", "--local", f"{XC}:40001", "--remote", f"{XS}:40002", "--start", start, "--close-at", close_at, ready=True)
    b = agent(lab, M.SRV, "peer", "--local", f"{XS}:40002", "--remote", f"{XC}:40001", "--start", start, "--close-at", close_at + 0.3, ready=True)
    ra, rb = finish(lab, a), finish(lab, b)
    lab.end_capture(cap)
    rel.send_signal(signal.SIGINT)
    rr = finish(lab, rel)
    if ra.get("connect") != "ok" or rb.get("connect") != "ok":
        raise M.Fail(f"simultaneous connect failed: {ra} {rb}")
    M.expect(out, "tcp.flags.syn==1 && tcp.flags.ack==0", 2, 2, "two bare SYNs (one each way)")
    M.expect(out, "tcp.flags.syn==1 && tcp.flags.ack==1", 2, 2, "two SYN-ACKs (one each way)")
    truth = {
        "scenario": "simultaneous open: both sockets bind a fixed port and connect() to each other at the same time",
        "capture": "tcpdump on c0 (the 198.18.3.2 side)",
        "done": {
            "relay": "userspace L2 relay in the router namespace holds the first bare SYN from each side until both are held, then sends both: they cross",
            "relay_events": rr.get("events"),
            "first_to_close": f"{XC}:40001 (shutdown SHUT_WR), 0.3 s before {XS}:40002",
        },
        "applications": {f"{XC}:40001": ra, f"{XS}:40002": rb},
        "expect": {"cause": "simultaneous open", "fault": None, "both_opened": True, "window_scale_applied": True},
    }
    return [name + ".pcap", write_truth(lab, name, truth)]


# ------------------------------------------------------------------ item 3: simultaneous close
def simultaneous_close(lab):
    name = "simultaneous-close"
    out = os.path.join(lab.tmp, name + ".pcap")
    crossing_lab(lab)
    rel = agent(lab, M.RTR, "hold", "--left", "r0", "--right", "r1", "--hold", "fin", "--timeout", 20, ready=True)
    srv = agent(lab, M.SRV, "listen", "--local", f"{XS}:7000", "--then", "shutdown-at", "--size", 300, "--close-at", time.time() + 2.0, ready=True)
    close_at = float(srv.args[srv.args.index("--close-at") + 1])
    cap = lab.tcpdump(M.CLI, "c0", out)
    before = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    cli = agent(lab, M.CLI, "dial", "--remote", f"{XS}:7000", "--then", "shutdown-at", "--size", 300, "--close-at", close_at)
    rc, rs = finish(lab, cli), finish(lab, srv)
    states = {"client": sockets(M.CLI), "server": sockets(M.SRV)}
    after = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    lab.end_capture(cap)
    rel.send_signal(signal.SIGINT)
    rr = finish(lab, rel)
    M.expect(out, "tcp.flags.fin==1", 2, 2, "two FINs")
    tw = {side: any("TIME-WAIT" in x for x in states[side]) for side in ("client", "server")}
    if not all(tw.values()):
        raise M.Fail(f"both sides should hold TIME-WAIT: {states}")
    truth = {
        "scenario": "simultaneous close: after an exchange both sides call shutdown(SHUT_WR) at the same moment",
        "capture": "tcpdump on c0 (client side)",
        "done": {
            "relay": "userspace L2 relay in the router namespace holds the first FIN from each side until both are held, then sends both: they cross",
            "relay_events": rr.get("events"),
            "close": "both sides shutdown(SHUT_WR) at the same wall-clock time, then read to EOF and close()",
        },
        "applications": {"client": rc, "server": rs},
        "kernel": {"ss_after": states, "time_wait": tw, "counters": {k: delta(before[ns], after[ns]) for k, ns in (("client", M.CLI), ("server", M.SRV))}},
        "expect": {"cause": "simultaneous close", "client_end": "TIME-WAIT", "server_end": "TIME-WAIT", "closed_first": "both"},
    }
    return [name + ".pcap", write_truth(lab, name, truth)]


# ------------------------------------------------------------------ item 4: dead peer found by keep-alive
KEEPIDLE, KEEPINTVL, KEEPCNT = 1, 1, 3


def keepalive_dead(lab):
    name = "keepalive-dead"
    out = os.path.join(lab.tmp, name + ".pcap")
    lab.three()
    srv = agent(lab, M.SRV, "listen", "--local", f"{M.S4}:7000", "--then", "hold", "--timeout", 15, ready=True)
    cap = lab.tcpdump(M.CLI, "c0", out)
    before = counters(M.CLI)
    cli = agent(
        lab, M.CLI, "dial", "--remote", f"{M.S4}:7000", "--then", "keepalive",
        "--keepidle", KEEPIDLE, "--keepintvl", KEEPINTVL, "--keepcnt", KEEPCNT, ready=True,
    )  # fmt: skip
    rule = f"ip saddr {M.S4} drop"
    # the peer goes away: the router drops everything the server sends from now on
    lab.nft(M.RTR, "table inet sv {\n chain f {\n  type filter hook forward priority 0;\n  " + rule + "\n }\n}\n")
    rc = finish(lab, cli)
    after = counters(M.CLI)
    lab.end_capture(cap)
    lab.stop(srv)
    if rc.get("errno") != "ETIMEDOUT":
        raise M.Fail(f"client should see ETIMEDOUT: {rc}")
    M.expect(out, "tcp.analysis.keep_alive", KEEPCNT, KEEPCNT + 1, "keep-alive probes")
    M.expect(out, "tcp.flags.reset==1", 1, 1, "the client's RST")
    truth = {
        "scenario": "dead peer found by keep-alive: after one exchange the router drops all packets from the server",
        "capture": "tcpdump on c0 (client side)",
        "done": {
            "client_socket": {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": KEEPIDLE, "TCP_KEEPINTVL": KEEPINTVL, "TCP_KEEPCNT": KEEPCNT},
            "nft": {"namespace": "router", "hook": "forward", "rule": rule, "added": "after the exchange, while the client waits in recv()"},
            "server": "alive and idle, never closes; its answers are dropped at the router",
        },
        "applications": {"client": rc},
        "kernel": {"client_counters": delta(before, after)},
        "expect": {"cause": "keep-alive probes unanswered (tcp_keepalive_probes exhausted)", "errno": "ETIMEDOUT", "rst_by": "client kernel"},
    }
    return [name + ".pcap", write_truth(lab, name, truth)]


# ------------------------------------------------------------------ items 6: SYN-ACK dropped on the client host
SYN_RETRIES = 2
SYNACK_RULE = "tcp sport 7000 tcp flags & (syn|ack) == syn|ack drop"


def synack_drop(lab, name, where):
    out = os.path.join(lab.tmp, name + ".pcap")
    lab.three()
    lab.sysctl(M.CLI, f"net.ipv4.tcp_syn_retries={SYN_RETRIES}", "net.ipv4.tcp_syn_linear_timeouts=0")
    ns, hook = (M.CLI, "input") if where == "client" else (M.RTR, "forward")
    lab.nft(ns, f"table inet sv {{\n chain c {{\n  type filter hook {hook} priority 0;\n  {SYNACK_RULE}\n }}\n}}\n")
    srv = agent(lab, M.SRV, "listen", "--local", f"{M.S4}:7000", "--then", "hold", "--timeout", 12, ready=True)
    cap = lab.tcpdump(M.CLI, "c0", out)
    before = {n: counters(n) for n in (M.CLI, M.SRV)}
    cli = agent(lab, M.CLI, "dial", "--remote", f"{M.S4}:7000", "--then", "connect", "--timeout", 30)
    rc = finish(lab, cli)
    after = {n: counters(n) for n in (M.CLI, M.SRV)}
    lab.end_capture(cap)
    lab.stop(srv)
    if rc.get("errno") != "ETIMEDOUT":
        raise M.Fail(f"connect() should time out: {rc}")
    synacks = M.expect(out, "tcp.flags.syn==1 && tcp.flags.ack==1", 0 if where == "router" else 2, 0 if where == "router" else None, "SYN-ACKs at c0")
    truth = {
        "scenario": f"SYN-ACKs dropped {'on the client host (nft input)' if where == 'client' else 'at the router (nft forward)'}",
        "capture": "tcpdump on c0 (client side): it sees incoming packets before the client's netfilter input",
        "done": {
            "nft": {"namespace": "client" if where == "client" else "router", "hook": hook, "rule": SYNACK_RULE},
            "client_sysctls": {"net.ipv4.tcp_syn_retries": SYN_RETRIES, "net.ipv4.tcp_syn_linear_timeouts": 0},
        },
        "applications": {"client": rc},
        "kernel": {"counters": {k: delta(before[n], after[n]) for k, n in (("client", M.CLI), ("server", M.SRV))}},
        "capture_counts": {"synacks_at_client_interface": synacks},
        "expect": {
            "dropped_on": "client host" if where == "client" else "path (before the client's interface)",
            "errno": "ETIMEDOUT",
        },
    }
    return [name + ".pcap", write_truth(lab, name, truth)]


def synack_dropped_client(lab):
    return synack_drop(lab, "synack-dropped-client", "client")


def synack_dropped_router(lab):
    return synack_drop(lab, "synack-dropped-router", "router")


# ------------------------------------------------------------------ items 7, 8: echo RSTs
def echo_rst(lab):
    name = "echo-rst"
    out = os.path.join(lab.tmp, name + ".pcap")
    lab.three()
    # a 20 Mbit/s bottleneck towards the server keeps a window of client segments in flight
    # when the server's RST comes back: each of them draws an RST of its own
    M.nsx(M.RTR, "tc", "qdisc", "add", "dev", "r1", "root", "tbf", "rate", "20mbit", "burst", "4kb", "limit", "100kb")
    srv = agent(lab, M.SRV, "listen", "--local", f"{M.S4}:7000", "--then", "abort", "--size", 4000, ready=True)
    cap = lab.tcpdump(M.CLI, "c0", out)
    before = {n: counters(n) for n in (M.CLI, M.SRV)}
    cli = agent(lab, M.CLI, "dial", "--remote", f"{M.S4}:7000", "--then", "stream", "--size", 2_000_000, "--chunk", 16384)
    rc, rs = finish(lab, cli), finish(lab, srv)
    after = {n: counters(n) for n in (M.CLI, M.SRV)}
    lab.end_capture(cap)
    rsts = M.expect(out, "tcp.flags.reset==1", 3, None, "RSTs from the server")
    truth = {
        "scenario": "echo RSTs: the server reads 4000 B then closes with SO_LINGER 0 while the client keeps sending (16 KB send() calls, TCP_NODELAY)",
        "path": "router: tbf 20 Mbit/s, 100 KB queue on r1 (towards the server)",
        "capture": "tcpdump on c0 (client side), one Ethernet interface: every frame in the file is a distinct packet",
        "done": {"server": rs.get("closed_with"), "client": "send() in a loop until it fails"},
        "applications": {"client": rc, "server": rs},
        "kernel": {"counters": {k: delta(before[n], after[n]) for k, n in (("client", M.CLI), ("server", M.SRV))}},
        "capture_counts": {"rst_frames": rsts},
        "expect": {
            "cause": "server aborted (SO_LINGER 0); later RSTs are the kernel answering in-flight segments for a socket that is gone",
            "aborts": 1,
            "rst_frames_all_distinct": True,
        },
    }
    return [name + ".pcap", write_truth(lab, name, truth)]


SCENARIOS = [
    (simultaneous_open, ("simultaneous-open.pcap", "simultaneous-open.truth.json")),
    (simultaneous_close, ("simultaneous-close.pcap", "simultaneous-close.truth.json")),
    (keepalive_dead, ("keepalive-dead.pcap", "keepalive-dead.truth.json")),
    (synack_dropped_client, ("synack-dropped-client.pcap", "synack-dropped-client.truth.json")),
    (synack_dropped_router, ("synack-dropped-router.pcap", "synack-dropped-router.truth.json")),
    (echo_rst, ("echo-rst.pcap", "echo-rst.truth.json")),
]
