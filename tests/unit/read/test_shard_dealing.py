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
from tests.craft import PcapWriter, conversation

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
