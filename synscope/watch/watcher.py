"""The live loop of ``synscope watch``: capture → pipeline → output, status line, signals.

A :class:`Watcher` pulls batches of frames from a live capture (anything with
``read(timeout, max_frames)``, ``stats()`` and ``linktype``, so tests can hand
it frames from a file), writes them to a pcap when asked, feeds them to the
same :class:`~synscope.read.pipeline.Pipeline` that ``read`` uses, and prints each
connection as soon as the tracker hands it on: closed connections about
:data:`WATCH_CLOSED_LINGER` after their last packet, silent ones after the idle
timeout. Stopping (Ctrl-C, SIGTERM, ``--duration``, ``--count``) prints the
summary of everything seen, open connections included.

Time: the tracker's clock is the capture clock (kernel timestamps, which are
wall-clock time); while the socket is drained the wall clock drives it too, so
an idle connection is reported even when no packet arrives at all.
"""

from __future__ import annotations

import io
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TextIO

from synscope.core import fmt
from synscope.core.addr import fmt_ip
from synscope.core.icmp import capture_filter as icmp_capture_filter
from synscope.core.model import ACK, FIN, RST, RawFrame
from synscope.read.analysis import flags as F
from synscope.read.analysis.engine import ConnAnalysis, DirectionFacts
from synscope.read.pipeline import ConnReport, Pipeline
from synscope.read.tracker import C2S, Connection
from synscope.read.verdict import COUNTS_ONLY_NOTE
from synscope.render.findings import finding_live_lines, finding_more_line
from synscope.watch.findings import FINDINGS_EVERY, NEW, LiveFindings

# A closed connection (both FINs, or RST) is printed this long after its last packet: time for
# the last ACK or a second RST. Later stragglers (a TIME_WAIT retransmitted FIN) are absorbed.
WATCH_CLOSED_LINGER = 1.0
# A connection with no packet for this long is reported as it stands (--idle-timeout)
DEFAULT_IDLE_TIMEOUT = 60.0
# Wall-clock seconds between sweeps for finished and idle connections
SWEEP_EVERY = 0.25
# Wall-clock seconds between redraws of the status line
STATUS_EVERY = 0.5
# Longest wait for packets before the loop looks at the clock, the signals and the status line
READ_TIMEOUT = 0.2
# Frames taken from the socket per read; fewer than this means the socket is drained
READ_BATCH = 4096
# Finished connections kept (without their packets) for the summary table at exit: memory stays flat
SUMMARY_ROWS = 1000
# Seconds between "kernel dropped packets" warnings when stderr is not a terminal
DROP_WARN_EVERY = 10.0

# Kernel filters (tcpdump syntax, compiled by libpcap). ICMP: only errors, the ones that can quote TCP.
ICMP_ERRORS = icmp_capture_filter()
# --handshakes: SYN, FIN or RST set. libpcap's tcp[tcpflags] is IPv4-only, so IPv6 reads the flags
# byte at its fixed offset (40-byte header + 13): TCP directly after the IPv6 header, without
# extension headers (TCP behind extension headers is not seen in this mode).
TCP_HANDSHAKES = "(tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0) or (ip6 and tcp and ip6[53] & 7 != 0)"
HANDSHAKES_NOTE = COUNTS_ONLY_NOTE

# Analysis bits that stay true when only SYN/FIN/RST are captured (a repeated FIN is still a retransmission)
_HANDSHAKE_BITS = F.A_RETRANSMISSION | F.A_REUSED_PORTS


class Capture(Protocol):
    """What the loop needs from a live source (:class:`synscope.capture.live.LiveCapture`)."""

    linktype: int

    def read(self, timeout: float | None = ..., max_frames: int = ...) -> list[RawFrame]: ...

    def stats(self) -> tuple[int, int]: ...


def _ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in sorted(set(ports)):
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def kernel_filter(user_filter: str | None = None, hosts: Iterable[bytes] = (), ports: Iterable[int] = (), handshakes: bool = False) -> str:
    """The tcpdump expression handed to the kernel.

    TCP (only SYN/FIN/RST with ``handshakes``) restricted to ``hosts`` and
    ``ports``, or any ICMP error (its quoted packet is matched against the
    hosts and ports later, by the pipeline); all of it ANDed with ``--filter``.
    """
    tcp = f"({TCP_HANDSHAKES})" if handshakes else "tcp"
    hosts = sorted(set(hosts))
    if hosts:
        tcp += " and (" + " or ".join(f"host {fmt_ip(h)}" for h in hosts) + ")"
    spans = _ranges(ports)
    if spans:
        tcp += " and (" + " or ".join(f"port {a}" if a == b else f"portrange {a}-{b}" for a, b in spans) + ")"
    expr = f"({tcp}) or {ICMP_ERRORS}"
    if user_filter:
        expr = f"({expr}) and ({user_filter})"
    return expr


