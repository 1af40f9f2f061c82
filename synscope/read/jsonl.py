"""JSON Lines: one object per connection, versioned schema (documented in the README)."""

from __future__ import annotations

import json
import math
from typing import Any, Final, TextIO

from synscope.core.addr import fmt_ip, ip_string
from synscope.core.encap import Encap
from synscope.core.fmt import fixed, scaled_round
from synscope.core.model import SYN, Segment, TcpOptions, describe_key, flag_string
from synscope.core.seqnum import UNSEEN, relative, scaled_window, shown_ack
from synscope.read.analysis.ecn import EcnFacts, negotiation
from synscope.read.analysis.engine import ConnAnalysis, DirectionFacts
from synscope.read.analysis.flags import flag_names
from synscope.read.analysis.loss import LossFacts
from synscope.read.evidence import Evidence
from synscope.read.pipeline import ConnReport
from synscope.read.tracker import C2S, Side
from synscope.read.verdict import Verdict

SCHEMA: Final = 1
# how every connection object starts; the id comes next
HEAD_START: Final = f'{{"schema":{SCHEMA},"id":'


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def connection_object(r: ConnReport, absolute: bool = False, with_packets: bool = True) -> dict[str, Any]:
    """The JSON object for one connection (schema 1)."""
    c = r.conn
    v = r.verdict
    fc, fs = r.analysis.facts
    packets = []
    for pkt in c.timeline() if with_packets else ():
        seg = pkt.seg
        me = c.client if pkt.dir == C2S else c.server
        peer = c.server if pkt.dir == C2S else c.client
        obj: dict[str, Any] = {
            "frame": seg.frame,
            "t": round(seg.ts, 9),
            "dir": "c2s" if pkt.dir == C2S else "s2c",
            "flags": flag_string(seg.flags),
            "seq": relative(seg.seq, UNSEEN if absolute else me.base),
            "ack": shown_ack(seg.ack, seg.flags, UNSEEN if absolute else peer.base),
            "len": seg.length,
            "win": scaled_window(seg.win, seg.flags, me.win_scale),
            "analysis": flag_names(pkt.analysis),
            "note": "; ".join(pkt.notes) if pkt.notes else None,
        }
        if seg.flags & SYN:
            obj["options"] = seg.options.describe()
        if pkt.dupack_num:
            obj["duplicate_ack_num"] = pkt.dupack_num
            obj["duplicate_ack_frame"] = pkt.dupack_frame
        if pkt.rto is not None:
            obj["rto"] = _round(pkt.rto)
        if pkt.in_flight is not None:
            obj["in_flight"] = pkt.in_flight
        if pkt.duplicate_of:
            obj["duplicate_of"] = pkt.duplicate_of
        packets.append(obj)

    return {
        "schema": SCHEMA,
        "id": c.id,
        "source": r.source_name,
        "client": {"ip": fmt_ip(c.client.ip), "port": c.client.port},
        "server": {"ip": fmt_ip(c.server.ip), "port": c.server.port},
        "encap": [] if c.encap is None else c.encap.objects(),
        "roles_guessed": c.roles_guessed,
        "start": round(c.first_ts, 6),
        "end": round(c.last_ts, 6),
        "state": v.conn_state,
        "history": v.history,
        "outcome": v.outcome,
        "ok": v.ok,
        "verdict": v.explanation,
        "rule": v.rule or None,
        "confidence": v.confidence,
        "evidence": [{"fact": e.fact, "frames": list(e.frames)} for e in v.evidence],
        "next_step": v.next_step or None,
        "client_state": r.client_state(),
        "server_state": r.server_state(),
        "syn_retransmissions": max(c.client.syn_count - 1, 0),
        "synack_retransmissions": max(c.server.syn_count - 1, 0),
        "handshake_rtt": _round(c.handshake_rtt),
        "handshake_rtt_server_leg": _round(c.server_leg),
        "handshake_rtt_client_leg": _round(c.client_leg),
        "packets_omitted": r.analysis.omitted,
        "reused_from": c.reused_from,
        "retry_of": r.retry_of,
        "retry_number": r.retry_number if r.retry_of is not None else None,
        "findings": ["port-scan"] if r.scan else [],
        "icmp": [
            {"from": fmt_ip(e.router), "type": e.type, "code": e.code, "name": e.name, "t": round(e.ts, 9), "frame": e.frame, "ttl": e.ttl, "mtu": e.mtu}
            for e in c.icmp
        ],
        "ecn": ecn_object(r.analysis, r.conn.client.syn_count > 0),
        "bad_checksums": list(r.analysis.bad_checksums),
        "c2s": _direction(fc, r.analysis.loss[0], c.client, c.server, absolute),
        "s2c": _direction(fs, r.analysis.loss[1], c.server, c.client, absolute),
        **({"packets": packets} if with_packets else {}),
    }


