"""Fuzzing the read path (CI mode): about a minute of seeded, deterministic cases.

The mutators, seeds and the property live in tests/fuzzing.py; scripts/fuzz
runs the same cases by the hundred thousand. The property: every input ends
in reports and/or a clean one-line error and warnings — no exception, no hang,
valid JSON Lines, no control character but \\n in text — through the stages and
through the CLI (in-process here, plus a few real subprocesses).
"""

from __future__ import annotations

import gzip
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synscope.core.model import RawFrame, parse_tcp_options
from synscope.read.decode import Decoder
from tests import fuzzing
from tests.helpers import cli

SEEDS = fuzzing.load_seeds()
# cases per mutator in CI; each case mutates the next seed in turn, with 1-4 stacked mutations
CASES = {"lie": 2500, "flip": 1200, "overwrite": 700, "truncate": 500, "insert": 400, "delete": 400, "splice": 400, "random-records": 400}
# small files are cut at every byte offset
EVERY_OFFSET = [
    "refused.pcap",
    "icmp-prohibited.pcap",
    "no-answer-classic.pcap",
    "refused-retry.pcap",
    "normal.pcap.gz",
    "normal.pcapng",
    "crafted-edge-cases.pcap",
    "ipv6.pcap",
    "any-sll.pcap",
]


def assert_no_findings(findings: list[tuple[str, fuzzing.Finding]]) -> None:
    if findings:
        first = findings[0]
        kinds = sorted({fuzzing.signature(f) for _, f in findings})
        pytest.fail(f"{len(findings)} failing cases; first: {first[0]}\n{first[1].detail}\nall signatures: {kinds}", pytrace=False)


@pytest.fixture(scope="module")
def scratch():
    return fuzzing.tmp_dir()


def test_every_seed_reads_clean(scratch) -> None:
    findings = []
    for name, data in fuzzing.load_seeds(full=True):
        found = fuzzing.check_capture(data, scratch / "seed", time_limit=10)
        if found:
            findings.append((name, found))
    assert_no_findings(findings)


@pytest.mark.parametrize("mutator", list(CASES))
def test_mutations(scratch, mutator: str) -> None:
    """Cases whose first mutation is `mutator`, then 0-3 random ones stacked on it."""
    func = fuzzing.MUTATORS[mutator][0]
    findings = []
    for case in range(CASES[mutator]):
        si = case % len(SEEDS)
        name, seed = SEEDS[si]
        rng = fuzzing.case_rng(si, case, base=100 + list(CASES).index(mutator))
        gz = seed[:2] == b"\x1f\x8b"
        inner = gzip.decompress(seed) if gz else seed  # mutate the capture inside, then gzip it again
        buf = bytearray(inner)
        func(rng, buf, fuzzing.Layout(inner))
        if gz:
            buf = bytearray(gzip.compress(bytes(buf), mtime=0))
        data, muts = fuzzing.mutate(bytes(buf), rng) if rng.random() < 0.5 else (bytes(buf), [])
        found = fuzzing.check_capture(data, scratch / "case", absolute=bool(case & 1), cli=case % 3 == 0)
        if found:
            (scratch / f"finding-{mutator}-{case}").write_bytes(data)
            findings.append((f"{mutator} case {case} on {name} (+{muts}), input saved in {scratch}", found))
    assert_no_findings(findings)


@pytest.mark.parametrize("name", EVERY_OFFSET)
def test_truncation_at_every_offset(scratch, name: str) -> None:
    data = dict(SEEDS)[name]
    findings = []
    for cut in range(len(data)):
        found = fuzzing.check_capture(data[:cut], scratch / "cut", cli=False)
        if found:
            findings.append((f"{name} cut at {cut}", found))
    assert_no_findings(findings)


def test_regression_inputs(scratch) -> None:
    """Inputs the fuzzer once broke synscope with (tests/data/fuzz/): all fixed, all still fine."""
    findings = []
    for path in fuzzing.regression_inputs():
        found = fuzzing.check_capture(path.read_bytes(), scratch / "regression")
        if found:
            findings.append((str(path), found))
    assert_no_findings(findings)


def test_cases_are_deterministic() -> None:
    a = [fuzzing.mutate(SEEDS[i % len(SEEDS)][1], fuzzing.case_rng(i % len(SEEDS), i))[0] for i in range(50)]
    b = [fuzzing.mutate(SEEDS[i % len(SEEDS)][1], fuzzing.case_rng(i % len(SEEDS), i))[0] for i in range(50)]
    assert a == b and len(set(a)) > 40


def test_layout_finds_the_length_fields() -> None:
    """The targeted mutators only lie where the fields are: check they are found."""
    kinds = set()
    for _, data in SEEDS:
        kinds |= {f.kind for f in fuzzing.Layout(data if data[:2] != b"\x1f\x8b" else b"").fields}
    for k in (
        "pcap.caplen",
        "pcap.origlen",
        "pcapng.block_length",
        "pcapng.block_length_trailer",
        "pcapng.option_length",
        "pcapng.caplen",
        "eth.type",
        "vlan.type",
        "ip.total_length",
        "ip.version_ihl",
        "ip6.payload_length",
        "ip6ext.length",
        "tcp.doff",
        "tcp.option_length",
        "icmp.type",
        "quoted.ip.total_length",
        "quoted.tcp.sport",
        "sll.protocol",
        "sll2.protocol",
    ):
        assert k in kinds, k


