"""``FlowKeys`` hands out flow keys again; each must be the key ``flow_key`` makes.

The pipeline takes the key of every common frame from it (``Pipeline.consume``), so a wrong
key would put a packet into another connection. Checked here against ``flow_key`` on random
4-tuples (both directions, equal addresses, colliding slots, addresses as other but equal
bytes objects), and that a flow's key is the same object again while it keeps its slot.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from synscope.read.analysis.engine import SACK_KIND, SACKLESS_OPTIONS, may_hold_sack
from synscope.read.tracker import FLOW_KEY_SLOTS, FlowKeys, flow_key

ADDRESSES = [bytes((198, 18, 0, i)) for i in range(4)] + [bytes(15) + bytes((i,)) for i in range(2)]
PORTS = st.sampled_from([0, 1, 80, 255, 256, 443, 40000, 40001, 65535])
TUPLES = st.tuples(st.sampled_from(ADDRESSES), PORTS, st.sampled_from(ADDRESSES), PORTS)


@settings(max_examples=300)
@given(st.lists(st.tuples(TUPLES, st.booleans()), min_size=1, max_size=60))
def test_keys_equal_flow_key(packets: list[tuple[tuple[bytes, int, bytes, int], bool]]) -> None:
    keys = FlowKeys()
    for (src, sport, dst, dport), copied in packets:
        if copied:  # the same address in another bytes object (the decoder's table started over)
            src, dst = bytes(bytearray(src)), bytes(bytearray(dst))
        key = keys.key(src, sport, dst, dport)
        assert key == flow_key(src, sport, dst, dport)
        assert key == keys.key(dst, dport, src, sport)  # direction-free


def test_same_flow_same_tuple_and_collisions() -> None:
    keys = FlowKeys()
    a, b = ADDRESSES[0], ADDRESSES[1]
    first = keys.key(a, 40000, b, 80)
    assert keys.key(b, 80, a, 40000) is first  # the answer finds the same tuple
    # more flows than slots: some share a slot with it, each still gets its own key
    made = {port: keys.key(a, port, b, 80) for port in range(1024, 1024 + 2 * FLOW_KEY_SLOTS)}
    for port, key in made.items():
        assert key == (a, port, b, 80)
        assert keys.key(a, port, b, 80) == key
    assert keys.key(a, 40000, b, 80) == first
    made = {port: keys.key(a, 40000, b, port) for port in range(2 * FLOW_KEY_SLOTS)}  # the higher pair's port
    for port, key in made.items():
        assert keys.key(a, 40000, b, port) == key == flow_key(a, 40000, b, port)
    # the same slot (flow_mix reads the last byte of each address) for another address
    low, near, far = bytes((10, 0, 0, 1)), bytes((198, 18, 0, 7)), bytes((198, 18, 1, 7))
    assert keys.key(low, 80, near, 40000) == (low, 80, near, 40000)
    assert keys.key(low, 80, far, 40000) == (low, 80, far, 40000)
    assert keys.key(far, 80, low, 40000) == (far, 80, low, 40000)[2:] + (far, 80)
    made = {i: keys.key(ADDRESSES[i % 4], 80, ADDRESSES[5 - i % 2], 40000 + i) for i in range(2 * FLOW_KEY_SLOTS)}  # and its address
    for i, key in made.items():
        assert keys.key(ADDRESSES[i % 4], 80, ADDRESSES[5 - i % 2], 40000 + i) == key == flow_key(ADDRESSES[i % 4], 80, ADDRESSES[5 - i % 2], 40000 + i)


@example(b"\x05")
@example(b"\x01\x05")
@example(b"\x01\x01\x05")
@example(b"\x01\x01\x01\x05")  # a SACK kind past the first three bytes, 4 bytes in all: no
@example(bytes(SACKLESS_OPTIONS + 1))
@given(st.binary(max_size=20))
def test_may_hold_sack_by_definition(raw: bytes) -> None:
    assert may_hold_sack(raw) == (len(raw) > SACKLESS_OPTIONS or SACK_KIND in raw[:3])
