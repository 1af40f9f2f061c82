"""A finding as one JSON line (schema 1), written after the connections it covers."""

from __future__ import annotations

import json
from typing import Any

from synscope.read.findings.model import Finding

SCHEMA = 1


def finding_object(f: Finding) -> dict[str, Any]:
    """The JSON object of one finding (documented in the README)."""
    return {
        "schema": SCHEMA,
        "finding": f.name,
        "connections": list(f.connections),
        "connection_count": f.connection_count,
        "server": {"ip": f.server_ip, "port": f.server_port},
        "client": {"ip": f.client_ip} if f.client_ip is not None else None,
        "start": round(f.start, 6),
        "end": round(f.end, 6),
        "figures": {k: (int(v) if float(v).is_integer() else v) for k, v in f.figures},
        "rule": f.rule,
        "verdict": f.verdict,
        "confidence": f.confidence,
        "evidence": [{"fact": e.fact, "frames": [x for x in e.frames if x]} for e in f.evidence],
        "next_step": f.next_step,
    }


def finding_line(f: Finding) -> str:
    """One line of JSON, no newline."""
    return json.dumps(finding_object(f), separators=(",", ":"), ensure_ascii=True)
