"""Shortcuts of the per-packet path hold what the general code gives.

- The duplicate window keeps each flow's recent segments in fixed slots (a count, not lists
  cleared and grown per packet): it must say "captured twice" exactly where the list version did.
  Checked against that version, kept here as the reference, on random segment streams (copies
  within and outside the window, IP ID 0 and not, loopback and cooked captures, both directions,
  full histories, idle flows).
- The pipeline hands the tracker the connection it gave for a flow last time (no second lookup
  of the flow key), fed frame by frame or reading a file (Pipeline.consume): the reports must be
  those of a pipeline that looks every one up. Checked on
  random captures with port reuse, superseded attempts, closes and sweeps, compact attempts,
  eviction, idle splits, capture copies and idle spells (the window's purges).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from synscope.core.model import Segment
from synscope.read.jsonl import connection_line
from synscope.read.pipeline import DUPLICATE_HISTORY, DUPLICATE_WINDOW, LOOPBACK_V4_FIRST_BYTE, Pipeline, feed_source
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import flow_key
from tests.craft import ACK, FIN, PSH, RST, SYN, PcapWriter, ether, ipv4_tcp
from tests.test_attempt_reports import _attempts

# ---------------------------------------------------------------- duplicate window


class _ListHistory:
    """The duplicate window's entry as it was: lists cleared and appended to."""

    def __init__(self, forward: bool, seg: Segment, generation: int) -> None:
        self.forward = forward
        self.segments = [seg]
        self.options = [seg.raw_options]
        self.generation = generation
        self.proven = False

    def add(self, seg: Segment) -> None:
        if len(self.segments) >= DUPLICATE_HISTORY:
            self.segments.clear()
            self.options.clear()
        self.segments.append(seg)
        self.options.append(seg.raw_options)


def _copies_expected(seg: Segment) -> bool:
    if seg.pkttype >= 0:
        return True
    return seg.src[0] == LOOPBACK_V4_FIRST_BYTE if len(seg.src) == 4 else seg.src == bytes(15) + b"\x01"


def _reference_seen_twice(recent: dict[tuple[object, ...], _ListHistory], seg: Segment, flow: tuple[object, ...], generation: int) -> int:
    """The list version of Pipeline._seen_twice: the first copy's frame number, or 0."""
    forward = flow[1] == seg.sport and flow[0] == seg.src
    entry = recent.get(flow)
    if entry is None or entry.generation < generation - 1:
        recent[flow] = _ListHistory(forward, seg, generation)
        return 0
    entry.generation = generation
    if entry.forward != forward:
        entry.forward = forward
        entry.segments.clear()
        entry.options.clear()
        entry.add(seg)
        return 0
    segments, options = entry.segments, entry.options
    for i in range(len(segments)):
        prev = segments[i]
        if (prev.seq, prev.ack, prev.flags, prev.length, prev.win, prev.ip_id, options[i]) == (
            seg.seq,
            seg.ack,
            seg.flags,
            seg.length,
            seg.win,
            seg.ip_id,
            seg.raw_options,
        ):
            if abs(seg.ts - prev.ts) <= DUPLICATE_WINDOW:
                if seg.ip_id:
                    entry.proven = True
                    return prev.frame
                if entry.proven or _copies_expected(seg):
                    return prev.frame
                segments[i] = seg
                return 0
            if len(segments) < DUPLICATE_HISTORY:
                segments[i] = seg
                return 0
            break
    entry.add(seg)
    return 0


ENDS = [(bytes((192, 0, 2, 1)), 40000), (bytes((192, 0, 2, 2)), 80), (bytes((127, 0, 0, 1)), 5000), (bytes((127, 0, 0, 1)), 5001)]