def ecn_object(state: ConnAnalysis, syn_seen: bool) -> dict[str, Any] | None:
    """The "ecn" member: the handshake's ECN negotiation and each direction's ECN marks
    (None when the connection shows nothing of ECN: no setup bits, codepoints, ECE or CWR)."""
    if state.ecn is None:
        return None
    client, server = state.ecn
    return {"negotiation": negotiation(client, server, syn_seen), "c2s": _ecn_direction(client), "s2c": _ecn_direction(server)}


def _ecn_direction(e: EcnFacts) -> dict[str, Any]:
    """One direction of the "ecn" member."""
    return {
        "ect0": e.ect0,
        "ect1": e.ect1,
        "ce": e.ce,
        "ce_frames": list(e.ce_frames),
        "ece": e.ece,
        "ece_frames": list(e.ece_frames),
        "cwr": e.cwr,
        "cwr_frames": list(e.cwr_frames),
    }


def _ecn_text(state: ConnAnalysis, syn_seen: bool) -> str:
    """:func:`compact` of :func:`ecn_object` (``null`` for most connections, at no cost)."""
    if state.ecn is None:
        return "null"
    return compact(ecn_object(state, syn_seen))


def _direction(f: Any, lf: LossFacts, side: Any, peer: Any, absolute: bool) -> dict[str, Any]:
    """The per-direction member (``c2s`` / ``s2c``) of a connection object."""
    rtt = f.rtt_summary()
    opts = side.syn_options
    return {
        "isn": side.isn,
        "next_seq": None if side.next_seq == UNSEEN else relative(side.next_seq, UNSEEN if absolute else side.base),
        "highest_ack": None if side.highest_ack == UNSEEN else relative(side.highest_ack, UNSEEN if absolute else peer.base),
        "mss": opts.mss if opts is not None else None,
        "win_scale": side.win_scale if side.win_scale >= 0 else None,
        "sack_permitted": bool(opts.sack_permitted) if opts is not None else None,
        "packets": f.packets,
        "bytes": f.payload_bytes,
        "data_segments": f.data_segments,
        "retransmitted_segments": f.retransmitted_segments,
        "retransmitted_bytes": f.retransmitted_bytes,
        "retransmission_rate": round(f.retransmission_rate, 4),
        "fast_retransmissions": f.fast_retransmissions,
        "out_of_order": f.out_of_order,
        "duplicate_acks": f.duplicate_acks,
        **dict(zip(LOSS_NAMES, lf.counts, strict=True)),
        "zero_window_time": _round(f.zero_window_time),
        "max_idle": _round(f.max_idle),
        "throughput_bps": round(f.throughput() * 8, 1),
        "rtt": None if rtt is None else {"min": _round(rtt[0]), "median": _round(rtt[1]), "max": _round(rtt[2])},
    }


def connection_line(r: ConnReport, absolute: bool = False) -> str:
    """One JSON line for a connection: the same text as :func:`compact` of
    :func:`connection_object`, written directly (on big captures it is half the work of a run)."""
    # (one f-string: compiled, the line is built once, not copied by each +)
    return f'{head_text(r, absolute)},"packets":[{packets_text(r, absolute)}]}}'


def _json(x: object) -> str:
    """A number, bool or None as the JSON encoder writes it (NaN and infinities included)."""
    if x is None:
        return "null"
    if x is True:
        return "true"
    if x is False:
        return "false"
    if isinstance(x, float) and (x != x or x in (_INF, -_INF)):
        return "NaN" if x != x else "Infinity" if x > 0 else "-Infinity"
    return repr(x)


_INF: Final = float("inf")


def head_text(r: ConnReport, absolute: bool = False) -> str:
    """:func:`compact` of :func:`connection_object` without packets, minus its closing brace.

    The object's members written out as text: the JSON encoder escapes every key and calls
    back for every float, which made it a quarter of a run. A test holds the two to the same text.
    """
    c = r.conn
    v = r.verdict
    fc, fs = r.analysis.facts
    client, server = c.client, c.server
    # (word_text called by name, not through a local alias: compiled, a call through a variable
    # is a generic Python call)
    icmp = ""  # (most connections: no ICMP error, no bad checksum, no list to build)
    if c.icmp:
        icmp = ",".join(
            [
                f'{{"from":{_STRING(fmt_ip(e.router))},"type":{_json(e.type)},"code":{_json(e.code)},"name":{_STRING(e.name)},'
                f'"t":{ts_text(e.ts)},"frame":{_json(e.frame)},"ttl":{_json(e.ttl)},"mtu":{_json(e.mtu)}}}'
                for e in c.icmp
            ]
        )
    bad = r.analysis.bad_checksums
    bad_text = ",".join([str(n) for n in bad]) if bad else ""
    start = float_text(c.first_ts)
    # (a connection of one packet, as most failed attempts: its end is its start, written once;
    # not for zero, whose sign the text shows and equality ignores)
    end = start if c.last_ts == c.first_ts and c.first_ts != 0.0 else float_text(c.last_ts)
    next_step = v.next_step
    # (an f-string is one allocation when compiled; a chain of + is one per member)
    return (
        f'{HEAD_START}{c.id},"source":{word_text(r.source_name)},'
        f'"client":{{"ip":{ip_text(client.ip)},"port":{client.port}}},'
        f'"server":{{"ip":{ip_text(server.ip)},"port":{server.port}}},"encap":{_encap_text(c.encap)},'
        f'"roles_guessed":{"true" if c.roles_guessed else "false"},"start":{start},"end":{end},'
        f"{_verdict_head(v)}{_evidence_text(v.evidence)}],"
        f"{_verdict_tail(next_step, r.client_state(), r.server_state())}"
        f'"syn_retransmissions":{_again(client.syn_count)},"synack_retransmissions":{_again(server.syn_count)},'
        f'"handshake_rtt":{rounded_text(c.handshake_rtt)},"handshake_rtt_server_leg":{rounded_text(c.server_leg)},'
        f'"handshake_rtt_client_leg":{rounded_text(c.client_leg)},"packets_omitted":{r.analysis.omitted},'
        f"{links_text(c.reused_from, r.retry_of, r.retry_number)},"
        f'"findings":{SCAN_FINDINGS if r.scan else "[]"},"icmp":[{icmp}],'
        f'"ecn":{_ecn_text(r.analysis, client.syn_count > 0)},"bad_checksums":[{bad_text}],'
        f'"c2s":{_direction_text(fc, r.analysis.loss[0], client, server, absolute)},'
        f'"s2c":{_direction_text(fs, r.analysis.loss[1], server, client, absolute)}'
    )


