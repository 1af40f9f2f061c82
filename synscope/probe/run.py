"""Send probes and capture the answers: the one side-effecting part of ``probe``.

Everything that decides something is pure and lives in :mod:`synscope.probe.classify`;
this module resolves the target, finds the egress interface, opens the raw
socket and the capture, paces the sends, and hands every captured frame to the
classifier (to know which ports still need a retry), keeping it by probed
port. The timelines come from feeding those frames through the same
:class:`~synscope.read.pipeline.Pipeline` that ``read`` uses, for the ports whose
timeline or JSON is wanted (a sweep of 10,000 closed ports does not need
10,000 verdicts to print one table).

RTTs are differences of kernel capture timestamps: the SYN's copy captured on
the way out (on loopback, where the outgoing copy is dropped, the incoming copy
of the same packet) and the answer's, both from ``SO_TIMESTAMPNS``.
"""

from __future__ import annotations

import errno
import gc
import heapq
import ipaddress
import json
import os
import random
import select
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from synscope.capture.live import FIX_PRIVILEGE, InterfaceError, LiveCapture, PcapWriter, PrivilegeError
from synscope.core import fmt
from synscope.core.exit_codes import CommandError, ExitCode
from synscope.core.icmp import capture_filter as icmp_capture_filter
from synscope.core.model import ACK, FIN, RST, SYN, RawFrame, Segment
from synscope.probe.classify import (
    CLOSED,
    FILTERED,
    NO_RESPONSE,
    OPEN,
    RESET,
    SYN_ACK,
    PortResult,
    ProbeId,
    Reply,
    Round,
    SynSpec,
    SynTemplate,
    Try,
    aggregate,
    backoff_waits,
    build_rst,
    classify_reply,
    reply_key,
)
from synscope.read.decode import Decoder
from synscope.read.evidence import CERTAIN, Evidence
from synscope.read.pipeline import ConnReport, Pipeline
from synscope.read.tracker import C2S, Connection
from synscope.read.verdict import Verdict

# Probes per second unless --rate says otherwise: masscan's conservative default;
# 100 SYNs/s is about 60 kbit/s and one SYN per port, far from any flood threshold.
DEFAULT_RATE = 100.0
# After the last wait, keep reading this long: the kernel's RST and ours follow a late SYN-ACK
LINGER = 0.05
# Sends between two reads of the capture when the rate is unlimited (the capture buffer never fills)
SEND_BATCH = 256
# Longest single wait in the loop, so a stop request (Ctrl-C, SIGTERM) is seen quickly
POLL = 0.05
# Ephemeral range source ports are drawn from (Linux's ip_local_port_range)
SPORT_RANGE = (32768, 60999)
# At most this many RSTs per round (a SYN-ACK retransmitted because our RST was lost)
MAX_RSTS = 3
# Retries of a send the kernel refused for lack of buffers
ENOBUFS_RETRIES = 50
# --connect: answer read at most this many bytes, and waits this long for more
READ_LIMIT = 64 * 1024
READ_IDLE = 1.0
READ_TOTAL = 5.0
# --connect: after close(), wait this long at most for the FIN/ACK exchange to finish
TEARDOWN_WAIT = 1.0
# ICMP errors and nothing else of ICMP (no echo, no neighbour discovery): the ones decode reads
ICMP_FILTER = icmp_capture_filter()
# Link-layer header in front of the IP packet, by capture link type (ethernet, raw IP, Linux cooked)
L2_HEADER = {1: 14, 101: 0, 113: 16}


class ProbeError(CommandError):
    """A probe cannot run."""


# ---------------------------------------------------------------- target


@dataclass
class Target:
    """Where probes go and where they come from."""

    host: str  # as the user typed it
    addr: str  # the address probed
    family: int
    src: str  # our source address (from the route)
    iface: str | None  # egress interface to capture on (None: all interfaces)
    loopback: bool

    @property
    def packed(self) -> bytes:
        """Target address as packed bytes."""
        return socket.inet_pton(self.family, self.addr)

    @property
    def src_packed(self) -> bytes:
        """Source address as packed bytes."""
        return socket.inet_pton(self.family, self.src)


def resolve(host: str, family: int | None = None) -> tuple[str, int]:
    """(address, family) of a host name or literal; the first getaddrinfo answer."""
    try:
        infos = socket.getaddrinfo(host, None, family or socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ProbeError(f"unknown host {host!r}: {getattr(e, 'strerror', None) or e}", ExitCode.USAGE) from None
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6):
            return str(sockaddr[0]).split("%")[0], fam
    raise ProbeError(f"unknown host {host!r}: no IPv4 or IPv6 address", ExitCode.USAGE)