def _random_segments(rnd: random.Random, count: int) -> list[Segment]:
    """Segments of three flows drawn from a few values each, so that equal ones come often (from
    either side, within the window and past it), in runs of one sender long enough to fill a history."""
    flows = [(ENDS[0], ENDS[1]), (ENDS[2], ENDS[3]), (ENDS[1], ENDS[3])]
    cooked = rnd.random() < 0.2
    narrow = rnd.random() < 0.5  # fewer values: more segments equal to an earlier one
    switch = rnd.choice([0.1, 0.3, 0.6])  # how often another flow or direction comes next
    ts = 1_700_000_000.0
    out: list[Segment] = []
    (a, a_port), (b, b_port) = flows[0]
    for frame in range(1, count + 1):
        # mostly well inside the window, sometimes just past it or after an idle spell
        ts += rnd.choice([0.0, 0.0001, 0.0004, 0.0009, DUPLICATE_WINDOW, 0.0011, 0.003, 0.2])
        if rnd.random() < switch:
            (a, a_port), (b, b_port) = rnd.choice(flows)
            if rnd.random() < 0.5:
                (a, a_port), (b, b_port) = (b, b_port), (a, a_port)
        seg = Segment(
            frame,
            ts,
            a,
            b,
            a_port,
            b_port,
            rnd.choice([1000, 1001] if narrow else [1000, 1001, 2000, 3000]),
            rnd.choice([0, 5000]),
            rnd.choice([ACK] if narrow else [ACK, ACK | PSH, SYN]),
            512 if narrow else rnd.choice([512, 1024]),
            rnd.choice([0, 10]),
            64,
            rnd.choice([0, 7] if narrow else [0, 0, 7, 8]),
            b"" if narrow else rnd.choice([b"", b"\x01\x01\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x02"]),
        )
        if cooked:
            seg.pkttype = rnd.choice([0, 4])
        out.append(seg)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_duplicate_window_as_the_list_version(seed: int) -> None:
    rnd = random.Random(seed)
    pipeline = Pipeline()
    reference: dict[tuple[object, ...], _ListHistory] = {}
    for seg in _random_segments(rnd, 1500):
        # the capture clock moves the window's generations (and purges), as for every frame read
        pipeline._clock_tick(seg.ts, True)
        flow = flow_key(seg.src, seg.sport, seg.dst, seg.dport)
        first = _reference_seen_twice(reference, seg, flow, pipeline._generation)
        assert pipeline._seen_twice(seg, flow) == (first != 0), (seed, seg.frame)
        if first:
            assert pipeline._copy_of == first


# ---------------------------------------------------------------- the connection handed on


def _conversation(rnd: random.Random, client: str, server: str, cport: int, t: float) -> list[tuple[float, bytes]]:
    """A connection of a random shape on the given ports: complete, reset, or left open, with data
    both ways, some of it sent twice (a retransmission, or a capture copy within the window)."""
    frames: list[tuple[float, bytes]] = []
    isn, sisn = rnd.randrange(1 << 32), rnd.randrange(1 << 32)
    seq_c, seq_s = (isn + 1) & 0xFFFFFFFF, (sisn + 1) & 0xFFFFFFFF
    ip_id = rnd.choice([0, 100])

    def pkt(from_client: bool, flags: int, seq: int, ack: int, payload: bytes = b"") -> None:
        nonlocal t, ip_id
        a, b, pa, pb = (client, server, cport, 80) if from_client else (server, client, 80, cport)
        frame = ether(ipv4_tcp(a, b, pa, pb, seq, ack, flags, payload=payload, ip_id=ip_id))
        frames.append((t, frame))
        if rnd.random() < 0.1:  # captured twice
            frames.append((t + rnd.choice([0.00001, 0.002]), frame))
        if ip_id:
            ip_id += 1
        t += rnd.choice([0.00002, 0.0005, 0.01, 0.7])

    pkt(True, SYN, isn, 0)
    if rnd.random() < 0.2:
        pkt(True, SYN, isn, 0)
    pkt(False, SYN | ACK, sisn, seq_c)
    pkt(True, ACK, seq_c, seq_s)
    for _ in range(rnd.randint(0, 6)):
        data = bytes(rnd.randint(1, 40))
        from_client = rnd.random() < 0.5
        if from_client:
            pkt(True, PSH | ACK, seq_c, seq_s, data)
            if rnd.random() < 0.15:
                pkt(True, PSH | ACK, seq_c, seq_s, data)
            seq_c = (seq_c + len(data)) & 0xFFFFFFFF
            pkt(False, ACK, seq_s, seq_c)
        else:
            pkt(False, PSH | ACK, seq_s, seq_c, data)
            seq_s = (seq_s + len(data)) & 0xFFFFFFFF
            pkt(True, ACK, seq_c, seq_s)
    end = rnd.choice(["fin", "rst", "open"])
    if end == "fin":
        pkt(True, FIN | ACK, seq_c, seq_s)
        pkt(False, FIN | ACK, seq_s, (seq_c + 1) & 0xFFFFFFFF)
        pkt(True, ACK, (seq_c + 1) & 0xFFFFFFFF, (seq_s + 1) & 0xFFFFFFFF)
    elif end == "rst":
        pkt(rnd.random() < 0.5, RST | ACK, seq_c, seq_s)
    return frames


