"""The report of a half-open attempt (a SYN, its retransmissions, SYN-ACKs) takes shortcuts in the
general code: the handshake times return at once without the packet they are measured to, the JSON
line writes a one-packet connection's end as its start and looks recurring strings and addresses
up. Each must give what the general computation gives: here on randomised attempts of every shape
(SYN only, SYN sent again 1-6 times, SYN-ACK, SYN-ACK sent again, SYN cookies, superseded by a new
ISN, port reuse and application retries, IPv6, several option layouts), kept compact or not."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from synscope.read import jsonl
from synscope.read.jsonl import compact, connection_line, connection_object
from synscope.read.pipeline import ConnReport, Pipeline, run
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import Connection
from tests.craft import ACK, RST, SYN, PcapWriter, ether, ipv4_tcp, ipv6_tcp, tcp_options

T0 = 1_700_000_000.0
# SYN option layouts: none, MSS alone, MSS + window scale, Linux's full set with timestamps, a
# malformed length
OPTIONS = [b"", tcp_options(sack=False, wscale=None), tcp_options(sack=False), tcp_options(ts=(7, 0)), bytes.fromhex("02050000")]
SHAPES = ("syn", "syn-again", "synack", "synack-again", "cookie", "superseded", "reuse", "retry", "refused", "abandoned", "synack-first", "completed")


def _tcp(v6: bool, src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, options: bytes, ttl: int = 64) -> bytes:
    if v6:
        return ether(ipv6_tcp(src, dst, sport, dport, seq, ack, flags, options=options, hlim=ttl))
    return ether(ipv4_tcp(src, dst, sport, dport, seq, ack, flags, options=options, ttl=ttl))


def _attempts(seed: int, count: int) -> list[tuple[float, bytes]]:
    """``count`` attempts of random shapes from random clients, interleaved in time."""
    rnd = random.Random(seed)
    frames: list[tuple[float, bytes]] = []
    for n in range(count):
        frames += _attempt(rnd, n)
    frames.sort(key=lambda f: f[0])
    return frames


def _attempt(rnd: random.Random, n: int) -> list[tuple[float, bytes]]:
    """The frames of attempt ``n``, of a random shape."""
    frames: list[tuple[float, bytes]] = []
    shape = rnd.choice(SHAPES)
    v6 = rnd.random() < 0.2
    client = f"2001:db8::{n + 1:x}" if v6 else f"198.18.{n // 250}.{n % 250 + 1}"
    server = rnd.choice(["2001:db8:1::10", "2001:db8:1::11"] if v6 else ["192.0.2.10", "192.0.2.11", "127.0.0.1"])
    if server == "127.0.0.1":
        client = "127.0.0.1"
    sport, dport = 1024 + n, rnd.choice([80, 443])
    isn, sisn = rnd.randrange(1 << 32), rnd.randrange(1 << 32)
    opts = rnd.choice(OPTIONS)
    t = T0 + rnd.random() * 5

    def syn(at: float, seq: int = isn, port: int = sport) -> None:
        frames.append((at, _tcp(v6, client, server, port, dport, seq, 0, SYN, opts, ttl=rnd.choice([64, 57]))))

    def synack(at: float, port: int = sport) -> None:
        frames.append((at, _tcp(v6, server, client, dport, port, sisn, (isn + 1) & 0xFFFFFFFF, SYN | ACK, rnd.choice(OPTIONS), ttl=rnd.choice([64, 50]))))

    rtt = rnd.choice([2e-05, 0.0002, 0.0123, 0.3])
    if shape in ("syn", "syn-again", "superseded", "retry"):
        tries = 1 if shape != "syn-again" else rnd.randint(2, 7)
        for k in range(tries):
            syn(t + (2**k - 1) * rnd.choice([1.0, 0.2]))
        if shape == "superseded":
            syn(t + rnd.choice([0.05, 0.5, 3.0]), (isn + 99991) & 0xFFFFFFFF)
        if shape == "retry":
            gap = rnd.choice([0.5, 2.0])
            for k in range(1, rnd.randint(2, 4)):
                syn(t + k * gap, rnd.randrange(1 << 32), sport + 20000)
    elif shape in ("synack", "synack-again", "cookie", "abandoned", "completed"):
        tries = rnd.randint(1, 3)
        for k in range(tries):
            syn(t + k * 1.0)
        for k in range(1 if shape in ("synack", "cookie", "abandoned") else rnd.randint(2, 6)):
            synack(t + rtt + k * rnd.choice([1.0, 3.0]))
        if shape == "completed":  # (its third packet makes it a full connection: the general path)
            frames.append((t + 2 * rtt + 2.0, _tcp(v6, client, server, sport, dport, (isn + 1) & 0xFFFFFFFF, (sisn + 1) & 0xFFFFFFFF, ACK, b"")))
        if shape == "abandoned":
            frames.append((t + 2 * rtt, _tcp(v6, client, server, sport, dport, (isn + 1) & 0xFFFFFFFF, 0, RST, b"")))
    elif shape == "reuse":
        syn(t)
        synack(t + rtt)
        syn(t + rnd.choice([0.3, 1.5]), (isn + 7777) & 0xFFFFFFFF)
    elif shape == "refused":
        syn(t)
        frames.append((t + rtt, _tcp(v6, server, client, dport, sport, 0, (isn + 1) & 0xFFFFFFFF, RST | ACK, b"")))
    else:  # the SYN-ACK before the SYN (a merged capture's clock), then nothing
        synack(t)
        syn(t + rtt)
    return frames


@pytest.fixture(scope="module", params=[1, 2, 3])
def attempts_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("attempts") / f"attempts-{request.param}.pcap"
    with open(path, "wb") as f:
        writer = PcapWriter(f)
        for ts, frame in _attempts(request.param, 300):
            writer.write(ts, frame)
    return path


def _reports(path: Path, compact_records: bool) -> list[ConnReport]:
    pipeline = Pipeline(compact_after=0 if compact_records else None)
    reader = open_capture(str(path))
    return list(run([(reader.path, reader)], pipeline))


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None or end < start else end - start


def _handshake_times(conn: Connection) -> tuple[float | None, float | None, float | None]:
    """(handshake_rtt, server_leg, client_leg) as the general formula gives them, with no early return."""
    start = conn.answered_syn_ts
    end = conn.handshake_ack_ts
    rtt = None if conn.synack_before_syn or conn.spans_clock_step(start, end) else _span(start, end)
    synacks = conn._synacks_between(start, end)
    first = synacks[0] if synacks[0] is not None else conn.synack_ts
    server = None if conn.spans_clock_step(start, first) else _span(start, first)
    last = conn._synacks_between(start, end)[1]
    last = last if last is not None else conn.synack_ts
    client = None if conn.synack_before_syn or conn.spans_clock_step(last, end) else _span(last, end)
    return rtt, server, client


def test_attempt_lines_are_the_general_objects(attempts_file: Path) -> None:
    """Every line is the general object's text, and holding attempts compact changes none."""
    reports = _reports(attempts_file, True)
    assert len(reports) >= 300
    rules = set()
    for r in reports:
        rules.add(r.verdict.rule)
        for absolute in (False, True):
            assert connection_line(r, absolute) == compact(connection_object(r, absolute))
    # the shapes reach the rules they were made for
    assert {"no-answer", "synack-unanswered", "superseded-syn", "refused", "client-reset-handshake"} <= rules
    assert [connection_line(r) for r in reports] == [connection_line(r) for r in _reports(attempts_file, False)]