def check_unicast(addr: str) -> None:
    """Refuse targets a SYN must not go to: broadcast, multicast, unspecified."""
    ip = ipaddress.ip_address(addr)
    what = None
    if ip.is_multicast:
        what = "a multicast address"
    elif ip.is_unspecified:
        what = "the unspecified address"
    elif ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"):
        what = "the broadcast address"
    if what:
        raise ProbeError(f"refusing to probe {addr}: {what} (give one host)", ExitCode.USAGE)


def route(addr: str, family: int) -> tuple[str | None, str, str]:
    """(egress interface, source address, route type) the kernel would use for ``addr``."""
    if shutil.which("ip"):
        argv = ["ip", "-j", *(["-6"] if family == socket.AF_INET6 else []), "route", "get", addr]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        if proc.returncode != 0:
            why = proc.stderr.strip().removeprefix("RTNETLINK answers: ") or f"exit {proc.returncode}"
            down = interfaces_down()
            hint = f"; interface{'s' if len(down) > 1 else ''} down here: {', '.join(down)} (ip link set {down[0]} up)" if down else ""
            raise ProbeError(f"no route to host {addr} ({why}{hint}; see: ip route get {addr})")
        try:
            info = json.loads(proc.stdout)[0]
        except (ValueError, IndexError, KeyError):
            info = {}
        rtype = info.get("type", "unicast")
        dev = info.get("dev")
        src = info.get("prefsrc")
        if rtype in ("unreachable", "prohibit", "blackhole", "throw"):
            raise ProbeError(f"no route to host {addr} (the route is of type {rtype}; see: ip route get {addr})")
        if rtype in ("broadcast", "multicast", "anycast"):
            raise ProbeError(f"refusing to probe {addr}: it is a {rtype} address here (give one host)", ExitCode.USAGE)
        if dev and src:
            return dev, src, rtype
    else:
        dev, rtype = None, "unicast"
    # no iproute2, or no preferred source in its answer: ask the kernel through a UDP socket
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((addr, 9))
            src = s.getsockname()[0]
    except OSError as e:
        raise ProbeError(f"no route to host {addr} ({e.strerror})") from None
    return dev, src, rtype


def check_link(dev: str) -> None:
    """The egress interface must be up and have a link (carrier)."""
    from synscope.capture.live import check_interface_up

    try:
        check_interface_up(dev)
    except InterfaceError as e:
        raise ProbeError(str(e)) from None
    try:
        with open(f"/sys/class/net/{dev}/operstate") as f:
            state = f.read().strip()
    except OSError:
        return
    if state in ("down", "lowerlayerdown", "notpresent"):
        raise ProbeError(f"interface {dev} is up but has no link (operstate {state}): check the cable or the peer (ip link show {dev})")


def interfaces_down() -> list[str]:
    """Interfaces that are administratively down (their routes are gone, so probes find no route)."""
    down: list[str] = []
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return down
    for name in names:
        try:
            with open(f"/sys/class/net/{name}/flags") as f:
                if not int(f.read(), 16) & 0x1:
                    down.append(name)
        except (OSError, ValueError):
            continue
    return down


def find_target(host: str, family: int | None = None) -> Target:
    """Resolve, refuse non-unicast targets, and find the route (interface, source address)."""
    addr, fam = resolve(host, family)
    check_unicast(addr)
    dev, src, rtype = route(addr, fam)
    ip = ipaddress.ip_address(addr)
    loopback = ip.is_loopback or rtype == "local" or dev == "lo"
    if dev is not None:
        check_link(dev)
    return Target(host, addr, fam, src.split("%")[0], dev, loopback)


# ---------------------------------------------------------------- plumbing


def _open_capture(target: Target, bpf: str) -> LiveCapture:
    from synscope.capture.bpf import FilterError

    try:
        return LiveCapture(target.iface, bpf)
    except PrivilegeError:
        raise ProbeError(FIX_PRIVILEGE, ExitCode.NO_PRIVILEGE) from None
    except InterfaceError as e:
        raise ProbeError(str(e)) from None
    except FilterError as e:
        raise ProbeError(str(e)) from None


def _open_raw(family: int) -> socket.socket:
    try:
        sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        raise ProbeError(FIX_PRIVILEGE, ExitCode.NO_PRIVILEGE) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    except OSError:
        pass
    return sock


def _open_writer(path: str | None, linktype: int) -> PcapWriter | None:
    if not path:
        return None
    try:
        return PcapWriter(path, linktype)
    except OSError as e:
        raise ProbeError(f"cannot write {path}: {e.strerror}") from None


