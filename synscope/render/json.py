"""JSON Lines: one object per connection, versioned schema (documented in the README)."""

from __future__ import annotations

import json
from typing import Any, Final, TextIO

from synscope.addr import fmt_ip
from synscope.analysis.flags import flag_names
from synscope.model import ACK, SYN, flag_string
from synscope.pipeline import ConnReport
from synscope.seqnum import MASK
from synscope.tracker import C2S

SCHEMA: Final = 1


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def connection_object(r: ConnReport, absolute: bool = False, with_packets: bool = True) -> dict[str, Any]:
    """The JSON object for one connection (schema 1)."""
    c = r.conn
    v = r.verdict
    fc, fs = r.analysis.facts
    packets = []
    for pkt in c.packets if with_packets else ():
        seg = pkt.seg
        me = c.client if pkt.dir == C2S else c.server
        peer = c.server if pkt.dir == C2S else c.client
        seq = seg.seq if absolute else me.rel_seq(seg.seq)
        ack = seg.ack if absolute or not seg.flags & ACK else peer.rel_seq(seg.ack)
        obj: dict[str, Any] = {
            "frame": seg.frame,
            "t": round(seg.ts, 9),
            "dir": "c2s" if pkt.dir == C2S else "s2c",
            "flags": flag_string(seg.flags),
            "seq": seq,
            "ack": ack,
            "len": seg.length,
            "win": seg.win << me.win_scale if me.win_scale >= 0 and not seg.flags & SYN else seg.win,
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
        packets.append(obj)


    return {
        "schema": SCHEMA,
        "id": c.id,
        "source": r.source_name,
        "client": {"ip": fmt_ip(c.client.ip), "port": c.client.port},
        "server": {"ip": fmt_ip(c.server.ip), "port": c.server.port},
        "roles_guessed": c.roles_guessed,
        "start": round(c.first_ts, 6),
        "end": round(c.last_ts, 6),
        "state": v.conn_state,
        "history": v.history,
        "outcome": v.outcome,
        "ok": v.ok,
        "verdict": v.explanation,
        "next_step": v.next_step or None,
        "client_state": c.state_of(c.client),
        "server_state": c.state_of(c.server),
        "syn_retransmissions": max(c.client.syn_count - 1, 0),
        "synack_retransmissions": max(c.server.syn_count - 1, 0),
        "handshake_rtt": _round(c.handshake_rtt),
        "handshake_rtt_server_leg": _round(c.server_leg),
        "handshake_rtt_client_leg": _round(c.client_leg),
        "packets_omitted": r.analysis.omitted,
        "reused_from": c.reused_from,
        "retry_of": r.retry_of,
        "icmp": [
            {"from": fmt_ip(e.router), "type": e.type, "code": e.code, "name": e.name, "t": round(e.ts, 9), "frame": e.frame, "ttl": e.ttl, "mtu": e.mtu}
            for e in c.icmp
        ],
        "c2s": _direction(fc, c.client, c.server, absolute),
        "s2c": _direction(fs, c.server, c.client, absolute),
        **({"packets": packets} if with_packets else {}),
    }


def _direction(f: Any, side: Any, peer: Any, absolute: bool) -> dict[str, Any]:
    """The per-direction member (``c2s`` / ``s2c``) of a connection object."""
    rtt = f.rtt_summary()
    opts = side.syn_options
    return {
        "isn": side.isn,
        "next_seq": None if side.next_seq is None else (side.next_seq if absolute else side.rel_seq(side.next_seq)),
        "highest_ack": None if side.highest_ack is None else (side.highest_ack if absolute else peer.rel_seq(side.highest_ack)),
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
        "zero_window_time": _round(f.zero_window_time),
        "max_idle": _round(f.max_idle),
        "throughput_bps": round(f.throughput() * 8, 1),
        "rtt": None if rtt is None else {"min": _round(rtt[0]), "median": _round(rtt[1]), "max": _round(rtt[2])},
    }


def connection_line(r: ConnReport, absolute: bool = False) -> str:
    """One JSON line for a connection: the same object as :func:`connection_object`,
    with the packet list formatted directly (it is most of the work on big captures)."""
    return join_line(connection_object(r, absolute, with_packets=False), packets_text(r, absolute))


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


_FLAGS_TEXT: Final[dict[int, str]] = {}
_ANALYSIS_TEXT: Final[dict[int, str]] = {}


def _packet_texts(r: ConnReport, absolute: bool) -> list[str]:
    c = r.conn
    client, server = c.client, c.server
    # per direction: the sender's and the receiver's base (None: numbers as they are), window shift
    cbase, sbase = (None, None) if absolute else (client.base, server.base)
    sides = {
        C2S: (cbase, sbase, client.win_scale, '"c2s"'),
        1 - C2S: (sbase, cbase, server.win_scale, '"s2c"'),
    }
    out = []
    dumps, string = json.dumps, _STRING
    flags_texts, analysis_texts = _FLAGS_TEXT, _ANALYSIS_TEXT
    for pkt in c.packets:
        seg = pkt.seg
        my_base, peer_base, shift, dir_text = sides[pkt.dir]
        fl = seg.flags
        flags_text = flags_texts.get(fl)
        if flags_text is None:
            flags_text = flags_texts[fl] = dumps(flag_string(fl))
        bits = pkt.analysis
        names = analysis_texts.get(bits)
        if names is None:
            names = analysis_texts[bits] = dumps(flag_names(bits), separators=(",", ":"))
        seq = seg.seq if my_base is None else (seg.seq - my_base) & MASK
        ack = seg.ack if peer_base is None or not fl & ACK else (seg.ack - peer_base) & MASK
        win = seg.win << shift if shift >= 0 and not fl & SYN else seg.win
        note = "null" if not pkt.notes else string("; ".join(pkt.notes))
        text = (
            f'{{"frame":{seg.frame},"t":{round(seg.ts, 9)!r},"dir":{dir_text},"flags":{flags_text},'
            f'"seq":{seq},"ack":{ack},"len":{seg.length},"win":{win},"analysis":{names},"note":{note}'
        )
        if fl & SYN:
            text += ',"options":' + string(seg.options.describe())
        if pkt.dupack_num:
            text += f',"duplicate_ack_num":{pkt.dupack_num},"duplicate_ack_frame":{pkt.dupack_frame}'
        if pkt.rto is not None:
            text += f',"rto":{_round(pkt.rto)!r}'
        if pkt.in_flight is not None:
            text += f',"in_flight":{pkt.in_flight}'
        out.append(text + "}")
    return out


def write_connection(r: ConnReport, out: TextIO, absolute: bool = False) -> None:
    """Write one JSON line and flush, so ``| jq`` sees it at once."""
    out.write(connection_line(r, absolute) + "\n")
    out.flush()