def test_handshake_times_are_the_general_formula(attempts_file: Path) -> None:
    measured = completed = 0
    for r in _reports(attempts_file, True):
        conn = r.conn
        assert (conn.handshake_rtt, conn.server_leg, conn.client_leg) == _handshake_times(conn)
        measured += conn.server_leg is not None
        completed += conn.client_leg is not None
    # (the SYN-ACK shapes are measured, not only skipped)
    assert measured > 50
    assert completed > 5


def test_end_of_a_one_packet_connection_is_its_start() -> None:
    """The end is written as the start only when the two are the same number, with the same sign."""
    for r in _reports_of_one_file():
        conn = r.conn
        for first, last in ((T0, T0), (T0, T0 + 1e-06), (0.0, -0.0), (-0.0, 0.0), (0.0, 0.0), (1.5, 1.5)):
            conn.first_ts, conn.last_ts = first, last
            assert connection_line(r) == compact(connection_object(r))


def _reports_of_one_file() -> list[ConnReport]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "few.pcap"
        with open(path, "wb") as f:
            writer = PcapWriter(f)
            for ts, frame in _attempts(9, 20):
                writer.write(ts, frame)
        return _reports(path, True)


# the members of a direction and a value each that the direction of an attempt's silent server
# does not have (each alone must leave the shortcut for the general text)
_SIDE_CHANGES = [("isn", 5), ("next_seq", 9), ("highest_ack", 3), ("win_scale", 7), ("win_scale", -2), ("syn_options", "mss")]
_FACT_CHANGES = [
    ("packets", 1),
    ("payload_bytes", 10),
    ("data_segments", 1),
    ("retransmitted_segments", 1),
    ("retransmitted_bytes", 5),
    ("fast_retransmissions", 1),
    ("out_of_order", 1),
    ("duplicate_acks", 2),
    ("rtt_samples", [0.001]),
    ("zero_window_time", -0.0),
    ("zero_window_time", 0.25),
    ("max_idle", -0.0),
    ("max_idle", 1.5),
]


def test_a_silent_direction_as_the_object_writes_it() -> None:
    """The text of a direction that sent nothing is a constant: any one input that differs must
    leave the shortcut (and the general text still be the object's)."""
    reports = [r for r in _reports_of_one_file() if r.conn.server.packets == 0]
    assert reports
    r = reports[0]
    side, facts, loss = r.conn.server, r.analysis.facts[1], r.analysis.loss[1]
    assert connection_line(r) == compact(connection_object(r))
    assert '"s2c":' + jsonl._UNTOUCHED in connection_line(r)
    for name, value in _SIDE_CHANGES:
        before = getattr(side, name)
        setattr(side, name, r.conn.client.syn_options if value == "mss" else value)
        assert connection_line(r) == compact(connection_object(r)), name
        setattr(side, name, before)
    for name, value in _FACT_CHANGES:
        before = getattr(facts, name)
        setattr(facts, name, value)
        assert connection_line(r) == compact(connection_object(r)), name
        setattr(facts, name, before)
    for k in range(len(jsonl.LOSS_NAMES)):
        counts = [0] * len(jsonl.LOSS_NAMES)
        counts[k] = 1
        loss.counts = counts
        assert connection_line(r) == compact(connection_object(r)), jsonl.LOSS_NAMES[k]
    loss.counts = [0] * len(jsonl.LOSS_NAMES)
    assert '"s2c":' + jsonl._UNTOUCHED in connection_line(r)