def _send(sock: socket.socket, data: bytes, addr: str) -> None:
    """sendto with the kernel's errors turned into one-line messages."""
    try:
        sock.sendto(data, (addr, 0))
        return
    except OSError:
        pass
    for _ in range(ENOBUFS_RETRIES):
        try:
            sock.sendto(data, (addr, 0))
            return
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                time.sleep(0.001)
                continue
            if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
                raise ProbeError(f"no route to host {addr} ({e.strerror})") from None
            if e.errno == errno.EPERM:
                raise ProbeError(f"sending to {addr} was refused by a local firewall rule (EPERM)") from None
            if e.errno == errno.ENETDOWN:
                raise ProbeError(f"the interface towards {addr} is down ({e.strerror})") from None
            raise ProbeError(f"sending to {addr} failed: {e.strerror}") from None
    raise ProbeError(f"sending to {addr} failed: the kernel keeps running out of buffers (lower --rate)")


def reserve_ports(target: Target, count: int, sport: int | None, rng: random.Random) -> tuple[list[int], list[socket.socket]]:
    """Source ports for ``count`` rounds (consecutive), held by bound TCP sockets for the run.

    Holding them keeps the kernel from handing the same port to another
    program's connection while our SYN-ACKs may still arrive. A port given
    with ``--sport`` is used even if something else holds it.
    """
    if sport is not None:
        if sport + count - 1 > 65535:
            raise ProbeError(f"--sport {sport} with --count {count} runs past port 65535", ExitCode.USAGE)
        ports = list(range(sport, sport + count))
        held = []
        for p in ports:
            s = _try_bind(target, p)
            if s is not None:
                held.append(s)
        return ports, held
    lo, hi = SPORT_RANGE
    for _ in range(32):
        base = rng.randint(lo, max(lo, hi - count + 1))
        held = []
        for p in range(base, base + count):
            s = _try_bind(target, p)
            if s is None:
                break
            held.append(s)
        if len(held) == count:
            return list(range(base, base + count)), held
        for s in held:
            s.close()
    raise ProbeError(f"no {count} consecutive free source ports found in {lo}-{hi}")


def _try_bind(target: Target, port: int) -> socket.socket | None:
    s = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        s.bind((target.src, port))
        return s
    except OSError:
        s.close()
        return None


def probe_filter(target: Target, sports: list[int]) -> str:
    """Kernel capture filter: our probes and their answers, and ICMP errors."""
    a, b = min(sports), max(sports)
    ports = f"portrange {a}-{b}" if a != b else f"port {a}"
    dst = target.addr
    return f"(tcp and host {dst} and ((src host {dst} and tcp dst {ports}) or (dst host {dst} and tcp src {ports}))) or {ICMP_FILTER}"


