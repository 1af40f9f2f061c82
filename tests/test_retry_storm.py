"""Application retries are not claimed during a SYN storm (synscope.read.scans.ScanWatch.storm).

A retry link says "this is attempt N by the application, after connection #M failed". Spoofed
flood sources drawn from a /15 share addresses by chance, so two SYNs of a flood from one address
a second apart looked exactly like an application's retry: on a crafted 200,000-attempt flood,
54,076 attempts were linked so. During a storm against the server endpoint the link is not made;
elsewhere, and before and after, real retries are linked as before.

Captures are CRAFTED (tests.craft): a flood has no application behind it by design, so the truth
for every one of its attempts is "no retry"; the retrying client's attempts are written out with
the gaps of an application that reconnects once a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from synscope.read.pipeline import link_sentences
from synscope.read.scans import STORM_SYN_RATE, ScanWatch
from tests.craft import ACK, RST, SYN, PcapWriter, ether, ipv4_tcp, tcp_options, write_synflood
from tests.helpers import analyse_paths, cli

T0 = 1_700_000_000.0
FLOODED = ("192.0.2.10", 443)
OTHER_SERVER = "192.0.2.20"
APP_CLIENT = "198.51.100.7"


def _refused_thrice(w: PcapWriter, start: float, server: str, port: int, first_port: int) -> None:
    """An application connecting 3 times, 1 s apart, each refused (RST, ACK)."""
    for i in range(3):
        t = start + i
        cport = first_port + i
        w.write(t, ether(ipv4_tcp(APP_CLIENT, server, cport, port, 1000 + i, 0, SYN, options=tcp_options(ts=(1, 0)))))
        w.write(t + 0.0002, ether(ipv4_tcp(server, APP_CLIENT, port, cport, 0, 1001 + i, RST | ACK)))


def _storm(w: PcapWriter, start: float, seconds: int, per_second: int) -> None:
    """Bare SYNs to FLOODED from spoofed sources (one SYN per source), never answered."""
    n = 0
    options = tcp_options(sack=False, wscale=None)
    for s in range(seconds):
        for i in range(per_second):
            n += 1
            src = f"198.18.{n >> 8 & 0xFF}.{n & 0xFF}"
            w.write(start + s + i / per_second, ether(ipv4_tcp(src, FLOODED[0], 1024 + n % 60000, FLOODED[1], n, 0, SYN, options=options)))


def _mixed(path: Path, storm_seconds: int, retry_after: bool) -> Path:
    """The application refused 3 times by another server and 3 times by the flooded endpoint
    during a storm of ``storm_seconds`` against it; ``retry_after``: 3 times more, 16 s after it."""
    with path.open("wb") as f:
        w = PcapWriter(f)
        _refused_thrice(w, T0 + 0.5, OTHER_SERVER, 80, 40000)
        _refused_thrice(w, T0 + 0.7, *FLOODED, 41000)
        _storm(w, T0, storm_seconds, 2 * STORM_SYN_RATE)
        if retry_after:
            _refused_thrice(w, T0 + 20.0, *FLOODED, 42000)
    return path


def test_a_flood_has_no_application_retries(tmp_path: Path) -> None:
    """The flood's spoofed sources repeat (a /15, 20,000 attempts over 4 s); none is a retry."""
    path = tmp_path / "flood.pcap"
    with path.open("wb") as f:
        plan = write_synflood(f, 20_000, rate=5_000.0, normal_every=4_000, seed=7)
    reports = analyse_paths(path)
    assert len(reports) == plan.attempts + plan.normal
    # (the repeats are there: the same address again at least RETRY_MIN_GAP later, as a retry would be)
    first: dict[bytes, float] = {}
    repeats = 0
    for r in reports:
        syn_ts = r.conn.syn_ts
        assert syn_ts is not None
        ip = r.conn.client.ip
        if ip in first and syn_ts - first[ip] >= 0.1:
            repeats += 1
        first.setdefault(ip, syn_ts)
    assert repeats > 100
    assert [r.conn.id for r in reports if r.retry_of is not None] == []
    assert not any("by the application" in link_sentences(r) for r in reports)
    assert all(r.storm for r in reports if r.conn.client.ip.startswith(b"\xc6"))  # 198.18.0.0/15


def test_retries_elsewhere_are_linked_during_a_storm(tmp_path: Path) -> None:
    """A storm against one endpoint; an application retrying against another server at the same
    time is still linked (attempts 2 and 3), and so is one retrying against the flooded endpoint
    after the storm; the attempts it made to the flooded endpoint during the storm are not."""
    reports = analyse_paths(_mixed(tmp_path / "mixed.pcap", 4, True))
    app = {r.conn.client.port: r for r in reports if r.conn.client.ip == bytes([198, 51, 100, 7])}
    assert len(app) == 9
    # another server: linked as attempts 2 and 3
    assert [app[40000 + i].retry_number for i in range(3)] == [0, 1, 2]
    assert app[40001].retry_of == app[40000].conn.id and app[40002].retry_of == app[40001].conn.id
    assert "attempt 2 by the application" in link_sentences(app[40001])
    # the flooded endpoint during the storm: not linked, and not claimed in words
    assert all(app[41000 + i].storm and app[41000 + i].retry_of is None for i in range(3))
    assert not any("by the application" in link_sentences(app[41000 + i]) for i in range(3))
    # ... and after it (16 s of quiet): linked again
    assert [app[42000 + i].retry_number for i in range(3)] == [0, 1, 2]
    assert not any(app[42000 + i].storm for i in range(3))


