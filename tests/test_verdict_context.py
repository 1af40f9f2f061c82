"""Verdicts that depend on context, checked against what the capture scripts did (pcaps/*.truth.json).

Who closed before an RST, who speaks first, what a one-direction capture can tell, loopback
(no path to lose packets on), and behaviour of other stacks crafted with scapy (macOS's SYN
schedule, a window scale over 14, a client that resets its own SYN). The truth files are written by
scripts/scenarios_lead.py and its socket programs, never from synscope's output; frame numbers
are checked against tshark's reading of the same file.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.helpers import PCAPS, cli
from tests.oracle import have_tshark


def truth(name: str) -> dict[str, Any]:
    with open(PCAPS / f"{name}.truth.json", encoding="utf-8") as f:
        return json.load(f)


def connections(name: str) -> list[dict[str, Any]]:
    r = cli("read", "--json", str(PCAPS / f"{name}.pcap"))
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if '"id"' in line]


def tshark_frames(name: str, display_filter: str) -> list[int]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(PCAPS / f"{name}.pcap"), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(x) for x in out.split()]


def test_reset_after_the_peers_fin_names_who_closed_first() -> None:
    """The server closed (FIN) and the client's kernel reset because data was unread at close()."""
    t = truth("rst-after-fin")
    (conn,) = connections("rst-after-fin")
    assert conn["outcome"] == f"reset-by-{t['reset_by']}"
    assert f"The {t['closed_first']} had closed first" in conn["verdict"]
    assert "did not close" not in conn["verdict"]
    # the next step goes to the machine whose application reset: the client
    assert "client application on " + conn["client"]["ip"] in conn["next_step"]
    # a likely cause, not a proven one: SO_LINGER 0 leaves the same trace as unread data
    assert conn["confidence"] == "likely"


@pytest.mark.skipif(not have_tshark(), reason="tshark is the oracle for frame numbers")
def test_reset_evidence_cites_the_fin_and_the_rst_frames() -> None:
    (conn,) = connections("rst-after-fin")
    cited = {n for e in conn["evidence"] for n in e["frames"]}
    server_fin = tshark_frames("rst-after-fin", f"tcp.flags.fin==1 && ip.src=={conn['server']['ip']}")
    client_rst = tshark_frames("rst-after-fin", f"tcp.flags.reset==1 && ip.src=={conn['client']['ip']}")
    assert server_fin[0] in cited and client_rst[0] in cited


def test_a_server_that_speaks_first_is_not_blamed_for_the_clients_pause() -> None:
    """SMTP-like: banner, greeting, a 1 s pause on the client, then a command answered at once."""
    t = truth("server-first")
    assert t["applications"]["server"]["server_reply_delay"] < 0.1 <= t["client_think_s"]
    (conn,) = connections("server-first")
    assert "first byte after the client's request" not in conn["verdict"]
    assert "server application" not in (conn["next_step"] or "")


def test_a_one_direction_capture_says_so_and_claims_no_end_state() -> None:
    t = truth("one-sided")
    assert t["directions_captured"] == ["client->server"]
    (conn,) = connections("one-sided")
    assert conn["outcome"] == "one-sided"
    assert conn["client_state"] == conn["server_state"] == "unknown"
    assert "CLOSE-WAIT" not in conn["verdict"] and "one direction" in conn["verdict"]


def test_a_syn_retry_on_loopback_is_not_loss_on_a_path() -> None:
    t = truth("loopback-syn-retry")
    assert "local nft rule" in t["syns_dropped_by"]
    (conn,) = connections("loopback-syn-retry")
    assert conn["syn_retransmissions"] == 1
    assert "on one host" in conn["verdict"] and "were lost" not in conn["verdict"]


@pytest.fixture(scope="module")
def crafted() -> dict[int, dict[str, Any]]:
    return {c["client"]["port"]: c for c in connections("crafted-other-stacks")}


def test_a_macos_syn_schedule_is_not_called_linux(crafted: dict[int, dict[str, Any]]) -> None:
    t = truth("crafted-other-stacks")["connections"]["50001"]
    conn = crafted[50001]
    gaps = ", ".join(str(g) for g in t["syn_gaps_s"])
    assert f"gaps {gaps} s" in conn["verdict"]
    assert "Linux" not in conn["verdict"]


def test_linux_syns_keep_their_name() -> None:
    """The counterpart: a real Linux client's schedule is still named as Linux's."""
    (conn,) = connections("no-answer")
    assert "Linux linear SYN timeouts" in conn["verdict"]


def test_window_scale_over_14_is_used_as_14(crafted: dict[int, dict[str, Any]]) -> None:
    t = truth("crafted-other-stacks")["connections"]["50002"]
    conn = crafted[50002]
    wins = [p["win"] for p in conn["packets"] if p["dir"] == "s2c" and "S" not in p["flags"]]
    assert wins and max(wins) == t["server_window_field"] << t["window_shift_used"]


def test_a_client_that_resets_its_own_syn_is_not_a_dead_host(crafted: dict[int, dict[str, Any]]) -> None:
    t = truth("crafted-other-stacks")["connections"]["50003"]
    conn = crafted[50003]
    assert t["reset_by"] == "client" and not t["server_answered"]
    assert conn["outcome"] == "abandoned"
    assert "host is down" not in conn["verdict"] and "dropped on the way" not in conn["verdict"]
    assert conn["confidence"] == "likely"


def test_a_synack_stamped_before_its_syn_gives_no_handshake_time(crafted: dict[int, dict[str, Any]]) -> None:
    t = truth("crafted-other-stacks")["connections"]["50004"]
    assert t["handshake_timing_trustworthy"] is False
    conn = crafted[50004]
    assert conn["handshake_rtt"] is None and conn["handshake_rtt_client_leg"] is None
    assert "before the SYN it answers" in conn["verdict"]


def test_a_reset_with_another_ttl_is_not_blamed_on_the_server(crafted: dict[int, dict[str, Any]]) -> None:
    """An RST in the server's name whose TTL is not the server's came from a box on the path."""
    t = truth("crafted-other-stacks")["connections"]["50005"]
    conn = crafted[50005]
    assert f"TTL {t['rst_ttl']}" in conn["verdict"] and f"TTL {t['server_ttl']}" in conn["verdict"]
    assert "box on the path" in conn["verdict"]
    assert "server application" not in (conn["next_step"] or "")


def test_a_reset_with_the_servers_own_ttl_is_the_servers() -> None:
    """Counterpart: a real server's abort (rst-midstream.pcap, SO_LINGER 0) is not called forged."""
    (conn,) = connections("rst-midstream")
    assert conn["outcome"] == "reset-by-server"
    assert "box on the path" not in conn["verdict"]