class Stopper:
    """A stop request (Ctrl-C, SIGTERM) as a flag the loops poll."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, *_args: object) -> None:
        self.event.set()

    @property
    def stopped(self) -> bool:
        """Was a stop requested?"""
        return self.event.is_set()


# ---------------------------------------------------------------- half-open probe


@dataclass
class ProbeConfig:
    """What the user asked for."""

    ports: list[int]
    retries: int = 2
    timeout: float = 1.0
    rate: float = DEFAULT_RATE  # probes per second; 0 = as fast as possible
    count: int = 1
    sport: int | None = None
    spec: SynSpec = field(default_factory=SynSpec)
    write: str | None = None
    # called once the capture, the raw socket and the -w file are open, before the first send or read
    # (--user: give up root there); an exception it raises ends the run, everything closed
    after_open: Callable[[], None] | None = None


@dataclass
class ProbeOutcome:
    """What a probe run found; connection reports for the timelines are built on demand."""

    target: Target
    config: ProbeConfig
    sports: list[int]
    results: list[PortResult]
    frames: int
    kernel_drops: int
    elapsed: float
    interrupted: bool = False
    user_clock_rtts: int = 0
    warnings: list[str] = field(default_factory=list)
    rsts_sent: int = 0
    captured: dict[int, list[RawFrame]] = field(default_factory=dict)  # frames by probed port, capture order
    our_rsts: set[tuple[int, int, int]] = field(default_factory=set)
    _reports: dict[int, list[ConnReport]] = field(default_factory=dict)

    def reports_for(self, ports: Iterable[int]) -> dict[int, list[ConnReport]]:
        """Connection reports of these ports (the pipeline runs on their frames only, once)."""
        ports = list(ports)
        missing = [p for p in ports if p not in self._reports]
        if missing:
            self._reports.update(build_reports(self, missing))
        return {p: self._reports.get(p, []) for p in ports}


def build_reports(outcome: ProbeOutcome, ports: list[int]) -> dict[int, list[ConnReport]]:
    """Feed the captured frames of ``ports`` through the read pipeline; label what the probe did."""
    frames = sorted((f for p in ports for f in outcome.captured.get(p, ())), key=lambda f: f.frame)
    pipeline = Pipeline()
    # a port's --count rounds come from new source ports: rounds, not an application retrying
    pipeline.link_retries = False
    # the probe's own ports are what the user asked for, not a scan to report
    pipeline.scans = None
    # a host that answered on any port of this run (SYN-ACK or RST from it) is up: a silent port is filtered
    if any(r.state in ("open", "closed") and r.sender == outcome.target.packed for r in outcome.results):
        pipeline.hosts_up = frozenset({outcome.target.packed})
    for f in frames:
        pipeline.feed(f)
    src, dst = outcome.target.src_packed, outcome.target.packed
    sports = {s: n for n, s in enumerate(outcome.sports)}
    by_port: dict[int, list[ConnReport]] = {p: [] for p in ports}
    for r in pipeline.finish():
        c = r.conn
        if c.client.ip == src and c.server.ip == dst and c.client.port in sports and c.server.port in by_port:
            label_probe_connection(r, outcome.our_rsts, sports[c.client.port], outcome.config.count)
            by_port[c.server.port].append(r)
    for reps in by_port.values():
        reps.sort(key=lambda r: r.conn.id)
    return by_port


class _Prober:
    """State of one half-open run: rounds by (source port, port), a send queue, deadlines."""

    def __init__(self, target: Target, cfg: ProbeConfig, sports: list[int], rng: random.Random) -> None:
        self.target = target
        self.cfg = cfg
        self.src = target.src_packed
        self.dst = target.packed
        self.waits = backoff_waits(cfg.timeout, cfg.retries)
        self.rounds: dict[tuple[int, int], Round] = {}
        self.order: list[tuple[int, int]] = []
        for n, sport in enumerate(sports):
            for port in cfg.ports:
                key = (sport, port)
                self.rounds[key] = Round(n, sport, rng.getrandbits(32))
                self.order.append(key)
        self.pending = len(self.order)
        self.ts_base = rng.getrandbits(32)
        self.ip_id = rng.randrange(1, 0xFFFF)
        self.decoder = Decoder()
        self.captured: dict[int, list[RawFrame]] = {}
        self.our_rsts: set[tuple[int, int, int]] = set()  # (sport, port, seq) of every RST we sent
        self.rst_count: dict[tuple[int, int], int] = {}
        self.rsts_sent = 0
        self.sock: socket.socket | None = None
        self.writer: PcapWriter | None = None
        self.t0 = time.monotonic()
        # bytes of each SYN sent -> its round and try: the captured copy is found without decoding it
        self.sent: dict[bytes, tuple[tuple[int, int], int]] = {}
        self.l2 = -1  # link-layer header length of captured frames (-1: decode every frame)

    def _next_id(self) -> int:
        self.ip_id = self.ip_id % 0xFFFF + 1  # never 0: the kernel's own RSTs carry IP id 0
        return self.ip_id

    def ts_val(self) -> int:
        """Our TCP timestamp clock: milliseconds from a random base, as Linux does per connection."""
        return (self.ts_base + int((time.monotonic() - self.t0) * 1000)) & 0xFFFFFFFF

    def send_try(self, template: SynTemplate, key: tuple[int, int]) -> float:
        """Send the next try of one round; returns the monotonic time it left."""
        rd = self.rounds[key]
        tries = rd.tries
        ts_val = None
        if template.ts_off is not None:
            # a millisecond clock; tries of one round are at least --timeout (>= 10 ms) apart, so each
            # try has its own TSval and the SYN-ACK's TSecr tells which try it answers
            ts_val = self.ts_val()
            if tries and tries[-1].ts_val == ts_val:
                ts_val = (ts_val + 1) & 0xFFFFFFFF
        pkt = template.packet(key[0], key[1], rd.seq, ts_val or 0, self._next_id())
        wall = time.time()
        _send(self.sock, pkt, self.target.addr)  # type: ignore[arg-type]
        self.sent[pkt] = (key, len(tries))
        tries.append(Try(ts_val, wall))
        return time.monotonic()

    def on_frames(self, frames: list[RawFrame]) -> None:
        """Sort frames by probed port, note send timestamps, classify answers, answer SYN-ACKs with RST."""
        rounds, src, dst, sent, l2 = self.rounds, self.src, self.dst, self.sent, self.l2
        for frame in frames:
            if self.writer is not None:
                self.writer.write(frame)
            hit = sent.pop(frame.data[l2:], None) if l2 >= 0 else None
            if hit is not None:  # the captured copy of a SYN we sent: its kernel timestamp is the send time
                key, i = hit
                t = rounds[key].tries[i]
                t.captured_ts, t.frame = frame.ts, frame.frame
                self.captured.setdefault(key[1], []).append(frame)
                continue
            item = self.decoder.decode(frame)
            if item is None:
                continue
            if isinstance(item, Segment) and item.src == src and item.dst == dst and (item.sport, item.dport) in rounds:
                # ours: a SYN's copy, our RST, or the local kernel's RST
                self.captured.setdefault(item.dport, []).append(frame)
                if item.flags & SYN and not item.flags & (ACK | RST):
                    self._our_syn(item, rounds[(item.sport, item.dport)])
                continue
            reply_to = reply_key(item, src, dst)
            rd = rounds.get(reply_to) if reply_to is not None else None
            if rd is None or reply_to is None:
                continue
            self.captured.setdefault(reply_to[1], []).append(frame)
            reply = classify_reply(item, ProbeId(src, dst, reply_to[0], reply_to[1], rd.seq))
            if reply is None:
                continue
            if rd.reply is None:
                rd.reply = reply
                if not rd.gave_up:
                    self.pending -= 1
            if reply.isn is not None and reply.flags & ACK:
                self._reset(reply_to, rd, reply)

    @staticmethod
    def _our_syn(seg: Segment, rd: Round) -> None:
        """A captured copy of one of our SYNs: note its kernel timestamp on its try."""
        if seg.seq != rd.seq:
            return
        waiting = [t for t in rd.tries if t.captured_ts is None]
        if len(waiting) == 1:  # the usual case: no need to decode the options to know which try this is
            waiting[0].captured_ts, waiting[0].frame = seg.ts, seg.frame
            return
        ts_val = seg.options.ts_val if seg.raw_options else None
        for t in rd.tries:
            if t.captured_ts is None and (ts_val is None or t.ts_val == ts_val):
                t.captured_ts = seg.ts
                t.frame = seg.frame
                return

    def _reset(self, key: tuple[int, int], rd: Round, reply: Reply) -> None:
        """RST for a SYN-ACK, so no half-open connection stays on the target."""
        if self.rst_count.get(key, 0) >= MAX_RSTS:
            return
        seq = reply.ack if reply.ack is not None else (rd.seq + 1) & 0xFFFFFFFF
        pkt = build_rst(self.src, self.dst, key[0], key[1], seq, ((reply.isn or 0) + 1) & 0xFFFFFFFF, self.cfg.spec.ttl, self._next_id())
        assert self.sock is not None
        try:
            _send(self.sock, pkt, self.target.addr)
        except ProbeError:
            return  # the local kernel's own RST still closes it
        rd.rst_sent = True
        self.rsts_sent += 1
        self.rst_count[key] = self.rst_count.get(key, 0) + 1
        self.our_rsts.add((key[0], key[1], seq))


def run_probe(target: Target, cfg: ProbeConfig, stop: Stopper | None = None, rng: random.Random | None = None) -> ProbeOutcome:
    """Probe every port of ``cfg`` on ``target``: send (rate-limited), collect, retry the silent ones."""
    rng = rng or random.SystemRandom()
    stop = stop or Stopper()
    sports, held = reserve_ports(target, cfg.count, cfg.sport, rng)
    prober = _Prober(target, cfg, sports, rng)
    cap: LiveCapture | None = None
    interrupted = False
    started = time.monotonic()
    # a sweep allocates tens of thousands of small records and no reference cycles: the cyclic
    # garbage collector would only rescan them again and again (about 15% of the run)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        template = SynTemplate(target.src, target.addr, cfg.spec)
        cap = _open_capture(target, probe_filter(target, sports))
        prober.sock = _open_raw(target.family)
        prober.writer = _open_writer(cfg.write, cap.linktype)
        if cfg.after_open is not None:
            cfg.after_open()
        prober.l2 = L2_HEADER.get(cap.linktype, -1)
        started = time.monotonic()
        interrupted = _loop(prober, template, cap, stop)
        # late frames: the RSTs that follow a last-moment SYN-ACK
        end = time.monotonic() + LINGER
        while not stop.stopped:
            left = end - time.monotonic()
            if left <= 0:
                break
            prober.on_frames(cap.read(timeout=left))
        prober.on_frames(cap.read(timeout=None))
        interrupted = interrupted or stop.stopped
    finally:
        if cap is not None:
            cap.close()
        if prober.sock is not None:
            prober.sock.close()
        if prober.writer is not None:
            prober.writer.close()
        for s in held:
            s.close()
        if gc_was_enabled:
            gc.enable()
    elapsed = time.monotonic() - started
    _, drops = cap.stats()
    results = []
    user_clock = 0
    all_rounds, waits = prober.rounds, prober.waits
    for port in cfg.ports:
        rounds = [all_rounds[(s, port)] for s in sports]
        for rd in rounds:
            if rd.reply is not None and rd.tries and rd.tries[-1].captured_ts is None and rd.tries[0].captured_ts is None:
                user_clock += 1
        results.append(aggregate(port, rounds, waits))
    warnings = []
    if drops:
        warnings.append(f"the kernel dropped {drops} captured packets (capture buffer full): lower --rate")
    if user_clock:
        warnings.append(f"{user_clock} probe(s) not seen leaving in the capture: their RTT uses user-space send time")
    return ProbeOutcome(
        target, cfg, sports, results, cap.frames, drops, elapsed, interrupted, user_clock, warnings, prober.rsts_sent, prober.captured, prober.our_rsts
    )


def _loop(p: _Prober, template: SynTemplate, cap: LiveCapture, stop: Stopper) -> bool:
    """First tries in order, retries as they fall due (before further first tries, so the backoff
    stays exact), a deadline heap, one receiver. Returns True when stopped early."""
    cfg = p.cfg
    interval = 1.0 / cfg.rate if cfg.rate > 0 else 0.0
    first: deque[tuple[int, int]] = deque(p.order)
    retry: deque[tuple[int, int]] = deque()
    deadlines: list[tuple[float, int, tuple[int, int]]] = []
    counter = 0
    next_send = time.monotonic()
    max_tries = cfg.retries + 1
    while p.pending > 0:
        if stop.stopped:
            return True
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, _, key = heapq.heappop(deadlines)
            rd = p.rounds[key]
            if rd.reply is not None or rd.gave_up:
                continue
            if len(rd.tries) < max_tries:
                retry.append(key)
            else:
                rd.gave_up = True
                p.pending -= 1
        sent = 0
        while (retry or first) and now >= next_send and sent < SEND_BATCH:
            key = retry.popleft() if retry else first.popleft()
            rd = p.rounds[key]
            if rd.reply is not None:
                continue
            left = p.send_try(template, key)
            counter += 1
            heapq.heappush(deadlines, (left + p.waits[len(rd.tries) - 1], counter, key))
            sent += 1
            if interval:
                # never two probes closer than 1/rate: after a stall the rate drops, it never bursts to catch up
                now = time.monotonic()
                next_send = now + interval
        now = time.monotonic()
        queued = retry or first
        if queued and (not interval or now >= next_send):
            wait = 0.0
        elif queued:
            wait = next_send - now
        elif deadlines:
            wait = deadlines[0][0] - now
        else:
            wait = 0.0
        p.on_frames(cap.read(timeout=min(max(wait, 0.0), POLL)))
    return False


KERNEL_RST_NOTE = "RST from the local kernel: it never opened this connection (the SYN came from synscope, not a socket)"
OUR_RST_NOTE = "RST from synscope: closes the half-open connection on the target"


def label_probe_connection(report: ConnReport, our_rsts: set[tuple[int, int, int]], round_no: int = 0, rounds: int = 1) -> None:
    """Name the two RSTs after a SYN-ACK (ours, the local kernel's) and say what the probe found."""
    c = report.conn
    v = report.verdict
    saw_synack = c.server.syn_count > 0
    kernel_rst = False
    for pkt in c.packets:
        seg = pkt.seg
        if pkt.dir != C2S or not seg.flags & RST:
            continue
        if seg.flags & ACK and (seg.sport, seg.dport, seg.seq) in our_rsts:
            pkt.notes = [OUR_RST_NOTE]
        elif saw_synack:
            pkt.notes = [KERNEL_RST_NOTE]
            kernel_rst = True
    # which --count round this is: data the renderers word (see pipeline.link_sentences)
    report.round_no, report.rounds = round_no, rounds
    report.raw_client = True  # the SYN was crafted: no local socket ever was in SYN-SENT
    if saw_synack and not c.established:
        report.verdict = open_port_verdict(c, v, kernel_rst)


def open_port_verdict(c: Connection, judged: Verdict, kernel_rst: bool) -> Verdict:
    """The probe's own verdict for a SYN-ACK it closed with RST (the read verdict would call that a
    reset handshake: here the RST is the probe's, by design)."""
    delay = c.synack_ts - c.syn_ts if c.synack_ts is not None and c.syn_ts is not None else None
    syns = tuple(p.seg.frame for p in c.packets if p.dir == C2S and p.seg.flags & SYN)[:1]
    synacks = tuple(p.seg.frame for p in c.packets if p.dir != C2S and p.seg.flags & SYN)[:1]
    return Verdict(
        "open",
        judged.conn_state,
        judged.history,
        f"SYN-ACK {fmt.duration(delay)} after SYN" if delay is not None else "SYN-ACK",
        f"Port {c.server.port} is open: the server answered the SYN with SYN-ACK"
        f"{' after ' + fmt.duration(delay) if delay is not None else ''}. synscope then sent RST so no half-open "
        "connection stays on the server"
        + ("; the local kernel sent its own RST as well, since no local socket opened this connection." if kernel_rst else "."),
        "",
        True,
        "server",
        "probe-open",
        CERTAIN,
        (Evidence("SYN", syns), Evidence("SYN-ACK", synacks)),
    )


# ---------------------------------------------------------------- full handshake


@dataclass
class ConnectOutcome:
    """A kernel connect(), what was exchanged, and its report."""

    target: Target
    port: int
    sport: int
    state: str  # open | closed | filtered
    reason: str
    error: str | None  # errno name and text of a failed connect()
    connect_time: float | None  # SYN → answer on kernel timestamps
    sent: int
    received: bytes  # the first READ_LIMIT bytes of the answer
    received_total: int
    server_closed_first: bool | None
    reports: list[ConnReport]
    frames: int
    kernel_drops: int
    elapsed: float
    interrupted: bool = False
    reply: Reply | None = None
    tries: int = 0
    warnings: list[str] = field(default_factory=list)


TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)


