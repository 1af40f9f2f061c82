"""Output of ``probe``: the result table, hping-style RTT statistics, timelines, JSON Lines.

Timelines and the per-connection JSON are the very renderers ``read`` uses
(:func:`synscope.render.text.write_connection`,
:func:`synscope.read.jsonl.connection_object`), so a probed connection reads
the same as a captured one.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, TextIO

from synscope.core import fmt
from synscope.core.addr import fmt_ip
from synscope.probe.classify import CLOSED, FILTERED, OPEN, PORT_STATES, UNKNOWN, PortResult, Round, rtt_of, rtt_stats
from synscope.read.jsonl import SCHEMA, connection_object
from synscope.read.pipeline import ConnReport
from synscope.render.safe import escape_bytes
from synscope.render.text import write_connection

# More ports than this: large groups of closed / silent ports become one "not shown" line (nmap does the same)
LIST_LIMIT = 30
# A group of this many ports or more is summarised when the list is long
GROUP_LIMIT = 10
# More failed ports than this: one example timeline per (state, reason)
TIMELINE_LIMIT = 10
# Bytes of a --connect answer shown on screen
ANSWER_PREVIEW = 200


def _columns(rows: list[list[str]], out: TextIO, indent: str = " ") -> None:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        out.write((indent + "  ".join(cells)).rstrip() + "\n")


def _waits_text(waits: list[float]) -> str:
    return ", ".join(f"{round(w, 3):g} s" for w in waits)


def result_note(result: PortResult, target: bytes) -> str:
    """The last column: the server's options, the ICMP error, or how long silence was waited for."""
    if result.reply is not None:
        return result.reply.describe(target)
    rounds = [r for r in result.rounds if r.tries]
    if not rounds:
        return "not probed (interrupted)"
    if result.state == UNKNOWN:
        return f"{result.tries} tr{'ies' if result.tries != 1 else 'y'} sent, interrupted while waiting"
    if len(rounds) == 1:
        n = len(rounds[0].tries)
        return f"{n} tr{'ies' if n != 1 else 'y'}, waited {_waits_text(result.waits[:n])}"
    return f"{result.tries} tries in {len(rounds)} rounds, no answer"


def result_rows(results: list[PortResult], target: bytes, show_all: bool) -> tuple[list[list[str]], str]:
    """Table rows, and a "not shown" line when long lists of dull ports are folded."""
    hidden: set[tuple[str, str]] = set()
    if not show_all and len(results) > LIST_LIMIT:
        groups = Counter((r.state, r.reason) for r in results)
        hidden = {g for g, n in groups.items() if n >= GROUP_LIMIT and g[0] != OPEN}
    rows = [["port", "state", "reason", "from", "rtt", "ttl", "server options"]]
    for r in results:
        if (r.state, r.reason) in hidden:
            continue
        rows.append(
            [
                str(r.port),
                r.state,
                r.reason,
                r.sender_text or "-",
                fmt.duration(r.rtt),
                "-" if r.ttl is None else str(r.ttl),
                result_note(r, target),
            ]
        )
    note = ""
    if hidden:
        counts = Counter((r.state, r.reason) for r in results if (r.state, r.reason) in hidden)
        parts = [f"{n:,} {state} ({reason})" for (state, reason), n in counts.most_common()]
        note = "Not shown: " + ", ".join(parts) + " (--all lists every port)"
    return rows, note


def write_header(outcome: Any, out: TextIO) -> None:
    """What is probed, from where, and how patiently."""
    t, cfg = outcome.target, outcome.config
    name = t.addr if t.host == t.addr else f"{t.host} ({t.addr})"
    n = len(cfg.ports)
    rate = "no rate limit" if cfg.rate <= 0 else f"{cfg.rate:g} probes/s"
    rounds = f", {cfg.count} rounds" if cfg.count > 1 else ""
    via = f" via {t.iface}" if t.iface else ""
    out.write(
        f"probe {name}: {n} port{'s' if n != 1 else ''} from {t.src}{via}, up to {cfg.retries + 1} tr{'ies' if cfg.retries else 'y'} "
        f"(waits {_waits_text(outcome_waits(cfg))}){rounds}, {rate}\n\n"
    )


def outcome_waits(cfg: Any) -> list[float]:
    """The wait after each try."""
    from synscope.probe.classify import backoff_waits

    return backoff_waits(cfg.timeout, cfg.retries)


def write_stats(result: PortResult, address: str, out: TextIO) -> None:
    """hping3-style statistics of one port over ``--count`` rounds."""
    sent = len(result.rounds)
    answered = sum(1 for r in result.rounds if r.reply is not None)
    lost = 100.0 * (sent - answered) / sent if sent else 0.0
    out.write(f"--- {address} port {result.port} probe statistics ---\n")
    out.write(f"{sent} probes sent, {answered} answered, {lost:.0f}% unanswered ({result.tries} SYNs in all)\n")
    stats = rtt_stats(result.rtts())
    if stats:
        out.write("round-trip min/avg/max/stddev = " + "/".join(f"{x * 1e3:.3f}" for x in stats) + " ms\n")
    out.write("\n")


