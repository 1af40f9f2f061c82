"""synscope watch on real traffic, in network namespaces these tests create (root; CI runs them).

One traffic run feeds most tests: in the client namespace, tcpdump and two
watchers (normal and --handshakes) capture c0 at the same time while a client
makes a graceful connection (IPv4 and IPv6), a refused one, one whose SYNs the
server's firewall drops and one the server resets mid-stream. Each watcher
must give every connection the outcome ``synscope read`` gives on tcpdump's
capture of the same packets, stream it before it is stopped, and leave a
complete pcap behind after SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from synscope.core.exit_codes import ExitCode
from synscope.lab import sandbox
from synscope.watch.watcher import kernel_filter
from tests.helpers import ROOT, cli
from tests.livelib import wait_line

pytestmark = pytest.mark.live

if sandbox.available() is not None:  # CI is root: there these tests run, never skip
    pytest.skip(f"live watch tests need root: {sandbox.available()}", allow_module_level=True)

# Bounded socket programs: every loop ends by count or deadline.
AGENT = r"""
import socket, struct, sys, threading, time
DEADLINE = time.monotonic() + 60
def family(a):
    return socket.AF_INET6 if ":" in a else socket.AF_INET
if sys.argv[1] == "server":           # server ADDR PORT:KIND ...   kinds: ok, rst, hold
    addr = sys.argv[2]
    def serve(port, kind):
        ls = socket.socket(family(addr), socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, port)); ls.listen(64); ls.settimeout(1)
        held = []
        while time.monotonic() < DEADLINE:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            c.settimeout(5)
            try:
                if kind == "hold":
                    held.append(c); continue
                c.recv(1000)
                if kind == "ok":                 # answer, close first
                    c.sendall(b"hello\n" * 50); c.close()
                else:                            # stream, then abort with RST
                    c.sendall(b"x" * 3000); time.sleep(0.05)
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
            except OSError:
                pass
    for spec in sys.argv[3:]:
        port, kind = spec.split(":")
        threading.Thread(target=serve, args=(int(port), kind), daemon=True).start()
    print("ready", flush=True)
    while time.monotonic() < DEADLINE:
        time.sleep(0.5)
else:                                  # client ADDR PORT SRC_PORT [HOLD_SECONDS]
    addr, port, sport = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if ":" in addr else "0.0.0.0", sport)); s.settimeout(8)
    try:
        s.connect((addr, port))
        if len(sys.argv) > 5:
            print("connected", flush=True); time.sleep(float(sys.argv[5]))
        s.sendall(b"GET\n")
        while s.recv(65536):
            pass
        print("ok", flush=True)
    except OSError as e:
        print("error", e, flush=True)
    s.close()
