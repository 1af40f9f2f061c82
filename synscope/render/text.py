"""Annotated per-connection timelines and verdict blocks, as plain text."""

from __future__ import annotations

import textwrap
from typing import TextIO

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.core.icmp import icmp_label
from synscope.core.model import SYN, flag_string
from synscope.core.seqnum import UNSEEN, relative, scaled_window, shown_ack
from synscope.read.evidence import CERTAIN, Evidence
from synscope.read.pipeline import ConnReport, link_sentences
from synscope.read.tracker import C2S
from synscope.render.safe import escape_bytes
from synscope.render.table import direction_table

WRAP = 100


def connection_title(r: ConnReport) -> str:
    """``#2 198.18.1.2:51030 → 198.18.2.2:9090  refused (REJ, history Sr)``."""
    c = r.conn
    v = r.verdict
    guessed = " (roles guessed)" if c.roles_guessed else ""
    return (
        f"#{c.id} {fmt_endpoint(c.client.ip, c.client.port)} → {fmt_endpoint(c.server.ip, c.server.port)}{guessed}"
        f"  {v.outcome} ({v.conn_state}, history {v.history})"
    )


def write_connection(r: ConnReport, out: TextIO, absolute: bool = False, payload: bool = False, details: bool = True) -> None:
    """Title, the verdict in sentences, the next step, per-direction figures and the timeline."""
    out.write(connection_title(r) + "\n")
    if r.conn.encap is not None:
        out.write("  Carried in: " + r.conn.encap.describe() + "\n")
    v = r.verdict
    links = link_sentences(r)
    for line in textwrap.wrap(v.explanation.rstrip() + (" " + links if links else ""), WRAP - 2):
        out.write("  " + line + "\n")
    if v.evidence or v.confidence != CERTAIN:
        for i, line in enumerate(textwrap.wrap(evidence_line(v.confidence, v.evidence), WRAP - 2)):
            out.write(("  " if i == 0 else "            ") + line + "\n")
    if v.next_step:
        for i, line in enumerate(textwrap.wrap("Next: " + v.next_step, WRAP - 2)):
            out.write(("  " if i == 0 else "        ") + line + "\n")
    c = r.conn
    client = "none (raw probe: no socket)" if r.raw_client else c.state_of(c.client)
    states = f"  End states: client {client}, server {c.state_of(c.server)}"
    if r.source_name:
        states += f"   (from {r.source_name})"
    out.write(states + "\n")
    if details and any(f.data_segments for f in r.analysis.facts):
        direction_table(r, out)
    write_timeline(r, out, absolute=absolute, payload=payload)
    out.write("\n")


def evidence_line(confidence: str, evidence: tuple[Evidence, ...]) -> str:
    """``Evidence (certain): SYN #1; RST from the server #2``: how sure the cause is, and the frames to open."""
    facts = "; ".join(e.fact + "".join(f" #{n}" for n in e.frames) for e in evidence)
    return f"Evidence ({confidence}): {facts or 'none beyond the timeline'}"


def write_timeline(r: ConnReport, out: TextIO, absolute: bool = False, payload: bool = False) -> None:
    """One line per packet (and per ICMP error), times relative to the connection's first packet."""
    c = r.conn
    t0 = c.first_ts
    rows: list[tuple[float, int, str]] = []
    prev = t0
    for i, pkt in enumerate(c.timeline()):
        seg = pkt.seg
        me = c.client if pkt.dir == C2S else c.server
        peer = c.server if pkt.dir == C2S else c.client
        # the numbers read --json shows, computed by the same functions
        seq = relative(seg.seq, UNSEEN if absolute else me.base)
        ack = shown_ack(seg.ack, seg.flags, UNSEEN if absolute else peer.base)
        win = scaled_window(seg.win, seg.flags, me.win_scale)
        delta = "" if i == 0 else "+" + fmt.duration(seg.ts - prev)
        prev = seg.ts
        arrow = "→" if pkt.dir == C2S else "←"
        extras: list[str] = []
        if seg.flags & SYN:
            opts = seg.options.describe()
            if opts:
                extras.append(opts)
        if seg.truncated:
            extras.append("(truncated by snaplen)")
        if seg.fragment:
            extras.append("(IP fragment: more fragments follow)")
        if pkt.notes:
            extras.append("[" + "; ".join(pkt.notes) + "]")
        if payload and seg.payload:
            extras.append('"' + escape_bytes(seg.payload) + '"')
        line = (
            f"  {seg.ts - t0:10.6f} {delta:>10}  {arrow} {flag_string(seg.flags):<5} {seq:>10} {ack:>10} "
            f"{seg.length:>6} {win:>7} {'' if pkt.in_flight is None else pkt.in_flight:>7}  {' '.join(extras)}"
        )
        rows.append((seg.ts, seg.frame, line.rstrip()))
    for err in c.icmp:
        label = icmp_label(err.version, err.type, err.code)
        hop = ""
        line = (
            f"  {err.ts - t0:10.6f} {'':>10}  ← ICMP  {'':>10} {'':>10} {'':>6} {'':>7} {'':>7}  [{err.name} ({label}) from {fmt_ip(err.router)}{hop}"
            f" about the packet to {fmt_endpoint(err.dst, err.dport)}"
            f"{', MTU ' + str(err.mtu) if err.mtu else ''}; ttl {err.ttl}]"
        )
        rows.append((err.ts, err.frame, line))
    rows.sort(key=lambda x: (x[0], x[1]))
    header = f"  {'t':>10} {'Δ':>10}    {'flags':<5} {'seq':>10} {'ack':>10} {'len':>6} {'win':>7} {'inflight':>7}"
    out.write(header + "\n")
    for _, _, line in rows:
        out.write(line + "\n")
    if r.analysis.omitted:
        out.write(f"  … {r.analysis.omitted} plain data/ACK packets not kept (long connection); every flagged or control packet is shown\n")


def write_header(name: str, connections: int, frames: int, span: float, details: str, out: TextIO) -> None:
    """``capture.pcap: 3 connections, 21 packets, 7.1 s   (pcap, ethernet, µs timestamps)``."""
    out.write(
        f"{name}: {connections} connection{'s' if connections != 1 else ''}, {frames} packet{'s' if frames != 1 else ''}, "
        f"{fmt.duration(span)}   ({details})\n\n"
    )
