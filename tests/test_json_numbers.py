"""The JSON writer formats times and rounded numbers itself (the encoder and repr(round())
were half the cost of a run): it must write exactly what the JSON encoder writes."""

from __future__ import annotations

import json
import math
import random
import struct

from synscope.core.fmt import fixed
from synscope.read.jsonl import rounded_text, ts_text

ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _numbers(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    makers = [
        lambda: (rng.randint(2**23, 2**32 - 1) * 10**6 + rng.randint(0, 999_999)) / 10**6,  # µs pcap times
        lambda: rng.randint(2**23, 2**32 - 1) + rng.randint(0, 999_999) / 1e6,  # computed as the reader does
        lambda: (rng.randint(2**30, 2**31) * 10**9 + rng.randint(0, 10**9 - 1)) / 10**9,  # ns pcap times
        lambda: rng.uniform(0, 1e-3),  # RTTs, gaps
        lambda: rng.uniform(-1, 1) * 10 ** rng.randint(-9, 13),
        lambda: rng.randint(0, 10**6) / 10**6,
        lambda: struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0],  # any bit pattern
        # halfway between two numbers of 1, 4 or 6 places, or next to it: rounding decides the digit
        lambda: (rng.randint(-(10**9), 10**9) + 0.5) / 10 ** rng.choice((1, 4, 6)) * (1 + rng.choice((-1, 0, 1)) * 2**-52),
        lambda: rng.randint(1, 2**20) / 2 ** rng.randint(1, 20),  # binary fractions: exact ties at some places
        lambda: (rng.randint(-100, 100) + 0.5) / 10**6 * (1 + rng.choice((-1, 0, 1)) * 2**-52),  # tiny, near a tie
    ]
    return [makers[i % len(makers)]() for i in range(count)]


EDGES = [
    0.0078125,
    -0.0078125,
    0.25,
    0.35,
    2.5e-5,
    1e12 / 10**6,
    0.1 + 0.2,
    0.0,
    -0.0,
    1e-4,
    9.99995e-5,
    5e-7,
    4.9999e-7,
    -5e-7,
    -1e-9,
    1e8,
    99999999.9999995,
    2.0**23,
    2.0**23 - 1e-6,
    2.0**32,
    2.0**32 - 1e-6,
    1700000000.0,
    1700000000.5,
    math.inf,
    -math.inf,
    math.nan,
]


def test_capture_times_are_written_as_repr_of_round_9() -> None:
    for x in _numbers(1, 70_000) + EDGES:
        if math.isfinite(x):
            assert ts_text(x) == repr(round(x, 9)), repr(x)


def test_rounded_numbers_are_written_as_the_encoder_writes_them() -> None:
    for x in _numbers(2, 70_000) + EDGES:
        for places in (0, 1, 4, 6):
            expected = ENCODE(round(x, places)) if math.isfinite(x) else ENCODE(x)
            assert rounded_text(x, places) == expected, (repr(x), places)
    assert rounded_text(None) == "null"
    # an int stays an int, as the encoder writes it
    assert rounded_text(3) == "3"  # type: ignore[arg-type]


def test_fixed_point_text_is_what_format_writes() -> None:
    """Durations, sizes and rates in verdicts and notes are written from integers where that is exact."""
    for x in _numbers(3, 70_000) + EDGES + [-1e-9, 1e12, 5e11 + 0.5, 2.5, 0.125, -0.125]:
        for places in range(7):
            assert fixed(x, places) == format(x, f".{places}f"), (repr(x), places)
    assert fixed(1536, 0) == "1536"  # an int, as byte counts come


def test_addresses_are_written_as_the_encoder_writes_them() -> None:
    """The client and server addresses of a connection's object: the encoder's text of the printed
    address, also for one seen before and after the table of recurring ones was emptied."""
    from synscope.core.addr import fmt_ip
    from synscope.read.jsonl import MAX_WORDS, ip_text

    rng = random.Random(4)
    addresses = [bytes(4), b"\xff" * 4, bytes(16), bytes(15) + b"\x01", bytes(10) + b"\xff\xff\xc0\x00\x02\x0a", b"\x01\x02"]
    addresses += [rng.randbytes(rng.choice((4, 16))) for _ in range(3 * MAX_WORDS)]
    for packed in addresses + addresses[:50]:
        assert ip_text(packed) == ENCODE(fmt_ip(packed)), packed.hex()