def _capture(seed: int) -> list[tuple[float, bytes]]:
    """Half-open attempts of every shape, and connections that reuse a few client ports over and over."""
    rnd = random.Random(seed)
    frames = _attempts(seed, 60)
    t0 = frames[0][0]
    for _ in range(40):
        frames += _conversation(rnd, f"198.51.100.{rnd.randint(1, 3)}", "192.0.2.80", rnd.choice([50000, 50001, 50002]), t0 + rnd.random() * 8)
    frames.sort(key=lambda f: f[0])
    return frames


SOURCE = "capture.pcap"


def _write(frames: list[tuple[float, bytes]], path: Path) -> Path:
    with open(path, "wb") as f:
        writer = PcapWriter(f)
        for ts, data in frames:
            writer.write(ts, data)
    return path


def _lines(path: Path, look_up: bool, **options: object) -> list[str]:
    """The JSON lines of the capture, fed frame by frame; ``look_up``: the pipeline forgets the
    connection it was given for each flow before every frame, so the tracker looks each one up."""
    pipeline = Pipeline(**options)  # type: ignore[arg-type]
    pipeline.source_names.append(SOURCE)
    for frame in open_capture(str(path)):  # (no sink: every frame made a RawFrame)
        if look_up:
            for entry in pipeline._recent.values():
                entry.conn = None
        pipeline.feed(frame)
    return _reports(pipeline)


def _file_lines(path: Path, **options: object) -> list[str]:
    """The JSON lines of the capture read as ``read`` reads it (the reader hands the frames to
    Pipeline.consume)."""
    pipeline = Pipeline(**options)  # type: ignore[arg-type]
    for _ in feed_source(pipeline, 0, SOURCE, open_capture(str(path)), 1 << 40):
        pass
    return _reports(pipeline)


def _reports(pipeline: Pipeline) -> list[str]:
    """Every report, made at the end (when a report is made decides what the scan watch had seen)."""
    return [connection_line(r) for r in pipeline.ready() + pipeline.finish()]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "options",
    [{}, {"compact_after": 0}, {"max_conns": 8}, {"idle_timeout": 0.5, "sweep_idle": False}, {"idle_timeout": 0.5}, {"closed_linger": 0.3}],
    ids=["plain", "compact", "evicting", "split-idle", "idle-timeout", "short-linger"],
)
def test_connection_handed_on_as_looked_up(seed: int, options: dict[str, object], tmp_path: Path) -> None:
    path = _write(_capture(seed), tmp_path / SOURCE)
    looked_up = _lines(path, True, **options)
    assert len(looked_up) > 60
    assert _lines(path, False, **options) == looked_up
    assert _file_lines(path, **options) == looked_up