def _verdict_head(v: Verdict) -> str:
    """``"state":…`` to ``"evidence":[``: the verdict's members before its evidence, looked up
    by the values they show (most connections of a capture share one of a few dozen verdicts;
    only their evidence's frames differ)."""
    key: tuple = (v.conn_state, v.history, v.outcome, v.ok, v.explanation, v.rule, v.confidence)
    text = _VERDICT_HEADS.get(key)
    if text is None:
        if len(_VERDICT_HEADS) >= MAX_WORDS:
            _VERDICT_HEADS.clear()
        text = _VERDICT_HEADS[key] = (
            f'"state":{word_text(v.conn_state)},"history":{word_text(v.history)},"outcome":{word_text(v.outcome)},'
            f'"ok":{"true" if v.ok else "false"},"verdict":{remembered_text(_SENTENCES, v.explanation)},"rule":{word_text(v.rule) if v.rule else "null"},'
            f'"confidence":{word_text(v.confidence)},"evidence":['
        )
    return text


def _verdict_tail(next_step: str, client_state: str, server_state: str) -> str:
    """``"next_step":…,"client_state":…,"server_state":…`` (``next_step`` "": null), looked up
    by the three strings, as :func:`_verdict_head`."""
    key: tuple = (next_step, client_state, server_state)
    text = _VERDICT_TAILS.get(key)
    if text is None:
        if len(_VERDICT_TAILS) >= MAX_WORDS:
            _VERDICT_TAILS.clear()
        text = _VERDICT_TAILS[key] = (
            f'"next_step":{word_text(next_step) if next_step else "null"},"client_state":{word_text(client_state)},"server_state":{word_text(server_state)},'
        )
    return text


# the texts of _verdict_head and _verdict_tail, by the values they show; emptied when full
_VERDICT_HEADS: Final[dict[tuple, str]] = {}
_VERDICT_TAILS: Final[dict[tuple, str]] = {}

# JSON text of the verdicts' explanations that recur (most connections of a capture are alike,
# and their explanation, a few sentences long, is costly to escape); emptied when full
_SENTENCES: Final[dict[str, str]] = {}

# The "findings" member of a connection that is part of a port scan
SCAN_FINDINGS: Final = '["port-scan"]'


def _again(sent: int) -> int:
    """``max(sent - 1, 0)``: how often a SYN was sent again (compiled, max() is a generic call)."""
    return sent - 1 if sent > 1 else 0


# JSON text of the addresses that recur (a flood's server, a busy client), by packed address;
# emptied when full
_IP_TEXT: Final[dict[bytes, str]] = {}


def ip_text(packed: bytes) -> str:
    """``_STRING(fmt_ip(packed))``: an address as a JSON string. Its text (digits, hex letters, dots
    and colons) needs no escaping, and the text of an address seen before is looked up."""
    text = _IP_TEXT.get(packed)
    if text is None:
        if len(_IP_TEXT) >= MAX_WORDS:
            _IP_TEXT.clear()
        # (not fmt_ip: its cache would only miss here, on every new source of a flood)
        text = _IP_TEXT[packed] = f'"{ip_string(packed)}"'
    return text


def _encap_text(encap: Encap | None) -> str:
    """The "encap" array: what carried the connection, outermost first ([] for plain frames)."""
    return "[]" if encap is None else compact(encap.objects())


def _evidence_text(evidence: tuple[Evidence, ...]) -> str:
    """The members of the "evidence" array: one object per fact, with its frame numbers."""
    if len(evidence) == 1:  # (most verdicts of failed attempts: no list to build and join)
        return _fact_text(evidence[0])
    return ",".join([_fact_text(e) for e in evidence])


