"""watch's live loop without a socket: frames from bundled captures (or built here) through a fake capture.

The loop, the early hand-on of closed connections, the idle timeout, the
--handshakes view, the status line, --count and the summary are all tested
here with a clock the test controls; tests/test_watch_live.py runs the real
thing in network namespaces.
"""

from __future__ import annotations

import io
import json
import struct

import pytest

from synscope.capture.bpf import CompiledFilter
from synscope.core.exit_codes import ExitCode
from synscope.core.model import ACK, FIN, RST, SYN, LinkType, RawFrame
from synscope.read.pipeline import Pipeline
from synscope.read.sources.pcap import open_capture
from synscope.watch.watcher import (
    SUMMARY_ROWS,
    WATCH_CLOSED_LINGER,
    WatchConfig,
    Watcher,
    kernel_filter,
    limit_to_handshakes,
)
from tests.helpers import analyse, cli, pcap

SCENARIOS = ["normal.pcap", "refused.pcap", "no-answer.pcap", "rst-midstream.pcap", "ipv6.pcap", "half-close.pcap"]


class FakeCapture:
    """Hands out frames in batches as their time comes (the clock moves on while it "waits");
    when they run out, more time passes and the watcher is stopped."""

    linktype = LinkType.ETHERNET

    def __init__(self, frames: list[RawFrame], batch: int = 4, idle_reads: int = 3) -> None:
        self.frames = frames
        self.batch = batch
        self.idle_reads = idle_reads
        self.pos = 0
        self.watcher: Watcher | None = None
        self.now = frames[0].ts if frames else 1_700_000_000.0
        self.out_at_stop = ""
        self.drops = 0

    def read(self, timeout: float | None = 0.2, max_frames: int = 4096) -> list[RawFrame]:
        if self.pos < len(self.frames):
            wait = timeout or 0.0
            if self.frames[self.pos].ts > self.now + wait:  # nothing yet: the wait times out
                self.now += wait
                return []
            out = [f for f in self.frames[self.pos : self.pos + min(self.batch, max_frames)] if f.ts <= self.now + wait]
            self.pos += len(out)
            self.now = max(self.now, out[-1].ts)
            return out
        # nothing arrives: the wall clock moves on
        self.now += 1.0
        self.idle_reads -= 1
        if self.idle_reads <= 0 and self.watcher is not None:
            self.out_at_stop = self.watcher.out.getvalue()  # type: ignore[attr-defined]
            self.watcher.request_stop()
        return []

    def stats(self) -> tuple[int, int]:
        return self.pos, self.drops

    def clock(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def frames_of(*names: str) -> list[RawFrame]:
    frames: list[RawFrame] = []
    for n in names:
        frames.extend(open_capture(pcap(n)))
    return frames


def make_watcher(frames, *, handshakes=False, idle_timeout=60.0, err=None, monotonic=None, **cfg) -> tuple[Watcher, FakeCapture]:
    cap = FakeCapture(frames, idle_reads=cfg.pop("idle_reads", 3))
    pipeline = Pipeline(closed_linger=WATCH_CLOSED_LINGER, idle_timeout=idle_timeout, prepare=limit_to_handshakes if handshakes else None)
    config = WatchConfig("test0", idle_timeout=idle_timeout, handshakes=handshakes, **cfg)
    ticks = iter(range(10**9))
    w = Watcher(
        cap,
        pipeline,
        config,
        io.StringIO(),
        err if err is not None else io.StringIO(),
        clock=cap.clock,
        monotonic=monotonic or (lambda: next(ticks) * 0.3),
    )
    cap.watcher = w
    return w, cap


def run_json(frames, **kw) -> tuple[list[dict], Watcher, FakeCapture]:
    w, cap = make_watcher(frames, as_json=True, **kw)
    w.run()
    w.finish()
    lines = [json.loads(line) for line in w.out.getvalue().splitlines()]
    return lines, w, cap


def by_ports(objs) -> dict[tuple[int, int], str]:
    return {(o["client"]["port"], o["server"]["port"]): o["outcome"] for o in objs}


def read_outcomes(*names: str) -> dict[tuple[int, int], str]:
    return {(r.conn.client.port, r.conn.server.port): r.verdict.outcome for r in analyse(*names)}


# ------------------------------------------------------------------ same answers as read


@pytest.mark.parametrize("name", SCENARIOS)
def test_watch_gives_the_outcomes_read_gives(name: str) -> None:
    objs, w, _ = run_json(frames_of(name))
    assert by_ports(objs) == read_outcomes(name)
    assert w.pipeline.tracker.table == {}  # everything handed on


def test_closed_connection_streams_before_the_capture_stops() -> None:
    objs, w, cap = run_json(frames_of("normal.pcap", "refused.pcap"))
    streamed = [json.loads(line) for line in cap.out_at_stop.splitlines()]
    assert {o["outcome"] for o in streamed} >= {"closed", "refused"}
    assert len(streamed) == len(objs)


def test_json_objects_are_the_ones_read_json_writes() -> None:
    objs, _, _ = run_json(frames_of("refused.pcap"))
    proc = cli("read", "--json", pcap("refused.pcap"))
    assert proc.returncode == 0
    want = [json.loads(line) for line in proc.stdout.splitlines()]
    for o in objs + want:
        o.pop("source")
    assert objs == want


# ------------------------------------------------------------------ idle timeout, stragglers, memory


def test_idle_connection_reported_after_the_idle_timeout() -> None:
    # SYNs 1, 1, 1, 1, 1, 2, 4 s apart: a 5 s timeout keeps them one attempt
    objs, w, cap = run_json(frames_of("no-answer.pcap"), idle_timeout=5.0, idle_reads=8)
    assert [o["outcome"] for o in objs] == ["no-answer"]
    assert "--idle-timeout" in objs[0]["verdict"]
    assert cap.out_at_stop  # reported while still capturing, not at the end
    assert w.finished == 1


ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"


def tcp_frame(n: int, ts: float, src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> RawFrame:
    """An Ethernet/IPv4/TCP frame built byte by byte (checksums left zero: nothing here checks them)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), n & 0xFFFF, 0, 64, 6, 0, bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    data = ETH + ip + tcp
    return RawFrame(n, ts, LinkType.ETHERNET, data, len(data))


def short_connection(n: int, t: float, cport: int, sport: int = 80) -> list[RawFrame]:
    """SYN, SYN-ACK, ACK, FIN-ACK, FIN-ACK, ACK between 198.18.1.2 and 198.18.2.2."""
    c, s = "198.18.1.2", "198.18.2.2"
    return [
        tcp_frame(n, t, c, cport, s, sport, 1000, 0, SYN),
        tcp_frame(n + 1, t + 0.001, s, sport, c, cport, 5000, 1001, SYN | ACK),
        tcp_frame(n + 2, t + 0.002, c, cport, s, sport, 1001, 5001, ACK),
        tcp_frame(n + 3, t + 0.003, c, cport, s, sport, 1001, 5001, FIN | ACK),
        tcp_frame(n + 4, t + 0.004, s, sport, c, cport, 5001, 1002, FIN | ACK),
        tcp_frame(n + 5, t + 0.005, c, cport, s, sport, 1002, 5002, ACK),
    ]


def test_time_wait_straggler_after_early_hand_on_is_absorbed() -> None:
    t = 1_700_000_000.0
    frames = short_connection(1, t, 40000)
    # the client's FIN again 3 s later (its TIME_WAIT answer to a lost ACK), then another connection
    frames.append(tcp_frame(7, t + 3, "198.18.1.2", 40000, "198.18.2.2", 80, 1001, 5002, FIN | ACK))
    frames += short_connection(8, t + 4, 40001)
    objs, w, _ = run_json(frames)
    assert [(o["client"]["port"], o["outcome"]) for o in objs] == [(40000, "closed"), (40001, "closed")]
    assert w.pipeline.tracker.stragglers == 1


def test_finished_connections_are_freed() -> None:
    t = 1_700_000_000.0
    frames: list[RawFrame] = []
    n = 1
    for i in range(3000):
        frames += short_connection(n, t + i * 0.01, 20000 + i)
        n += 6
    w, cap = make_watcher(frames, as_json=True)
    cap.batch = 64
    peak = 0
    read = cap.read

    def watching_read(*a, **k):
        nonlocal peak
        peak = max(peak, len(w.pipeline.tracker.table))
        return read(*a, **k)

    cap.read = watching_read  # type: ignore[method-assign]
    w.run()
    w.finish()
    assert w.finished == 3000
    # connections close 10 ms apart and leave ~1 s after: ~100 in the table, never all 3000
    assert peak < 300
    assert len(w.kept) == SUMMARY_ROWS and all(r.conn.packets == [] for r in w.kept)
    assert "the 2000 connections that finished before these" in w.err.getvalue()


# ------------------------------------------------------------------ --handshakes


def handshake_frames(*names: str) -> list[RawFrame]:
    """What the kernel filter of --handshakes lets through, applied with libpcap to bundled captures."""
    expr = kernel_filter(handshakes=True)
    out = []
    for name in names:
        reader = open_capture(pcap(name))
        compiled = None
        for f in reader:
            compiled = compiled or CompiledFilter(expr, f.linktype)
            if compiled.matches(f.data, f.orig_len):
                out.append(f)
    return out


@pytest.mark.parametrize("name", ["normal.pcap", "refused.pcap", "no-answer.pcap", "rst-midstream.pcap", "ipv6.pcap"])
def test_handshakes_mode_same_outcome_without_loss_claims(name: str) -> None:
    frames = handshake_frames(name)
    assert frames and all(_tcp_flags(f) & (SYN | FIN | RST) for f in frames if _tcp_flags(f) is not None)
    objs, _, _ = run_json(frames, handshakes=True)
    assert by_ports(objs) == read_outcomes(name)
    for o in objs:
        assert "handshakes mode" in o["verdict"]
        assert " 0 B" not in o["verdict"]
        assert "retransmitted" not in o["verdict"] or "SYN" in o["verdict"]
        for p in o["packets"]:
            assert not {"lost_segment", "ack_lost_segment", "duplicate_ack"} & set(p["analysis"])
            assert "not captured" not in (p["note"] or "")
        if o["outcome"] == "closed":
            assert o["handshake_rtt"] is None  # the handshake's ACK is not captured: no made-up RTT
            assert {o["client_state"], o["server_state"]} <= {"TIME-WAIT", "CLOSED"}


def _tcp_flags(f: RawFrame) -> int | None:
    from synscope.core.model import Segment
    from synscope.read.decode import Decoder

    item = Decoder().decode(f)
    return item.flags if isinstance(item, Segment) else None


def test_handshakes_filter_keeps_syn_fin_rst_for_ipv4_and_ipv6() -> None:
    expr = kernel_filter(handshakes=True)
    for name in ("normal.pcap", "ipv6.pcap"):
        frames = list(open_capture(pcap(name)))
        compiled = CompiledFilter(expr, frames[0].linktype)
        for f in frames:
            flags = _tcp_flags(f)
            if flags is not None:
                assert compiled.matches(f.data, f.orig_len) == bool(flags & (SYN | FIN | RST)), (name, f.frame)


# ------------------------------------------------------------------ filter expression


def test_kernel_filter_combines_hosts_ports_and_user_filter() -> None:
    from synscope.core.addr import parse_ip

    expr = kernel_filter("not net 10.0.0.0/8", [parse_ip("198.18.2.2"), parse_ip("2001:db8::1")], [80, 443, 8000, 8001, 8002])
    assert "host 198.18.2.2" in expr and "host 2001:db8::1" in expr
    assert "port 80 or port 443 or portrange 8000-8002" in expr
    assert expr.endswith("and (not net 10.0.0.0/8)")
    CompiledFilter(expr, LinkType.ETHERNET)
    CompiledFilter(kernel_filter(handshakes=True), LinkType.RAW_ALT12)  # cooked sockets (-i any)


# ------------------------------------------------------------------ the terminal


def test_status_line_on_a_terminal_only() -> None:
    tty = Tty()
    w, _ = make_watcher(frames_of("normal.pcap"), err=tty)
    w.run()
    w.finish()
    text = tty.getvalue()
    assert "\r" in text and "open," in text and "kernel drops" in text
    assert text.endswith("\r") or "\n" not in text.rsplit("\r", 1)[-1]  # the line was cleared before the summary
    w2, _ = make_watcher(frames_of("normal.pcap"))
    w2.run()
    w2.finish()
    assert w2.err.getvalue() == ""


def test_text_output_verdict_lines_timelines_and_summary() -> None:
    w, _ = make_watcher(frames_of("normal.pcap", "refused.pcap"))
    w.run()
    w.finish()
    out = w.out.getvalue()
    lines = [ln for ln in out.splitlines() if "→" in ln and ln[:2].isdigit()]
    assert len(lines) == 2
    assert any("closed (SF" in ln for ln in lines) and any("refused (REJ" in ln for ln in lines)
    assert "Next: Check the service is running" in out  # the failed one gets its timeline
    assert "Normal connection" not in out  # the good one does not (no --all)
    assert "watch test0:" in out and "2 finished (1 did not end well), 0 still open" in out
    assert "outcome" in out and "pkts c>s/s>c" in out  # the summary table


def test_open_connections_marked_in_summary() -> None:
    frames = short_connection(1, 1_700_000_000.0, 40000)[:3]  # handshake only, never closed
    w, cap = make_watcher(frames, idle_reads=1)
    w.run()
    w.finish()
    out = w.out.getvalue()
    assert "established (open)" in out and "1 still open" in out


def test_kernel_drops_are_reported() -> None:
    w, cap = make_watcher(frames_of("normal.pcap"))
    cap.drops = 7
    w.run()
    w.finish()
    assert "7 dropped by the kernel" in w.out.getvalue()
    assert "the kernel dropped 7 packets" in w.err.getvalue()


def test_count_stops_and_writes_exactly_n_packets() -> None:
    class Writer:
        def __init__(self) -> None:
            self.frames: list[RawFrame] = []

        def write(self, f: RawFrame) -> None:
            self.frames.append(f)

    w, cap = make_watcher(frames_of("normal.pcap"), count=5, idle_reads=100)
    w.writer = writer = Writer()
    w.run()
    assert w.stop_reason == "count" and w.packets == 5 and len(writer.frames) == 5


def test_duration_stops() -> None:
    clock = iter(x * 0.1 for x in range(10**6))
    w, cap = make_watcher(frames_of("normal.pcap"), duration=2.0, idle_reads=10**6, monotonic=lambda: next(clock))
    w.run()
    assert w.stop_reason == "duration"


def test_broken_pipe_stops_quietly() -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    w, _ = make_watcher(frames_of("refused.pcap", "normal.pcap"), idle_reads=50)
    w.out = Closed()
    w.run()
    w.finish()
    assert w.broken_pipe and w.stop_reason == "broken pipe"


# ------------------------------------------------------------------ CLI errors (no root needed)


def test_bad_filter_is_a_usage_error() -> None:
    proc = cli("watch", "--filter", "tcp and and")
    assert proc.returncode == ExitCode.USAGE
    assert proc.stderr.count("\n") == 1 and "does not compile" in proc.stderr


def test_missing_interface_is_a_usage_error() -> None:
    proc = cli("watch", "-i", "nosuch-if0")
    assert proc.returncode == ExitCode.USAGE
    assert proc.stderr.strip() == "synscope: no interface named 'nosuch-if0' (see: ip -br link)"


def test_bad_host_is_a_usage_error() -> None:
    proc = cli("watch", "--host", "not-an-ip")
    assert proc.returncode == ExitCode.USAGE
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["icmp-prohibited.pcap", "reject-port.pcap"])
def test_icmp_rejected_attempt_is_handed_on_at_once(name: str) -> None:
    """An attempt ended by an ICMP error (connect() fails there) is finished: streamed before the
    capture stops, not held until --idle-timeout (and not worded as idle)."""
    objs, _, cap = run_json(frames_of(name), idle_timeout=3600.0)
    streamed = [json.loads(line) for line in cap.out_at_stop.splitlines()]
    rejected = [o for o in streamed if o["icmp"]]
    assert rejected and all(o["outcome"].startswith("icmp-") for o in rejected)
    assert all("--idle-timeout" not in o["verdict"] for o in rejected)
    assert all(o["client_state"] == "CLOSED" for o in rejected)


def test_given_up_attempt_is_handed_on_without_waiting_for_the_idle_timeout() -> None:
    """no-answer.pcap: 8 SYNs (gaps 1, 1, 1, 1, 1, 2, 4 s), then the client gives up (ETIMEDOUT):
    one attempt, reported once no SYN came for twice the last gap, long before --idle-timeout."""
    objs, w, cap = run_json(frames_of("no-answer.pcap"), idle_timeout=3600.0, idle_reads=12)
    assert [o["outcome"] for o in objs] == ["no-answer"] and objs[0]["syn_retransmissions"] == 7
    streamed = [json.loads(line) for line in cap.out_at_stop.splitlines()]
    assert [o["outcome"] for o in streamed] == ["no-answer"]
    assert "--idle-timeout" not in streamed[0]["verdict"]
