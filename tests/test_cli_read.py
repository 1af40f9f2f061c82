"""Bad input and CLI behaviour of `synscope read`: one-line errors, useful exit codes, nothing lost."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from synscope.core.exit_codes import ExitCode
from tests.helpers import ROOT, cli, pcap


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "expected an error message"
    return lines[0]


def test_not_a_capture(tmp_path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello, this is not a capture\n")
    proc = cli("read", str(f))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "not a pcap or pcapng file" in one_line_error(proc)


def test_empty_file(tmp_path) -> None:
    f = tmp_path / "empty.pcap"
    f.write_bytes(b"")
    proc = cli("read", str(f))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "empty" in one_line_error(proc)


def test_missing_file_and_directory(tmp_path) -> None:
    proc = cli("read", str(tmp_path / "nope.pcap"))
    assert proc.returncode == ExitCode.BAD_INPUT and "no such file" in one_line_error(proc).lower()
    proc = cli("read", str(tmp_path))
    assert proc.returncode == ExitCode.BAD_INPUT and "directory" in one_line_error(proc)


def test_truncated_file_reports_what_came_before(tmp_path) -> None:
    data = open(pcap("rst-midstream.pcap"), "rb").read()
    f = tmp_path / "cut.pcap"
    f.write_bytes(data[: len(data) * 2 // 3])
    proc = cli("read", "--json", str(f))
    assert proc.returncode == ExitCode.PARTIAL_INPUT
    assert "Traceback" not in proc.stderr and "mid-record" in proc.stderr
    [obj] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert obj["outcome"] == "established" and len(obj["packets"]) > 5


def test_one_good_one_bad_file_still_reports_the_good_one(tmp_path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 100)
    proc = cli("read", str(bad), pcap("refused.pcap"))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "refused" in proc.stdout


def test_stdin_and_gzip_stdin() -> None:
    raw = open(pcap("refused.pcap"), "rb").read()
    for payload in (raw, gzip.compress(raw)):
        proc = cli("read", "--json", "-", input=payload)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["outcome"] == "refused"


def test_filters_select_connections() -> None:
    both = [pcap("ipv6.pcap"), pcap("refused.pcap")]
    by_port = cli("read", "--json", "--port", "81", *both).stdout.splitlines()
    assert [json.loads(x)["outcome"] for x in by_port] == ["refused", "refused"]
    by_host = cli("read", "--json", "--host", "2001:db8:2::2", *both).stdout.splitlines()
    assert len(by_host) == 2 and all(json.loads(x)["server"]["ip"] == "2001:db8:2::2" for x in by_host)
    by_bpf = cli("read", "--json", "--filter", "ip6 and tcp port 80", *both).stdout.splitlines()
    assert [json.loads(x)["outcome"] for x in by_bpf] == ["closed"]


def test_bad_options_are_usage_errors() -> None:
    for args in (["--port", "70000"], ["--port", "a-b"], ["--host", "not-an-ip"], ["--filter", "tcp portx 80"], ["--bogus"]):
        proc = cli("read", *args, pcap("refused.pcap"))
        assert proc.returncode == ExitCode.USAGE, args
        assert "Traceback" not in proc.stderr


def test_unknown_connection_id() -> None:
    proc = cli("read", "--conn", "99", pcap("refused.pcap"))
    assert proc.returncode == ExitCode.USAGE and "no connection with id 99" in proc.stderr


def test_help_is_fast_and_every_command_has_help() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "synscope", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert "scapy" not in proc.stderr, "--help must not import scapy"
    from synscope.cli.main import main

    for name, command in main.commands.items():
        assert command.help, f"command {name} has no help text"


def test_read_path_does_not_import_scapy() -> None:
    code = (
        "import sys, runpy; sys.argv=['synscope','read','--json','" + pcap("normal.pcap") + "'];\n"
        "import synscope.cli.main\n"
        "try:\n    synscope.cli.main.main()\nexcept SystemExit:\n    pass\n"
        "assert not any(m.startswith('scapy') for m in sys.modules), 'scapy imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_syn_flood_is_summarised_first(tmp_path) -> None:
    """A crafted flood (tests.craft) is named as such before the table, with its target and rate."""
    from tests.craft import write_synflood

    path = tmp_path / "flood.pcap"
    with open(path, "wb") as f:
        write_synflood(f, 5000, rate=5000.0, seed=7)
    proc = cli("read", "--max-conns", "2000", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SYN flood against 192.0.2.10:443" in out
    assert out.index("SYN flood against") < out.index("outcome")
    assert "more connections not listed" in out or "more timelines not shown" in out


@pytest.mark.parametrize("fmt", [(), ("--json",)], ids=["text", "json"])
def test_reader_going_away_is_not_an_error(fmt: tuple[str, ...]) -> None:
    """`synscope read big.pcap | head -1`: exit 0 and nothing on stderr about the closed pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "synscope", "read", *fmt, pcap("busy.pcap")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=60) == 0
    assert first
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Broken pipe" not in err


def _imported(*args: str) -> set[str]:
    """The modules a `synscope` run imports (python -X importtime), by name."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "synscope", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:") and line.count("|") == 2}


def test_read_json_starts_without_the_table_library() -> None:
    # --json draws no table: importing tabulate (and wcwidth) took a sixth of the start-up of
    # every run of `read --json`, most of it on a small capture read mid-incident
    assert "tabulate" not in _imported("read", "--json", str(pcap("normal.pcap")))
    assert "tabulate" in _imported("read", str(pcap("normal.pcap")))  # the text view draws tables