def _fact_text(e: Evidence) -> str:
    """One member of the "evidence" array."""
    return f'{{"fact":{word_text(e.fact)},"frames":[{_frames_text(e.frames)}]}}'


def _frames_text(frames: tuple[int, ...]) -> str:
    """The members of a list of frame numbers (most evidence cites one frame)."""
    if len(frames) == 1:
        return str(frames[0])
    return ",".join([str(n) for n in frames])


# JSON text of the strings drawn from small sets (states, histories, outcomes, rules, confidences,
# evidence facts, next steps, the source's name): looked up rather than escaped again for every connection.
# Emptied when full, so strings that vary (a fact with a count in it) cannot grow it without bound.
_WORDS: Final[dict[str, str]] = {}
MAX_WORDS: Final = 4096


def word_text(s: str) -> str:
    """``_STRING(s)`` (the JSON text of a string), remembered for strings that recur."""
    return remembered_text(_WORDS, s)


def _direction_text(f: DirectionFacts, lf: LossFacts, side: Side, peer: Side, absolute: bool) -> str:
    """:func:`compact` of :func:`_direction`."""
    if _untouched(f, lf, side):
        return _UNTOUCHED
    rtt = f.rtt_summary()
    # (typed: compiled, its members are then read natively; Side.syn_options is untyped)
    opts: TcpOptions | None = side.syn_options
    if rtt is None:
        rtt_text = "null"
    elif rtt[0] == rtt[2] and rtt[0] != 0.0:  # one sample, or all alike: one number written once (0.0 may be -0.0)
        one = float_text(rtt[0])
        rtt_text = f'{{"min":{one},"median":{one},"max":{one}}}'
    else:
        rtt_text = f'{{"min":{float_text(rtt[0])},"median":{float_text(rtt[1])},"max":{float_text(rtt[2])}}}'
    # the members from next_seq to packets as numbers (-1: null; relative numbers, MSS and
    # window shifts are never negative, and every negative window shift is written null)
    next_seq = -1
    if side.next_seq != UNSEEN:
        next_seq = relative(side.next_seq, UNSEEN if absolute else side.base)
    highest_ack = -1
    if side.highest_ack != UNSEEN:
        highest_ack = relative(side.highest_ack, UNSEEN if absolute else peer.base)
    mss = sack = -1
    if opts is not None:
        mss_value = opts.mss
        if mss_value is not None:
            mss = mss_value
        sack = 1 if opts.sack_permitted else 0
    win_scale = side.win_scale if side.win_scale >= 0 else -1
    counts = lf.counts
    sent_again = bool(f.retransmitted_segments or f.retransmitted_bytes or f.fast_retransmissions or f.out_of_order or f.duplicate_acks)
    if not (f.payload_bytes or f.data_segments or sent_again or _nonzero(counts)) and _plain_zero(f.zero_window_time) and _plain_zero(f.max_idle):
        # most directions of failed attempts: no data, nothing sent again, no idle time (one
        # packet): the members after the ISN differ only by the few numbers of the key, and
        # recur from attempt to attempt, so their text is looked up (see _quiet_members)
        packets = f.packets
        if next_seq < 4095 and highest_ack < 4095 and mss < 65536 and win_scale < 31 and packets < 16384:
            # the six numbers in one whole number of 62 bits, in fields wide enough for each
            # (a tuple of them costs more to make, hash and compare than the text saves)
            key = (next_seq + 1) | (highest_ack + 1) << 12 | (mss + 1) << 24 | (win_scale + 1) << 41 | (sack + 1) << 46 | packets << 48
            members = _QUIET_MEMBERS.get(key)
            if members is None:
                if len(_QUIET_MEMBERS) >= MAX_WORDS:
                    _QUIET_MEMBERS.clear()
                members = _QUIET_MEMBERS[key] = _quiet_members(next_seq, highest_ack, mss, win_scale, sack, packets)
        else:
            members = _quiet_members(next_seq, highest_ack, mss, win_scale, sack, packets)
    else:
        if not (f.payload_bytes or f.data_segments or sent_again or _nonzero(counts)):
            middle = _NO_DATA
            throughput = "0.0"  # (no bytes over any span)
        else:
            middle = f'"bytes":{f.payload_bytes},"data_segments":{f.data_segments},{_losses_text(f, counts, sent_again)}'
            throughput = float_text(f.throughput() * 8, 1)
        members = _members_text(
            next_seq, highest_ack, mss, win_scale, sack, f.packets, middle, float_text(f.zero_window_time), float_text(f.max_idle), throughput
        )
    return f'{{"isn":{_int_text(side.isn)},{members}{rtt_text}}}'


# the members of a direction after its ISN and before its RTT's value (see _quiet_members), by
# (next_seq, highest_ack, mss, win_scale, sack_permitted, packets) as _direction_text packs them;
# emptied when full
_QUIET_MEMBERS: Final[dict[int, str]] = {}


def _quiet_members(next_seq: int, highest_ack: int, mss: int, win_scale: int, sack: int, packets: int) -> str:
    """:func:`_members_text` of a direction that sent no data and nothing again, with no zero
    window and no idle time (its bytes, losses, times and throughput all zero)."""
    return _members_text(next_seq, highest_ack, mss, win_scale, sack, packets, _NO_DATA, "0.0", "0.0", "0.0")


def _members_text(
    next_seq: int, highest_ack: int, mss: int, win_scale: int, sack: int, packets: int, middle: str, zero_window: str, idle: str, throughput: str
) -> str:
    """The members of a direction from ``next_seq`` to the key of ``rtt`` (numbers of -1 and a
    ``sack`` of -1 written null; ``middle``: the members from ``bytes`` to the loss counts)."""
    return (
        f'"next_seq":{_num_text(next_seq)},"highest_ack":{_num_text(highest_ack)},'
        f'"mss":{_num_text(mss)},"win_scale":{_num_text(win_scale)},"sack_permitted":{"null" if sack < 0 else "true" if sack else "false"},'
        f'"packets":{packets},{middle},'
        f'"zero_window_time":{zero_window},"max_idle":{idle},'
        f'"throughput_bps":{throughput},"rtt":'
    )


def _num_text(n: int) -> str:
    """A whole number that is not negative as JSON, -1 as null."""
    return "null" if n < 0 else _count_text(n)


def _untouched(f: DirectionFacts, lf: LossFacts, side: Side) -> bool:
    """Every input of a direction's member as it is before the direction sends anything (the
    server's side of most attempts of a SYN flood): its text is then :data:`_UNTOUCHED`."""
    return (
        side.isn is None
        and side.next_seq == UNSEEN
        and side.highest_ack == UNSEEN
        and side.syn_options is None
        and side.win_scale < 0
        and f.packets == 0
        and not (f.payload_bytes or f.data_segments or f.retransmitted_segments or f.retransmitted_bytes)
        and not (f.fast_retransmissions or f.out_of_order or f.duplicate_acks or _nonzero(lf.counts))
        and not f.rtt_samples
        and _plain_zero(f.zero_window_time)
        and _plain_zero(f.max_idle)
    )


def _nonzero(counts: list[int]) -> bool:
    """``any(counts)`` (compiled, any() of a list is a generic call; this is a native loop)."""
    for n in counts:
        if n:
            return True
    return False


def _plain_zero(x: float) -> bool:
    """0.0, not -0.0 (whose text differs)."""
    return x == 0.0 and math.copysign(1.0, x) > 0


def _losses_text(f: DirectionFacts, counts: list[int], sent_again: bool) -> str:
    """The members of a direction from "retransmitted_segments" to the loss counts."""
    if sent_again:
        losses = (
            f'"retransmitted_segments":{f.retransmitted_segments},"retransmitted_bytes":{f.retransmitted_bytes},'
            f'"retransmission_rate":{float_text(f.retransmission_rate, 4)},"fast_retransmissions":{f.fast_retransmissions},'
            f'"out_of_order":{f.out_of_order},"duplicate_acks":{f.duplicate_acks}'
        )
    else:  # most directions: nothing sent again (and so a rate of 0.0)
        losses = _NO_LOSSES
    if _nonzero(counts):
        return losses + "," + ",".join([f'"{name}":{n}' for name, n in zip(LOSS_NAMES, counts, strict=True)])
    return losses + _NO_LOSS_COUNTS


_NO_LOSSES: Final = '"retransmitted_segments":0,"retransmitted_bytes":0,"retransmission_rate":0.0,"fast_retransmissions":0,"out_of_order":0,"duplicate_acks":0'


# the per-direction counts of segments below the highest sequence (synscope.read.analysis.loss), by kind
LOSS_NAMES: Final = ("lost_upstream", "lost_downstream", "spurious_resends", "reordered", "capture_copies", "undecided")
_NO_LOSS_COUNTS: Final = "," + ",".join([f'"{name}":0' for name in LOSS_NAMES])
# the members from "bytes" to the loss counts of a direction that sent no data and nothing again
_NO_DATA: Final = '"bytes":0,"data_segments":0,' + _NO_LOSSES + _NO_LOSS_COUNTS


def links_text(reused_from: int | None, retry_of: int | None, retry_number: int | None) -> str:
    """The members that name other connections (``"reused_from":…,"retry_of":…,"retry_number":…``):
    a split run's parent writes them in (its ids are the single run's), the rest of the line as
    the worker rendered it. ``retry_number`` counts only with ``retry_of``."""
    if reused_from is None and retry_of is None:  # (most connections: no link, one constant text)
        return _NO_LINKS
    return _links_text(reused_from, retry_of, retry_number)


def _links_text(reused_from: int | None, retry_of: int | None, retry_number: int | None) -> str:
    """:func:`links_text`, written out."""
    return f'"reused_from":{_int_text(reused_from)},"retry_of":{_int_text(retry_of)},"retry_number":{_int_text(retry_number if retry_of is not None else None)}'


