"""Summary tables (the only module that imports tabulate, and only when it draws one)."""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple, TextIO

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint
from synscope.read.analysis.loss import COPY, DOWNSTREAM, REORDERED, SPURIOUS, UNDECIDED, UPSTREAM
from synscope.read.pipeline import ConnReport


class Row(NamedTuple):
    """What the summary tables show of one connection, as plain values: kept for the end of a
    run instead of the report (and sent whole from a split run's worker)."""

    id: int
    client: str  # without the "?" of guessed roles (``guessed``)
    server: str
    first_ts: float
    source_index: int
    duration: str
    packets: str  # c>s/s>c
    payload: str  # bytes c>s/s>c
    outcome: str
    notes: str
    guessed: bool
    retransmitted: str  # rate, as a percentage
    segments: str  # retransmitted segments c>s/s>c


def table_row(r: ConnReport) -> Row:
    """The figures of ``r`` that :func:`summary_table` and :func:`stats_from_tops` print."""
    c = r.conn
    fc, fs = r.analysis.facts
    return Row(
        c.id,
        fmt_endpoint(c.client.ip, c.client.port),
        fmt_endpoint(c.server.ip, c.server.port),
        c.first_ts,
        c.source_index,
        fmt.duration(c.last_ts - c.first_ts),
        f"{fc.packets}/{fs.packets}",
        f"{fc.payload_bytes}/{fs.payload_bytes}",
        r.verdict.outcome,
        r.verdict.summary,
        c.roles_guessed,
        fmt.percent(r.analysis.retransmission_rate),
        f"{fc.retransmitted_segments}/{fs.retransmitted_segments}",
    )


def summary_table(rows: list[Row], origin: float, out: TextIO, file_starts: dict[int, float] | None = None) -> None:
    """One row per connection (:func:`table_row`): who, when, how much, and how it ended.
    ``start`` counts from ``origin``, or with several files from the first packet of the
    connection's own file (``file_starts`` by input index), and a ``file`` column says which."""
    lines = []
    for x in rows:
        lines.append(
            [
                x.id,
                x.client + ("?" if x.guessed else ""),
                x.server,
                f"+{x.first_ts - (origin if file_starts is None else file_starts.get(x.source_index, origin)):.3f}",
                x.duration,
                x.packets,
                x.payload,
                x.outcome,
                x.notes,
            ]
        )
        if file_starts is not None:
            lines[-1].insert(1, str(x.source_index + 1))
    headers = ["id", "client", "server", "start", "dur", "pkts c>s/s>c", "bytes c>s/s>c", "outcome", "notes"]
    if file_starts is not None:
        headers.insert(1, "file")
    out.write(_tabulate(lines, headers=headers, tablefmt="plain", disable_numparse=True) + "\n")
    if file_starts is not None:
        out.write("file: the input's place on the command line; start: seconds from that file's first connection\n")
    if any(x.guessed for x in rows):
        out.write("? client/server guessed from the ports (picked up mid-stream)\n")


def stats_from_tops(outcomes: Counter, by_rate: list[Row], by_duration: list[Row], out: TextIO) -> None:
    """Print the --stats tables from totals already gathered."""
    out.write("\nOutcomes\n")
    by_count: list[tuple[str, int]] = sorted(outcomes.items(), key=lambda kv: -kv[1])
    out.write(_tabulate(by_count, headers=["outcome", "connections"], tablefmt="plain") + "\n")
    out.write("\nTop connections by retransmission rate\n")
    if by_rate:
        lines = [[x.id, x.client, x.server, x.retransmitted, x.segments, x.outcome] for x in by_rate]
        headers = ["id", "client", "server", "retrans", "segs c>s/s>c", "outcome"]
        out.write(_tabulate(lines, headers=headers, tablefmt="plain", disable_numparse=True) + "\n")
    else:
        out.write("(no retransmissions)\n")
    out.write("\nTop connections by duration\n")
    lines = [[x.id, x.client, x.server, x.duration, x.outcome] for x in by_duration]
    out.write(_tabulate(lines, headers=["id", "client", "server", "duration", "outcome"], tablefmt="plain", disable_numparse=True) + "\n")


def direction_table(report: ConnReport, out: TextIO, indent: str = "  ") -> None:
    """Per-direction figures (tcptrace's columns) for one connection. The RTT of a direction is
    data seen at the capture point → its ACK seen there: the round trip from the capture point to
    that direction's receiver (at a client-side capture, server→client RTT is the client's ACK delay).

    Loss and reordering are the evidence-based counts of ``synscope.read.analysis.loss`` (what the
    verdict says), not tshark's retransmission / out-of-order flags (those stay in the JSON):
    segments lost before / after the capture point ("lost before" / "lost after"), resent though
    not needed, sent before segments that overtook them, recorded twice, and those no evidence decided."""
    rows = []
    for label, f, lf in (
        ("client→server", report.analysis.facts[0], report.analysis.loss[0]),
        ("server→client", report.analysis.facts[1], report.analysis.loss[1]),
    ):
        rtt = f.rtt_summary()
        n = lf.counts
        rows.append(
            [
                label,
                f.packets,
                f.payload_bytes,
                n[UPSTREAM],
                n[DOWNSTREAM],
                n[SPURIOUS],
                n[REORDERED],
                n[COPY],
                n[UNDECIDED],
                f.duplicate_acks,
                fmt.duration(f.zero_window_time) if f.zero_window_adverts else "-",
                fmt.duration(f.max_idle),
                fmt.rate(f.throughput()) if f.throughput() else "-",
                "/".join(fmt.duration(x) for x in rtt) if rtt else "-",
            ]
        )
    headers = [
        "direction",
        "pkts",
        "bytes",
        "lost before",
        "lost after",
        "spurious",
        "reordered",
        "copies",
        "undecided",
        "dupack",
        "zero-win",
        "max idle",
        "throughput",
        "rtt capture↔receiver min/med/max",
    ]
    text = _tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)
    out.write("".join(indent + line + "\n" for line in text.splitlines()))


def _tabulate(rows: Any, headers: Any, tablefmt: str, disable_numparse: bool = False) -> str:
    """``tabulate.tabulate``, imported when a table is first drawn: a ``--json`` run draws none,
    and importing tabulate (with wcwidth) was a sixth of the start-up of `read --json` (114 M of 712 M
    instructions). A run that drops root (``--user``) has it imported before the drop
    (synscope.cli.privileges.LOAD_BEFORE_DROP)."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=disable_numparse)