def _timeline_reports(outcome: Any, show_all: bool) -> tuple[list[ConnReport], int]:
    """Connections whose timeline is shown, and how many failed ports were left out.

    Every port that was not open (all of them with --all); when many failed,
    one example per kind of answer; with --count, the first round of each.
    """
    results = outcome.results
    chosen = [r for r in results if show_all or r.state != OPEN]
    left_out = 0
    if not show_all and len(chosen) > TIMELINE_LIMIT:
        seen: set[tuple[str, str]] = set()
        examples = []
        for r in chosen:
            if (r.state, r.reason) not in seen:
                seen.add((r.state, r.reason))
                examples.append(r)
        left_out = len(chosen) - len(examples)
        chosen = examples
    by_port = outcome.reports_for(r.port for r in chosen)
    reports: list[ConnReport] = []
    for r in chosen:
        reps = by_port.get(r.port, [])
        reports.extend(reps if show_all else reps[:1])
    return reports, left_out


def write_probe_text(outcome: Any, out: TextIO, show_all: bool = False, absolute: bool = False) -> None:
    """Header, result table, RTT statistics (--count), then timelines."""
    write_header(outcome, out)
    target = outcome.target.packed
    rows, note = result_rows(outcome.results, target, show_all)
    _columns(rows, out)
    if note:
        out.write(" " + note + "\n")
    out.write("\n")
    if outcome.config.count > 1:
        for r in outcome.results:
            write_stats(r, outcome.target.addr, out)
    reports, left_out = _timeline_reports(outcome, show_all)
    for rep in reports:
        write_connection(rep, out, absolute=absolute)
    if left_out:
        out.write(f"(one timeline per kind of answer; {left_out:,} more like these: --all shows every one)\n\n")
    elif outcome.config.count > 1 and not show_all and reports:
        out.write("(first round of each port shown; --all shows every round)\n\n")
    write_footer(outcome, out)


def write_footer(outcome: Any, out: TextIO) -> None:
    """Totals, duration, what was captured and where it was saved."""
    counts = Counter(r.state for r in outcome.results)
    parts = [f"{counts[s]:,} {s}" for s in PORT_STATES if counts[s]]
    line = f"{', '.join(parts) or 'nothing probed'} in {fmt.duration(outcome.elapsed)}; {outcome.frames:,} packets captured"
    if outcome.rsts_sent:
        line += f"; {outcome.rsts_sent} RST{'s' if outcome.rsts_sent != 1 else ''} sent to close half-open connections"
    out.write(line + "\n")
    if outcome.config.write:
        out.write(f"saved to {outcome.config.write} (synscope read {outcome.config.write})\n")
    if outcome.interrupted:
        out.write("interrupted: ports without a result were not (fully) probed\n")


# ---------------------------------------------------------------- JSON


