"""Half-open SYN probes: the pure parts.

:func:`build_syn` crafts a probe with scapy (imported lazily, only here), and
:class:`SynTemplate` stamps out thousands of probes from one crafted packet by
patching ports, sequence number and timestamp and fixing the checksums.
:func:`classify_reply` turns a decoded answer (a :class:`Segment` or an
:class:`IcmpError`) into nmap's vocabulary; :func:`rtt_of` measures an answer
against the kernel capture timestamp of the try it answers; the result
records carry what the renderers print. Nothing here opens a socket or reads
a clock: every function is a function of its arguments.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from synscope.core.addr import fmt_ip
from synscope.core.exit_codes import ExitCode
from synscope.core.icmp import PATH_ONLY_REASONS, icmp_label, icmp_reason
from synscope.core.model import ACK, CWR, ECE, RST, SYN, IcmpError, Segment, TcpOptions
from synscope.read.verdict import hops

# What a Linux client's SYN looks like (kernel 6.x defaults)
LINUX_WINDOW = 64240  # 44 x 1460
LINUX_MSS = 1460
LINUX_WSCALE = 7
DEFAULT_TTL = 64
# nmap's name when a probe is answered by a bare SYN (simultaneous / split handshake)
SPLIT_HANDSHAKE = "split-handshake-syn"
# Port states in nmap's words, the one definition every probe stage and renderer uses
OPEN: Final = "open"  # SYN-ACK (or a bare SYN: split handshake)
CLOSED: Final = "closed"  # RST
FILTERED: Final = "filtered"  # an ICMP error about the port, or no answer after every try
UNKNOWN: Final = "unknown"  # not (fully) probed: the run was stopped
# best first: a port that answered SYN-ACK once is open (as nmap decides); also the order of totals
PORT_STATES: Final = (OPEN, CLOSED, FILTERED, UNKNOWN)
STATE_RANK: Final = {state: rank for rank, state in enumerate(PORT_STATES)}
# nmap's reason words for the answers a port itself gives (ICMP errors: core.icmp.icmp_reason)
SYN_ACK: Final = "syn-ack"
RESET: Final = "reset"
NO_RESPONSE: Final = "no-response"

_PORTS_SEQ = struct.Struct("!HHI")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class SynSpec:
    """What the probe SYN carries. The defaults are a Linux client's SYN."""

    mss: int | None = LINUX_MSS
    sack: bool = True
    timestamps: bool = True
    wscale: int | None = LINUX_WSCALE
    window: int = LINUX_WINDOW
    ecn: bool = False  # ECN-setup SYN (ECE + CWR)
    ttl: int = DEFAULT_TTL

    @classmethod
    def bare(cls, window: int = LINUX_WINDOW, ecn: bool = False, ttl: int = DEFAULT_TTL) -> SynSpec:
        """A SYN without any TCP option (``--no-options``)."""
        return cls(mss=None, sack=False, timestamps=False, wscale=None, window=window, ecn=ecn, ttl=ttl)

    @property
    def flags(self) -> int:
        """TCP flags byte of the SYN."""
        return SYN | (ECE | CWR if self.ecn else 0)


def scapy_options(spec: SynSpec, ts_val: int = 0) -> list[tuple[str, object]]:
    """The option list in Linux's order (mss, sackOK, TS, nop, wscale), always a multiple of 4 bytes."""
    opts: list[tuple[str, object]] = []
    if spec.mss is not None:
        opts.append(("MSS", spec.mss))
    if spec.sack and spec.timestamps:
        opts += [("SAckOK", b""), ("Timestamp", (ts_val, 0))]
    elif spec.sack:
        opts += [("NOP", None), ("NOP", None), ("SAckOK", b"")]
    elif spec.timestamps:
        opts += [("NOP", None), ("NOP", None), ("Timestamp", (ts_val, 0))]
    if spec.wscale is not None:
        opts += [("NOP", None), ("WScale", spec.wscale)]
    return opts


def build_syn(src: str, dst: str, sport: int, dport: int, seq: int, spec: SynSpec = SynSpec(), ts_val: int = 0, ip_id: int = 0) -> bytes:
    """One probe SYN as IP packet bytes (IPv4 with DF, or IPv6), checksums filled in by scapy."""
    from scapy.layers.inet import IP, TCP

    tcp = TCP(sport=sport, dport=dport, seq=seq, ack=0, flags=spec.flags, window=spec.window, options=scapy_options(spec, ts_val))
    if ":" in dst:
        from scapy.layers.inet6 import IPv6

        return bytes(IPv6(src=src, dst=dst, hlim=spec.ttl) / tcp)
    return bytes(IP(src=src, dst=dst, ttl=spec.ttl, id=ip_id, flags="DF") / tcp)


