"""Escaping of anything that came from the wire before it reaches a terminal."""

from __future__ import annotations

import re

# C0 controls but \n (TAB too: it moves the cursor), DEL, C1 controls, soft hyphen; the
# Unicode bidi controls (embeddings, overrides, isolates, LRM / RLM / ALM: "Trojan Source",
# CVE-2021-42574), zero-width and other invisible format characters, line / paragraph
# separators, the BOM and interlinear annotation marks; and lone surrogates (from
# ``errors="surrogateescape"``), which cannot even be encoded for the terminal.
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]")


def escape_text(text: str) -> str:
    """Replace control characters (ESC included) with visible ``\\xNN`` / ``\\uNNNN`` escapes."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


def escape_bytes(data: bytes, limit: int = 64) -> str:
    """Printable preview of payload bytes: ASCII as is, everything else as ``\\xNN``."""
    out = []
    for b in data[:limit]:
        if 0x20 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        elif b == 0x5C:
            out.append("\\\\")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        else:
            out.append(f"\\x{b:02x}")
    if len(data) > limit:
        out.append("…")
    return "".join(out)
