"""Private network namespaces for the demo, the live tests and the benchmarks.

A :class:`Sandbox` creates namespaces joined by veth pairs (never touching the
root namespace's interfaces), starts processes inside them, and removes all of
it on exit, also after an exception or Ctrl-C. Addresses come from
198.18.0.0/15 and 2001:db8::/32, reserved for exactly this.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

# Processes started in a sandbox get this long to exit after SIGTERM before SIGKILL
STOP_GRACE = 2.0


class SandboxError(Exception):
    """A sandbox command failed; the message carries the command and its stderr."""


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise SandboxError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip() or 'exit ' + str(proc.returncode)}")
    return proc


def available() -> str | None:
    """None when sandboxes can be built here; otherwise why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "iproute2 is not installed (apt-get install iproute2)"
    return None


@dataclass
class Topology:
    """Names and addresses of the standard client — router — server sandbox."""

    client: str
    router: str
    server: str
    client_if: str = "c0"
    router_client_if: str = "r0"
    router_server_if: str = "r1"
    server_if: str = "s0"
    client_ip: str = "198.18.1.2"
    router_client_ip: str = "198.18.1.1"
    router_server_ip: str = "198.18.2.1"
    server_ip: str = "198.18.2.2"
    client_ip6: str = "2001:db8:1::2"
    router_client_ip6: str = "2001:db8:1::1"
    router_server_ip6: str = "2001:db8:2::1"
    server_ip6: str = "2001:db8:2::2"


@dataclass
class Sandbox:
    """Namespaces, links and processes that are removed together."""

    prefix: str = "ssx"
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        # pid in the name: two runs never collide, and stale ones are recognisable
        self.tag = f"{self.prefix}{os.getpid()}"

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process this sandbox started, then delete its namespaces."""
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave namespaces behind
        try:
            for proc in self.processes:
                if proc.poll() is None:
                    proc.terminate()
            deadline = time.monotonic() + STOP_GRACE
            for proc in self.processes:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.processes.clear()
            for ns in reversed(self.namespaces):
                _run(["ip", "netns", "del", ns], check=False)
            self.namespaces.clear()
        finally:
            signal.signal(signal.SIGINT, old)

    # ------------------------------------------------------------ building
    def namespace(self, role: str) -> str:
        """Create a namespace (loopback up); returns its name."""
        name = f"{self.tag}-{role}"
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.run(name, ["ip", "link", "set", "lo", "up"])
        self.sysctl(name, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        return name

    def link(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair between two namespaces, up, with segmentation offloads off (captures show wire-sized packets)."""
        tmp_a, tmp_b = f"{self.tag[:6]}a{len(self.namespaces)}{if_a}"[:15], f"{self.tag[:6]}b{len(self.namespaces)}{if_b}"[:15]
        _run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        _run(["ip", "link", "set", tmp_a, "netns", ns_a, "name", if_a])
        _run(["ip", "link", "set", tmp_b, "netns", ns_b, "name", if_b])
        for ns, ifname in ((ns_a, if_a), (ns_b, if_b)):
            self.run(ns, ["ip", "link", "set", ifname, "up"])
            if shutil.which("ethtool"):
                self.run(ns, ["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off"], check=False)

    def address(self, ns: str, ifname: str, *cidrs: str) -> None:
        """Add addresses (IPv6 without duplicate address detection, usable at once)."""
        for cidr in cidrs:
            extra = ["nodad"] if ":" in cidr else []
            self.run(ns, ["ip", "addr", "add", cidr, "dev", ifname, *extra])

    def route(self, ns: str, *args: str) -> None:
        """``ip route add ARGS`` (``-6`` first for IPv6) inside a namespace."""
        if args and args[0] == "-6":
            self.run(ns, ["ip", "-6", "route", "add", *args[1:]])
        else:
            self.run(ns, ["ip", "route", "add", *args])

    def sysctl(self, ns: str, *settings: str) -> None:
        """Set sysctls inside a namespace."""
        for s in settings:
            self.run(ns, ["sysctl", "-q", "-w", s], check=False)

    def nft(self, ns: str, ruleset: str) -> None:
        """Load an nftables ruleset inside a namespace (gone with the namespace)."""
        self.run(ns, ["nft", "-f", "-"], input=ruleset)

    # ------------------------------------------------------------ processes
    def run(self, ns: str, argv: Sequence[str], check: bool = True, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace and wait for it."""
        return _run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=input)

    def spawn(self, ns: str, argv: Sequence[str], **popen: object) -> subprocess.Popen:
        """Start a process inside a namespace; it is stopped (by PID) when the sandbox closes."""
        popen.setdefault("stdout", subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Stop one process started here (SIGKILL after ``timeout``); returns its exit status."""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    # ------------------------------------------------------------ topologies
    def three_hosts(self) -> Topology:
        """client — router — server, IPv4 and IPv6, forwarding on the router."""
        topo = Topology(self.namespace("cli"), self.namespace("rtr"), self.namespace("srv"))
        self.link(topo.client, topo.client_if, topo.router, topo.router_client_if)
        self.link(topo.router, topo.router_server_if, topo.server, topo.server_if)
        self.address(topo.client, topo.client_if, f"{topo.client_ip}/24", f"{topo.client_ip6}/64")
        self.address(topo.router, topo.router_client_if, f"{topo.router_client_ip}/24", f"{topo.router_client_ip6}/64")
        self.address(topo.router, topo.router_server_if, f"{topo.router_server_ip}/24", f"{topo.router_server_ip6}/64")
        self.address(topo.server, topo.server_if, f"{topo.server_ip}/24", f"{topo.server_ip6}/64")
        self.sysctl(topo.router, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        self.route(topo.client, "default", "via", topo.router_client_ip)
        self.route(topo.client, "-6", "default", "via", topo.router_client_ip6)
        self.route(topo.server, "default", "via", topo.router_server_ip)
        self.route(topo.server, "-6", "default", "via", topo.router_server_ip6)
        return topo


def remove_stale(prefix: str) -> list[str]:
    """Delete namespaces left by a killed earlier run of this prefix whose process is gone."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(prefix):
            continue
        pid_part = name[len(prefix) :].split("-")[0]
        if pid_part.isdigit() and not os.path.exists(f"/proc/{pid_part}"):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed
