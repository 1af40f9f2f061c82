"""Annotated per-connection timelines and verdict blocks, as plain text."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TextIO

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.core.icmp import icmp_label
from synscope.core.model import FIN, RST, SYN, flag_string
from synscope.core.seqnum import UNSEEN, relative, scaled_window, shown_ack
from synscope.read.analysis.flags import A_WINDOW_UPDATE
from synscope.read.evidence import CERTAIN, Evidence
from synscope.read.pipeline import ConnReport, link_sentences
from synscope.read.tracker import C2S
from synscope.render.safe import escape_bytes
from synscope.render.table import direction_table
from synscope.render.view import DEFAULT_CONTEXT

WRAP = 100
# Shorter runs between events are shown, not folded (a fold line would save nothing)
MIN_FOLDED = 3
# Frames cut short by the snaplen named one by one, up to this many
FRAMES_LISTED = 5


def connection_title(r: ConnReport) -> str:
    """``#2 198.18.1.2:51030 → 198.18.2.2:9090  refused (REJ, history Sr)``."""
    c = r.conn
    v = r.verdict
    guessed = " (roles guessed)" if c.roles_guessed else ""
    return (
        f"#{c.id} {fmt_endpoint(c.client.ip, c.client.port)} → {fmt_endpoint(c.server.ip, c.server.port)}{guessed}"
        f"  {v.outcome} ({v.conn_state}, history {v.history})"
    )


def write_connection(
    r: ConnReport,
    out: TextIO,
    absolute: bool = False,
    payload: bool = False,
    details: bool = True,
    context: int | None = DEFAULT_CONTEXT,
    also_cited: frozenset[int] = frozenset(),
) -> None:
    """Title, the verdict in sentences, the next step, per-direction figures and the timeline
    (folded around its events with ``context`` a number, every packet with None; frames in
    ``also_cited``, the findings' evidence, are kept as the verdict's own are)."""
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
    states = f"  End states: client {client}, server {r.server_state()}"
    if r.source_name:
        states += f"   (from {r.source_name})"
    out.write(states + "\n")
    if details and any(f.data_segments for f in r.analysis.facts):
        direction_table(r, out)
    write_timeline(r, out, absolute=absolute, payload=payload, context=context, also_cited=also_cited)
    out.write("\n")


def evidence_line(confidence: str, evidence: tuple[Evidence, ...]) -> str:
    """``Evidence (certain): SYN #1; RST from the server #2``: how sure the cause is, and the frames to open."""
    facts = "; ".join(e.fact + "".join(f" #{n}" for n in e.frames) for e in evidence)
    return f"Evidence ({confidence}): {facts or 'none beyond the timeline'}"


def write_timeline(
    r: ConnReport,
    out: TextIO,
    absolute: bool = False,
    payload: bool = False,
    context: int | None = DEFAULT_CONTEXT,
    also_cited: frozenset[int] = frozenset(),
) -> None:
    """One line per packet (and per ICMP error), times relative to the connection's first packet,
    led by the capture's frame number. With ``context`` a number, only the packets within that
    many rows of an event are shown and each run between them is folded into one line; None
    shows every packet."""
    c = r.conn
    t0 = c.first_ts
    rows: list[_Row] = []
    prev = t0
    truncated: list[int] = []
    for i, pkt in enumerate(c.timeline()):
        seg = pkt.seg
        me = c.client if pkt.dir == C2S else c.server
        peer = c.server if pkt.dir == C2S else c.client
        # the numbers read --json shows, computed by the same functions
        peer_base = UNSEEN if absolute else peer.base
        seq = relative(seg.seq, UNSEEN if absolute else me.base)
        ack = shown_ack(seg.ack, seg.flags, peer_base)
        win = scaled_window(seg.win, seg.flags, me.win_scale)
        delta = "" if i == 0 else "+" + fmt.duration(seg.ts - prev)
        prev = seg.ts
        arrow = "→" if pkt.dir == C2S else "←"
        extras: list[str] = []
        if seg.flags & SYN:
            opts = seg.options.describe()
            if opts:
                extras.append(opts)
        elif seg.raw_options and seg.options.sack_blocks:
            extras.append(sack_text(seg.options.sack_blocks, peer_base))
        if seg.truncated:
            truncated.append(seg.frame)
        if seg.fragment:
            extras.append("(IP fragment: more fragments follow)")
        notes = pkt.notes
        if notes:
            extras.append("[" + "; ".join(notes) + "]")
        if payload and seg.payload:
            extras.append('"' + escape_bytes(seg.payload) + '"')
        line = (
            f"{seg.frame:>7} {seg.ts - t0:10.6f} {delta:>10}  {arrow} {flag_string(seg.flags):<5} {seq:>10} {ack:>10} "
            f"{seg.length:>6} {win:>7} {'' if pkt.in_flight is None else pkt.in_flight:>7}  {' '.join(extras)}"
        )
        # (a capture copy is not analysed: it folds with its first copy unless that is an event)
        event = not pkt.duplicate_of and bool(seg.flags & (SYN | FIN | RST) or notes or pkt.analysis & ~A_WINDOW_UPDATE)
        rows.append(_Row(seg.ts, seg.frame, line.rstrip(), event, seg.length > 0, pkt.duplicate_of))
    for err in c.icmp:
        label = icmp_label(err.version, err.type, err.code)
        line = (
            f"{err.frame:>7} {err.ts - t0:10.6f} {'':>10}  ← ICMP  {'':>10} {'':>10} {'':>6} {'':>7} {'':>7}  [{err.name} ({label}) from {fmt_ip(err.router)}"
            f" about the packet to {fmt_endpoint(err.dst, err.dport)}"
            f"{', MTU ' + str(err.mtu) if err.mtu else ''}; ttl {err.ttl}]"
        )
        rows.append(_Row(err.ts, err.frame, line, True, False, 0))
    rows.sort(key=lambda x: (x.ts, x.frame))
    if truncated:
        out.write("  " + _truncated_line(truncated, len(rows)) + "\n")
    header = f"  {'frame':>5} {'t':>10} {'Δ':>10}    {'flags':<5} {'seq':>10} {'ack':>10} {'len':>6} {'win':>7} {'inflight':>7}"
    out.write(header + "\n")
    if context is None:
        for row in rows:
            out.write(row.line + "\n")
    else:
        _write_folded(rows, cited_frames(r) | also_cited, context, out)
    if r.analysis.omitted:
        out.write(f"  … {r.analysis.omitted} plain data/ACK packets not kept (long connection); every flagged or control packet is shown\n")