def _counts_only(facts: DirectionFacts) -> DirectionFacts:
    """Fresh facts keeping only what a handshakes-only capture can tell: packets and idle gaps."""
    kept = DirectionFacts()
    kept.packets = facts.packets
    kept.max_idle = facts.max_idle
    return kept


def limit_to_handshakes(conn: Connection, state: ConnAnalysis) -> None:
    """Make a connection captured with the --handshakes filter say only what such a capture shows.

    Without data segments and plain ACKs, every FIN looks like it follows a gap
    and every ACK like it acknowledges unseen data: those findings, and the
    per-direction data figures, are dropped (a repeated SYN, FIN or RST is kept).
    The client's ACK that completes the handshake is never captured, so the
    handshake counts as completed (time unknown) when a later packet proves it:
    a FIN from either side, an RST carrying data's sequence numbers, or an RST
    with ACK from the client (a kernel abort, not a scanner's bare RST). The ACK
    of the last FIN is not captured either: a FIN that was not sent again was
    acknowledged (an unacknowledged FIN is retransmitted, and that would be seen).
    """
    for pkt in conn.packets:
        pkt.analysis &= _HANDSHAKE_BITS
        pkt.dupack_num = 0
    state.flag_totals &= _HANDSHAKE_BITS
    state.counts_only = True  # the verdict then quotes no byte counts and names the mode
    state.facts = (_counts_only(state.facts[0]), _counts_only(state.facts[1]))
    for side, direction in ((conn.client, C2S), (conn.server, 1 - C2S)):
        if side.fin_seq is not None and not side.fin_acked:
            fins = sum(1 for p in conn.packets if p.dir == direction and p.seg.flags & FIN)
            side.fin_acked = fins == 1
    if conn.synack_ts is None:
        return
    c, s = conn.client, conn.server
    proven = conn.handshake_ack_ts is not None or c.fin_seq is not None or s.fin_seq is not None
    for pkt in conn.packets:
        seg = pkt.seg
        if proven or not seg.flags & RST:
            continue
        me = c if pkt.dir == C2S else s
        if me.isn is not None and seg.seq != (me.isn + 1) & 0xFFFFFFFF:
            proven = True  # it had sent data
        elif pkt.dir == C2S and seg.flags & ACK:
            proven = True
    # the time tracked as "handshake done" was a FIN's: not a handshake time
    conn.handshake_ack_ts = None
    if proven:
        conn.midstream = True  # established, completion not captured (as for a connection picked up mid-stream)


@dataclass
class WatchConfig:
    """What the user asked of ``watch`` (besides capture and filter)."""

    iface: str = "any"
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    show_all: bool = False
    handshakes: bool = False
    as_json: bool = False
    absolute: bool = False
    duration: float | None = None
    count: int | None = None