def _sum16(data: bytes | bytearray) -> int:
    """Unfolded one's-complement sum of 16-bit big-endian words (odd length padded)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _fold(s: int) -> int:
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _csum(s: int) -> int:
    return ~_fold(s) & 0xFFFF


def _pseudo_header(src: bytes, dst: bytes, length: int) -> bytes:
    if len(src) == 16:
        return src + dst + struct.pack("!IxxxB", length, 6)
    return src + dst + struct.pack("!xBH", 6, length)


def _find_ts_option(raw_options: bytes) -> int | None:
    """Offset of the TSval field inside the options, or None."""
    i = 0
    while i < len(raw_options):
        kind = raw_options[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(raw_options) or raw_options[i + 1] < 2:
            return None
        if kind == 8:
            return i + 2
        i += raw_options[i + 1]
    return None


class SynTemplate:
    """One crafted SYN, re-stamped per probe: a sweep of 10,000 ports crafts once.

    :meth:`packet` gives exactly the bytes :func:`build_syn` would give for the
    same arguments (tested), at a few microseconds per packet instead of scapy's
    few hundred.
    """

    def __init__(self, src: str, dst: str, spec: SynSpec = SynSpec()) -> None:
        raw = build_syn(src, dst, 0, 0, 0, spec, 0, 0)
        self.spec = spec
        self.v6 = raw[0] >> 4 == 6
        self.l4 = 40 if self.v6 else (raw[0] & 0x0F) * 4
        self._raw = bytearray(raw)
        self._raw[self.l4 + 16 : self.l4 + 18] = b"\0\0"
        tcp = self._raw[self.l4 :]
        hlen = (tcp[12] >> 4) * 4
        ts = _find_ts_option(bytes(tcp[20:hlen]))
        self.ts_off = None if ts is None else self.l4 + 20 + ts
        if self.v6:
            src_b, dst_b = bytes(self._raw[8:24]), bytes(self._raw[24:40])
        else:
            src_b, dst_b = bytes(self._raw[12:16]), bytes(self._raw[16:20])
            self._raw[10:12] = b"\0\0"
            self._ip_sum = _sum16(self._raw[: self.l4])
        self._tcp_sum = _sum16(_pseudo_header(src_b, dst_b, len(tcp)) + bytes(tcp))

    def packet(self, sport: int, dport: int, seq: int, ts_val: int = 0, ip_id: int = 0) -> bytes:
        """The probe for one port: the template with these fields and fresh checksums."""
        b = bytearray(self._raw)
        l4 = self.l4
        _PORTS_SEQ.pack_into(b, l4, sport, dport, seq)
        s = self._tcp_sum + sport + dport + (seq >> 16) + (seq & 0xFFFF)
        if self.ts_off is not None:
            _U32.pack_into(b, self.ts_off, ts_val)
            s += (ts_val >> 16) + (ts_val & 0xFFFF)
        _U16.pack_into(b, l4 + 16, _csum(s))
        if not self.v6:
            _U16.pack_into(b, 4, ip_id)
            _U16.pack_into(b, 10, _csum(self._ip_sum + ip_id))
        return bytes(b)


def build_rst(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, ttl: int = DEFAULT_TTL, ip_id: int = 0) -> bytes:
    """RST+ACK closing a half-open handshake on the target (addresses packed, 4 or 16 bytes).

    It carries ACK (the kernel's own RST for an unsolicited SYN-ACK does not), so
    the timeline can tell the two apart.
    """
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, RST | ACK, 0, 0, 0))
    _U16.pack_into(tcp, 16, _csum(_sum16(_pseudo_header(src, dst, len(tcp)) + bytes(tcp))))
    if len(src) == 16:
        return struct.pack("!IHBB", 6 << 28, len(tcp), 6, ttl) + src + dst + bytes(tcp)
    ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), ip_id, 0x4000, ttl, 6, 0) + src + dst)
    _U16.pack_into(ip, 10, _csum(_sum16(ip)))
    return bytes(ip) + bytes(tcp)


# ---------------------------------------------------------------- answers


class ProbeId(NamedTuple):
    """Who a probe was: answers are matched against this (a tuple: built once per answer, cheaply)."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int


@dataclass(slots=True)
class Reply:
    """One answer to a probe, classified."""

    state: str  # open | closed | filtered
    reason: str  # syn-ack | reset | admin-prohibited | ... (nmap's words)
    sender: bytes  # who answered (the target, or a router for ICMP)
    ts: float  # kernel capture timestamp
    frame: int
    ttl: int
    flags: int = 0
    isn: int | None = None  # server ISN (SYN-ACK)
    ack: int | None = None
    window: int | None = None
    options: TcpOptions | None = None
    ecn_ip: int = 0  # ECN bits of the answer's IP header
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_version: int = 4

    @property
    def ece(self) -> bool:
        """SYN-ACK with ECE: the server agreed to use ECN."""
        return bool(self.flags & ECE) and bool(self.flags & SYN)

    @property
    def hops(self) -> int | None:
        """Hops the answer travelled, guessed from its TTL."""
        return hops(self.ttl)

    def describe(self, target: bytes | None = None) -> str:
        """Short text for the table's last column: the server's SYN-ACK options, or what the ICMP error was."""
        if self.icmp_type is not None:
            label = icmp_label(self.icmp_version, self.icmp_type, self.icmp_code or 0)
            if target is not None and self.sender == target:
                return f"{label} from the target itself"
            h = self.hops
            if h is None:
                return f"{label} from a router"
            n = h + 1  # a TTL decremented h times: the router is h+1 hops out
            return f"{label} from a router {'one hop' if n == 1 else f'{n} hops'} out"
        parts = []
        if self.window is not None and self.flags & SYN:
            parts.append(f"win {self.window}")
        if self.options is not None:
            opts = self.options.describe()
            if opts:
                parts.append(opts)
        if self.ece:
            parts.append("ecn")
        return " ".join(parts)


def reply_key(item: Segment | IcmpError, src: bytes, dst: bytes) -> tuple[int, int] | None:
    """(our source port, probed port) an answer refers to, or None when it is not about our probes."""
    if isinstance(item, IcmpError):
        if item.src == src and item.dst == dst:
            return item.sport, item.dport
        return None
    if item.src == dst and item.dst == src:
        return item.dport, item.sport
    return None


def classify_reply(item: Segment | IcmpError, probe: ProbeId) -> Reply | None:
    """Classify an answer to ``probe`` the way nmap does; None if it does not answer it.

    - SYN-ACK acknowledging our ISN: open (``syn-ack``).
    - RST (acknowledging our ISN when it carries ACK): closed (``reset``).
    - A bare SYN back: open (``split-handshake-syn``).
    - An ICMP error quoting the probe (and its sequence number, when quoted):
      filtered, reason from :func:`synscope.core.icmp.icmp_reason`, sent by a router
      or the target. Errors about the path (fragmentation needed, packet too big,
      source quench, redirect: :data:`synscope.core.icmp.PATH_ONLY_REASONS`) say
      nothing about the port and are not an answer.
    """
    want_ack = (probe.seq + 1) & 0xFFFFFFFF
    if isinstance(item, IcmpError):
        if (item.src, item.dst, item.sport, item.dport) != (probe.src, probe.dst, probe.sport, probe.dport):
            return None
        if item.seq is not None and item.seq != probe.seq:
            return None
        reason = icmp_reason(item.version, item.type, item.code)
        if reason in PATH_ONLY_REASONS:
            return None
        return Reply(FILTERED, reason, item.router, item.ts, item.frame, item.ttl, icmp_type=item.type, icmp_code=item.code, icmp_version=item.version)
    seg = item
    if (seg.src, seg.dst, seg.sport, seg.dport) != (probe.dst, probe.src, probe.dport, probe.sport):
        return None
    flags = seg.flags
    if flags & RST:
        if flags & ACK and seg.ack != want_ack:
            return None
        return Reply(CLOSED, RESET, seg.src, seg.ts, seg.frame, seg.ttl, flags=flags, ack=seg.ack if flags & ACK else None, window=seg.win, ecn_ip=seg.ecn)
    if flags & SYN and flags & ACK:
        if seg.ack != want_ack:
            return None
        return Reply(
            OPEN, SYN_ACK, seg.src, seg.ts, seg.frame, seg.ttl, flags=flags, isn=seg.seq, ack=seg.ack, window=seg.win, options=seg.options, ecn_ip=seg.ecn
        )
    if flags & SYN:
        return Reply(OPEN, SPLIT_HANDSHAKE, seg.src, seg.ts, seg.frame, seg.ttl, flags=flags, isn=seg.seq, window=seg.win, options=seg.options, ecn_ip=seg.ecn)
    return None


# ---------------------------------------------------------------- tries and RTT


@dataclass(slots=True)
class Try:
    """One SYN sent: when the capture saw it leave (kernel time) and its TSval."""

    ts_val: int | None
    sent_wall: float  # user-space send time, only a fallback
    captured_ts: float | None = None  # kernel timestamp of the captured copy
    frame: int = 0

    @property
    def ts(self) -> float:
        """Best timestamp of the send: the kernel's when the capture saw it."""
        return self.captured_ts if self.captured_ts is not None else self.sent_wall


def answered_try(tries: list[Try], reply: Reply) -> int | None:
    """Index of the try a reply answers.

    A SYN-ACK echoes the TSval of the SYN it answers (TSecr), which settles it
    even when a late answer to try 1 arrives after try 2 was sent. Without
    timestamps, the latest try sent before the answer (Karn's ambiguity:
    documented, not hidden).
    """
    if not tries:
        return None
    if reply.options is not None and reply.options.ts_ecr:
        for i, t in enumerate(tries):
            if t.ts_val == reply.options.ts_ecr:
                return i
    best = None
    for i, t in enumerate(tries):
        if t.ts <= reply.ts:
            best = i
    return best if best is not None else 0


def rtt_of(tries: list[Try], reply: Reply) -> tuple[float | None, bool]:
    """(RTT in seconds, measured on kernel timestamps at both ends)."""
    i = answered_try(tries, reply)
    if i is None:
        return None, False
    t = tries[i]
    return reply.ts - t.ts, t.captured_ts is not None


@dataclass(slots=True)
class Round:
    """One probe of one port (``--count`` makes several), with its tries and its answer."""

    number: int
    sport: int
    seq: int
    tries: list[Try] = field(default_factory=list)
    reply: Reply | None = None
    rst_sent: bool = False
    gave_up: bool = False

    @property
    def state(self) -> str:
        """open | closed | filtered, or "" while still waiting."""
        if self.reply is not None:
            return self.reply.state
        return FILTERED if self.gave_up else ""

    @property
    def reason(self) -> str:
        """nmap's reason word."""
        if self.reply is not None:
            return self.reply.reason
        return NO_RESPONSE if self.gave_up else ""

    def rtt(self) -> float | None:
        """RTT of the answered try (kernel timestamps), None without an answer."""
        return None if self.reply is None else rtt_of(self.tries, self.reply)[0]


@dataclass(slots=True)
class PortResult:
    """Everything known about one port after all rounds."""

    port: int
    state: str
    reason: str
    sender: bytes | None
    rtt: float | None
    tries: int
    reply: Reply | None
    rounds: list[Round]
    waits: list[float] = field(default_factory=list)  # how long each try of a silent round was waited for

    @property
    def ttl(self) -> int | None:
        """TTL of the answer."""
        return None if self.reply is None else self.reply.ttl

    @property
    def sender_text(self) -> str | None:
        """Who answered, printable."""
        return None if self.sender is None else fmt_ip(self.sender)

    def rtts(self) -> list[float]:
        """RTT of every answered round (for --count statistics)."""
        return [r for r in (rd.rtt() for rd in self.rounds) if r is not None]


def aggregate(port: int, rounds: list[Round], waits: list[float] | None = None) -> PortResult:
    """One result per port: the best state any round saw (open beats closed beats filtered).

    RTT is the mean over the rounds that ended in that state; ``tries`` counts
    every SYN sent to the port.
    """
    if len(rounds) == 1:  # the usual case, kept cheap for sweeps of many ports
        rd = rounds[0]
        rep = rd.reply
        if rep is not None:
            sent = rd.tries
            rtt = rep.ts - sent[0].ts if len(sent) == 1 else rd.rtt()
            return PortResult(port, rep.state, rep.reason, rep.sender, rtt, len(sent), rep, rounds, [])
    done = [r for r in rounds if r.state]
    tries = sum(len(r.tries) for r in rounds)
    if not done:
        # a run stopped early (Ctrl-C): say so rather than call the port filtered
        reason = "not-probed" if not tries else "interrupted"
        return PortResult(port, UNKNOWN, reason, None, None, tries, None, rounds, list(waits or []))
    best = min(done, key=lambda r: (STATE_RANK[r.state], r.reply is None))
    same = [r for r in done if r.state == best.state and r.reason == best.reason]
    rtts = [x for x in (r.rtt() for r in same) if x is not None]
    rtt = sum(rtts) / len(rtts) if rtts else None
    reply = best.reply
    return PortResult(port, best.state, best.reason, reply.sender if reply else None, rtt, tries, reply, rounds, list(waits or []))


def rtt_stats(values: list[float]) -> tuple[float, float, float, float] | None:
    """(min, avg, max, stddev) as hping3 / ping print them; population standard deviation."""
    if not values:
        return None
    avg = sum(values) / len(values)
    var = sum((v - avg) ** 2 for v in values) / len(values)
    return min(values), avg, max(values), math.sqrt(var)


def backoff_waits(timeout: float, retries: int) -> list[float]:
    """How long each try waits for an answer: ``timeout``, doubling (1 s, 2 s, 4 s ...)."""
    return [timeout * (2**i) for i in range(retries + 1)]


def exit_code(results: list[PortResult]) -> ExitCode:
    """0 when every port is open; FILTERED if any is filtered or silent; else CLOSED if any is closed."""
    return states_exit_code(r.state for r in results)


def states_exit_code(states: Iterable[str]) -> ExitCode:
    """The exit status for ports in these states (a scan, or the one port of ``--connect``)."""
    seen = set(states)
    if FILTERED in seen:
        return ExitCode.FILTERED
    if CLOSED in seen:
        return ExitCode.CLOSED
    return ExitCode.OK