@dataclass(slots=True)
class _Row:
    """One timeline line, with what folding needs to know about it."""

    ts: float
    frame: int
    line: str
    event: bool  # kept with its context when folding
    data: bool  # a segment carrying payload (for the fold line's count)
    copy_of: int  # a capture copy: its first copy's frame (shown or folded with it); else 0


def sack_text(blocks: tuple[tuple[int, int], ...], base: int) -> str:
    """``SACK 2897-4345 5793-7241``: the blocks an ACK carries, relative to the data sender's
    ``base`` as its ack number is (tshark's ``tcp.options.sack_le``/``sack_re``)."""
    return "SACK " + " ".join(f"{relative(le, base)}-{relative(re, base)}" for le, re in blocks)


def cited_frames(r: ConnReport) -> set[int]:
    """Frames the verdict's evidence or a note names: folding never hides them."""
    frames = {n for e in r.verdict.evidence for n in e.frames}
    for pkt in r.conn.packets:
        if pkt.dupack_frame and pkt.notes:
            frames.add(pkt.dupack_frame)
    return frames


def _truncated_line(frames: list[int], rows: int) -> str:
    """Said once per connection, not on every row: which packets the snaplen cut short."""
    which = "every packet" if len(frames) == rows else f"{len(frames)} of {rows} packets"
    cited = " (" + " ".join(f"#{n}" for n in frames) + ")" if len(frames) <= FRAMES_LISTED and len(frames) < rows else ""
    return f"Headers only: {which} cut short by the capture's snaplen{cited}; lengths are from the IP header"


def fold_line(rows: list[_Row]) -> str:
    """``… 412 packets, 206 data segments and 206 ACKs, no events (frames 120–531, 0.84 s) …``."""
    data = sum(1 for x in rows if x.data)
    acks = len(rows) - data
    kinds = [f"{data} data segment{'s' if data != 1 else ''}"] if data else []
    if acks:
        kinds.append(f"{acks} ACK{'s' if acks != 1 else ''}")
    frames = sorted(x.frame for x in rows)
    # a range when it is one (frames of interleaved interfaces may not be): else the first and last
    which = f"{frames[0]}–{frames[-1]}" if frames[-1] - frames[0] == len(frames) - 1 else f"{frames[0]} … {frames[-1]}, not consecutive"
    span = fmt.duration(rows[-1].ts - rows[0].ts)
    return f"  {'':>5} … {' and '.join(kinds)}, no events (frames {which}, {span}) …"


def _write_folded(rows: list[_Row], cited: set[int], context: int, out: TextIO) -> None:
    """The rows within ``context`` of an event (or a cited frame; the first and the last row
    always), each run of the others as one fold line (a run shorter than MIN_FOLDED is shown as it is). A capture
    copy is shown when its first copy is, and folded with it."""
    n = len(rows)
    keep = [False] * n
    for i, row in enumerate(rows):
        if row.event or row.frame in cited or i == 0 or i == n - 1:
            for j in range(max(0, i - context), min(n, i + context + 1)):
                keep[j] = True
    where = {row.frame: i for i, row in enumerate(rows) if not row.copy_of}
    for i, row in enumerate(rows):
        first = where.get(row.copy_of, -1) if row.copy_of else -1
        if first >= 0 and keep[first] != keep[i]:
            keep[i] = keep[first] = True  # (the pair both shown: the copy's note names its first copy)
    i = 0
    while i < n:
        if keep[i]:
            out.write(rows[i].line + "\n")
            i += 1
            continue
        j = i
        while j < n and not keep[j]:
            j += 1
        if j - i < MIN_FOLDED:
            for row in rows[i:j]:
                out.write(row.line + "\n")
        else:
            out.write(fold_line(rows[i:j]) + "\n")
        i = j


def write_header(name: str, connections: int, frames: int, span: float, details: str, out: TextIO) -> None:
    """``capture.pcap: 3 connections, 21 packets, 7.1 s   (pcap, ethernet, µs timestamps)``."""
    out.write(
        f"{name}: {connections} connection{'s' if connections != 1 else ''}, {frames} packet{'s' if frames != 1 else ''}, "
        f"{fmt.duration(span)}   ({details})\n\n"
    )