# the text of a direction that sent nothing (see _untouched)
_UNTOUCHED: Final = (
    '{"isn":null,"next_seq":null,"highest_ack":null,"mss":null,"win_scale":null,"sack_permitted":null,"packets":0,'
    + _NO_DATA
    + ',"zero_window_time":0.0,"max_idle":0.0,"throughput_bps":0.0,"rtt":null}'
)


def _int_text(x: int | None) -> str:
    """A whole number or None as JSON."""
    return "null" if x is None else str(x)


# links_text of a connection that names no other
_NO_LINKS: Final = _links_text(None, None, None)


def join_line(head: dict[str, Any], packets: str) -> str:
    """A connection's JSON line from its object without packets and :func:`packets_text`."""
    return compact(head)[:-1] + ',"packets":[' + packets + "]}"


# one encoder for every object: json.dumps() with separators builds a new one per call
_ENCODER: Final = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_STRING: Final = json.encoder.encode_basestring_ascii


def compact(obj: Any) -> str:
    """``json.dumps(obj, ensure_ascii=True, separators=(",", ":"))``."""
    return _ENCODER.encode(obj)


def packets_text(r: ConnReport, absolute: bool = False) -> str:
    """The members of a connection's ``packets`` array, as JSON text."""
    return ",".join(_packet_texts(r, absolute))


# The pieces of a packet's line around its direction and flags, and around its analysis and
# note, by what they show (the flags and direction as ``flags << 1 | is_s2c``, the analysis bits):
# each is one piece of the line instead of four, looked up rather than written (None: not yet)
DIR_FLAGS_SLOTS: Final = 1024  # the 9 bits of TCP flags (NS included), both directions
_DIR_FLAGS_TEXT: Final[list[str | None]] = [None] * DIR_FLAGS_SLOTS
_ANALYSIS_TEXT: Final[dict[int, str]] = {}
# the analysis and the key of the note of a packet without analysis
_NO_ANALYSIS: Final = ',"analysis":[],"note":'


def _dir_flags_text(fl: int, s2c: int) -> str:
    """``,"dir":…,"flags":…,"seq":``: the members between a packet's time and its sequence
    number (``s2c``: 1 from the server, 0 from the client)."""
    text = ',"dir":' + ('"s2c"' if s2c else '"c2s"') + ',"flags":' + json.dumps(flag_string(fl)) + ',"seq":'
    slot = fl * 2 + s2c
    if 0 <= slot < DIR_FLAGS_SLOTS:
        _DIR_FLAGS_TEXT[slot] = text
    return text


def _analysis_text(bits: int) -> str:
    """``,"analysis":[…],"note":``: the members between a packet's window and its note."""
    text = _ANALYSIS_TEXT.get(bits)
    if text is None:
        text = _ANALYSIS_TEXT[bits] = ',"analysis":' + json.dumps(flag_names(bits), separators=(",", ":")) + ',"note":'
    return text