class _Watch:
    """The capture side of --connect: feeds the pipeline, notes SYNs, the answer and the teardown."""

    def __init__(self, target: Target, sport: int, port: int, cap: LiveCapture, writer: PcapWriter | None) -> None:
        self.src, self.dst = target.src_packed, target.packed
        self.sport, self.port = sport, port
        self.cap, self.writer = cap, writer
        self.pipeline = Pipeline(keep_payload=True)
        self.decoder = Decoder()
        self.reports: list[ConnReport] = []
        self.syn_seq: int | None = None
        self.syns = 0
        self.reply: Reply | None = None
        self.fins = {"client": False, "server": False}
        self.done = False  # RST seen, or both FINs and the last ACK

    def pump(self, wait: float = 0.0) -> None:
        """Read what the capture has (waiting up to ``wait`` for the first frame)."""
        for frame in self.cap.read(timeout=max(0.0, wait)):
            if self.writer is not None:
                self.writer.write(frame)
            self.pipeline.feed(frame)
            item = self.decoder.decode(frame)
            if isinstance(item, Segment):
                self._segment(item)
            if item is not None and self.reply is None and self.syn_seq is not None:
                self.reply = classify_reply(item, ProbeId(self.src, self.dst, self.sport, self.port, self.syn_seq))
        self.reports.extend(self.pipeline.ready())

    def _segment(self, seg: Segment) -> None:
        mine = seg.src == self.src and seg.sport == self.sport and seg.dport == self.port
        theirs = seg.src == self.dst and seg.sport == self.port and seg.dport == self.sport
        if not (mine or theirs):
            return
        flags = seg.flags
        if mine and flags & SYN and not flags & ACK:
            self.syns += 1
            if self.syn_seq is None:
                self.syn_seq = seg.seq
        if flags & RST:
            self.done = True
        elif flags & FIN:
            self.fins["client" if mine else "server"] = True
        elif flags & ACK and all(self.fins.values()):
            self.done = True


