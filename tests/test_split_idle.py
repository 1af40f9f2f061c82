"""``read --split-idle SECONDS``: Zeek's inactivity timeout, opt-in.

CRAFTED captures (tests/craft.py): one 4-tuple, a handshake and a request, then a silence
longer than the timeout, then more data and both FINs. Zeek's ``Connection::InactivityTimer``
removes the connection once ``last_time + inactivity_timeout <= t``; the next packet makes a
new connection without a SYN (a mid-stream pickup, flipped by ``WantConnection`` when its
source is the server's port). So with the option: two records, the first S1 (established,
never closed) and not worded as closed, the second SF from its first packet's letter on, linked
to the first by ``reused_from``. Without it: one SF record, as before.
"""

from __future__ import annotations

import json

import pytest

from synscope.read.pipeline import Pipeline
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import Tracker, idle_past
from tests.craft import ACK, FIN, MAC_CLIENT, MAC_SERVER, PSH, SYN, ether, ipv4_tcp, pcap_header, pcap_record
from tests.helpers import PCAPS, cli, pcap

CLIENT, SERVER = "198.18.0.1", "198.18.0.2"
CPORT, SPORT = 40000, 80
T0 = 1_760_000_000.0  # 2025-10-09
ALL = sorted(str(p) for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
GAP = 10.0  # seconds of silence in the middle
TIMEOUT = "5"


def _frame(cport: int, from_client: bool, flags: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    a, b, pa, pb = (CLIENT, SERVER, cport, SPORT) if from_client else (SERVER, CLIENT, SPORT, cport)
    return ether(
        ipv4_tcp(a, b, pa, pb, seq, ack, flags, payload=payload),
        src=MAC_CLIENT if from_client else MAC_SERVER,
        dst=MAC_SERVER if from_client else MAC_CLIENT,
    )


def _write(path, server_speaks_first: bool) -> None:
    """Handshake, request, answer; GAP of silence; then one side sends data, the other answers,
    both close. ``server_speaks_first``: the first packet after the gap is the server's (and the
    client port is CPORT + 1, so both captures can be read in one run)."""
    c, s = 1001, 5001  # next sequence numbers after the SYNs
    t = T0 + (100 if server_speaks_first else 0)
    cport = CPORT + (1 if server_speaks_first else 0)
    frames: list[tuple[float, bytes]] = []

    def add(dt: float, *args) -> None:
        nonlocal t
        t += dt
        frames.append((t, _frame(cport, *args)))

    add(0, True, SYN, 1000, 0)
    add(0.01, False, SYN | ACK, 5000, c)
    add(0.01, True, ACK, c, s)
    add(0.001, True, PSH | ACK, c, s, b"ping")
    c += 4
    add(0.01, False, ACK, s, c)
    if server_speaks_first:
        add(GAP, False, PSH | ACK, s, c, b"pong")
        s += 4
        add(0.01, True, ACK, c, s)
    else:
        add(GAP, True, PSH | ACK, c, s, b"more")
        c += 4
        add(0.01, False, ACK, s, c)
    add(0.01, True, FIN | ACK, c, s)
    add(0.01, False, FIN | ACK, s, c + 1)
    add(0.01, True, ACK, c + 1, s + 1)
    with open(path, "wb") as f:
        f.write(pcap_header())
        for ts, data in frames:
            f.write(pcap_record(int(ts), round((ts % 1) * 1e6), data))


def _records(path, *options: str) -> list[dict]:
    out = cli("read", "--json", *options, str(path))
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture
def client_resumes(tmp_path):
    path = tmp_path / "idle-client-resumes.pcap"
    _write(path, server_speaks_first=False)
    return path


@pytest.fixture
def server_resumes(tmp_path):
    path = tmp_path / "idle-server-resumes.pcap"
    _write(path, server_speaks_first=True)
    return path


def test_without_the_option_one_record(client_resumes) -> None:
    (only,) = _records(client_resumes)
    assert (only["state"], only["history"]) == ("SF", "ShADaFf")
    assert only["reused_from"] is None


def test_gap_shorter_than_timeout_one_record(client_resumes) -> None:
    (only,) = _records(client_resumes, "--split-idle", str(GAP + 1))
    assert (only["state"], only["history"]) == ("SF", "ShADaFf")


def test_split_client_resumes(client_resumes) -> None:
    first, second = _records(client_resumes, "--split-idle", TIMEOUT)
    # the first record as Zeek removes it: both endpoints established, nothing closed
    assert (first["state"], first["history"]) == ("S1", "ShADa")
    assert first["outcome"] != "closed" and first["rule"] == "open"
    assert "--split-idle" in first["verdict"] and "closed" not in first["verdict"]
    assert first["end"] < second["start"] and second["start"] - first["end"] == pytest.approx(GAP, abs=0.001)
    # the second: a mid-stream pickup whose first packet is the client's data (no flip)
    assert (second["state"], second["history"]) == ("SF", "DaFfA")
    assert second["roles_guessed"] is True
    assert (second["client"]["port"], second["server"]["port"]) == (CPORT, SPORT)
    assert second["reused_from"] == first["id"]
    assert "--split-idle" in second["verdict"]
    # continuing, not port reuse: no reuse flag on its first packet
    assert not any("reuse" in " ".join(p.get("analysis", [])) for p in second["packets"])


def test_split_server_resumes_flips(server_resumes) -> None:
    """The first packet after the gap comes from port 80: Zeek's WantConnection flips it (``^``)
    and its letter is the responder's."""
    first, second = _records(server_resumes, "--split-idle", TIMEOUT)
    assert (first["state"], first["history"]) == ("S1", "ShADa")
    assert (second["state"], second["history"]) == ("SF", "^dAFf")
    assert (second["client"]["port"], second["server"]["port"]) == (CPORT + 1, SPORT)
    assert second["reused_from"] == first["id"]


def test_text_view_names_the_link(client_resumes) -> None:
    out = cli("read", "--all", "--split-idle", TIMEOUT, str(client_resumes))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # (the verdict is wrapped)
    assert "This continues connection #1, split off after the idle timeout" in text
    assert "port reuse" not in text


def test_workers_give_the_same_output(client_resumes, server_resumes) -> None:
    one = cli("read", "--json", "--workers", "1", "--split-idle", TIMEOUT, str(client_resumes), str(server_resumes))
    assert one.returncode == 0, one.stderr
    assert len(one.stdout.splitlines()) == 4
    for workers in ("2", "3"):
        split = cli("read", "--json", "--workers", workers, "--split-idle", TIMEOUT, str(client_resumes), str(server_resumes))
        assert (split.returncode, split.stdout, split.stderr) == (0, one.stdout, one.stderr)


def test_bad_value_is_a_usage_error(client_resumes) -> None:
    for bad in ("0", "-1", "soon"):
        out = cli("read", "--split-idle", bad, str(client_resumes))
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "--split-idle" in out.stderr


def test_idle_past_is_zeeks_comparison() -> None:
    """``last_time + inactivity_timeout <= t``: silent exactly the timeout is over."""
    assert idle_past(10.0, 15.0, 5.0)
    assert not idle_past(10.0, 14.999, 5.0)


def test_tracker_default_never_splits(client_resumes) -> None:
    """The option off: the tracker holds no timeout, whatever the gap."""
    assert Tracker().idle_timeout is None
    pipeline = Pipeline()
    with open_capture(str(client_resumes)) as reader:
        for frame in reader:
            pipeline.feed(frame)
    assert len(pipeline.finish()) == 1


def test_real_capture_syn_retries_split_at_the_long_gap() -> None:
    """pcaps/no-answer.pcap (real kernel, README): 8 SYNs of one connect() to a port the router
    drops, gaps about 1, 1, 1, 1, 1, 2, 4 s. With --split-idle 3 only the 4 s gap splits: the
    first record holds 7 SYNs, the second the 8th, the same attempt (no application retry)."""
    (only,) = _records(pcap("no-answer.pcap"))
    assert only["syn_retransmissions"] == 7
    first, second = _records(pcap("no-answer.pcap"), "--split-idle", "3")
    assert (first["state"], first["history"], first["syn_retransmissions"]) == ("S0", "S", 6)
    assert (second["state"], second["history"], second["syn_retransmissions"]) == ("S0", "S", 0)
    assert second["start"] - first["end"] > 3
    assert second["reused_from"] == first["id"] and second["retry_of"] is None
    assert "continues the earlier record" in second["verdict"]


def test_every_bundled_capture_split_the_same_by_workers() -> None:
    """--split-idle 1 on every bundled capture (real kernel traffic) in one call: a hundred-odd
    splits, and --workers 2 / 3 print what one process prints."""
    args = ("read", "--json", "--split-idle", "1", *ALL)
    one = cli(*args, "--workers", "1")
    assert one.returncode == 0, one.stderr
    assert one.stdout.count("continues the earlier record") > 50
    for workers in ("2", "3"):
        split = cli(*args, "--workers", workers)
        assert (split.returncode, split.stderr) == (0, one.stderr)
        assert split.stdout == one.stdout, f"--workers {workers} differs"