def _reports_json(reports: list[ConnReport], absolute: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Connection objects as ``read --json`` writes them (packets lifted out), and all their packets."""
    conns, packets = [], []
    for rep in reports:
        obj = connection_object(rep, absolute)
        for p in obj.pop("packets"):
            p["conn"] = obj["id"]
            packets.append(p)
        conns.append(obj)
    packets.sort(key=lambda p: (p["t"], p["frame"]))
    return conns, packets


def _round_object(rd: Round) -> dict[str, Any]:
    rtt, kernel = (None, False) if rd.reply is None else rtt_of(rd.tries, rd.reply)
    return {
        "round": rd.number,
        "sport": rd.sport,
        "state": rd.state or None,
        "reason": rd.reason or None,
        "rtt": None if rtt is None else round(rtt, 9),
        "rtt_clock": None if rtt is None else ("kernel" if kernel else "user"),
        "tries": [round(t.ts, 9) for t in rd.tries],
        "rst_sent": rd.rst_sent,
    }


def port_object(outcome: Any, result: PortResult, absolute: bool = False, packets: bool = True) -> dict[str, Any]:
    """The JSON object for one probed port (schema shared with ``read --json``); ``packets=False`` leaves
    out ``connections`` and ``packets`` (no pipeline run: fast for big sweeps)."""
    t = outcome.target
    reply = result.reply
    server = None
    icmp = None
    if reply is not None and reply.icmp_type is not None:
        icmp = {"version": reply.icmp_version, "type": reply.icmp_type, "code": reply.icmp_code, "name": reply.reason, "from": fmt_ip(reply.sender)}
    elif reply is not None and reply.state == OPEN:
        o = reply.options
        server = {
            "isn": reply.isn,
            "window": reply.window,
            "mss": o.mss if o else None,
            "wscale": o.wscale if o else None,
            "sack": bool(o and o.sack_permitted),
            "timestamps": bool(o and o.ts_val is not None),
            "ecn": reply.ece,
            "ip_ecn": reply.ecn_ip,
        }
    conns, pkts = _reports_json(outcome.reports_for([result.port])[result.port], absolute) if packets else (None, None)
    obj: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "probe",
        "host": t.host,
        "address": t.addr,
        "source": t.src,
        "interface": t.iface,
        "port": result.port,
        "state": result.state,
        "reason": result.reason,
        "from": result.sender_text,
        "rtt": None if result.rtt is None else round(result.rtt, 9),
        "tries": result.tries,
        "ttl": result.ttl,
        "hops": None if reply is None else reply.hops,
        "options": reply.options.describe() if reply is not None and reply.options is not None else None,
        "server": server,
        "icmp": icmp,
        "waits": result.waits[: max((len(rd.tries) for rd in result.rounds), default=0)] if reply is None else None,
        "rounds": [_round_object(rd) for rd in result.rounds],
        "rtt_stats": None,
        "connections": conns,
        "packets": pkts,
    }
    if len(result.rounds) > 1:
        stats = rtt_stats(result.rtts())
        obj["rtt_stats"] = {
            "sent": len(result.rounds),
            "answered": sum(1 for rd in result.rounds if rd.reply is not None),
            **({} if stats is None else dict(zip(("min", "avg", "max", "stddev"), (round(x, 9) for x in stats), strict=True))),
        }
    return obj


def write_probe_json(outcome: Any, out: TextIO, absolute: bool = False, packets: bool = True) -> None:
    """JSON Lines: one object per port, in the order the ports were given."""
    if packets:
        outcome.reports_for(r.port for r in outcome.results)  # one pipeline run for all of them
    encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
    out.write("".join(encode(port_object(outcome, r, absolute, packets)) + "\n" for r in outcome.results))
    out.flush()


# ---------------------------------------------------------------- --connect


def time_wait_side(reports: list[ConnReport]) -> str | None:
    """Which side ends in TIME-WAIT (client | server), if either."""
    for rep in reports:
        c = rep.conn
        if c.state_of(c.client) == "TIME-WAIT":
            return "client"
        if c.state_of(c.server) == "TIME-WAIT":
            return "server"
    return None


def write_connect_text(o: Any, out: TextIO, absolute: bool = False) -> None:
    """Summary of a --connect exchange, then its whole timeline with payload previews."""
    t = o.target
    name = t.addr if t.host == t.addr else f"{t.host} ({t.addr})"
    via = f" via {t.iface}" if t.iface else ""
    out.write(f"connect {name} port {o.port} from {t.src} port {o.sport}{via}\n")
    when = f" {fmt.duration(o.connect_time)} after the SYN (kernel timestamps)" if o.connect_time is not None else ""
    if o.state == OPEN:
        out.write(f"  connected: SYN-ACK{when}\n")
        closer = {True: "the server closed first", False: "the client (synscope) closed first", None: "nobody closed in time"}[o.server_closed_first]
        out.write(f"  sent {fmt.size(o.sent)}, received {fmt.size(o.received_total)}; {closer}\n")
        if o.received:
            out.write(f"  answer: {escape_bytes(o.received, ANSWER_PREVIEW)}\n")
    else:
        what = {CLOSED: "refused (RST)", FILTERED: "no connection"}.get(o.state, o.state)
        out.write(f"  {what}: {o.reason}{when}; connect() said {o.error or 'nothing'}\n")
    side = time_wait_side(o.reports)
    if side:
        out.write(f"  the {side} ends in TIME-WAIT (it closed first; it holds the 4-tuple for 60 s)\n")
    out.write("\n")
    for rep in o.reports:
        write_connection(rep, out, absolute=absolute, payload=True)
    if not o.reports:
        out.write("(nothing captured for this connection)\n")
    if o.interrupted:
        out.write("interrupted\n")


def connect_object(o: Any, absolute: bool = False) -> dict[str, Any]:
    """JSON for a --connect exchange: the probe fields plus what was sent and received."""
    t = o.target
    conns, packets = _reports_json(o.reports, absolute)
    c = o.reports[0].conn if o.reports else None
    return {
        "schema": SCHEMA,
        "kind": "connect",
        "host": t.host,
        "address": t.addr,
        "source": t.src,
        "interface": t.iface,
        "port": o.port,
        "sport": o.sport,
        "state": o.state,
        "reason": o.reason,
        "from": fmt_ip(o.reply.sender) if o.reply is not None else (t.addr if o.state != FILTERED else None),
        "rtt": None if o.connect_time is None else round(o.connect_time, 9),
        "tries": o.tries,
        "ttl": o.reply.ttl if o.reply is not None else None,
        "options": o.reply.options.describe() if o.reply is not None and o.reply.options is not None else None,
        "error": o.error,
        "sent": o.sent,
        "received": o.received_total,
        "answer": escape_bytes(o.received, ANSWER_PREVIEW) if o.received else None,
        "server_closed_first": o.server_closed_first,
        "time_wait": time_wait_side(o.reports),
        "client_state": c.state_of(c.client) if c else None,
        "server_state": c.state_of(c.server) if c else None,
        "connections": conns,
        "packets": packets,
    }


def write_connect_json(o: Any, out: TextIO, absolute: bool = False) -> None:
    """One JSON line for a --connect exchange."""
    out.write(json.dumps(connect_object(o, absolute), ensure_ascii=True, separators=(",", ":")) + "\n")
    out.flush()