def run_connect(
    target: Target,
    port: int,
    data: bytes | None = None,
    timeout: float = 1.0,
    retries: int = 2,
    write: str | None = None,
    stop: Stopper | None = None,
    after_open: Callable[[], None] | None = None,
) -> ConnectOutcome:
    """connect() with the kernel's own TCP, optional request, read the answer, close; all captured.

    The kernel retransmits the SYN itself (``TCP_SYNCNT`` = ``retries``); the
    whole attempt is bounded by the same total wait as the half-open probe.
    ``after_open`` is called once the capture and the ``write`` file are open,
    before connect() and the first read (``--user``: give up root there).
    """
    stop = stop or Stopper()
    started = time.monotonic()
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    cap: LiveCapture | None = None
    writer: PcapWriter | None = None
    err_no = 0
    sent, received, received_total = 0, bytearray(), 0
    server_first: bool | None = None
    connected = False
    try:
        try:
            sock.bind((target.src, 0))
        except OSError as e:
            raise ProbeError(f"cannot bind to {target.src}: {e.strerror}") from None
        sport = sock.getsockname()[1]
        cap = _open_capture(target, probe_filter(target, [sport]))
        writer = _open_writer(write, cap.linktype)
        if after_open is not None:
            after_open()
        watch = _Watch(target, sport, port, cap, writer)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, max(1, min(retries, 127)))
        sock.setblocking(False)
        deadline = time.monotonic() + sum(backoff_waits(timeout, retries))
        rc = sock.connect_ex((target.addr, port))
        if rc not in (0, errno.EINPROGRESS):
            err_no = rc
        while not err_no and not connected and not stop.stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                err_no = errno.ETIMEDOUT
                break
            _, writable, _ = select.select([], [sock], [], min(left, POLL))
            watch.pump()
            if writable:
                err_no = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                connected = err_no == 0
        if connected and not stop.stopped:
            sent, received, received_total, server_first = _exchange(sock, data, stop, watch.pump)
        sock.close()
        # the teardown (FIN/ACK, or the RST of an abort); after a refusal or an ICMP error just the stragglers
        end = time.monotonic() + (TEARDOWN_WAIT if connected else LINGER)
        while not stop.stopped and not watch.done:
            left = end - time.monotonic()
            if left <= 0:
                break
            watch.pump(min(POLL, left))
        watch.pump(0.005 if watch.done else 0.0)
    finally:
        sock.close()
        if cap is not None:
            cap.close()
        if writer is not None:
            writer.close()
    watch.reports.extend(watch.pipeline.finish())
    mine = [r for r in watch.reports if r.conn.client.port == sport and r.conn.server.port == port and r.conn.server.ip == watch.dst]
    reply = watch.reply
    if connected:
        state, reason = OPEN, SYN_ACK
    elif reply is not None and reply.state != OPEN:
        state, reason = reply.state, reply.reason
    elif err_no == errno.ECONNREFUSED:
        state, reason = CLOSED, RESET
    elif err_no in (errno.ETIMEDOUT, 0):
        state, reason = FILTERED, NO_RESPONSE
    else:
        state, reason = FILTERED, errno.errorcode.get(err_no, "error").lower()
    connect_time = None
    if mine and mine[0].conn.syn_ts is not None:
        c = mine[0].conn
        answer_ts = c.synack_ts if c.synack_ts is not None else reply.ts if reply is not None else None
        connect_time = None if answer_ts is None else answer_ts - c.syn_ts  # type: ignore[operator]
    _, drops = cap.stats()
    error = f"{errno.errorcode.get(err_no, str(err_no))}: {os.strerror(err_no)}" if err_no else None
    return ConnectOutcome(
        target,
        port,
        sport,
        state,
        reason,
        error,
        connect_time,
        sent,
        bytes(received),
        received_total,
        server_first,
        mine,
        cap.frames,
        drops,
        time.monotonic() - started,
        stop.stopped,
        reply,
        watch.syns,
        [f"the kernel dropped {drops} captured packets"] if drops else [],
    )