class Watcher:
    """Runs the capture → pipeline → output loop until asked to stop."""

    def __init__(
        self,
        capture: Capture,
        pipeline: Pipeline,
        config: WatchConfig,
        out: TextIO,
        err: TextIO,
        writer: object | None = None,
        status: bool | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capture = capture
        self.pipeline = pipeline
        self.config = config
        self.out = out
        self.err = err
        self.writer = writer
        self.status = err.isatty() if status is None else status
        self.clock = clock
        self.monotonic = monotonic
        self.stop_reason: str | None = None
        self.packets = 0
        self.finished = 0
        self.failed = 0
        self.outcomes: Counter[str] = Counter()
        self.kept: deque[ConnReport] = deque(maxlen=SUMMARY_ROWS)
        self.kernel_packets = 0
        self.kernel_drops = 0
        self.orphan_icmp = 0
        self.broken_pipe = False
        self._status_len = 0
        self._started = monotonic()
        self._warned_drops = 0
        self._next_drop_warn = 0.0
        self.live_findings = LiveFindings()
        self._next_findings = 0.0
        self._unpolled = False  # connections fed to the findings since they were last asked

    # ------------------------------------------------------------------ control
    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        """Signal handler (SIGINT, SIGTERM): finish the current batch, then stop."""
        if self.stop_reason is None:
            self.stop_reason = "signal" if signum is not None else "stop"

    def run(self) -> None:
        """Capture and report until a signal, --duration or --count stops it."""
        cfg = self.config
        cap = self.capture
        pipeline = self.pipeline
        feed = pipeline.feed
        writer = self.writer
        write = writer.write if writer is not None else None  # type: ignore[attr-defined]
        start = self._started = self.monotonic()
        deadline = start + cfg.duration if cfg.duration is not None else None
        next_sweep = start + SWEEP_EVERY
        next_status = start
        count = cfg.count
        while self.stop_reason is None:
            timeout = READ_TIMEOUT
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - self.monotonic()))
            frames = cap.read(timeout=timeout, max_frames=READ_BATCH)
            if count is not None and self.packets + len(frames) >= count:
                frames = frames[: count - self.packets]
                self.stop_reason = "count"
            for frame in frames:
                if write is not None:
                    write(frame)
                feed(frame)
            self.packets += len(frames)
            now = self.monotonic()
            if now >= next_sweep or self.stop_reason is not None:
                next_sweep = now + SWEEP_EVERY
                # a drained socket means the capture clock is not behind: the wall clock may drive it
                pipeline.sweep(self.clock() if len(frames) < READ_BATCH else None)
                self._forget_orphans()
            self.emit(pipeline.ready())
            if self._unpolled and (now >= self._next_findings or self.stop_reason is not None):
                self._next_findings = now + FINDINGS_EVERY
                self.print_findings()
            if now >= next_status:
                next_status = now + STATUS_EVERY
                self._poll_drops(now)
                if self.status:
                    self._draw_status()
            if deadline is not None and now >= deadline and self.stop_reason is None:
                self.stop_reason = "duration"
            if self.broken_pipe:
                self.stop_reason = "broken pipe"

    # ------------------------------------------------------------------ output
    def emit(self, reports: list[ConnReport]) -> None:
        """Print connections as they finish; keep a stripped copy for the summary."""
        if not reports:
            return
        self._clear_status()
        for r in reports:
            self.finished += 1
            if not r.verdict.ok:
                self.failed += 1
            self.outcomes[r.verdict.outcome] += 1
            self._write_report(r)
            self.live_findings.feed(r)  # (before the packets are dropped)
            self._unpolled = True
            r.conn.packets = []  # the summary row needs the figures, not the packets
            for f in r.analysis.facts:
                f.rtt_samples = []
                f.rtt_sent = []
            self.kept.append(r)
        self._flush()
        if self.status:
            self._draw_status()

    def print_findings(self) -> None:
        """Print each finding the moment it is established (and a short line when it has grown)."""
        self._unpolled = False
        events = self.live_findings.poll()
        if not events or self.broken_pipe:
            return
        self._clear_status()
        try:
            for e in events:
                f = e.finding
                if self.config.as_json:
                    from synscope.read.findings.lines import finding_line

                    self.out.write(finding_line(f) + "\n")
                elif e.kind == NEW:
                    self.out.write(finding_live_lines(f, _stamp(f.end)))
                else:
                    self.out.write(finding_more_line(f, e.before, _stamp(f.end)))
        except BrokenPipeError:
            self.broken_pipe = True
        self._flush()

    def _write_report(self, r: ConnReport, is_open: bool = False) -> None:
        if self.broken_pipe:
            return
        try:
            if self.config.as_json:
                from synscope.read.jsonl import write_connection as write_json

                write_json(r, self.out, self.config.absolute)
                return
            self.out.write(verdict_line(r, is_open) + "\n")
            if self.config.show_all or not r.verdict.ok:
                self.out.write(timeline_block(r, self.config.absolute))
        except BrokenPipeError:
            self.broken_pipe = True

    def _flush(self) -> None:
        try:
            self.out.flush()
        except BrokenPipeError:
            self.broken_pipe = True

    # ------------------------------------------------------------------ status
    def status_text(self) -> str:
        """``c0: 3 open, 120 finished, 4 failed, 1500 packets, 0 kernel drops, 12 s``."""
        open_now = len(self.pipeline.tracker.table)
        mode = " [handshakes]" if self.config.handshakes else ""
        elapsed = self.monotonic() - self._started
        return (
            f"{self.config.iface}{mode}: {open_now} open, {self.finished} finished, {self.failed} failed, "
            f"{self.packets} packets, {self.kernel_drops} kernel drops, {elapsed:.0f} s"
        )

    def _draw_status(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        text = self.status_text()[:width]
        pad = " " * max(0, self._status_len - len(text))
        self.err.write("\r" + text + pad)
        self.err.flush()
        self._status_len = len(text)

    def _clear_status(self) -> None:
        if self.status and self._status_len:
            self.err.write("\r" + " " * self._status_len + "\r")
            self.err.flush()
            self._status_len = 0

    def _poll_drops(self, now: float) -> None:
        try:
            self.kernel_packets, self.kernel_drops = self.capture.stats()
        except OSError:
            return
        if not self.status and self.kernel_drops > self._warned_drops and now >= self._next_drop_warn:
            self.err.write(
                f"synscope: warning: the kernel dropped {self.kernel_drops - self._warned_drops} packets"
                f" ({self.kernel_drops} so far): the capture cannot keep up; try --handshakes or a narrower --filter/--host/--port\n"
            )
            self.err.flush()
            self._warned_drops = self.kernel_drops
            self._next_drop_warn = now + DROP_WARN_EVERY

    def _forget_orphans(self) -> None:
        orphans = self.pipeline.tracker.orphan_icmp
        if orphans:
            self.orphan_icmp += len(orphans)
            orphans.clear()

    # ------------------------------------------------------------------ the end
    def finish(self) -> None:
        """After the loop: report what finished, then everything still open, and the summary."""
        self.pipeline.sweep()
        self.emit(self.pipeline.ready())
        self._poll_drops(self.monotonic())
        self._clear_status()
        still_open = self.pipeline.finish()
        for r in still_open:
            self.outcomes[r.verdict.outcome] += 1
            self.live_findings.feed(r)
        self._forget_orphans()
        if self.config.as_json:
            # the same objects read --json gives for connections open at the end of a file
            for r in still_open:
                self._write_report(r, is_open=True)
            # then the final figures of every finding whose last line is out of date (as read: after the connections)
            if not self.broken_pipe:
                from synscope.read.findings.lines import finding_line

                try:
                    for f in self.live_findings.changed():
                        self.out.write(finding_line(f) + "\n")
                except BrokenPipeError:
                    self.broken_pipe = True
            self._flush()
            self._write_summary(still_open, self.err)
        else:
            self._write_summary(still_open, self.out)
            for r in still_open:
                if self.config.show_all or not r.verdict.ok:
                    self._write_report(r, is_open=True)
            self._flush()

    def summary_header(self, n_open: int) -> str:
        """Totals line of the summary."""
        elapsed = self.monotonic() - self._started
        mode = f" ({HANDSHAKES_NOTE})" if self.config.handshakes else ""
        total = self.finished + n_open
        return (
            f"watch {self.config.iface}: {fmt.duration(elapsed)}, {self.packets} packets, {self.kernel_drops} dropped by the kernel; "
            f"{total} connection{'s' if total != 1 else ''}: {self.finished} finished ({self.failed} did not end well), {n_open} still open{mode}"
        )

    def _write_summary(self, still_open: list[ConnReport], out: TextIO) -> None:
        from synscope.render.findings import write_findings
        from synscope.render.table import summary_table, table_row

        if self.broken_pipe and out is self.out:
            return
        try:
            out.write("\n" + self.summary_header(len(still_open)) + "\n")
            if self.outcomes:
                out.write("outcomes: " + ", ".join(f"{k} {n}" for k, n in self.outcomes.most_common()) + "\n")
            found = self.live_findings.current()
            if found:  # the final figures of every finding (those printed live included)
                out.write("\n")
                write_findings(found, self.live_findings.first_ts or 0.0, out)
            rows = sorted([*self.kept, *still_open], key=lambda r: r.conn.id)
            if rows:
                out.write("\n")
                outcomes = [r.verdict.outcome for r in still_open]
                for r in still_open:
                    r.verdict.outcome += " (open)"
                try:
                    summary_table([table_row(r) for r in rows], min(r.conn.first_ts for r in rows), out)
                finally:
                    for r, outcome in zip(still_open, outcomes, strict=True):
                        r.verdict.outcome = outcome
                earlier = self.finished - len(self.kept)
                if earlier > 0:
                    out.write(f"(the {earlier} connections that finished before these are in the lines printed as they ended)\n")
                if still_open:
                    out.write("(open): still open when watch stopped, judged as they stood\n")
            if self.kernel_drops:
                out.write(
                    f"warning: the kernel dropped {self.kernel_drops} packets: the analysis misses them"
                    " (try --handshakes, or a narrower --filter/--host/--port)\n"
                )
            out.flush()
        except BrokenPipeError:
            self.broken_pipe = True


def verdict_line(r: ConnReport, is_open: bool = False) -> str:
    """``13:02:11.482 #2 198.18.1.2:51030 → 198.18.2.2:9090  refused (REJ, history Sr): RST ... [2 pkts, 20.4 ms]``."""
    from synscope.render.text import connection_title

    c = r.conn
    stamp = _stamp(c.last_ts)
    pkts = c.client.packets + c.server.packets
    still = "  (still open)" if is_open else ""
    return f"{stamp} {connection_title(r)}: {r.verdict.summary}  [{pkts} pkt{'s' if pkts != 1 else ''}, {fmt.duration(c.last_ts - c.first_ts)}]{still}"


def _stamp(ts: float) -> str:
    """``13:02:11.482``: local wall-clock time of a capture timestamp."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}"


def timeline_block(r: ConnReport, absolute: bool = False) -> str:
    """The annotated timeline ``read`` shows, without the title the verdict line already gave."""
    from synscope.render.text import write_connection

    buf = io.StringIO()
    write_connection(r, buf, absolute=absolute)
    text = buf.getvalue()
    return text.split("\n", 1)[1] if "\n" in text else text