def _packet_texts(r: ConnReport, absolute: bool) -> list[str]:
    c = r.conn
    client, server = c.client, c.server
    # per direction: the sender's and the receiver's base (UNSEEN: numbers as they are), window
    # shift (plain typed locals, not a table of tuples: compiled, they stay native)
    cbase = UNSEEN if absolute else client.base
    sbase = UNSEEN if absolute else server.base
    my_base: int
    peer_base: int
    shift: int
    out = []
    dir_flags_texts = _DIR_FLAGS_TEXT
    # the time's whole seconds as text (with the point), kept while the packets stay in one second
    last_secs = -1
    secs_text = ""
    # the thousands of the last frame number as text: a connection's frames lie close together
    last_thousands = -1
    thousands_text = ""
    # each direction's last window and its text: windows repeat from packet to packet
    c_win = s_win = -1
    c_win_text = s_win_text = ""
    for pkt in c.timeline():
        seg = pkt.seg
        s2c = 0 if pkt.dir == C2S else 1
        if s2c:
            my_base, peer_base, shift = sbase, cbase, server.win_scale
        else:
            my_base, peer_base, shift = cbase, sbase, client.win_scale
        fl = seg.flags
        slot = fl * 2 + s2c
        dir_flags = dir_flags_texts[slot] if 0 <= slot < DIR_FLAGS_SLOTS else None
        if dir_flags is None:
            dir_flags = _dir_flags_text(fl, s2c)
        bits = pkt.analysis
        analysis = _NO_ANALYSIS if not bits else _analysis_text(bits)
        # the frame number: its thousands (as the packet before's, mostly) and its last three digits
        frame = seg.frame
        if frame >= 1000:
            thousands = frame // 1000
            if thousands != last_thousands:
                last_thousands, thousands_text = thousands, str(thousands)
            f_high = thousands_text
            f_low = _MS_DIGITS[frame % 1000]
        else:
            f_high = _count_text(frame)
            f_low = ""
        # The time, ts_text(seg.ts), in three pieces written straight into the line: for a time
        # that is a whole number of microseconds (see _micros_text), its seconds (repeated from
        # the packet before) and its fraction from tables, with no number converted to text
        ts = seg.ts
        t_ms = t_us = ""
        micros = int(ts * 1e6 + 0.5) if _MICROS_LO <= ts < _MICROS_HI else -1
        if micros >= 0 and micros / 1000000 == ts:
            secs = micros // 1000000
            if secs != last_secs:
                last_secs = secs
                secs_text = f"{secs}."
            t_secs = secs_text
            # (% for the parts, not products: see _micros_text)
            frac = micros % 1000000
            ms = frac // 1000
            us = frac % 1000
            if us:
                t_ms = _MS_DIGITS[ms]
                t_us = _US_DIGITS[us]
            else:
                t_ms = _MS_FRACTION[ms]
        else:
            t_secs = ts_text(ts)
        seq = relative(seg.seq, my_base)
        ack = shown_ack(seg.ack, fl, peer_base)
        win = scaled_window(seg.win, fl, shift)
        if s2c:
            if win != s_win:
                s_win, s_win_text = win, _count_text(win)
            win_text = s_win_text
        else:
            if win != c_win:
                c_win, c_win_text = win, _count_text(win)
            win_text = c_win_text
        notes = pkt.notes
        note = "null" if not notes else _note_text(notes)
        # the members most packets lack, after the note (one piece of the line: no string is
        # copied to append them)
        extra = ""
        if fl & SYN:
            extra = ',"options":' + _options_text(seg)
        if pkt.dupack_num:
            extra += f',"duplicate_ack_num":{pkt.dupack_num},"duplicate_ack_frame":{pkt.dupack_frame}'
        if pkt.rto is not None:
            extra += ',"rto":' + rounded_text(pkt.rto)
        if pkt.in_flight is not None:
            extra += f',"in_flight":{pkt.in_flight}'
        if pkt.duplicate_of:
            extra += f',"duplicate_of":{pkt.duplicate_of}'
        # (no !r or format spec in the f-string: compiled, those make it a str.format call)
        # (each piece of an f-string is copied on its own: the members' keys are in the pieces
        # looked up above)
        out.append(
            f'{{"frame":{f_high}{f_low},"t":{t_secs}{t_ms}{t_us}{dir_flags}{_count_text(seq)},"ack":{_count_text(ack)},'
            f'"len":{_count_text(seg.length)},"win":{win_text}{analysis}{note}{extra}}}'
        )
    return out


# the text of the whole numbers below this (lengths, relative numbers early in a connection)
# from a table: str() of an int makes a new string every time
SMALL_COUNTS: Final = 2048
_COUNTS: Final = tuple([str(n) for n in range(SMALL_COUNTS)])


def _count_text(n: int) -> str:
    """``str(n)``, from a table for small whole numbers."""
    if 0 <= n < SMALL_COUNTS:
        return _COUNTS[n]
    return str(n)


# a time's decimals after the point from its milliseconds and the microseconds beyond them:
# three digits each, and the microseconds' without their trailing zeros (never empty: only
# for a nonzero number of microseconds); for a whole number of milliseconds, the
# milliseconds' digits without trailing zeros ("0" for none)
_MS_DIGITS: Final = tuple([f"{n:03d}" for n in range(1000)])
_US_DIGITS: Final = tuple([f"{n:03d}".rstrip("0") for n in range(1000)])
_MS_FRACTION: Final = tuple([f"{n:03d}".rstrip("0") or "0" for n in range(1000)])

# JSON text of the notes that recur (constant ones, "FIN: client closes first", and ones with
# numbers that repeat); emptied when full
_NOTES: Final[dict[str, str]] = {}


def _note_text(notes: list[str]) -> str:
    """A packet's notes joined by "; ", as a JSON string."""
    note = notes[0] if len(notes) == 1 else "; ".join(notes)
    return remembered_text(_NOTES, note)


def remembered_text(table: dict[str, str], s: str) -> str:
    """``_STRING(s)``, remembered in ``table`` (emptied when it holds MAX_WORDS strings)."""
    text = table.get(s)
    if text is None:
        if len(table) >= MAX_WORDS:
            table.clear()
        text = table[s] = _STRING(s)
    return text


# JSON text of the options of SYNs, by their bytes with the timestamps' values zeroed (they make
# every SYN's bytes differ, and the text shows only that a timestamp is there); emptied when full
_OPTIONS_TEXT: Final[dict[bytes, str]] = {}


def _options_text(seg: Segment) -> str:
    """The "options" member's value of a SYN: its options described, as a JSON string."""
    key = describe_key(seg.raw_options)
    text = _OPTIONS_TEXT.get(key)
    if text is None:
        if len(_OPTIONS_TEXT) >= MAX_WORDS:
            _OPTIONS_TEXT.clear()
        text = _OPTIONS_TEXT[key] = _STRING(seg.options.describe())
    return text


