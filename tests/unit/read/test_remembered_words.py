"""The texts looked up rather than written again (the verdict's closing words for SYNs that got
nothing back, the JSON writer's verdict members and quiet directions) are the texts written
afresh, on random input drawn from small pools so that keys recur and differ in one value."""

from __future__ import annotations

import json
import random

import pytest

from synscope.core.model import TcpOptions, parse_tcp_options
from synscope.core.seqnum import UNSEEN
from synscope.read import jsonl, verdict
from synscope.read.analysis import annotate
from synscope.read.analysis.engine import DirectionFacts
from synscope.read.analysis.loss import LossFacts
from synscope.read.evidence import CERTAIN, LIKELY, POSSIBLE
from synscope.read.tracker import Side
from synscope.read.verdict import Verdict

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_silence_words_remembered_are_the_words_written(seed: int) -> None:
    rng = random.Random(seed)
    verdict._SILENCE_WORDS.clear()
    for _ in range(3000):
        args = (
            rng.choice(["1 SYN, nothing back", "3 SYNs, gaps 1.00 s, 2.00 s, nothing back"]),
            rng.choice(["One SYN and nothing came back before the capture ended.", "One SYN and nothing came back before the capture ended 3.30 s later."]),
            rng.random() < 0.5,
            rng.choice(["192.0.2.10", "2001:db8::1", "127.0.0.1"]),
            rng.choice([22, 443, 8443]),
            rng.random() < 0.3,
            rng.random() < 0.3,
            rng.random() < 0.3,
        )
        assert verdict._silence_words(*args) == verdict.silence_words(*args)
    assert len(verdict._SILENCE_WORDS) <= verdict.MAX_REMEMBERED


def _random_verdict(rng: random.Random) -> Verdict:
    return Verdict(
        rng.choice(["no-answer", "handshake-incomplete", "refused"]),
        rng.choice(["S0", "S1", "REJ", "RSTOS0"]),
        rng.choice(["S", "Sh", "Sr", "ShR"]),
        "summary",
        rng.choice(["One SYN and nothing came back.", 'A "quoted" µs explanation.', "Another."]),
        rng.choice(["", "Check the return path.", "nc -vz 192.0.2.10 443"]),
        rng.random() < 0.5,
        rule=rng.choice(["", "no-answer", "synack-unanswered"]),
        confidence=rng.choice([CERTAIN, LIKELY, POSSIBLE]),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_verdict_members_remembered_are_the_members_written(seed: int) -> None:
    rng = random.Random(seed)
    states = ["CLOSED", "SYN-SENT", "SYN-RECEIVED", "unknown"]
    for _ in range(2000):
        v = _random_verdict(rng)
        expected = (
            f'"state":{json.dumps(v.conn_state)},"history":{json.dumps(v.history)},"outcome":{json.dumps(v.outcome)},'
            f'"ok":{json.dumps(v.ok)},"verdict":{json.dumps(v.explanation)},"rule":{json.dumps(v.rule or None)},'
            f'"confidence":{json.dumps(v.confidence)},"evidence":['
        )
        assert jsonl._verdict_head(v) == expected
        client, server = rng.choice(states), rng.choice(states)
        tail = f'"next_step":{json.dumps(v.next_step or None)},"client_state":{json.dumps(client)},"server_state":{json.dumps(server)},'
        assert jsonl._verdict_tail(v.next_step, client, server) == tail


def _quiet_direction(rng: random.Random) -> tuple[DirectionFacts, LossFacts, Side, Side]:
    f = DirectionFacts()
    f.packets = rng.choice([1, 2, 3, 16383, 16384])
    side = Side(b"\xc0\x00\x02\x0a", 443)
    peer = Side(b"\xc6\x12\x00\x01", 40000)
    side.isn = rng.choice([None, 0, 12345, 4294967295])
    side.base = rng.choice([UNSEEN, 0, 12345])
    peer.base = rng.choice([UNSEEN, 0, 777])
    side.next_seq = rng.choice([UNSEEN, 1, 4094, 4095, 12346, 4294967295])
    side.highest_ack = rng.choice([UNSEEN, 1, 778, 4095])
    options: list[TcpOptions | None] = [None, *(parse_tcp_options(bytes.fromhex(h)) for h in ("", "020405b4", "0204ffff", "020405b40402"))]
    side.syn_options = rng.choice(options)
    side.win_scale = rng.choice([-2, -1, 0, 7, 14, 30, 31])
    if rng.random() < 0.2:
        f.rtt_samples = [rng.choice([0.0002, 0.5])]
    if rng.random() < 0.1:
        f.max_idle = rng.choice([0.0, -0.0, 1.25])
    return f, LossFacts(), side, peer


@pytest.mark.parametrize("seed", SEEDS)
def test_quiet_directions_remembered_are_the_directions_written(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        f, lf, side, peer = _quiet_direction(rng)
        absolute = rng.random() < 0.3
        assert jsonl._direction_text(f, lf, side, peer, absolute) == jsonl.compact(jsonl._direction(f, lf, side, peer, absolute))
    assert len(jsonl._QUIET_MEMBERS) <= jsonl.MAX_WORDS


@pytest.mark.parametrize("seed", SEEDS)
def test_answer_notes_remembered_are_the_notes_written(seed: int) -> None:
    rng = random.Random(seed)
    base = 1700000000.0 + rng.random()
    # differences of capture times (in steps of their precision), and edge cases
    delays = [(base + rng.choice([0.0002, 0.00021, 0.05, 1.5, 130.0]) * rng.random()) - base for _ in range(300)]
    delays += [0.0, -0.0, 1e-7, 0.0001, 0.00009999, 0.001, 0.000999, 1.0, 119.99, 120.0, 7200.0, float("inf")]
    for _ in range(3000):
        delay = rng.choice(delays)
        assert annotate._remembered_answer_note(delay) == annotate.answer_note(delay)
    assert len(annotate._ANSWER_NOTES) <= annotate.MAX_ANSWER_NOTES