"""

PY = sys.executable
WATCH = [PY, "-m", "synscope", "watch"]
IDLE = "1.5"
# client source port → (server address attribute, server port, outcome read gives)
CASES = {
    41001: ("server_ip", 8080, "closed"),
    41002: ("server_ip", 9090, "refused"),
    41003: ("server_ip", 8443, "no-answer"),
    41004: ("server_ip", 8081, "reset-by-server"),
    41005: ("server_ip6", 8080, "closed"),
}


class Lines:
    """Lines of a pipe, each with the time it arrived, read by a thread."""

    def __init__(self, stream) -> None:
        self.items: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.items.append((time.monotonic(), line))

    def wait_for(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.items) >= n:
                return True
            time.sleep(0.05)
        return len(self.items) >= n

    def text(self) -> list[str]:
        return [line for _, line in self.items]


def write_agent(tmp: Path) -> str:
    path = tmp / "agent.py"
    path.write_text(AGENT)
    return str(path)


def pcap_count(path: str, display_filter: str | None = None) -> int:
    args = ["tshark", "-n", "-r", path]
    if display_filter:
        args += ["-Y", display_filter]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return len(proc.stdout.splitlines())


def read_json(path: str) -> list[dict]:
    proc = cli("read", "--json", path)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def by_client_port(objs: list[dict]) -> dict[int, str]:
    return {o["client"]["port"]: o["outcome"] for o in objs if o["client"]["port"] in CASES}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("watch")
    agent = write_agent(tmp)
    sb = sandbox.Sandbox(prefix="ssw")
    try:
        topo = sb.three_hosts()
        sb.sysctl(topo.client, "net.ipv4.tcp_syn_retries=1")  # the dropped connect gives up after ~3 s
        sb.nft(topo.server, "table inet watchtest {\n chain input {\n type filter hook input priority 0;\n tcp dport 8443 drop\n }\n}\n")
        srv = sb.spawn(topo.server, [PY, agent, "server", "::", "8080:ok", "8081:rst"], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        expr = kernel_filter()
        td_path, w_path, wh_path = str(tmp / "tcpdump.pcap"), str(tmp / "watch.pcap"), str(tmp / "watch-hs.pcap")
        td = sb.spawn(topo.client, ["tcpdump", "-n", "-U", "-i", topo.client_if, "-w", td_path, expr], stderr=subprocess.PIPE, text=True)
        wait_line(td.stderr, "listening on")
        common = ["-i", topo.client_if, "--json", "--idle-timeout", IDLE]
        w = sb.spawn(topo.client, [*WATCH, *common, "-w", w_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        wh = sb.spawn(topo.client, [*WATCH, *common, "--handshakes", "-w", wh_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for proc in (w, wh):
            wait_line(proc.stderr, "synscope: watching")
        lines = {"normal": Lines(w.stdout), "handshakes": Lines(wh.stdout)}
        t0 = time.monotonic()
        clients = [
            sb.spawn(topo.client, [PY, agent, "client", getattr(topo, attr), str(port), str(sport)], stdout=subprocess.PIPE, text=True)
            for sport, (attr, port, _) in CASES.items()
        ]
        client_out = [c.communicate(timeout=20)[0].strip() for c in clients]
        for mode in lines:
            lines[mode].wait_for(len(CASES), timeout=10)
        stopped_at = time.monotonic()
        for proc in (w, wh, td):
            proc.send_signal(signal.SIGTERM)
        result = {"client_out": client_out, "stopped_at": stopped_at, "traffic_s": stopped_at - t0, "lines": lines}
        for mode, proc in (("normal", w), ("handshakes", wh)):
            proc.wait(timeout=15)
            lines[mode].thread.join(5)
            result[mode] = {"rc": proc.returncode, "stderr": proc.stderr.read(), "objs": [json.loads(x) for x in lines[mode].text()]}
        td.wait(timeout=10)
        result["tcpdump_stderr"] = td.stderr.read()
        result.update(td_path=td_path, w_path=w_path, wh_path=wh_path)
        yield result
    finally:
        sb.close()


def test_scenarios_happened(traffic) -> None:
    assert traffic["client_out"][0] == "ok" and traffic["client_out"][4] == "ok"
    assert "refused" in traffic["client_out"][1]
    assert "timed out" in traffic["client_out"][2]
    assert "reset" in traffic["client_out"][3]


@pytest.mark.parametrize("mode", ["normal", "handshakes"])
def test_watch_outcomes_match_read_on_tcpdump_capture(traffic, mode: str) -> None:
    want = by_client_port(read_json(traffic["td_path"]))
    assert want == {sport: outcome for sport, (_, _, outcome) in CASES.items()}
    assert by_client_port(traffic[mode]["objs"]) == want


@pytest.mark.parametrize("mode", ["normal", "handshakes"])
def test_json_lines_stream_before_exit_and_sigterm_exits_cleanly(traffic, mode: str) -> None:
    result = traffic[mode]
    early = [line for t, line in traffic["lines"][mode].items if t < traffic["stopped_at"]]
    assert len(early) == len(CASES), "every connection must be printed while watch is still running"
    assert result["rc"] == ExitCode.OK
    assert "Traceback" not in result["stderr"]
    # --json: the summary goes to stderr, stdout stays JSON Lines
    assert f"{len(CASES)} finished" in result["stderr"] and "0 dropped by the kernel" in result["stderr"]
    assert "outcome" in result["stderr"]


def test_write_file_after_sigterm_has_every_packet(traffic) -> None:
    # tcpdump ran with the same kernel filter on the same interface
    n = pcap_count(traffic["td_path"])
    assert n > 20
    assert pcap_count(traffic["w_path"]) == n
    assert by_client_port(read_json(traffic["w_path"])) == by_client_port(read_json(traffic["td_path"]))


def test_handshakes_mode_keeps_only_syn_fin_rst(traffic) -> None:
    objs = traffic["handshakes"]["objs"]
    for o in objs:
        assert "handshakes mode" in o["verdict"]
        for p in o["packets"]:
            assert set(p["flags"]) & set("SFR"), p
            assert not {"lost_segment", "ack_lost_segment"} & set(p["analysis"])
    want = pcap_count(traffic["td_path"], "tcp.flags.syn == 1 or tcp.flags.fin == 1 or tcp.flags.reset == 1 or icmp or icmpv6")
    assert pcap_count(traffic["wh_path"]) == want
    assert "handshakes mode" in traffic["handshakes"]["stderr"]


# ------------------------------------------------------------------ one namespace, loopback


@pytest.fixture
def lo_ns(tmp_path):
    sb = sandbox.Sandbox(prefix="ssw")
    try:
        ns = sb.namespace("lo")
        yield sb, ns, write_agent(tmp_path), tmp_path
    finally:
        sb.close()


def test_loopback_each_packet_once(lo_ns) -> None:
    sb, ns, agent, tmp = lo_ns
    srv = sb.spawn(ns, [PY, agent, "server", "127.0.0.1", "8080:ok"], stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    td_path = str(tmp / "lo.pcap")
    td = sb.spawn(ns, ["tcpdump", "-n", "-U", "-i", "lo", "-w", td_path, "tcp port 8080"], stderr=subprocess.PIPE, text=True)
    wait_line(td.stderr, "listening on")
    w = sb.spawn(ns, [*WATCH, "-i", "lo", "--json", "--port", "8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_line(w.stderr, "synscope: watching")
    lines = Lines(w.stdout)
    client = sb.spawn(ns, [PY, agent, "client", "127.0.0.1", "8080", "41010"], stdout=subprocess.PIPE, text=True)
    assert client.communicate(timeout=20)[0].strip() == "ok"
    assert lines.wait_for(1, timeout=10)
    for proc in (w, td):
        sb.stop(proc)
    [obj] = [json.loads(x) for x in lines.text()]
    n = pcap_count(td_path)
    assert obj["outcome"] == "closed"
    assert len(obj["packets"]) == n  # tcpdump (libpcap) also shows each loopback packet once
    frames = [(p["dir"], p["flags"], p["seq"], p["ack"], p["len"]) for p in obj["packets"]]
    assert len(set(frames)) == len(frames)


def test_duration_stops_by_itself_and_prints_summary(lo_ns) -> None:
    sb, ns, agent, tmp = lo_ns
    t0 = time.monotonic()
    proc = sb.run(ns, [*WATCH, "-i", "lo", "--duration", "1"], timeout=20)
    assert time.monotonic() - t0 < 8
    assert proc.returncode == ExitCode.OK
    assert "watch lo:" in proc.stdout and "0 dropped by the kernel" in proc.stdout


def test_count_stops_by_itself_and_pcap_has_exactly_n(lo_ns) -> None:
    sb, ns, agent, tmp = lo_ns
    srv = sb.spawn(ns, [PY, agent, "server", "127.0.0.1", "8080:ok"], stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    path = str(tmp / "count.pcap")
    w = sb.spawn(ns, [*WATCH, "-i", "lo", "--count", "3", "-w", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_line(w.stderr, "synscope: watching")
    client = sb.spawn(ns, [PY, agent, "client", "127.0.0.1", "8080", "41011"], stdout=subprocess.PIPE, text=True)
    client.communicate(timeout=20)
    assert w.wait(timeout=10) == ExitCode.OK
    assert pcap_count(path) == 3


def test_ctrl_c_prints_summary_with_open_connection(lo_ns) -> None:
    sb, ns, agent, tmp = lo_ns
    srv = sb.spawn(ns, [PY, agent, "server", "127.0.0.1", "8082:hold"], stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    w = sb.spawn(ns, [*WATCH, "-i", "lo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_line(w.stderr, "synscope: watching")
    client = sb.spawn(ns, [PY, agent, "client", "127.0.0.1", "8082", "41012", "20"], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "connected"
    time.sleep(0.3)
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=10)
    assert w.returncode == ExitCode.OK
    assert "Traceback" not in err
    assert "1 still open" in out and "established (open)" in out and ":41012" in out


# ------------------------------------------------------------------ errors


def test_no_privilege_exit_code_and_fix(lo_ns) -> None:
    sb, ns, agent, tmp = lo_ns
    proc = sb.run(ns, ["setpriv", "--bounding-set=-net_raw", *WATCH, "-i", "lo", "--duration", "1"], check=False)
    assert proc.returncode == ExitCode.NO_PRIVILEGE
    assert proc.stderr.count("\n") == 1 and "setcap" in proc.stderr and "root" in proc.stderr


def test_interface_down_is_one_line(lo_ns) -> None:
    sb, ns, agent, tmp = lo_ns
    sb.run(ns, ["ip", "link", "add", "dn0", "type", "veth", "peer", "name", "dn1"])  # created down
    proc = sb.run(ns, [*WATCH, "-i", "dn0", "--duration", "1"], check=False)
    assert proc.returncode == ExitCode.ERROR
    assert proc.stderr.strip() == "synscope: interface dn0 is down (ip link set dn0 up)"


# ------------------------------------------------------------------ findings, live

HAMMER = r"""
import errno, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
refused = 0
for _ in range(n):                      # bounded: n attempts, 0.3 s apart
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    except OSError as e:
        refused += e.errno == errno.ECONNREFUSED
    s.close(); time.sleep(0.3)
