"""Findings across connections worded for the terminal: the "What went wrong" block."""

from __future__ import annotations

import textwrap
from typing import TextIO

from synscope.core import fmt
from synscope.read.evidence import CERTAIN
from synscope.read.findings.model import Finding
from synscope.read.findings.syn_flood import FloodSummary

__all__ = ["finding_live_lines", "finding_more_line", "render_flood", "write_findings"]

# Columns of the "What went wrong" block (as the timelines' explanations)
WRAP = 100


def write_findings(findings: list[Finding], first_ts: float, out: TextIO) -> None:
    """Worst first, one sentence each with its period, next step and an example connection
    (every string in them is made by synscope)."""
    if not findings:
        return
    out.write("What went wrong\n")
    for f in findings:
        mark = "!" if f.confidence == CERTAIN else "~"
        start, end = f.start - first_ts, f.end - first_ts
        when = f"at +{start:.3f} s" if end - start < 0.0005 else f"+{start:.3f} s … +{end:.3f} s"
        example = f"   e.g. #{f.connections[0]}" if f.connections else ""
        out.write(textwrap.fill(f"{f.verdict} ({when}; {f.confidence})", WRAP, initial_indent=f"  {mark} ", subsequent_indent="    ") + "\n")
        out.write(textwrap.fill(f"Next: {f.next_step}{example}", WRAP, initial_indent="    ", subsequent_indent="    ") + "\n")
    out.write("\n")


def finding_live_lines(f: Finding, stamp: str) -> str:
    """A finding as ``watch`` prints it the moment it is established: the sentence, then the next step."""
    mark = "!" if f.confidence == CERTAIN else "~"
    example = f"   e.g. #{f.connections[0]}" if f.connections else ""
    head = f"{stamp} {mark} finding {f.name} at {f.server}: {f.verdict} ({f.confidence})"
    text = textwrap.fill(head, WRAP, subsequent_indent="    ") + "\n"
    return text + textwrap.fill(f"Next: {f.next_step}{example}", WRAP, initial_indent="    ", subsequent_indent="    ") + "\n"


def finding_more_line(f: Finding, before: int, stamp: str) -> str:
    """``watch``'s short line for a finding printed earlier that has grown since."""
    more = f.connection_count - before
    return f"{stamp}   finding {f.name} at {f.server} still going: {_n(more)} more ({_n(f.connection_count)} in all)\n"


def _n(x: int) -> str:
    return f"{x:,}"


def render_flood(summary: FloodSummary, out: TextIO) -> None:
    """The flood as a short text block for the terminal (every string in it is made by synscope)."""
    s = summary
    out.write(
        f"SYN flood against {s.target}: {_n(s.attempts)} connection attempts in {fmt.duration(s.duration)} "
        f"({_n(round(s.rate))}/s, busiest second {_n(s.peak_rate)})\n"
    )
    out.write(
        f"  half-open: {_n(s.half_open)} ({fmt.percent(s.half_open_share)}) never completed the handshake; "
        f"completed: {_n(s.completed)} ({fmt.percent(s.completed_share)})\n"
    )
    answered = f"  answered with SYN-ACK: {_n(s.answered)} ({fmt.percent(s.answered_share)})"
    if s.refused:
        answered += f"; refused with RST: {_n(s.refused)}"
    out.write(answered + "\n")
    if s.synack_once is not None and s.answered:
        out.write(
            f"  SYN-ACK never retransmitted: {_n(s.synack_once)} of the answered attempts that stayed half-open "
            "(a server using SYN cookies keeps no state and does not retransmit)\n"
        )
    if s.synack_retransmissions:
        out.write(f"  SYN-ACK retransmissions to half-open attempts: {_n(s.synack_retransmissions)} (the server kept their state)\n")
    elif s.evicted:
        out.write(
            f"  SYN-ACK retransmissions per attempt: unknown: {_n(s.evicted)} attempts were evicted from the connection table "
            f"(--max-conns) first; {_n(s.late_synacks)} SYN-ACKs came after their attempt was evicted\n"
        )
    approx = "" if s.sources_exact else "about "
    out.write(f"  sources: {approx}{_n(s.distinct_sources)} distinct addresses (spoofed, most likely, if they never answer)\n")
    if s.top_sources:
        tops = ", ".join(f"{ip} ({_n(n)}{'' if not err else f' ±{_n(err)}'})" for ip, n, err in s.top_sources[:5])
        out.write(f"  top sources: {tops}\n")
    if s.missed_attempts:
        out.write(f"  note: up to {_n(s.missed_attempts)} earlier attempts to this endpoint were not counted (bounded counters)\n")
    out.write(
        "  Next: check the server's SYN backlog and SYN cookies (netstat -s | grep -i listen; "
        "sysctl net.ipv4.tcp_syncookies) and filter upstream: the sources are usually spoofed.\n"
    )
