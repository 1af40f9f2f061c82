"""A split run deals connections to workers by load, and every worker deals alike.

Each worker of ``read --workers N`` reads every frame and tracks the connections dealt to it
(``Pipeline._tracks``): a 4-tuple's bucket goes, at its first frame, to the worker dealt the fewest
frames so far. Checked here with the workers' pipelines side by side on a crafted capture whose
long-lived 4-tuples all fall on one worker when hashed (``mix % workers``, as before): each
connection must be reported by exactly one worker, as a single run reports it, and the frames must
be shared out evenly. (tests/test_parallel.py holds the merged output of real split runs byte for
byte against one worker on every bundled capture.)
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from synscope.read.jsonl import connection_line
from synscope.read.pipeline import Pipeline, run, shard_mix
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import flow_key
from tests.craft import ACK, SYN, PcapWriter, conversation, ether, ipv4_tcp

CLIENT = "198.18.0.1"
SERVER = "198.19.0.1"
T0 = 1_700_000_000.0


def _bucket(cport: int, sport: int) -> int:
    return shard_mix(flow_key(socket.inet_aton(CLIENT), cport, socket.inet_aton(SERVER), sport))


def _capture(path: Path) -> int:
    """Four busy 4-tuples (20 connections each, one after another) whose buckets are all even,
    and 40 single connections; returns the number of frames of the busy ones."""
    frames: list[tuple[float, bytes]] = []
    busy = [p for p in range(20000, 21000) if _bucket(p, 443) % 2 == 0][:4]
    busy_frames = 0
    for i, cport in enumerate(busy):
        for n in range(20):
            conn = conversation(CLIENT, SERVER, cport, 443, T0 + i * 0.01 + n * 1.0, isn=(1000 + n * 100_000, 5000))
            frames += conn
            busy_frames += len(conn)
    for n in range(40):
        frames += conversation(CLIENT, SERVER, 30000 + n, 80, T0 + 0.5 + n * 0.5)
    frames.sort(key=lambda f: f[0])
    with path.open("wb") as out:
        writer = PcapWriter(out)
        for ts, frame in frames:
            writer.write(ts, frame)
    return busy_frames


def _lines(path: Path, worker: int = -1, workers: int = 0) -> list[dict]:
    pipeline = Pipeline()
    if workers:
        pipeline.share(worker, workers)
    with open_capture(str(path)) as reader:
        return [json.loads(connection_line(r)) for r in run([(str(path), reader)], pipeline)]


def _who(line: dict) -> tuple:
    return (line["client"]["port"], line["start"])


def test_workers_share_out_busy_flows_that_hashing_would_put_on_one(tmp_path: Path) -> None:
    path = tmp_path / "busy.pcap"
    busy_frames = _capture(path)
    single = _lines(path)
    total = sum(len(line["packets"]) for line in single)
    assert busy_frames > total / 2  # hashed, one worker would take over half the frames and more
    shares = [_lines(path, w, 2) for w in range(2)]
    seen = sorted(_who(line) for share in shares for line in share)
    assert seen == sorted(_who(line) for line in single), "each connection tracked by exactly one worker"
    tracked = [sum(len(line["packets"]) for line in share) for share in shares]
    assert sum(tracked) == total
    assert min(tracked) >= 0.4 * total, tracked


def _bulk_flow(cport: int, t0: float, segments: int, gap: float) -> list[tuple[float, bytes]]:
    """A long download: handshake, then ``segments`` data segments from the server, each ACKed."""
    c, s = CLIENT, SERVER
    frames = [
        (t0, ether(ipv4_tcp(c, s, cport, 9000, 100, 0, SYN))),
        (t0 + 0.001, ether(ipv4_tcp(s, c, 9000, cport, 500, 101, SYN | ACK))),
        (t0 + 0.002, ether(ipv4_tcp(c, s, cport, 9000, 101, 501, ACK))),
    ]
    seq = 501
    for n in range(segments):
        t = t0 + 0.003 + n * gap
        frames.append((t, ether(ipv4_tcp(s, c, 9000, cport, seq, 101, ACK, payload=b"x" * 100))))
        seq += 100
        frames.append((t + gap / 2, ether(ipv4_tcp(c, s, cport, 9000, 101, seq, ACK))))
    return frames


def test_the_worker_holding_a_long_flow_still_gets_its_share_of_connections(tmp_path: Path) -> None:
    # A download of 2,000 frames and, over the same time, 200 short connections of ~10 frames:
    # counted in frames alone the download's worker got none of them (its frames kept it ahead
    # while the other worker took every new connection), though each connection costs a worker
    # its verdict, findings and JSON head besides its frames (OPENING_WEIGHT).
    frames = _bulk_flow(40000, T0, 1000, 0.01)
    for n in range(200):
        frames += conversation(CLIENT, SERVER, 30000 + n, 80, T0 + 0.02 + n * 0.05)
    frames.sort(key=lambda f: f[0])
    path = tmp_path / "bulk.pcap"
    with path.open("wb") as out:
        writer = PcapWriter(out)
        for ts, frame in frames:
            writer.write(ts, frame)
    shares = [_lines(path, w, 2) for w in range(2)]
    bulk_worker = next(w for w in range(2) if any(line["client"]["port"] == 40000 for line in shares[w]))
    short = [sum(1 for line in share if line["client"]["port"] != 40000) for share in shares]
    assert sum(short) == 200
    assert short[bulk_worker] >= 40, short
