"""``synscope demo``: a private lab of network namespaces, probed and explained, then removed.

The lab (also used by the live tests and the benchmark)::

    client 198.18.1.2 ── 198.18.1.1 router 198.18.2.1 ── 198.18.2.2 server
                         rejects tcp/8444 with           listens on 8080, nothing on 9090,
                         ICMP admin-prohibited           drops tcp/8443 silently

synscope runs *inside* the client namespace (``ip netns exec``), exactly as a
user would run it on a host, so the demo shows real output of the real command.
Run as a module, this file is also the lab's tiny HTTP-ish server:
``python3 -m synscope.lab.demo serve PORT...``.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from synscope.core.exit_codes import CommandError, ExitCode

OPEN_PORT = 8080
CLOSED_PORT = 9090
DROPPED_PORT = 8443
REJECTED_PORT = 8444
# Namespace prefix of the demo's lab (the sandbox adds the pid)
DEMO_PREFIX = "ssd"
# How long the lab's server may live at most (it is stopped with the lab anyway)
SERVER_LIFETIME = 900.0
# Waiting for the lab's server to listen
SERVER_START = 10.0
# A whole step (one synscope run inside the lab) may take this long at most
STEP_TIMEOUT = 60.0
# The server's answer; it closes first, so it ends in TIME-WAIT
RESPONSE_BODY = b"hello from the synscope demo server\n"
# Bytes of request the server reads at most, and how long it waits for the end of the request
REQUEST_LIMIT = 4096
REQUEST_WAIT = 5.0


class DemoError(CommandError):
    """The demo cannot run or its lab cannot be built."""


@dataclass
class Lab:
    """A built lab: the topology and the server process."""

    topo: object  # synscope.lab.sandbox.Topology
    open_ports: Sequence[int]
    dropped: str
    rejected: str
    server: subprocess.Popen | None = None


def build_lab(
    sb: object,
    open_ports: Sequence[int] = (OPEN_PORT,),
    dropped: str = str(DROPPED_PORT),
    rejected: str = str(REJECTED_PORT),
) -> Lab:
    """client — router — server with a listener, a silent drop on the server and an ICMP reject on the router.

    ``dropped`` and ``rejected`` are nft port expressions (``8443``, ``5001-5500``).
    """
    from synscope.lab.sandbox import Sandbox

    assert isinstance(sb, Sandbox)
    topo = sb.three_hosts()
    # ICMP errors unthrottled in the lab: every rejected SYN gets its answer
    sb.sysctl(topo.router, "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
    sb.nft(topo.server, _ruleset("input", f"tcp dport {{ {dropped} }} drop"))
    sb.nft(topo.router, _ruleset("forward", f"tcp dport {{ {rejected} }} reject with icmpx type admin-prohibited"))
    lab = Lab(topo, tuple(open_ports), dropped, rejected)
    if open_ports:
        lab.server = start_server(sb, topo.server, open_ports)  # type: ignore[attr-defined]
    return lab


def _ruleset(hook: str, rule: str) -> str:
    return f"table inet synscope_lab {{\n  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n    {rule}\n  }}\n}}\n"


def start_server(sb: object, ns: str, ports: Sequence[int]) -> subprocess.Popen:
    """Start the lab server in a namespace and wait until it listens."""
    from synscope.lab.sandbox import Sandbox, SandboxError

    assert isinstance(sb, Sandbox)
    proc = sb.spawn(ns, [sys.executable, "-m", "synscope.lab.demo", "serve", *map(str, ports)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout=SERVER_START)
    sel.close()
    line = proc.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        raise SandboxError(f"the lab server did not start in {ns} (exit {proc.poll()})")
    return proc


# ---------------------------------------------------------------- the lab's server


def serve(ports: Sequence[int], lifetime: float = SERVER_LIFETIME) -> None:
    """A tiny HTTP/1.0 responder on every port (IPv4 and IPv6): read the request, answer, close first.

    Closing first leaves the server in TIME-WAIT, which the --connect step
    shows. Bounded by ``lifetime``; one thread, selectors.
    """
    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        s.listen(1024)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, None)
    print("ready", flush=True)
    pending: dict[socket.socket, tuple[float, bytearray]] = {}
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data is None:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                pending[conn] = (time.monotonic(), bytearray())
                sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            try:
                chunk = sock.recv(REQUEST_LIMIT)
            except OSError:
                chunk = b""
            buf = pending[sock][1]
            buf += chunk
            if not chunk or b"\r\n\r\n" in buf or b"\n\n" in buf or len(buf) >= REQUEST_LIMIT:
                _answer(sel, pending, sock, bool(chunk) or bool(buf))
        now = time.monotonic()
        for sock in [s for s, (t, _) in pending.items() if now - t > REQUEST_WAIT]:
            _answer(sel, pending, sock, True)


def _answer(sel: selectors.BaseSelector, pending: dict, sock: socket.socket, respond: bool) -> None:
    sel.unregister(sock)
    pending.pop(sock, None)
    try:
        if respond:
            sock.setblocking(True)
            sock.settimeout(1.0)
            head = f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(RESPONSE_BODY)}\r\nConnection: close\r\n\r\n"
            sock.sendall(head.encode() + RESPONSE_BODY)
    except OSError:
        pass
    finally:
        sock.close()


# ---------------------------------------------------------------- the demo


STEPS = (
    (
        "1. Half-open SYN probes of four ports",
        "One crafted SYN per port (options like a Linux client), answers captured with kernel timestamps and classified\n"
        "like nmap; after a SYN-ACK synscope sends RST so nothing stays half-open. Ports that are not open get their\n"
        "timeline and a verdict. Short timeouts here (0.3 s, doubling) keep the demo quick.",
        ["{server}", "-p", f"{OPEN_PORT},{CLOSED_PORT},{DROPPED_PORT},{REJECTED_PORT}", "--timeout", "0.3", "--retries", "2"],
    ),
    (
        "2. The same over IPv6, three rounds each (hping3-style RTT statistics)",
        "--count repeats every probe from a new source port and prints min/avg/max/stddev of the RTT.",
        ["{server6}", "-p", f"{OPEN_PORT},{CLOSED_PORT}", "--count", "3", "--timeout", "0.3", "--retries", "1"],
    ),
    (
        "3. A full connection with the kernel's own TCP: handshake, request, answer, teardown",
        "--connect uses connect(), sends the request, reads the answer and closes, while capturing: the timeline shows\n"
        "the data, who closed first, and which side is left in TIME-WAIT.",
        ["--connect", "{server}", "-p", str(OPEN_PORT), "--send", r"GET / HTTP/1.0\r\nHost: demo\r\n\r\n"],
    ),
    (
        "4. A failed connect() explained: the router rejects port 8444",
        "The kernel gives up at once on the ICMP error (connect() fails with 'No route to host'); synscope shows which\nrouter said so, and why.",
        ["--connect", "{server}", "-p", str(REJECTED_PORT), "--timeout", "0.3", "--retries", "1"],
    ),
)


def _exit_meaning(code: int) -> str:
    try:
        name = ExitCode(code).name.lower().replace("_", " ")
    except ValueError:
        name = "unexpected"
    return f"exit status {code} ({name})"


def run_demo(out: TextIO) -> ExitCode:
    """Build the lab, run each step with synscope inside the client namespace, print it all, remove the lab."""
    from synscope.lab.sandbox import Sandbox, SandboxError, available, remove_stale

    problem = available()
    if problem:
        code = ExitCode.NO_PRIVILEGE if os.geteuid() != 0 else ExitCode.ERROR
        raise DemoError(f"{problem}: run the demo as root (sudo synscope demo)", code)
    if not shutil.which("nft"):
        raise DemoError("the demo needs nftables for its firewall rules (Debian: apt-get install nftables)")
    remove_stale(DEMO_PREFIX)
    sb = Sandbox(prefix=DEMO_PREFIX)

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    failed = False
    try:
        started = time.monotonic()
        lab = build_lab(sb)
        t = lab.topo
        out.write(
            "synscope demo: a private lab of network namespaces (removed again at the end)\n\n"
            f"  client {t.client_ip}  ──  {t.router_client_ip} router {t.router_server_ip}  ──  {t.server_ip} server\n"  # type: ignore[attr-defined]
            f"  {t.client_ip6}        {t.router_client_ip6} / {t.router_server_ip6}     {t.server_ip6}\n"  # type: ignore[attr-defined]
            f"  the router rejects tcp/{REJECTED_PORT} (ICMP admin-prohibited); the server listens on {OPEN_PORT}, "
            f"has nothing on {CLOSED_PORT}, drops tcp/{DROPPED_PORT} silently\n\n"
        )
        out.flush()
        fill = {"server": t.server_ip, "server6": t.server_ip6}  # type: ignore[attr-defined]
        for title, text, args in STEPS:
            argv = [a.format(**fill) if a.startswith("{") else a for a in args]
            shown = " ".join(f"'{a}'" if any(ch in a for ch in " \\") else a for a in argv)
            out.write(f"== {title} ==\n{text}\n\n$ synscope probe {shown}    (in the client namespace)\n\n")
            out.flush()
            proc = sb.run(t.client, [sys.executable, "-m", "synscope", "probe", *argv], check=False, timeout=STEP_TIMEOUT)  # type: ignore[attr-defined]
            out.write(proc.stdout)
            if proc.stderr.strip():
                out.write("".join(f"  (stderr) {line}\n" for line in proc.stderr.strip().splitlines()))
            out.write(f"[{_exit_meaning(proc.returncode)}]\n\n")
            out.flush()
            if proc.returncode in (ExitCode.ERROR, ExitCode.USAGE, ExitCode.NO_PRIVILEGE):
                failed = True
        out.write(
            f"Done in {time.monotonic() - started:.1f} s. Removing the lab ({', '.join(sb.namespaces)}).\n"
            "Next: sudo synscope probe HOST -p PORTS on a real host, or synscope read FILE.pcap on a capture.\n"
        )
    except SandboxError as e:
        raise DemoError(f"building the lab failed: {e}") from None
    except subprocess.TimeoutExpired as e:
        raise DemoError(f"a demo step took longer than {e.timeout:.0f} s: {' '.join(map(str, e.cmd))}") from None
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not leave namespaces behind
        try:
            sb.close()
        finally:
            signal.signal(signal.SIGTERM, old_term)
    return ExitCode.ERROR if failed else ExitCode.OK


def _main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        try:
            serve([int(p) for p in argv[1:]])
        except KeyboardInterrupt:
            pass
        return 0
    print("usage: python3 -m synscope.lab.demo serve PORT...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(_main(sys.argv[1:]))