def test_workers_agree_on_storms(tmp_path: Path) -> None:
    """Storms are seen by every worker before the split: one worker and two give the same links."""
    path = _mixed(tmp_path / "mixed.pcap", 3, False)
    one = cli("read", "--json", "--workers", "1", str(path))
    two = cli("read", "--json", "--workers", "2", str(path))
    assert one.returncode == two.returncode == 0
    assert one.stdout == two.stdout
    linked = [o for o in map(json.loads, one.stdout.splitlines()) if o.get("retry_of") is not None]
    assert [(o["client"]["port"], o["retry_number"]) for o in linked] == [(40001, 1), (40002, 2)]


def test_storm_threshold_and_its_seconds() -> None:
    """STORM_SYN_RATE bare SYNs to one endpoint within one second make that second a storm, and a
    connection opened in it or a neighbouring second is during it; one fewer does not."""
    server = bytes([192, 0, 2, 10])
    watch = ScanWatch()
    for i in range(STORM_SYN_RATE - 1):
        watch.saw_fields(SYN, bytes([198, 18, 0, i % 250]), server, 1024 + i, 443, 100.0 + i / STORM_SYN_RATE, 64, i)
    assert not watch.storm(server, 443, 100.5)
    watch.saw_fields(SYN, bytes([198, 18, 1, 1]), server, 9999, 443, 100.999, 64, 999)
    assert watch.storm(server, 443, 100.5)
    assert watch.storm(server, 443, 99.2) and watch.storm(server, 443, 101.9)
    assert not watch.storm(server, 443, 98.9) and not watch.storm(server, 443, 102.0)
    assert not watch.storm(server, 80, 100.5), "per endpoint: another port of the host is not flooded"
    # SYN-ACKs and RSTs are not counted
    quiet = ScanWatch()
    for i in range(2 * STORM_SYN_RATE):
        quiet.saw_fields(SYN | ACK, server, bytes([198, 18, 0, 1]), 443, 1024 + i, 200.0 + i / (4 * STORM_SYN_RATE), 64, i)
    assert not quiet.storm(bytes([198, 18, 0, 1]), 1024, 200.2)


def test_a_scan_of_many_endpoints_does_not_push_a_flooded_one_out() -> None:
    """The scan watch follows STORM_ENDPOINTS endpoints; one that keeps getting SYNs stays while
    a scan touches many more endpoints than that."""
    from synscope.read.scans import STORM_ENDPOINTS

    server = bytes([192, 0, 2, 10])
    watch = ScanWatch()
    scanned = 0
    for second in range(3):
        t = 100.0 + second
        for i in range(STORM_SYN_RATE):
            watch.saw_fields(SYN, bytes([198, 18, 0, i % 250]), server, 1024 + i, 443, t + i / (2 * STORM_SYN_RATE), 64, i)
        for _ in range(STORM_ENDPOINTS):
            scanned += 1
            watch.saw_fields(SYN, bytes([198, 19, 0, 1]), bytes([192, 0, 3, scanned % 250]), 2000, scanned % 65536, t + 0.9, 64, scanned)
    assert all(watch.storm(server, 443, 100.5 + s) for s in range(3))
    assert watch.storm(server, 443, 99.5), "the first storm second is still remembered"


def test_a_kernel_client_during_the_storm_is_linked(tmp_path: Path) -> None:
    """During the storm a client whose kernel sent its SYN 3 times (1 s, then 2 s: a flood's
    crafted SYNs go once) gives up, and its application connects again 1 s later and gets in: a
    retry the packets show, linked (the storm's one-SYN attempts are not: see above)."""
    path = tmp_path / "victim.pcap"
    opts = tcp_options(ts=(1, 0))
    with path.open("wb") as f:
        w = PcapWriter(f)
        for at in (0.5, 1.5, 3.5):
            w.write(T0 + at, ether(ipv4_tcp(APP_CLIENT, FLOODED[0], 43000, FLOODED[1], 7000, 0, SYN, options=opts)))
        w.write(T0 + 4.5, ether(ipv4_tcp(APP_CLIENT, FLOODED[0], 43001, FLOODED[1], 8000, 0, SYN, options=opts)))
        w.write(T0 + 4.5002, ether(ipv4_tcp(FLOODED[0], APP_CLIENT, FLOODED[1], 43001, 100, 8001, SYN | ACK, options=opts)))
        w.write(T0 + 4.5004, ether(ipv4_tcp(APP_CLIENT, FLOODED[0], 43001, FLOODED[1], 8001, 101, ACK)))
        _storm(w, T0, 7, 2 * STORM_SYN_RATE)
    reports = analyse_paths(path)
    app = {r.conn.client.port: r for r in reports if r.conn.client.ip == bytes([198, 51, 100, 7])}
    assert all(r.storm for r in app.values())
    assert (app[43000].conn.client.syn_count, app[43001].conn.established) == (3, True)
    assert (app[43001].retry_of, app[43001].retry_number) == (app[43000].conn.id, 1)
    assert "attempt 2 by the application" in link_sentences(app[43001])