def _exchange(sock: socket.socket, data: bytes | None, stop: Stopper, pump: Callable[[float], None]) -> tuple[int, bytearray, int, bool | None]:
    """Send the request, read the answer (bounded in size and time), half-close and drain to EOF.

    Returns (bytes sent, answer kept, answer size, whether the server closed first).
    Reading until EOF before close() matters: closing with unread data makes the
    kernel abort with RST instead of FIN.
    """
    sent = 0
    received = bytearray()
    total = 0
    server_first: bool | None = None
    deadline = time.monotonic() + READ_TOTAL
    if data:
        view = memoryview(data)
        while sent < len(data) and time.monotonic() < deadline and not stop.stopped:
            _, writable, _ = select.select([], [sock], [], POLL)
            pump(0.0)
            if writable:
                try:
                    sent += sock.send(view[sent:])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
    idle_until = time.monotonic() + READ_IDLE
    shut = False
    while not stop.stopped:
        now = time.monotonic()
        if now >= deadline:
            break
        if not shut and (now >= idle_until or total >= READ_LIMIT):
            try:  # we close first: half-close, keep reading what is still coming until EOF
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            shut = True
            server_first = False
        readable, _, _ = select.select([sock], [], [], min(POLL, deadline - now))
        pump(0.0)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            break
        if not chunk:
            if server_first is None:
                server_first = True
            break
        total += len(chunk)
        if len(received) < READ_LIMIT:
            received += chunk[: READ_LIMIT - len(received)]
        idle_until = time.monotonic() + READ_IDLE
    return sent, received, total, server_first