print(refused, flush=True)
"""


@pytest.mark.parametrize("as_json", [True, False])
def test_repeated_failure_finding_printed_while_watch_runs(lo_ns, as_json: bool) -> None:
    sb, ns, agent, tmp = lo_ns
    hammer = tmp / "hammer.py"
    hammer.write_text(HAMMER)
    n = 8
    w = sb.spawn(ns, [*WATCH, "-i", "lo", "--port", "9", *(["--json"] if as_json else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_line(w.stderr, "synscope: watching")
    lines = Lines(w.stdout)
    client = sb.spawn(ns, [PY, str(hammer), "9", str(n)], stdout=subprocess.PIPE, text=True)
    refused = int(client.communicate(timeout=30)[0])
    assert refused == n  # what the application saw: every attempt refused

    def live_finding() -> list[str]:
        return [x for x in lines.text() if ('"finding":"repeated-failure"' in x if as_json else "finding repeated-failure" in x)]

    deadline = time.monotonic() + 10  # the connection lines come WATCH_CLOSED_LINGER after each RST
    while time.monotonic() < deadline and (len(live_finding()) < 1 or len(lines.text()) < n + 1):
        time.sleep(0.1)
    early = live_finding()
    assert early, f"no finding while watch was running: {lines.text()}"
    sb.stop(w)
    lines.thread.join(5)
    assert w.returncode == ExitCode.OK
    assert "Traceback" not in w.stderr.read()
    if as_json:
        first = json.loads(early[0])
        assert first["rule"] == "repeated-refused" and first["server"] == {"ip": "127.0.0.1", "port": 9}
        assert 2 <= first["connection_count"] < n  # established at the second refusal, printed before the last
        last_conn = next(i for i, x in enumerate(lines.text()) if f'"id":{n},' in x)
        assert lines.text().index(early[0]) < last_conn
        final = [json.loads(x) for x in live_finding()][-1]
        assert final["connection_count"] == refused and final["figures"] == {"clients": 1}
        conns = [json.loads(x) for x in lines.text() if '"finding"' not in x]
        assert sorted(final["connections"]) == sorted(o["id"] for o in conns) and {o["outcome"] for o in conns} == {"refused"}
    else:
        text = " ".join(" ".join(lines.text()).split())  # (wrapped at 100 columns)
        assert "finding repeated-failure at 127.0.0.1:9:" in early[0] and f"{n} connection attempts" not in early[0]
        assert "refused (RST to the SYN), from one client" in text
        assert f"{refused} connection attempts to 127.0.0.1:9 refused" in text[text.index("What went wrong") :]
