"""Scenario captures for the findings across connections (imported by scripts/make-pcaps).

accept-overflow.pcap   listen(1), the application does not accept() for a few seconds while
                       6 clients connect at once and send a request: the accept queue overflows
accept-abort.pcap      the same with net.ipv4.tcp_abort_on_overflow=1: RST instead
accept-healthy.pcap    the same clients, a listener (backlog 128) that accepts at once

churn.pcap             30 requests, one per connection, connections opened one after the other
                       (the client closes each): no keep-alive, no pooling
churn-pooled.pcap      the same 30 requests on one kept-alive connection
ports-narrow.pcap      as churn.pcap, but the client's net.ipv4.ip_local_port_range holds 5
                       ports (net.ipv4.tcp_tw_reuse=1): connect() fails with EADDRNOTAVAIL
                       until a port's TIME-WAIT may be reused, and the 5 ports come back
keepalive-dead-many.pcap  3 connections to 3 ports of one server, keep-alive on, then the
                       router drops everything from the server: 3 keep-alive deaths, one peer
syn-storm.pcap         a half-open storm: 1,200 CRAFTED SYNs (raw socket) from 8 addresses of the
                       client's namespace at 400/s to a real kernel listener (listen(128),
                       tcp_syncookies=1, tcp_synack_retries=1); an nft rule in the client's
                       namespace drops the incoming SYN-ACKs to those 8 addresses, so the client's
                       kernel neither answers nor resets them and the server's kernel retransmits
                       its SYN-ACKs (once its SYN queue is full it answers with SYN cookies, which
                       it never retransmits); 5 real client sockets connect during the storm
port-reuse-tw.pcap     3 connections from one fixed source port (SO_REUSEADDR), the server
                       closes each first (so it holds TIME-WAIT), 0.3 s apart

client c0 (198.18.7.2) == r0 [relay: every frame held 20 ms] r1 == s0 server (198.18.7.3)
The relay's delay puts all six SYNs at the server before any handshake completes (on a bare
veth the first handshakes complete before the later SYNs leave, and those SYNs are dropped
at a full queue instead). Truth: kernel counters of the server's namespace (/proc/net/netstat
deltas), what accept()/recv() returned, and each client's TCP_INFO at a sample time while the
server does not accept (a request still unacknowledged then is one the server's kernel did not
take: the handshake's final ACK and the data were dropped).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

AGENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_agents_findings.py")
CLIENT, SERVER, PORT = "198.18.7.2", "198.18.7.3", 8080
CLIENTS = 6
HOLD = 4.0  # seconds the application does not call accept()
SAMPLE = 2.0  # seconds after connecting at which each client reads TCP_INFO
DELAY = 0.02  # relay delay, each way
COUNTERS = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesRecv", "TCPReqQFullDoCookies", "TCPReqQFullDrop", "TCPTimeouts")


def netstat(mp, ns: str) -> dict[str, int]:
    """TcpExt counters of a namespace (/proc/net/netstat)."""
    return mp.kernel_counters(ns)["TcpExt"]


def run_json(mp, ns: str, args: list, timeout: float):
    """Run an agent to the end in a namespace; its stdout is one JSON document."""
    argv = ["ip", "netns", "exec", ns, "python3", AGENTS, *map(str, args)]
    print(f"  $ [{ns}]", " ".join(map(str, args)), flush=True)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise mp.Fail(f"agent {args[0]} exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def accept_common(mp, lab, name: str, abort: bool, backlog: int, hold: float, clients_n: int = CLIENTS, stagger: float = 0.0, syncookies: int = 1) -> list[str]:
    """``clients_n`` clients ``stagger`` s apart against a listener of ``backlog`` that accepts after ``hold`` s."""
    cli, rtr, srv = mp.CLI, mp.RTR, mp.SRV
    out = os.path.join(lab.tmp, name)
    for n in (cli, rtr, srv):
        lab.netns(n)
    lab.veth(cli, "c0", rtr, "r0")
    lab.veth(rtr, "r1", srv, "s0")
    for i in ("r0", "r1"):
        lab.sysctl(rtr, f"net.ipv6.conf.{i}.disable_ipv6=1")
        mp.nsx(rtr, "ip", "link", "set", i, "promisc", "on")
    lab.addr(cli, "c0", CLIENT + "/24")
    lab.addr(srv, "s0", SERVER + "/24")
    lab.sysctl(srv, f"net.ipv4.tcp_abort_on_overflow={int(abort)}")
    lab.sysctl(srv, f"net.ipv4.tcp_syncookies={syncookies}")
    relay = lab.spawn(
        rtr,
        ["python3", AGENTS, "delay-relay", "--left", "r0", "--right", "r1", "--delay", str(DELAY), "--count", "100000", "--timeout", "40"],
        wait_for=("stdout", "ready"),
    )
    lab.neigh(cli, "c0", srv, "s0", [SERVER], [CLIENT])
    before = netstat(mp, srv)
    server = lab.spawn(
        srv,
        [
            "python3",
            AGENTS,
            "backlog-server",
            *map(str, ("--addr", SERVER, "--port", PORT, "--backlog", backlog, "--hold", hold, "--conns", clients_n, "--timeout", 25)),
        ],
        wait_for=("stdout", "ready"),
    )
    cap = lab.tcpdump(cli, "c0", out)
    clients = run_json(
        mp, cli, ["burst-clients", "--addr", SERVER, "--port", PORT, "--count", clients_n, "--stagger", stagger, "--sample", SAMPLE, "--timeout", 25], 60
    )
    accepts = len([c for c in clients if c.get("connect") == "ok" and c.get("error") is None])
    try:
        srv_out, srv_err = server.communicate(timeout=30)
    except subprocess.TimeoutExpired as e:
        raise mp.Fail("backlog-server did not finish") from e
    if abort and server.returncode != 0:  # (aborted connections are never accepted: it waits out its timeout)
        pass
    after = netstat(mp, srv)
    lab.end_capture(cap)
    lab.stop(relay)
    srv_lines = [x for x in srv_out.decode().splitlines() if x.startswith("{")]
    server_report = json.loads(srv_lines[-1]) if srv_lines else None
    deltas = {k: after.get(k, 0) - before.get(k, 0) for k in COUNTERS}
    if abort:
        overflowed = [c["client_port"] for c in clients if c.get("connect") == "ok" and c.get("error") == "ECONNRESET"]
    else:
        overflowed = [c["client_port"] for c in clients if c.get("connect") == "ok" and c.get("at_sample", {}).get("unacked", 0) > 0]
    truth = {
        "capture": name,
        "made_by": "scripts/scenarios_findings.py (real kernel TCP in namespaces, captured on the client's interface)",
        "listener": {"ip": SERVER, "port": PORT, "backlog": backlog},
        "application": f"does not call accept() for {hold:g} s after listen(), then accepts and answers every connection"
        if hold
        else "accepts and answers every connection at once",
        "path": f"L2 relay holding every frame {DELAY * 1000:g} ms each way (all SYNs reach the server before any handshake completes)",
        "sysctls_server": {"net.ipv4.tcp_abort_on_overflow": int(abort), "net.ipv4.tcp_syncookies": syncookies},
        "clients": clients_n,
        "clients_stagger_s": stagger,
        "client_sample_s": SAMPLE,
        "kernel_counters_server": deltas,
        "client_results": sorted(clients, key=lambda c: c.get("client_port", 0)),
        "server": server_report,
        "overflowed_client_ports": sorted(overflowed),
        "overflowed": len(overflowed),
        "overflowed_means": "connect() succeeded and the server's kernel dropped the handshake's final ACK: "
        + ("recv() then failed with ECONNRESET (RST from the server)" if abort else "the request was still unacknowledged at the sample time"),
    }
    with open(os.path.join(lab.tmp, name.replace(".pcap", ".truth.json")), "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    mp.say(f"  truth: {accepts} clients completed, overflowed {len(overflowed)}, counters {deltas}")
    if hold and not overflowed:
        raise mp.Fail("no client overflowed the accept queue")
    if not hold and (overflowed or deltas["ListenOverflows"]):
        raise mp.Fail(f"the healthy listener overflowed: {deltas}")
    return [name, name.replace(".pcap", ".truth.json")]


LOOP_COUNTERS = ("TW", "TWRecycled", "TWKilled", "PAWSEstab", "TCPTimeWaitOverflow", "TCPChallengeACK")
LOOP_PORT = 8081


def loop_common(mp, lab, name: str, count: int, per_conn: int, close: str, port_range: str = "", bind_port: int = 0, gap: float = 0.0) -> list[str]:
    """A client that makes ``count`` requests, ``per_conn`` per connection, one connection after
    the other, to a server on mp.S4 (client, router, server of make-pcaps)."""
    out = os.path.join(lab.tmp, name)
    lab.three(v6=False)
    sysctls = {}
    if port_range:
        sysctls = {"net.ipv4.ip_local_port_range": port_range, "net.ipv4.tcp_tw_reuse": 1}
        lab.sysctl(mp.CLI, f"net.ipv4.ip_local_port_range={port_range}", "net.ipv4.tcp_tw_reuse=1")
    before = {ns: netstat(mp, ns) for ns in (mp.CLI, mp.SRV)}
    server = lab.spawn(
        mp.SRV,
        ["python3", AGENTS, "loop-server", *map(str, ("--addr", mp.S4, "--port", LOOP_PORT, "--count", count, "--close", close, "--timeout", 30))],
        wait_for=("stdout", "ready"),
    )
    cap = lab.tcpdump(mp.CLI, "c0", out)
    args = ["loop-client", "--addr", mp.S4, "--port", LOOP_PORT, "--count", count, "--per-conn", per_conn, "--close", close, "--timeout", 30]
    if bind_port:
        args += ["--bind-port", bind_port]
    if gap:
        args += ["--gap", gap]
    client = run_json(mp, mp.CLI, args, 60)
    try:
        srv_out, _ = server.communicate(timeout=35)
    except subprocess.TimeoutExpired as e:
        raise mp.Fail("loop-server did not finish") from e
    lab.end_capture(cap)
    after = {ns: netstat(mp, ns) for ns in (mp.CLI, mp.SRV)}
    srv_lines = [x for x in srv_out.decode().splitlines() if x.startswith("{")]
    deltas = {who: {k: after[ns].get(k, 0) - before[ns].get(k, 0) for k in LOOP_COUNTERS} for who, ns in (("client", mp.CLI), ("server", mp.SRV))}
    conns = client["per_connection"]
    truth = {
        "capture": name,
        "made_by": "scripts/scenarios_findings.py (real kernel TCP in namespaces, captured on the client's interface c0)",
        "client": {"ip": mp.C4},
        "server": {"ip": mp.S4, "port": LOOP_PORT},
        "workload": {"requests": count, "requests_per_connection": per_conn, "closes_first": close, "fixed_source_port": bind_port or None, "gap_s": gap},
        "sysctls_client": sysctls,
        "client_report": client,
        "server_report": json.loads(srv_lines[-1]) if srv_lines else None,
        "kernel_counters": deltas,
        "connections": len(conns),
        "requests": client["requests"],
        "eaddrnotavail": client["connect_errors"].get("EADDRNOTAVAIL", 0),
        "distinct_client_ports": client["distinct_local_ports"],
        "closed_first": sorted({str(c["closed_first"]) for c in conns if "closed_first" in c}),
        "closed_first_means": "the client saw EOF before closing (server mode only); who held TIME-WAIT: kernel_counters TW",
    }
    with open(os.path.join(lab.tmp, name.replace(".pcap", ".truth.json")), "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    mp.say(f"  truth: {len(conns)} connections, {client['requests']} requests, errors {client['connect_errors']}, counters {deltas}")
    if client["requests"] != count:
        raise mp.Fail(f"only {client['requests']} of {count} requests answered")
    return [name, name.replace(".pcap", ".truth.json")]


TCPSM_AGENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_agents_tcpsm.py")
DEAD_PORTS = (7000, 7001, 7002)
DEAD_COUNTERS = ("TCPKeepAlive", "TCPAbortOnTimeout")


def keepalive_dead_many(mp, lab, name: str) -> list[str]:
    """Three connections to three services of one server, each with keep-alive (idle/intvl/cnt
    1/1/3), one exchange each; then the router drops everything from the server."""
    out = os.path.join(lab.tmp, name)
    lab.three(v6=False)
    servers = [
        lab.spawn(mp.SRV, ["python3", TCPSM_AGENTS, "listen", "--local", f"{mp.S4}:{port}", "--then", "hold", "--timeout", "20"], wait_for=("stdout", "ready"))
        for port in DEAD_PORTS
    ]
    cap = lab.tcpdump(mp.CLI, "c0", out)
    before = netstat(mp, mp.CLI)
    ka = ["--keepidle", "1", "--keepintvl", "1", "--keepcnt", "3"]
    clients = []
    for port in DEAD_PORTS:
        argv = ["python3", TCPSM_AGENTS, "dial", "--remote", f"{mp.S4}:{port}", "--then", "keepalive", *ka, "--timeout", "20"]
        clients.append(lab.spawn(mp.CLI, argv, wait_for=("stdout", "ready")))
    rule = f"ip saddr {mp.S4} drop"
    lab.nft(mp.RTR, "table inet fd {\n chain f {\n  type filter hook forward priority 0;\n  " + rule + "\n }\n}\n")
    results = []
    for p in clients:
        try:
            stdout, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired as e:
            raise mp.Fail("a keep-alive client did not finish") from e
        lines = [x for x in (p.early.get("stdout", b"") + stdout).decode().splitlines() if x.startswith("{")]
        results.append(json.loads(lines[-1]) if lines else {})
    after = netstat(mp, mp.CLI)
    lab.end_capture(cap)
    for p in servers:
        lab.stop(p)
    truth = {
        "capture": name,
        "made_by": "scripts/scenarios_findings.py (real kernel TCP in namespaces, captured on the client's interface c0)",
        "peer": {"ip": mp.S4, "ports": list(DEAD_PORTS)},
        "client": {"ip": mp.C4},
        "done": {
            "client_sockets": {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 1, "TCP_KEEPINTVL": 1, "TCP_KEEPCNT": 3},
            "nft": {"namespace": "router", "hook": "forward", "rule": rule, "added": "after every client's exchange"},
            "server": "alive and idle, never closes; its packets are dropped at the router",
        },
        "client_results": results,
        "died": sum(r.get("errno") == "ETIMEDOUT" for r in results),
        "kernel_counters_client": {k: after.get(k, 0) - before.get(k, 0) for k in DEAD_COUNTERS},
    }
    with open(os.path.join(lab.tmp, name.replace(".pcap", ".truth.json")), "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    mp.say(f"  truth: {truth['died']} connections died, counters {truth['kernel_counters_client']}")
    if truth["died"] != len(DEAD_PORTS):
        raise mp.Fail(f"expected every client to get ETIMEDOUT: {results}")
    return [name, name.replace(".pcap", ".truth.json")]


STORM_PORT = 8443
STORM_SYNS = 1200  # the syn-flood finding needs 1,000 half-open attempts, 100 in one second
STORM_RATE = 400.0  # SYNs per second
STORM_SOURCES = tuple(f"198.18.7.{100 + i}" for i in range(8))
STORM_BACKLOG = 128
STORM_SYNACK_RETRIES = 1  # SYN-ACK at +0 and +1 s, request dropped at about +3 s: a small capture
STORM_REAL = 5  # real client connections during the storm, 0.5 s apart
STORM_LINGER = 7.0  # s the listener stays open after the last real client: past the last request's expiry
STORM_COUNTERS = (
    "ListenDrops",
    "ListenOverflows",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
    "TCPSynRetrans",
    "EmbryonicRsts",
)


def syn_storm(mp, lab, name: str) -> list[str]:
    """CRAFTED SYNs from 8 addresses of the client's namespace to a real kernel listener, the
    SYN-ACKs dropped by nft on the client's input, and a few real connections during it."""
    cli, srv = mp.CLI, mp.SRV
    out = os.path.join(lab.tmp, name)
    for n in (cli, srv):
        lab.netns(n)
    lab.veth(cli, "c0", srv, "s0")
    lab.addr(cli, "c0", CLIENT + "/24", *(a + "/24" for a in STORM_SOURCES))
    lab.addr(srv, "s0", SERVER + "/24")
    lab.neigh(cli, "c0", srv, "s0", [SERVER], [CLIENT, *STORM_SOURCES])
    sysctls = {"net.ipv4.tcp_syncookies": 1, "net.ipv4.tcp_synack_retries": STORM_SYNACK_RETRIES, "net.ipv4.tcp_max_syn_backlog": 4096}
    lab.sysctl(srv, *(f"{k}={v}" for k, v in sysctls.items()))
    somaxconn = int(mp.nsx(srv, "sysctl", "-n", "net.core.somaxconn", quiet=True).stdout.strip())
    rule = "ip daddr { " + ", ".join(STORM_SOURCES) + " } tcp flags & (syn | ack) == syn | ack counter drop"
    lab.nft(cli, "table inet storm {\n chain in {\n  type filter hook input priority 0;\n  " + rule + "\n }\n}\n")
    server = lab.spawn(
        srv,
        [
            "python3",
            AGENTS,
            "backlog-server",
            *map(str, ("--addr", SERVER, "--port", STORM_PORT, "--backlog", STORM_BACKLOG, "--conns", STORM_REAL, "--linger", STORM_LINGER, "--timeout", 25)),
        ],
        wait_for=("stdout", "ready"),
    )
    before = netstat(mp, srv)
    cap = lab.tcpdump(cli, "c0", out)
    storm = run_json(
        mp,
        cli,
        [
            "syn-storm",
            *("--addr", SERVER, "--port", STORM_PORT, "--sources", ",".join(STORM_SOURCES), "--count", STORM_SYNS),
            *("--rate", STORM_RATE, "--real", STORM_REAL, "--real-every", 0.5, "--timeout", 20),
        ],
        60,
    )
    try:
        srv_out, _ = server.communicate(timeout=40)
    except subprocess.TimeoutExpired as e:
        raise mp.Fail("backlog-server did not finish") from e
    after = netstat(mp, srv)
    lab.end_capture(cap)
    listing = mp.nsx(cli, "nft", "list", "table", "inet", "storm", quiet=True).stdout
    m = re.search(r"packets (\d+)", listing)
    srv_lines = [x for x in srv_out.decode().splitlines() if x.startswith("{")]
    deltas = {k: after.get(k, 0) - before.get(k, 0) for k in STORM_COUNTERS}
    real = storm["real_clients"]
    truth = {
        "capture": name,
        "made_by": "scripts/scenarios_findings.py: the SYNs of the storm are CRAFTED (raw socket, IP_HDRINCL, in the client's "
        "namespace); the listener, its SYN-ACKs, retransmissions and SYN cookies and the 5 real clients are real kernel TCP; "
        "captured on the client's interface c0",
        "crafted": {
            "what": "client SYNs of the storm (IPv4, MSS 1460, window 64240, no other option), never answered: nothing in the client namespace owns them",
            "syns_sent": storm["syns_sent"],
            "sources": list(STORM_SOURCES),
            "per_source": storm["per_source"],
            "source_ports": storm["source_ports"],
            "rate_per_s": STORM_RATE,
            "duration_s": storm["duration_s"],
        },
        "listener": {"ip": SERVER, "port": STORM_PORT, "backlog": STORM_BACKLOG, "somaxconn": somaxconn},
        "sysctls_server": sysctls,
        "nft_client": {"hook": "input", "rule": rule, "dropped": int(m.group(1)) if m else None},
        "kernel_counters_server": deltas,
        "real_client": {"ip": CLIENT, "results": real},
        "real_connected": sum(r.get("connect") == "ok" and r.get("error") is None for r in real),
        "server": json.loads(srv_lines[-1]) if srv_lines else None,
        "expect": {
            "attempts": storm["syns_sent"] + len(real),
            "half_open": storm["syns_sent"],
            "distinct_sources": len(STORM_SOURCES) + 1,
            "synack_never_retransmitted": "the SYN-cookie answers: kernel_counters_server.SyncookiesSent, less those "
            "to the real clients (SyncookiesRecv: cookies that came back and completed)",
        },
    }
    with open(os.path.join(lab.tmp, name.replace(".pcap", ".truth.json")), "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    mp.say(f"  truth: {storm['syns_sent']} crafted SYNs, real clients connected {truth['real_connected']}/{len(real)}, counters {deltas}")
    if storm["syns_sent"] != STORM_SYNS:
        raise mp.Fail(f"only {storm['syns_sent']} of {STORM_SYNS} SYNs sent")
    if not deltas["SyncookiesSent"] or not deltas["TCPSynRetrans"]:
        raise mp.Fail(f"expected both SYN cookies and SYN-ACK retransmissions: {deltas}")
    return [name, name.replace(".pcap", ".truth.json")]


def register(mp, order: list) -> None:
    """Add the scenarios to make-pcaps' table (``mp``: the make-pcaps module)."""

    @mp.scenario("accept-overflow.pcap", "accept-overflow.truth.json")
    def accept_overflow(lab):
        return accept_common(mp, lab, "accept-overflow.pcap", abort=False, backlog=1, hold=HOLD)

    @mp.scenario("accept-abort.pcap", "accept-abort.truth.json")
    def accept_abort(lab):
        # request sockets (no SYN cookies) are what tcp_abort_on_overflow resets: clients 8 ms
        # apart put SYNs in the SYN queue while the accept queue fills (a listen(1) holds 2 of each)
        return accept_common(mp, lab, "accept-abort.pcap", abort=True, backlog=4, hold=HOLD, clients_n=10, stagger=0.008, syncookies=0)

    @mp.scenario("accept-healthy.pcap", "accept-healthy.truth.json")
    def accept_healthy(lab):
        return accept_common(mp, lab, "accept-healthy.pcap", abort=False, backlog=128, hold=0.0)

    @mp.scenario("churn.pcap", "churn.truth.json")
    def churn(lab):
        return loop_common(mp, lab, "churn.pcap", count=30, per_conn=1, close="client")

    @mp.scenario("churn-pooled.pcap", "churn-pooled.truth.json")
    def churn_pooled(lab):
        return loop_common(mp, lab, "churn-pooled.pcap", count=30, per_conn=30, close="client")

    @mp.scenario("ports-narrow.pcap", "ports-narrow.truth.json")
    def ports_narrow(lab):
        return loop_common(mp, lab, "ports-narrow.pcap", count=30, per_conn=1, close="client", port_range="40000 40004")

    @mp.scenario("port-reuse-tw.pcap", "port-reuse-tw.truth.json")
    def port_reuse_tw(lab):
        return loop_common(mp, lab, "port-reuse-tw.pcap", count=3, per_conn=1, close="server", bind_port=40000, gap=0.3)

    @mp.scenario("keepalive-dead-many.pcap", "keepalive-dead-many.truth.json")
    def keepalive_dead_many_(lab):
        return keepalive_dead_many(mp, lab, "keepalive-dead-many.pcap")

    @mp.scenario("syn-storm.pcap", "syn-storm.truth.json")
    def syn_storm_(lab):
        return syn_storm(mp, lab, "syn-storm.pcap")

    order.append("syn-storm")
    order.extend(["keepalive-dead-many", "accept-overflow", "accept-abort", "accept-healthy", "churn", "churn-pooled", "ports-narrow", "port-reuse-tw"])
