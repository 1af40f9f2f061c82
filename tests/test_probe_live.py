"""``synscope probe`` against a lab of network namespaces the tests build (root; CI runs these).

The lab (synscope.lab.demo.build_lab): client 198.18.1.2 — router — server 198.18.2.2
(and 2001:db8::/32). The server listens on 8080, has nothing on 9090, drops
tcp/8443 silently; the router rejects tcp/8444 with ICMP admin-prohibited.
synscope runs inside the client namespace, as ``python3 -m synscope probe``.
Packets go only to addresses inside these namespaces (or their loopback).
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synscope.core.exit_codes import ExitCode
from synscope.lab import sandbox
from synscope.lab.demo import CLOSED_PORT, DROPPED_PORT, OPEN_PORT, REJECTED_PORT, start_server
from tests.livelib import lab_in_sandbox

pytestmark = pytest.mark.live

# Short waits keep the suite quick; the backoff doubling is still visible (0.2 s, 0.4 s, 0.8 s)
FAST = ["--timeout", "0.2", "--retries", "2"]


@pytest.fixture(scope="module")
def lab():
    yield from lab_in_sandbox("sst")


def synscope(lab, *args: str, ns: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return lab.sb.run(ns or lab.topo.client, [sys.executable, "-m", "synscope", "probe", *args], check=False, timeout=timeout)


def json_lines(proc: subprocess.CompletedProcess[str]) -> dict[int, dict]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return {o["port"]: o for o in map(json.loads, proc.stdout.splitlines())}


@pytest.fixture(scope="module")
def four_ports(lab, tmp_path_factory):
    """One IPv4 probe of the four lab ports, JSON and a pcap: shared by several tests."""
    pcap = tmp_path_factory.mktemp("probe") / "four.pcap"
    ports = f"{OPEN_PORT},{CLOSED_PORT},{DROPPED_PORT},{REJECTED_PORT}"
    proc = synscope(lab, lab.topo.server_ip, "-p", ports, *FAST, "--json", "-w", str(pcap))
    return proc, json_lines(proc), pcap


def test_open_port(lab, four_ports) -> None:
    proc, objs, _ = four_ports
    o = objs[OPEN_PORT]
    assert (o["host"], o["port"], o["state"], o["reason"], o["from"]) == (lab.topo.server_ip, OPEN_PORT, "open", "syn-ack", lab.topo.server_ip)
    assert 0 < o["rtt"] < 0.05
    assert o["tries"] == 1
    assert o["ttl"] == 63 and o["hops"] == 1  # one router on the way back
    assert o["options"].startswith("mss 1460 sack ts ws")
    assert o["server"]["mss"] == 1460 and o["server"]["sack"] and o["server"]["timestamps"] and o["server"]["isn"] is not None
    flags = [p["flags"] for p in o["packets"]]
    assert flags[:2] == ["S", "SA"] and sorted(flags[2:]) == ["R", "RA"]  # the kernel's RST and ours
    notes = " | ".join(p["note"] or "" for p in o["packets"])
    assert "RST from the local kernel" in notes and "RST from synscope" in notes
    assert o["connections"][0]["outcome"] == "open"


def test_open_port_leaves_nothing_half_open(lab, four_ports) -> None:
    out = lab.sb.run(lab.topo.server, ["ss", "-Htn", "state", "syn-recv"]).stdout
    assert out.strip() == ""


def test_closed_port(lab, four_ports) -> None:
    _, objs, _ = four_ports
    o = objs[CLOSED_PORT]
    assert (o["state"], o["reason"], o["from"], o["tries"], o["ttl"]) == ("closed", "reset", lab.topo.server_ip, 1, 63)
    assert 0 < o["rtt"] < 0.05
    assert [p["flags"] for p in o["packets"]] == ["S", "RA"]
    assert o["connections"][0]["state"] == "REJ"


def test_dropped_port_is_retried_with_backoff(lab, four_ports) -> None:
    _, objs, _ = four_ports
    o = objs[DROPPED_PORT]
    assert (o["state"], o["reason"], o["from"], o["rtt"], o["ttl"], o["tries"]) == ("filtered", "no-response", None, None, None, 3)
    assert o["waits"] == [0.2, 0.4, 0.8]
    times = [p["t"] for p in o["packets"]]
    assert [p["flags"] for p in o["packets"]] == ["S", "S", "S"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] == pytest.approx(0.2, abs=0.08) and gaps[1] == pytest.approx(0.4, abs=0.08)
    conn = o["connections"][0]
    assert conn["outcome"] == "no-answer" and conn["syn_retransmissions"] == 2


def test_router_rejects_with_admin_prohibited(lab, four_ports) -> None:
    _, objs, _ = four_ports
    o = objs[REJECTED_PORT]
    assert (o["state"], o["reason"], o["from"], o["tries"], o["ttl"]) == ("filtered", "admin-prohibited", lab.topo.router_client_ip, 1, 64)
    assert o["icmp"] == {"version": 4, "type": 3, "code": 13, "name": "admin-prohibited", "from": lab.topo.router_client_ip}
    assert 0 < o["rtt"] < 0.05
    assert o["connections"][0]["icmp"][0]["from"] == lab.topo.router_client_ip


def test_exit_code_filtered_wins(four_ports) -> None:
    proc, _, _ = four_ports
    assert proc.returncode == ExitCode.FILTERED


def test_pcap_is_complete_and_readable(lab, four_ports) -> None:
    _, objs, pcap = four_ports
    frames = {p["frame"] for o in objs.values() for p in o["packets"]}
    icmp = {c["frame"] for o in objs.values() for conn in o["connections"] for c in conn["icmp"]}
    read = subprocess.run([sys.executable, "-m", "synscope", "read", str(pcap), "--json"], capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    conns = [json.loads(line) for line in read.stdout.splitlines()]
    assert {c["server"]["port"] for c in conns} == {OPEN_PORT, CLOSED_PORT, DROPPED_PORT, REJECTED_PORT}
    assert {p["frame"] for c in conns for p in c["packets"]} == frames  # frame numbers are the file's
    if shutil.which("tshark"):

        def numbers(*display_filter: str) -> set[int]:
            ts = subprocess.run(["tshark", "-r", str(pcap), *display_filter, "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, timeout=60)
            assert ts.returncode == 0, ts.stderr
            return {int(x) for x in ts.stdout.split()}

        assert frames | icmp <= numbers()
        # every TCP segment in the file is one the probe reports; an ICMP error it does not report
        # can be a late one about an earlier test's traffic in the shared lab (the capture takes
        # every ICMP error, as a router's may quote a rewritten packet)
        assert numbers("-Y", "not icmp and not icmpv6") == frames


def test_text_output(lab) -> None:
    proc = synscope(lab, lab.topo.server_ip, "-p", f"{OPEN_PORT},{CLOSED_PORT},{REJECTED_PORT}", *FAST)
    assert proc.returncode == ExitCode.FILTERED
    out = proc.stdout
    assert "port  state     reason            from        rtt" in out
    assert f" {REJECTED_PORT}  filtered  admin-prohibited  {lab.topo.router_client_ip}" in out
    assert "ICMP 3/13 from a router one hop out" in out
    assert "refused (REJ, history Sr)" in out  # the timeline of the closed port, as `read` prints it
    assert f"→ {lab.topo.server_ip}:{OPEN_PORT}" not in out  # open ports: no timeline without --all


@pytest.mark.parametrize(("port", "code"), [(OPEN_PORT, ExitCode.OK), (CLOSED_PORT, ExitCode.CLOSED)])
def test_exit_codes(lab, port: int, code: ExitCode) -> None:
    proc = synscope(lab, lab.topo.server_ip, "-p", str(port), *FAST)
    assert proc.returncode == code, proc.stdout + proc.stderr


def test_ipv6_open_and_closed(lab) -> None:
    proc = synscope(lab, lab.topo.server_ip6, "-p", f"{OPEN_PORT},{CLOSED_PORT}", *FAST, "--json")
    objs = json_lines(proc)
    assert proc.returncode == ExitCode.CLOSED
    assert (objs[OPEN_PORT]["state"], objs[OPEN_PORT]["from"], objs[OPEN_PORT]["ttl"]) == ("open", lab.topo.server_ip6, 63)
    assert objs[OPEN_PORT]["server"]["mss"] == 1440
    assert (objs[CLOSED_PORT]["state"], objs[CLOSED_PORT]["reason"]) == ("closed", "reset")
    assert objs[OPEN_PORT]["address"] == lab.topo.server_ip6


def test_ipv6_rejected_by_router(lab) -> None:
    proc = synscope(lab, lab.topo.server_ip6, "-p", str(REJECTED_PORT), *FAST, "--json")
    o = json_lines(proc)[REJECTED_PORT]
    assert (o["state"], o["reason"], o["from"]) == ("filtered", "admin-prohibited", lab.topo.router_client_ip6)
    assert o["icmp"]["version"] == 6 and (o["icmp"]["type"], o["icmp"]["code"]) == (1, 1)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_loopback_sees_each_packet_once(lab, address: str) -> None:
    if "loopback_server" not in lab.__dict__:
        lab.loopback_server = start_server(lab.sb, lab.topo.client, [7000])
    proc = synscope(lab, address, "-p", "7000,7001", *FAST, "--json")
    objs = json_lines(proc)
    assert proc.returncode == ExitCode.CLOSED
    op, cl = objs[7000], objs[7001]
    assert op["state"] == "open" and op["interface"] == "lo"
    assert [p["flags"] for p in op["packets"]][:2] == ["S", "SA"]
    assert sorted(p["flags"] for p in op["packets"][2:]) == ["R", "RA"]
    assert [p["flags"] for p in cl["packets"]] == ["S", "RA"]
    frames = [p["frame"] for o in objs.values() for p in o["packets"]]
    assert len(frames) == len(set(frames)) == 6
    assert 0 < op["rtt"] < 0.01 and 0 < cl["rtt"] < 0.01


def test_hostname_is_resolved(lab) -> None:
    if "loopback_server" not in lab.__dict__:
        lab.loopback_server = start_server(lab.sb, lab.topo.client, [7000])
    proc = synscope(lab, "localhost", "-4", "-p", "7000", *FAST, "--json")
    o = json_lines(proc)[7000]
    assert proc.returncode == ExitCode.OK
    assert (o["host"], o["address"], o["state"]) == ("localhost", "127.0.0.1", "open")


def test_subnet_broadcast_is_refused(lab) -> None:
    proc = synscope(lab, "198.18.1.255")  # the client's own subnet broadcast: the kernel's route says so
    assert proc.returncode == ExitCode.USAGE
    assert "refusing to probe 198.18.1.255" in proc.stderr


def test_connect_with_data_and_teardown(lab) -> None:
    proc = synscope(lab, "--connect", lab.topo.server_ip, "-p", str(OPEN_PORT), "--send", r"GET / HTTP/1.0\r\n\r\n", "--json")
    assert proc.returncode == ExitCode.OK, proc.stderr
    o = json.loads(proc.stdout)
    assert (o["kind"], o["state"], o["reason"], o["sent"]) == ("connect", "open", "syn-ack", 18)
    assert o["received"] > 0 and o["answer"].startswith("HTTP/1.0 200 OK")
    assert o["server_closed_first"] is True and o["time_wait"] == "server"
    assert (o["client_state"], o["server_state"]) == ("CLOSED", "TIME-WAIT")
    flags = [p["flags"] for p in o["packets"]]
    assert flags[:3] == ["S", "SA", "A"] and flags.count("FA") == 2 and flags[-1] == "A"
    assert o["connections"][0]["state"] == "SF"
    assert 0 < o["rtt"] < 0.05


def test_connect_client_closes_first_text(lab) -> None:
    # no request: the lab server waits, synscope half-closes first and ends in TIME-WAIT itself
    proc = synscope(lab, "--connect", lab.topo.server_ip, "-p", str(OPEN_PORT))
    assert proc.returncode == ExitCode.OK
    assert "connected: SYN-ACK" in proc.stdout
    assert "the client ends in TIME-WAIT" in proc.stdout
    assert "End states: client TIME-WAIT, server CLOSED" in proc.stdout


@pytest.mark.parametrize(
    ("port", "code", "reason", "sender"),
    [
        (CLOSED_PORT, ExitCode.CLOSED, "reset", "server_ip"),
        (REJECTED_PORT, ExitCode.FILTERED, "admin-prohibited", "router_client_ip"),
        (DROPPED_PORT, ExitCode.FILTERED, "no-response", None),
    ],
)
def test_connect_failures_are_explained(lab, port: int, code: ExitCode, reason: str, sender: str | None) -> None:
    proc = synscope(lab, "--connect", lab.topo.server_ip, "-p", str(port), "--timeout", "0.3", "--retries", "1", "--json")
    assert proc.returncode == code, proc.stdout + proc.stderr
    o = json.loads(proc.stdout)
    assert o["reason"] == reason
    assert o["from"] == (getattr(lab.topo, sender) if sender else None)
    assert o["connections"] and o["packets"][0]["flags"] == "S"
    assert o["error"]


def test_count_gives_rtt_statistics(lab) -> None:
    proc = synscope(lab, lab.topo.server_ip, "-p", str(OPEN_PORT), "--count", "4", "--rate", "200", *FAST)
    assert proc.returncode == ExitCode.OK
    assert "4 probes sent, 4 answered, 0% unanswered" in proc.stdout
    assert "round-trip min/avg/max/stddev = " in proc.stdout
    proc = synscope(lab, lab.topo.server_ip, "-p", str(OPEN_PORT), "--count", "3", *FAST, "--json")
    o = json_lines(proc)[OPEN_PORT]
    assert o["rtt_stats"]["sent"] == 3 and o["rtt_stats"]["answered"] == 3
    assert o["rtt_stats"]["min"] <= o["rtt_stats"]["avg"] <= o["rtt_stats"]["max"]
    assert len({r["sport"] for r in o["rounds"]}) == 3 and len(o["connections"]) == 3


def test_syn_variants(lab) -> None:
    proc = synscope(lab, lab.topo.server_ip, "-p", str(OPEN_PORT), "--no-options", *FAST, "--json")
    o = json_lines(proc)[OPEN_PORT]
    assert o["state"] == "open" and o["packets"][0]["options"] == ""
    # a server only offers window scaling, SACK and timestamps when the SYN did
    assert (o["server"]["wscale"], o["server"]["sack"], o["server"]["timestamps"]) == (None, False, False)
    proc = synscope(lab, lab.topo.server_ip, "-p", str(OPEN_PORT), "--mss", "1200", "--sport", "45000", "--ecn", *FAST, "--json")
    o = json_lines(proc)[OPEN_PORT]
    assert o["packets"][0]["options"].startswith("mss 1200 ")
    assert o["rounds"][0]["sport"] == 45000 and o["connections"][0]["client"]["port"] == 45000
    assert o["server"]["ecn"] is True  # Linux answers an ECN-setup SYN with ECE


def test_rate_limit_spaces_the_probes(lab) -> None:
    proc = synscope(lab, lab.topo.server_ip, "-p", "9000-9009", "--rate", "20", *FAST, "--json")
    objs = json_lines(proc)
    sends = sorted(o["packets"][0]["t"] for o in objs.values())
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    # never two probes within 1/rate (50 ms); ten of them take at least 9 gaps
    assert min(gaps) > 0.045 and 0.44 < sends[-1] - sends[0] < 1.0


def test_sweep_of_many_ports(lab) -> None:
    proc = synscope(lab, lab.topo.server_ip, "-p", "8000-8999", "--rate", "0", "--timeout", "0.2", "--retries", "1")
    assert proc.returncode == ExitCode.FILTERED
    out = proc.stdout
    assert f" {OPEN_PORT}  open" in out and f" {DROPPED_PORT}  filtered  no-response" in out
    assert "Not shown: 997 closed (reset)" in out
    assert "1 open, 997 closed, 2 filtered" in out


def test_rtt_matches_tcpdump_within_10us(lab, tmp_path: Path) -> None:
    if not shutil.which("tcpdump") or not shutil.which("tshark"):
        pytest.skip("tcpdump and tshark are needed")
    pcap = tmp_path / "tcpdump.pcap"
    dump = lab.sb.spawn(
        lab.topo.client,
        ["tcpdump", "-i", lab.topo.client_if, "-w", str(pcap), "--time-stamp-precision=nano", "--immediate-mode", "-U", "tcp port 8080"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not pcap.exists() and time.monotonic() < deadline:  # tcpdump creates the file once it listens
            time.sleep(0.05)
        time.sleep(0.2)
        proc = synscope(lab, lab.topo.server_ip, "-p", str(OPEN_PORT), "--count", "3", *FAST, "--json")
        deadline = time.monotonic() + 10
        while _pcap_records(pcap) < 12 and time.monotonic() < deadline:  # 3 x (SYN, SYN-ACK, 2 RSTs) written
            time.sleep(0.05)
    finally:
        lab.sb.stop(dump, signal.SIGINT)
    o = json_lines(proc)[OPEN_PORT]
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_epoch", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.flags.str"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    syn, synack = {}, {}
    for line in fields:
        t, sp, dp, fl = line.split("\t")
        if "S" in fl and "A" not in fl:
            syn[int(sp)] = float(t)
        elif "S" in fl and "A" in fl:
            synack[int(dp)] = float(t)
    for rd in o["rounds"]:
        ref = synack[rd["sport"]] - syn[rd["sport"]]
        assert rd["rtt_clock"] == "kernel"
        print(f"synscope rtt {rd['rtt'] * 1e6:.3f} µs, tcpdump {ref * 1e6:.3f} µs, diff {abs(rd['rtt'] - ref) * 1e9:.0f} ns")
        assert abs(rd["rtt"] - ref) < 10e-6, (rd["rtt"], ref)


def _pcap_records(path: Path) -> int:
    """Complete records in a pcap file that may still be growing."""
    data = path.read_bytes() if path.exists() else b""
    n, off = 0, 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        if off + 16 + incl > len(data):
            break
        n, off = n + 1, off + 16 + incl
    return n


def test_ctrl_c_stops_cleanly_and_the_pcap_stays_valid(lab, tmp_path: Path) -> None:
    pcap = tmp_path / "interrupted.pcap"
    proc = lab.sb.spawn(
        lab.topo.client,
        [sys.executable, "-m", "synscope", "probe", lab.topo.server_ip, "-p", f"{OPEN_PORT},{DROPPED_PORT}", "--timeout", "5", "-w", str(pcap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    # ip netns exec runs python in the same process (exec): the signal reaches synscope itself
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert "Traceback" not in err and "interrupted" in err
    assert f" {OPEN_PORT}  open" in out
    assert f" {DROPPED_PORT}  unknown  interrupted" in out  # not called filtered: the wait was cut short
    read = subprocess.run([sys.executable, "-m", "synscope", "read", str(pcap)], capture_output=True, text=True, timeout=60)
    assert read.returncode == 0 and "2 connections" in read.stdout


def test_no_route_and_interface_without_link(lab) -> None:
    proc = synscope(lab, "198.19.255.9", ns=lab.topo.router)  # the router has no default route
    assert proc.returncode == ExitCode.ERROR
    assert proc.stderr.startswith("synscope: no route to host 198.19.255.9") and proc.stderr.count("\n") == 1
    sb = sandbox.Sandbox(prefix="ssl")
    try:
        a, b = sb.namespace("a"), sb.namespace("b")
        sb.link(a, "x0", b, "y0")
        sb.address(a, "x0", "198.18.9.1/24")
        sb.run(b, ["ip", "link", "set", "y0", "down"])
        proc = sb.run(a, [sys.executable, "-m", "synscope", "probe", "198.18.9.2"], check=False)
        assert proc.returncode == ExitCode.ERROR
        assert "interface x0 is up but has no link" in proc.stderr
        sb.run(a, ["ip", "link", "set", "x0", "down"])
        proc = sb.run(a, [sys.executable, "-m", "synscope", "probe", "198.18.9.2"], check=False)
        assert proc.returncode == ExitCode.ERROR
        assert "no route to host" in proc.stderr and "x0" in proc.stderr
    finally:
        sb.close()


def test_no_privilege(lab) -> None:
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    argv = ["setpriv", "--bounding-set=-net_raw", sys.executable, "-m", "synscope", "probe", lab.topo.server_ip, "-p", str(OPEN_PORT)]
    proc = lab.sb.run(lab.topo.client, argv, check=False)
    assert proc.returncode == ExitCode.NO_PRIVILEGE
    assert "CAP_NET_RAW" in proc.stderr and "setcap" in proc.stderr and "Traceback" not in proc.stderr


def test_nothing_left_behind(lab) -> None:
    for ns in (lab.topo.client, lab.topo.server):
        assert lab.sb.run(ns, ["ss", "-Htn", "state", "syn-recv"]).stdout.strip() == ""
    # no firewall rule was added by synscope in the client namespace
    assert "table" not in lab.sb.run(lab.topo.client, ["nft", "list", "ruleset"]).stdout
