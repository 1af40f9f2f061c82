"""Loss or reordering, decided from evidence (synscope.read.analysis.loss).

Scenario captures (scripts/scenarios_loss.py) carry a truth computed from a second capture at the
server: which of the client-side capture's frames re-sent data lost before it, lost after it, not
needed, or arrived late. The counts must match it, and the verdict must put the loss where it was.
Unit tests below feed hand-made segments to one direction's LossFacts.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synscope.read.analysis import loss as L
from synscope.read.evidence import CERTAIN, LIKELY, POSSIBLE
from tests.helpers import PCAPS, analyse, cli, pcap

SCENARIOS = ("loss-download", "loss-upload", "reorder-hold", "healthy-download", "loss-nots", "loss-nots-v6", "loss-upload-nots-v6")
# truth at_capture name -> LossFacts kind
TRUTH_KINDS = {"upstream_loss": L.UPSTREAM, "downstream_loss": L.DOWNSTREAM, "spurious": L.SPURIOUS, "reordered": L.REORDERED}


def _truth(name: str) -> dict:
    with open(pcap(name + ".truth.json")) as f:
        return json.load(f)


def _run(name: str):
    [r] = analyse(name + ".pcap")
    t = _truth(name)
    d = 0 if t["data_direction"] == "c2s" else 1
    return r, r.analysis.loss[d], t["data"]["at_capture"], t


def _slack(truth: dict) -> int:
    # the truth counts a retransmission that was itself held back by the relay both as spurious and
    # as reordered; each segment here gets one kind
    return len(set(truth["frames"]["spurious"]) & set(truth["frames"]["reordered"]))


@pytest.mark.parametrize("name", SCENARIOS)
def test_counts_match_what_the_capture_point_can_know(name: str) -> None:
    r, lf, at, t = _run(name)
    slack = _slack(at)
    undecided = lf.undecided
    for key, kind in TRUTH_KINDS.items():
        got = lf.counts[kind]
        want = at[key]
        if key == "upstream_loss" and undecided:
            # what no evidence decides is neither counted as loss nor as reordering
            assert got + undecided == want, (name, key, got, undecided, want)
        else:
            assert abs(got - want) <= slack, (name, key, got, want)
    assert lf.copies == 0, name
    # the JSON carries the same counts
    obj = json.loads(cli("read", "--json", pcap(name + ".pcap")).stdout.splitlines()[0])
    direction = obj[t["data_direction"]]
    assert [direction[k] for k in ("lost_upstream", "lost_downstream", "spurious_resends", "reordered", "capture_copies", "undecided")] == lf.counts


def test_download_losing_upstream_is_loss_before_the_capture_point_not_reordering() -> None:
    r, lf, at, t = _run("loss-download")
    v = r.verdict
    assert at["upstream_loss"] >= 3
    assert f"{lf.upstream} lost between the server and the capture point" in v.explanation
    assert "loss on the path" in v.explanation
    assert "out of order" not in v.explanation and "reordering" not in v.explanation
    assert "between the server 198.18.2.2 and the capture point" in v.next_step
    assert (v.rule, v.confidence) == ("path-loss", CERTAIN)
    upstream = [e for e in v.evidence if "lost before the capture point" in e.fact]
    assert upstream and set(upstream[0].frames) <= set(at["frames"]["upstream_loss"]) and upstream[0].frames


def test_upload_losing_downstream_is_loss_after_the_capture_point_not_a_slow_server() -> None:
    for name in ("loss-upload", "loss-upload-nots-v6"):
        r, lf, at, t = _run(name)
        v = r.verdict
        assert at["downstream_loss"] >= 3, name
        assert f"{lf.downstream} lost after passing the capture point, on the way to the server" in v.explanation, name
        assert "out of order" not in v.explanation and "reordering" not in v.explanation, name
        # the answer comes right after the upload ends: not the server application's delay
        assert "server application" not in v.explanation, name
        assert "between the capture point and the server" in v.next_step, name
    # without timestamps or IP IDs only the capture point (the client's own) decides: likely, not certain
    r, lf, _, _ = _run("loss-upload-nots-v6")
    assert lf.ways[L.BY_POSITION] == lf.downstream and r.verdict.confidence == LIKELY
    assert "the capture being on the client itself" in r.verdict.explanation


def test_pure_reordering_is_not_called_loss() -> None:
    r, lf, at, t = _run("reorder-hold")
    v = r.verdict
    assert t["data"]["lost_segments"] == 0 and t["relay"]["held"] >= 3
    assert lf.lost == 0 and lf.reordered >= 3
    assert "loss on the path" not in v.explanation and "lost" not in v.explanation
    assert "reordering on the path, not loss" in v.explanation
    assert "were not needed" in v.explanation
    assert v.rule == "reordering" and v.confidence == CERTAIN
    assert "packet loss" not in v.next_step


def test_healthy_transfer_claims_nothing() -> None:
    r, lf, at, t = _run("healthy-download")
    v = r.verdict
    assert t["data"]["lost_segments"] == 0 and t["data"]["retransmitted_segments"] == 0
    assert not any(lf.counts)
    assert v.ok and v.rule not in ("path-loss", "reordering", "loss-or-reordering", "spurious-retransmission")
    assert not any(word in e.fact for e in v.evidence for word in ("lost", "late", "sent again", "cannot tell"))
    for word in ("lost", "out of order", "reordering", "cannot tell"):
        assert word not in v.explanation


def test_without_timestamps_the_ip_id_decides() -> None:
    r, lf, at, t = _run("loss-nots")
    assert lf.ways[L.BY_TSVAL] == 0 and lf.ways[L.BY_IPID] == lf.upstream > 0
    assert "shown by their IP IDs" in r.verdict.explanation


def test_without_timestamps_or_ip_ids_the_capture_cannot_tell() -> None:
    r, lf, at, t = _run("loss-nots-v6")
    v = r.verdict
    assert lf.undecided == at["upstream_loss"] > 0
    assert "cannot tell retransmissions from late originals" in v.explanation
    assert "loss on the path" not in v.explanation and "reordering on the path" not in v.explanation
    assert v.confidence == POSSIBLE and v.rule == "loss-or-reordering"


# ------------------------------------------------------------------ units: one direction by hand

MSS = 1000


def _feed(lf: L.LossFacts, seq: int, ts: int = -1, ip_id: int = 0, peer_ack: int = -1, frame: int = 0) -> int:
    return lf.on_data(frame, seq, MSS, ts, ip_id, peer_ack)


def _in_order(lf: L.LossFacts, n: int, skip: tuple[int, ...] = (), ts0: int | None = 100, id0: int = 500) -> None:
    """Segments 0..n-1 in order (but those in ``skip``), TSval from ts0 (None: no timestamps), IP ID from id0."""
    for i in range(n):
        if i not in skip:
            _feed(lf, 1 + i * MSS, ts=-1 if ts0 is None else ts0 + i, ip_id=id0 + i)


def test_newer_timestamp_fills_a_hole_as_a_retransmission() -> None:
    lf = L.LossFacts()
    _in_order(lf, 10, skip=(4,))
    assert lf.gaps == 1
    assert _feed(lf, 1 + 4 * MSS, ts=200, ip_id=600) == L.UPSTREAM
    assert lf.ways[L.BY_TSVAL] == 1


def test_older_timestamp_fills_a_hole_as_a_late_original() -> None:
    lf = L.LossFacts()
    _in_order(lf, 10, skip=(4,))
    assert _feed(lf, 1 + 4 * MSS, ts=104, ip_id=504) == L.REORDERED


def test_ip_id_decides_within_one_timestamp_tick_or_without_timestamps() -> None:
    for ts in (109, -1):
        lf = L.LossFacts()
        for i in range(10):
            if i != 4:
                _feed(lf, 1 + i * MSS, ts=-1 if ts < 0 else 109, ip_id=500 + i)
        assert _feed(lf, 1 + 4 * MSS, ts=ts, ip_id=504) == L.REORDERED
        assert _feed(lf, 1 + 11 * MSS, ts=ts, ip_id=511) == -1  # new data again
        assert _feed(lf, 1 + 10 * MSS, ts=ts, ip_id=530) == L.UPSTREAM
        assert lf.ways[L.BY_IPID] == 2


def test_random_ip_ids_are_no_evidence() -> None:
    lf = L.LossFacts()
    for i, ip_id in enumerate((9000, 17, 40000, 3000, 25000, 12, 61000, 333, 5000, 20000)):
        if i != 4:
            _feed(lf, 1 + i * MSS, ip_id=ip_id)
    assert not lf.ipid_counter()
    assert _feed(lf, 1 + 4 * MSS, ip_id=65000) == L.UNDECIDED


def test_data_seen_before_sent_again_is_downstream_loss_or_spurious() -> None:
    lf = L.LossFacts()
    _in_order(lf, 10)
    assert _feed(lf, 1 + 3 * MSS, ts=300, ip_id=700, peer_ack=1 + 3 * MSS) == L.DOWNSTREAM
    # the receiver had acknowledged it already
    assert _feed(lf, 1 + 2 * MSS, ts=301, ip_id=701, peer_ack=1 + 5 * MSS) == L.SPURIOUS
    # the same packet again (same IP ID and timestamp): a copy, not a retransmission
    assert _feed(lf, 1 + 2 * MSS, ts=301, ip_id=701, peer_ack=1 + 5 * MSS) == L.COPY


def test_dsack_turns_a_retransmission_spurious() -> None:
    lf = L.LossFacts()
    _in_order(lf, 10)
    _feed(lf, 1 + 3 * MSS, ts=300, ip_id=700, frame=77)
    assert lf.downstream == 1
    ack = 1 + 10 * MSS
    blocks = L.first_sack_blocks(_sack_option([(1 + 3 * MSS, 1 + 4 * MSS)]))
    left, right = L.dsack_block(ack, blocks) or (0, 0)
    lf.on_dsack(left, right)
    assert (lf.downstream, lf.spurious, lf.dsacks) == (0, 1, 1)
    assert lf.examples[L.SPURIOUS] == [77]


def test_original_arriving_after_its_retransmission() -> None:
    lf = L.LossFacts()
    _in_order(lf, 10, skip=(4,))
    assert _feed(lf, 1 + 4 * MSS, ts=200, ip_id=600) == L.UPSTREAM
    # the held original arrives: nothing was lost, the retransmission was not needed
    assert _feed(lf, 1 + 4 * MSS, ts=104, ip_id=504) == L.REORDERED
    assert (lf.upstream, lf.spurious, lf.reordered) == (0, 1, 1)


def test_new_data_overtaken_by_a_retransmission_is_late() -> None:
    # the sender sends #10, then re-sends #3; the re-sent #3 arrives first: #10 leaves no hole, but
    # its IP ID is older than one already seen
    lf = L.LossFacts()
    _in_order(lf, 10, ts0=None)
    assert _feed(lf, 1 + 3 * MSS, ip_id=511) == L.DOWNSTREAM
    assert _feed(lf, 1 + 10 * MSS, ip_id=510) == L.REORDERED
    assert _feed(lf, 1 + 11 * MSS, ip_id=512) == -1
    assert (lf.reordered, lf.gaps) == (1, 0)


def test_own_capture_point_decides_without_evidence() -> None:
    lf = L.LossFacts()
    for i in range(10):  # no timestamps, IP ID 0 (IPv6)
        _feed(lf, 1 + i * MSS)
    assert lf.needs_position(1 + 3 * MSS) and not lf.needs_position(1 + 10 * MSS)
    lf.set_position(L.at_own_capture_point(64, 0.00005, 0.003))
    assert _feed(lf, 1 + 3 * MSS) == L.DOWNSTREAM
    assert lf.ways[L.BY_POSITION] == 1
    other = L.LossFacts()
    for i in range(10):
        _feed(other, 1 + i * MSS)
    other.set_position(L.at_own_capture_point(63, 0.003, 0.00005))
    assert _feed(other, 1 + 3 * MSS) == L.UNDECIDED


def test_at_the_senders_own_capture_a_filled_hole_is_not_upstream_loss() -> None:
    # nothing lies between a host and its own capture point: a hole there is a segment the capture
    # missed, and the one filling it was sent again because it was lost further on
    lf = L.LossFacts()
    _in_order(lf, 10, skip=(4,))
    lf.set_position(True)
    assert _feed(lf, 1 + 4 * MSS, ts=200, ip_id=600) == L.DOWNSTREAM
    assert lf.upstream == 0


def test_capture_point_from_ttl_and_legs() -> None:
    assert L.at_own_capture_point(64, 0.0001, 0.02)
    assert L.at_own_capture_point(128, None, None)
    assert not L.at_own_capture_point(63, 0.0001, 0.02)  # a router between
    assert not L.at_own_capture_point(64, 0.02, 0.0001)  # the sender's leg is the long one


def test_sequence_wrap_does_not_look_like_a_hole() -> None:
    lf = L.LossFacts()
    for i in range(10):
        assert _feed(lf, (0xFFFFF000 + i * MSS) & 0xFFFFFFFF, ts=100 + i, ip_id=i + 1) == -1
    assert lf.gaps == 0
    assert _feed(lf, (0xFFFFF000 + 8 * MSS) & 0xFFFFFFFF, ts=300, ip_id=50) == L.DOWNSTREAM


def _sack_option(blocks: list[tuple[int, int]]) -> bytes:
    opt = bytes([1, 1, 5, 2 + 8 * len(blocks)])
    for left, right in blocks:
        opt += struct.pack("!II", left, right)
    return opt


def test_option_parsing() -> None:
    ts = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456789, 42)
    assert L.tsval_of(ts) == 123456789
    assert L.tsval_of(bytes([2, 4, 5, 180, 8, 10]) + struct.pack("!II", 7, 0)) == 7
    assert L.tsval_of(b"") == -1 and L.tsval_of(bytes([1, 1, 5, 10, 0, 0])) == -1
    assert L.tsval_of(bytes([8, 0, 1])) == -1  # a zero length ends the walk
    both = ts + _sack_option([(5000, 6000), (1000, 9000)])
    assert L.first_sack_blocks(both) == [5000, 6000, 1000, 9000]
    assert L.dsack_block(7000, [5000, 6000]) == (5000, 6000)  # below the cumulative ACK
    assert L.dsack_block(1000, [5000, 6000, 4000, 9000]) == (5000, 6000)  # inside the second block
    assert L.dsack_block(1000, [5000, 6000, 7000, 9000]) is None


@given(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 60)), max_size=60))
def test_ranges_merge_like_a_set_of_bytes(pieces: list[tuple[int, int]]) -> None:
    lf = L.LossFacts()
    model: set[int] = set()
    for start, size in pieces:
        probe_start, probe_end = start, start + size
        assert lf._covered(probe_start, probe_end) == len(model & set(range(probe_start, probe_end)))
        lf._add_range(start, start + size)
        model |= set(range(start, start + size))
    r = lf._ranges
    assert all(r[i] < r[i + 1] for i in range(len(r) - 1)), r  # sorted, disjoint, not touching
    assert sum(r[i + 1] - r[i] for i in range(0, len(r), 2)) == len(model)


@pytest.mark.parametrize("name", ["loss-download", "loss-upload", "loss-nots", "loss-nots-v6", "loss-upload-nots-v6", "reorder-hold"])
def test_text_direction_table_shows_the_evidence_counts_of_the_truth(name: str) -> None:
    """The per-direction table of the text view counts what the truth says happened at the
    capture point (lost before / after it, spurious, reordered), not tshark's flags."""
    t = json.loads((PCAPS / f"{name}.truth.json").read_text())
    at = t["data"]["at_capture"]
    out = cli("read", "--all", pcap(f"{name}.pcap"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = next(line for line in lines if line.strip().startswith("direction ")).split()
    assert head[3:9] == ["lost", "before", "lost", "after", "spurious", "reordered"]
    label = "client→server" if t["data_direction"] == "c2s" else "server→client"
    row = next(line for line in lines if line.strip().startswith(label)).split()
    shown = [int(x) for x in row[3:9]]
    truth = [at["upstream_loss"], at["downstream_loss"], at["spurious"], at["reordered"]]
    # every decided count within the truth's; what no evidence decides is undecided, not guessed
    # (loss-nots-v6: no TSval, no IPv6 IP ID), and together they are every resent or late frame
    assert all(s <= t for s, t in zip(shown[:4], truth, strict=True)), (shown, truth)
    frames = {n for kind in ("upstream_loss", "downstream_loss", "spurious", "reordered") for n in at["frames"][kind]}
    assert sum(shown[:4]) + shown[5] == len(frames), (shown, at)  # (reorder-hold: frame 156 is late and resent)
    assert shown[4] == 0  # no capture copies in these captures