# Capture times from 2**23 s (April 1970) to 2**32 s (2106): the spacing of doubles there is over
# 2 ns, so rounding to 6 or 9 places leaves a time that is a whole number of microseconds as it
# is, and under 1 µs, so at most one number of 6 decimals converts to it
_MICROS_LO: Final = 8388608.0
_MICROS_HI: Final = 4294967296.0
# Below this, a number rounded to at most 6 places has at most 14 significant digits: its
# decimal form is the shortest that converts back to it, which is what repr() writes
_SHORT_LIMIT: Final = 1e8


def _micros_text(x: float) -> str | None:
    """``repr(x)`` for a capture time that is the double nearest a whole number of
    microseconds, written from its integer parts; else None."""
    if not _MICROS_LO <= x < _MICROS_HI:
        return None
    micros = int(x * 1e6 + 0.5)
    # int / int is correctly rounded (both are exact doubles below 2**53): equal means x is the
    # double nearest micros / 10**6, so that decimal is its shortest form
    if micros / 1000000 != x:
        return None
    # the fraction's digits from tables (see _packet_texts, which writes packet times this way)
    # (% for the parts, not products: see fmt.fixed; seconds since 1970 are over 2**30)
    secs = micros // 1000000
    frac = micros % 1000000
    ms = frac // 1000
    us = frac % 1000
    if us:
        return f"{secs}.{_MS_DIGITS[ms]}{_US_DIGITS[us]}"
    return f"{secs}.{_MS_FRACTION[ms]}"


def ts_text(ts: float) -> str:
    """``repr(round(ts, 9))``: a capture time as JSON writes it.

    ``repr(round())`` converts the float to decimal three times, the costliest step of writing
    a packet. From 2**23 s on, round(ts, 9) is ts itself (see _MICROS_LO), so it is repr(ts), and
    for a time that is a whole number of microseconds that is written from integers.
    """
    text = _micros_text(ts)
    if text is not None:  # a time from a microsecond pcap: from its integer parts
        return text
    if ts >= _MICROS_LO or ts <= -_MICROS_LO:
        return repr(ts)
    return repr(round(ts, 9))


def rounded_text(x: float | None, places: int = 6) -> str:
    """``_json(round(x, places))`` (``places`` at most 6), without the two shortest-decimal
    conversions for the usual sizes: below 1e8 the correctly rounded decimal *is* the shortest."""
    if x is None:
        return "null"
    if not isinstance(x, float):
        return _json(round(x, places))
    return float_text(x, places)


def float_text(x: float, places: int = 6) -> str:
    """:func:`rounded_text` of a float (compiled, it stays a native double)."""
    if x == 0.0:  # a third of the numbers in a connection's object
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    if -_SHORT_LIMIT < x < _SHORT_LIMIT:
        if -1e-4 < x < 1e-4:  # repr() writes 1.7e-05 from here down
            text = _tiny_text(x, places)
            return text if text is not None else repr(round(x, places))
        if not places:
            return fixed(x, 0) + ".0"
        if places == 6:  # (times and durations: most of the numbers)
            six = _six_places_text(x)
            if six is not None:
                return six
        text = fixed(x, places).rstrip("0")
        return text + "0" if text[-1] == "." else text
    micros = _micros_text(x) if places == 6 else None
    return micros if micros is not None else _json(round(x, places))


def _six_places_text(x: float) -> str | None:
    """``fixed(x, 6)`` without its trailing zeros (one kept after the point), for a nonzero x:
    the fraction's digits from the tables of packet times, not str() of a number, a slice and
    rstrip(); None where fixed() would fall back to format()."""
    negative = x < 0
    n = scaled_round(-x if negative else x, 6)
    if n < 0:
        return None
    units = n // 1000000
    frac = n % 1000000  # (not a product: see _micros_text)
    ms = frac // 1000
    us = frac % 1000
    sign = "-" if negative else ""
    if us:
        return f"{sign}{_count_text(units)}.{_MS_DIGITS[ms]}{_US_DIGITS[us]}"
    return f"{sign}{_count_text(units)}.{_MS_FRACTION[ms]}"


def _tiny_text(x: float, places: int) -> str | None:
    """``repr(round(x, places))`` for 0 < |x| < 1e-4: round() gives the double nearest k / 10**places
    for the whole number k nearest x * 10**places (under 100), whose repr is in a table."""
    k = scaled_round(-x if x < 0 else x, places)
    if k < 0:
        return None
    return ("-" if x < 0 else "") + _TINY[places][k]


# repr(k / 10**places) for the k that numbers under 1e-4 round to (k = 0 included: "0.0")
_TINY: Final = tuple(tuple(repr(k / 10**places) for k in range(int(1e-4 * 10**places) + 2)) for places in range(7))


def write_connection(r: ConnReport, out: TextIO, absolute: bool = False) -> None:
    """Write one JSON line and flush, so ``| jq`` sees it at once."""
    out.write(connection_line(r, absolute) + "\n")
    out.flush()
