"""The text view a user reads: folded timelines, the frame column, SACK blocks, the snaplen note,
window updates, the first screen of a big capture, and read's papercuts (exit codes, help)."""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest

from synscope.core.exit_codes import ExitCode
from synscope.render.text import write_connection
from tests.helpers import ROOT, analyse, cli, pcap
from tests.oracle import have_tshark

needs_tshark = pytest.mark.skipif(not have_tshark(), reason="tshark not installed")

# captures with loss: long timelines, dup ACKs citing earlier frames, SACK blocks
LOSSY = ("loss-download.pcap", "bulk-loss.pcap", "loss-upload.pcap", "reorder-hold.pcap")
ROW = re.compile(r"^\s+(\d+)\s+\d+\.\d{6}\s")  # a packet or ICMP row starts with its frame number


def shown_frames(text: str) -> list[int]:
    """Frame numbers of the timeline rows in a text view, in order."""
    return [int(m.group(1)) for m in map(ROW.match, text.splitlines()) if m]


def tshark_fields(path: str, display_filter: str, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", path, "-Y", display_filter, "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    return [line.split("\t") for line in out.splitlines()]


# --------------------------------------------------------------- folding


@pytest.mark.parametrize("name", LOSSY)
@pytest.mark.parametrize("context", [0, 3])
def test_folding_keeps_every_event_and_every_cited_frame(name: str, context: int) -> None:
    """Whatever the context, no frame the verdict's evidence or a note cites is folded away, nor
    any packet with a note or flag; and the fold lines account for every other packet."""
    for r in analyse(name):
        out = io.StringIO()
        write_connection(r, out, context=context)
        text = out.getvalue()
        shown = set(shown_frames(text))
        cited = {n for e in r.verdict.evidence for n in e.frames}
        cited |= {p.dupack_frame for p in r.conn.packets if p.notes and p.dupack_frame}
        noted = {p.seg.frame for p in r.conn.packets if p.notes}
        assert cited and noted
        assert cited <= shown, f"#{r.conn.id}: cited frames folded away: {sorted(cited - shown)[:10]}"
        assert noted <= shown, f"#{r.conn.id}: noted frames folded away: {sorted(noted - shown)[:10]}"
        folded = sum(int(m.group(1)) + int(m.group(2) or 0) for m in re.finditer(r"… (?:(\d+) data segments?)?(?: and )?(?:(\d+) ACKs?)?, no events", text))
        assert len(shown) + folded == len(r.conn.timeline()) + len(r.conn.icmp)
        assert folded, "nothing folded on a long timeline"


def test_folding_keeps_the_frames_a_finding_cites() -> None:
    """accept-overflow.pcap: the finding's evidence names frames of connection #3; its timeline
    (context 0: only events) still shows each of them."""
    objs = [json.loads(x) for x in cli("read", "--json", "pcaps/accept-overflow.pcap").stdout.splitlines()]
    finding = next(o for o in objs if o.get("finding") == "accept-queue-overflow")
    cited = {n for e in finding["evidence"] for n in e["frames"]}
    assert cited
    from synscope.render.summary import RunSummary
    from synscope.render.view import TextView

    summary = RunSummary(show_all=True)
    for r in analyse("accept-overflow.pcap"):
        summary.add(r)
    out = io.StringIO()
    summary.write(out, TextView(context=0))
    assert "no events" in out.getvalue()
    assert cited <= set(shown_frames(out.getvalue()))


@pytest.mark.parametrize("context", [0, 1, 3])
def test_a_capture_copy_folds_with_its_first_copy(context: int) -> None:
    """Loopback captures hold each packet twice: the copy (whose note names its first copy) is
    shown exactly when its first copy is, and is no event of its own, so such a timeline folds."""
    for r in analyse("loopback-dup.pcap"):
        out = io.StringIO()
        write_connection(r, out, context=context)
        shown = set(shown_frames(out.getvalue()))
        copies = [p for p in r.conn.timeline() if p.duplicate_of]
        assert copies
        for p in copies:
            assert (p.seg.frame in shown) == (p.duplicate_of in shown), f"frame {p.seg.frame}, copy of {p.duplicate_of}"
        if context == 0:  # (20 packets: with more context nothing is left to fold)
            assert "no events" in out.getvalue()


def test_a_lossy_download_reads_in_a_few_hundred_lines() -> None:
    """The issue's complaint: one download with loss printed a line per packet."""
    folded = cli("read", "pcaps/loss-download.pcap")
    every = cli("read", "--all-packets", "pcaps/loss-download.pcap")
    assert folded.returncode == every.returncode == 0
    packets = len(shown_frames(every.stdout))
    assert packets == 706
    assert len(folded.stdout.splitlines()) < packets / 2
    assert "no events (frames " in folded.stdout and "no events" not in every.stdout


@needs_tshark
@pytest.mark.parametrize("name", ["loss-download.pcap", "bulk-loss.pcap", "zero-window.pcap"])
def test_all_packets_shows_tshark_frame_list_of_the_stream(name: str) -> None:
    """--all-packets lists every frame of the connection, numbered as tshark numbers them."""
    proc = cli("read", "--all", "--all-packets", f"pcaps/{name}")
    assert proc.returncode == 0, proc.stderr
    want = [int(f[0]) for f in tshark_fields(pcap(name), "tcp.stream == 0", "frame.number")]
    got = shown_frames(proc.stdout.split("\n#2 ")[0])
    assert got == want


@needs_tshark
@pytest.mark.parametrize("name", ["loss-download.pcap", "loss-upload.pcap", "reorder-hold.pcap", "loss-upload-nots-v6.pcap"])
def test_sack_blocks_are_tsharks_relative_values(name: str) -> None:
    """Each ACK carrying SACK blocks shows them, relative as the ack number is (tshark's
    tcp.options.sack_le/re with relative sequence numbers)."""
    fields = tshark_fields(pcap(name), "tcp.options.sack_le", "frame.number", "tcp.options.sack_le", "tcp.options.sack_re")
    want = {int(f): list(zip(map(int, le.split(",")), map(int, re_.split(",")), strict=True)) for f, le, re_ in fields}
    assert want
    proc = cli("read", "--all", "--all-packets", f"pcaps/{name}")
    got = {}
    for line in proc.stdout.splitlines():
        m = ROW.match(line)
        if m and " SACK " in line:
            blocks = line.split(" SACK ")[1].split(" [")[0].split()
            got[int(m.group(1))] = [tuple(map(int, b.split("-"))) for b in blocks]
    assert got == want


def test_snaplen_cut_is_said_once_per_connection() -> None:
    proc = cli("read", "--all-packets", "pcaps/loss-download.pcap")
    assert proc.returncode == 0
    assert "truncated by snaplen" not in proc.stdout
    assert proc.stdout.count("Headers only: 417 of 706 packets cut short by the capture's snaplen") == 1


def test_window_update_noted_only_where_it_reopens_a_window() -> None:
    """tshark flags an ACK of a growing window as window_update: JSON keeps the flag on each one,
    the text notes it only after a zero or full window."""
    lines = [json.loads(x) for x in cli("read", "--json", "pcaps/loss-download.pcap").stdout.splitlines()]
    flagged = [p for p in lines[0]["packets"] if "window_update" in p["analysis"]]
    assert len(flagged) > 10
    assert not any("window update" in (p["note"] or "") for p in flagged)
    assert "window update" not in cli("read", "--all-packets", "pcaps/loss-download.pcap").stdout
    zero = cli("read", "--all", "--all-packets", "pcaps/zero-window.pcap").stdout
    rows = [line for line in zero.splitlines() if ROW.match(line)]
    updates = [i for i, line in enumerate(rows) if "window update" in line]
    assert updates, "the update that reopens a zero window is not noted"
    for i in updates:  # each comes after a zero or full window and before the next update
        before = rows[:i][::-1]
        stop = next(j for j, line in enumerate(before + ["window update"]) if "window update" in line)
        assert any("zero window" in line or "window full" in line for line in before[:stop]), rows[i]


def test_summary_prints_no_timeline() -> None:
    proc = cli("read", "--summary", "pcaps/loss-download.pcap")
    assert proc.returncode == 0
    assert "outcome" in proc.stdout and not shown_frames(proc.stdout) and "#1 " not in proc.stdout


def test_first_30_lines_of_a_big_capture_name_the_failures_in_groups() -> None:
    """busy.pcap: 600 connections; the first screen counts every kind of failure."""
    objs = [json.loads(x) for x in cli("read", "--json", "pcaps/busy.pcap").stdout.splitlines()]
    failed: dict[tuple[str, str], int] = {}
    for o in objs:
        if "outcome" in o and not o["ok"]:
            failed[(o["outcome"], o["rule"])] = failed.get((o["outcome"], o["rule"]), 0) + 1
    assert len(failed) >= 2
    head = "\n".join(cli("read", "pcaps/busy.pcap").stdout.splitlines()[:30])
    assert f"Did not end well: {sum(failed.values())} of 600 connections" in head
    for (outcome, rule), n in failed.items():
        assert f"{n} {outcome}" + (f" ({rule})" if rule != outcome else "") in head
    assert "60 connection attempts to 198.18.2.2:81 refused" in head  # the finding


def test_first_30_lines_of_files_read_together_name_the_failures() -> None:
    """A mixed run built from several captures (the multi-file read): above 20 connections the
    failures are counted before the table, which lists every connection."""
    names = ["accept-healthy.pcap", "accept-abort.pcap", "crafted-other-stacks.pcap", "refused-retry.pcap", "reject-port.pcap", "no-answer.pcap"]
    objs = [json.loads(x) for x in cli("read", "--json", *[f"pcaps/{n}" for n in names]).stdout.splitlines()]
    conns = [o for o in objs if "outcome" in o]
    failed: dict[tuple[str, str], int] = {}
    for o in conns:
        if not o["ok"]:
            failed[(o["outcome"], o["rule"])] = failed.get((o["outcome"], o["rule"]), 0) + 1
    assert len(conns) > 20 and len(failed) >= 3
    head = cli("read", *[f"pcaps/{n}" for n in names]).stdout.splitlines()[:30]
    line = next((x for x in head if x.startswith("Did not end well")), "")
    assert f"Did not end well: {sum(failed.values())} of {len(conns)} connections" in line, "\n".join(head)
    for (outcome, rule), n in failed.items():
        assert f"{n} {outcome}" + (f" ({rule})" if rule != outcome else "") in line, (outcome, n, line)


# --------------------------------------------------------------- papercuts


def test_unknown_conn_id_is_one_line_naming_the_valid_ids() -> None:
    proc = cli("read", "--conn", "9", "pcaps/refused-retry.pcap")
    assert proc.returncode == ExitCode.USAGE
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["synscope: no connection with id 9 (valid ids: 1–3)"]


def test_valid_ids_are_named_as_ranges() -> None:
    from synscope.cli.main import IdsSeen

    ids = IdsSeen()
    for cid in (3, 1, 2, 7, 9, 10, 11):
        ids.add(cid)
    assert ids.describe() == "1–3, 7, 9–11"
    many = IdsSeen()
    for cid in range(1, 100_001):
        many.add(cid)
    assert many.describe() == "1–100000" and len(many.ids) == IdsSeen.KEPT


def test_unknown_conn_id_with_json_too() -> None:
    proc = cli("read", "--json", "--conn", "7", "pcaps/refused.pcap")
    assert proc.returncode == ExitCode.USAGE
    assert proc.stdout == ""
    assert proc.stderr.strip() == "synscope: no connection with id 7 (valid ids: 1)"


REFUSED_TOGETHER = [
    ("--json", "--stats"),
    ("--json", "--summary"),
    ("--json", "--all-packets"),
    ("--json", "--context", "2"),
    ("--summary", "--all-packets"),
    ("--all-packets", "--context", "1"),
]


@pytest.mark.parametrize("args", REFUSED_TOGETHER)
def test_text_view_options_that_do_nothing_are_refused_in_one_line(args: tuple[str, ...]) -> None:
    proc = cli("read", *args, "pcaps/refused.pcap")
    assert proc.returncode == ExitCode.USAGE
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("synscope: ")


def test_each_file_counts_from_its_own_first_connection() -> None:
    """refused.pcap and normal.pcap were captured 3.5 s apart: read together, each one's
    connection starts at +0.000 of its own file, and a file column says which file."""
    proc = cli("read", "pcaps/refused.pcap", "pcaps/normal.pcap")
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if re.match(r"^\d+\s+\d+\s+198\.", line)}
    assert rows["1"][1] == "1" and rows["2"][1] == "2"
    assert "3.49 s" in proc.stdout.splitlines()[0]  # the run's span: the files are apart
    assert rows["1"][4] == rows["2"][4] == "+0.000"
    assert "start: seconds from that file's first connection" in proc.stdout


def test_help_lists_each_command_whole() -> None:
    out = cli("--help").stdout
    commands = out.split("Commands:")[1].strip().splitlines()
    assert len(commands) == 4
    assert not any(line.rstrip().endswith("...") for line in commands), commands


def test_read_help_lists_its_exit_codes_as_the_code_and_readme_do() -> None:
    out = cli("read", "--help").stdout
    codes = {int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s{2,}\S", out.split("Exit codes:")[1], re.M)}
    assert codes == {ExitCode.OK, ExitCode.USAGE, ExitCode.PARTIAL_INPUT, ExitCode.BAD_INPUT, ExitCode.INTERRUPTED}
    readme = (ROOT / "README.md").read_text().split("## Exit codes")[1]
    assert codes <= {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", readme, re.M)}
