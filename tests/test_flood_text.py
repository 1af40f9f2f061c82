"""A SYN flood in the text view: summed up by its finding, not listed a row and a timeline per
attempt (as a port scan), while the failures that are not the flood's stay listed.

Held apart are failed attempts of one SYN made during a SYN storm against their server endpoint
(synscope.render.summary.brief_of); they are summed up only where a syn-flood finding names the
endpoint, and otherwise listed exactly as before (same rows, same timelines, same order).
"""

from __future__ import annotations

import json
from pathlib import Path

from synscope.render.summary import Brief, RunSummary
from synscope.render.table import Row
from tests.craft import ACK, RST, SYN, PcapWriter, ether, ipv4_tcp, tcp_options, write_synflood
from tests.helpers import PCAPS, cli, pcap

T0 = 1_700_000_000.0
VICTIM = "198.51.100.9"


def _lines(stdout: str) -> list[str]:
    return stdout.splitlines()


def test_syn_storm_capture_sums_up_the_crafted_attempts() -> None:
    """pcaps/syn-storm.pcap (truth: 1,200 crafted SYNs, never answered by their sources; 5 real
    clients connected): the crafted attempts are one line, the real clients are the healthy ones,
    and --all lists every connection."""
    t = json.loads((PCAPS / "syn-storm.truth.json").read_text())
    proc = cli("read", pcap("syn-storm.pcap"))
    assert proc.returncode == 0, proc.stderr
    crafted = t["crafted"]["syns_sent"]
    assert f"SYN floods: {crafted:,} failed attempts not listed (the syn-flood findings above sum them up; --all lists them)" in proc.stdout
    assert f"Healthy: {t['real_connected']} connections ended well" in proc.stdout
    assert not any(line.startswith("#") for line in _lines(proc.stdout)), "no timeline of a flood attempt"
    assert not any(src in proc.stdout for src in t["crafted"]["sources"]), "no row names a spoofed source"
    everything = cli("read", "--all", "--summary", pcap("syn-storm.pcap"))
    rows = [line for line in _lines(everything.stdout) if line.split(" ", 1)[0].isdigit()]
    assert len(rows) == crafted + t["real_connected"]
    assert "SYN floods:" not in everything.stdout


def _flood_with_victims(path: Path) -> None:
    """A crafted flood (3,000 attempts at 1,000 per second) and, during it, two real failures:
    a client whose kernel sends its SYN 3 times to the flooded endpoint and gets nothing back,
    and a connection refused by another server. Written as two files read in one run."""
    with path.open("wb") as f:
        write_synflood(f, 3_000, rate=1_000.0, normal_every=1_000, seed=5)
    with (path.parent / "victims.pcap").open("wb") as f:
        w = PcapWriter(f)
        opts = tcp_options(ts=(7, 0))
        for i, at in enumerate((0.5, 1.5, 3.5)):  # the kernel's SYN retransmissions (1 s, then 2 s)
            w.write(T0 + at, ether(ipv4_tcp(VICTIM, "192.0.2.10", 40000, 443, 5000, 0, SYN, options=opts, ip_id=i)))
        w.write(T0 + 1.0, ether(ipv4_tcp(VICTIM, "192.0.2.20", 40001, 80, 9000, 0, SYN, options=opts)))
        w.write(T0 + 1.0002, ether(ipv4_tcp("192.0.2.20", VICTIM, 80, 40001, 0, 9001, RST | ACK)))


def test_failures_beside_a_flood_stay_listed(tmp_path: Path) -> None:
    flood = tmp_path / "flood.pcap"
    _flood_with_victims(flood)
    victims = str(tmp_path / "victims.pcap")
    proc = cli("read", str(flood), victims)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SYN flood against 192.0.2.10:443" in out
    assert "SYN floods: 3,000 failed attempts not listed" in out
    timelines = [line for line in _lines(out) if line.startswith("#")]
    # the kernel client that retried its SYN and the refused one: both listed, row and timeline
    assert len(timelines) == 2
    assert any(f"{VICTIM}:40000 → 192.0.2.10:443" in line and "no-answer" in line for line in timelines)
    assert any(f"{VICTIM}:40001 → 192.0.2.20:80" in line and "refused" in line for line in timelines)
    rows = [line for line in _lines(out) if line.split(" ", 1)[0].isdigit()]
    assert len(rows) == 2 and all(VICTIM in row for row in rows)
    # the same with two workers
    split = cli("read", "--workers", "2", str(flood), victims)
    assert split.stdout == out


def _brief(ok: bool, storm: bool, port: int = 443) -> Brief:
    return ("no-answer" if not ok else "closed", ok, "no-answer" if not ok else "closed", False, T0, 0, 0.0, 0.0, (b"\xc0\x00\x02\x0a", port), storm)


class _Kept:
    def __init__(self, cid: int) -> None:
        self.cid = cid

    def row(self) -> Row:
        return Row(self.cid, "c", "s", T0, 0, "0", "1/0", "0/0", "x", "", False, "", "")

    def timeline(self) -> object:
        return self.cid


def test_storm_attempts_without_a_flood_finding_are_listed_as_before() -> None:
    """No syn-flood finding: the attempts held apart join the table and the timelines at the end,
    which then keep the very rows and timelines, in the same order, and the same counts of those
    left out, as a summary that never held them apart."""
    pattern = [(i % 3 != 0, i % 2 == 0 or i % 5 == 0, 443 if i % 7 else 80) for i in range(40)]
    summaries = []
    for storms in (True, False):
        s = RunSummary(row_limit=6, timeline_limit=4)
        for cid, (ok, storm, port) in enumerate(pattern, 1):
            s.count(cid, _brief(ok, storm and storms, port), _Kept(cid))
        s._settle_storms(set())
        summaries.append(s)
    held, plain = summaries
    assert held.storms == {} and held.flood_attempts == 0
    assert [r.id for r in held.rows] == [r.id for r in plain.rows]
    assert held.expanded == plain.expanded
    assert (held.rows_dropped, held.timelines_dropped) == (plain.rows_dropped, plain.timelines_dropped)
    assert held.rows_dropped > 0 and held.timelines_dropped > 0
    # a syn-flood finding on port 443: its failed storm attempts are counted, not listed
    s = RunSummary(row_limit=6, timeline_limit=4)
    for cid, (ok, storm, port) in enumerate(pattern, 1):
        s.count(cid, _brief(ok, storm, port), _Kept(cid))
    s._settle_storms({("192.0.2.10", 443)})
    flood = [cid for cid, (ok, storm, port) in enumerate(pattern, 1) if not ok and storm and port == 443]
    assert s.flood_attempts == len(flood) > 0
    assert not set(flood) & {r.id for r in s.rows}
    assert not set(flood) & {cid for cid, _ in s.expanded}