# ----- the oracle itself: a broken read path must be caught


def test_harness_catches_a_crash(scratch, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise ValueError("decoder bug")

    monkeypatch.setattr(fuzzing, "run", boom)  # the harness's own call into synscope (compiled classes cannot be patched)
    found = fuzzing.check_capture(SEEDS[0][1], scratch / "canary", cli=False)
    assert found is not None and found.kind == "exception" and "decoder bug" in found.detail


def test_harness_catches_a_hang(scratch, monkeypatch) -> None:
    def spin(*args, **kwargs):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(fuzzing, "run", spin)
    t = time.monotonic()
    found = fuzzing.check_capture(SEEDS[0][1], scratch / "canary", time_limit=0.3, cli=False)
    assert found is not None and found.kind == "hang" and time.monotonic() - t < 5


def test_harness_catches_unescaped_payload(scratch, monkeypatch) -> None:
    import synscope.render.text as text

    monkeypatch.setattr(text, "escape_bytes", lambda data, limit=64: data.decode("latin-1"))
    found = fuzzing.check_capture(dict(SEEDS)["crafted-hostile-payloads.pcap"], scratch / "canary", cli=False)
    assert found is not None and found.kind == "control-char"


def test_harness_catches_invalid_json(monkeypatch) -> None:
    assert fuzzing.check_json_lines(['{"a": NaN}']).kind == "bad-json"
    assert fuzzing.check_json_lines(['{"a": 1']).kind == "bad-json"
    assert fuzzing.check_json_lines(['{"start": 2, "end": 1}']).kind == "negative-duration"


# ----- the CLI as a user runs it, on mutated files


def test_cli_subprocess_on_mutated_files(tmp_path) -> None:
    for i in range(8):
        si = (i * 7) % len(SEEDS)
        data, _ = fuzzing.mutate(SEEDS[si][1], fuzzing.case_rng(si, i, base=1234))
        path = tmp_path / f"m{i}.pcap"
        path.write_bytes(data)
        args = ("read", "--json", str(path)) if i % 2 else ("read", "--all", "--payload", "--stats", str(path))
        proc = cli(*args, timeout=60)
        assert proc.returncode in fuzzing.READ_EXIT_CODES, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 6:
            assert len(proc.stderr.strip().splitlines()) == 1
        if "--json" in args:
            for line in proc.stdout.splitlines():
                json.loads(line)
        else:
            assert not fuzzing.UNSAFE.search(proc.stdout)


# ----- hypothesis: the decoder and option parser on arbitrary bytes, random records behind a valid header

LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]


@settings(max_examples=3000, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(LINKTYPES), st.binary(max_size=160), st.integers(0, 2**32 - 1))
def test_decode_never_raises(linktype: int, data: bytes, orig_len: int) -> None:
    d = Decoder(keep_payload=True)
    item = d.decode(RawFrame(1, 0.0, linktype, data, orig_len))
    if item is not None and hasattr(item, "raw_options"):
        item.options.describe()
    s = d.stats
    assert s.frames == 1 and s.tcp + s.icmp_errors + s.not_tcp + s.malformed + s.truncated + sum(s.unknown_linktype.values()) + s.fragments >= 1


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.binary(max_size=60))
def test_tcp_options_never_raise(raw: bytes) -> None:
    parse_tcp_options(raw).describe()


@st.composite
def pcap_with_random_records(draw: st.DrawFn) -> bytes:
    from tests import craft

    linktype = draw(st.sampled_from([1, 101, 113, 276, 0]))
    out = [craft.pcap_header(linktype=linktype)]
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):  # a real TCP packet with random fields
            options = draw(st.binary(max_size=40))
            pkt = craft.ipv4_tcp(
                "198.18.0.1",
                "198.18.0.2",
                draw(st.integers(0, 65535)),
                draw(st.integers(0, 65535)),
                draw(st.integers(0, 2**32 - 1)),
                draw(st.integers(0, 2**32 - 1)),
                draw(st.integers(0, 255)),
                options=options[: len(options) // 4 * 4],
                payload=draw(st.binary(max_size=40)),
            )
            body = craft.ether(pkt) if linktype == 1 else pkt if linktype == 101 else bytes(16 if linktype == 113 else 20 if linktype == 276 else 4) + pkt
        else:
            body = draw(st.binary(max_size=120))
        cap = draw(st.integers(0, len(body)))
        orig = draw(st.sampled_from([len(body), cap, draw(st.integers(0, 2**32 - 1))]))
        out.append(craft.pcap_record(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)), body[:cap], orig))
    return b"".join(out)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(pcap_with_random_records())
def test_random_records_behind_a_valid_header(data: bytes) -> None:
    d = fuzzing.tmp_dir()
    found = fuzzing.check_capture(data, d / "hyp", cli=False)
    assert found is None, found.detail
