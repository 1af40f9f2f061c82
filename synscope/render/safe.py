"""Escaping of anything that came from the wire before it reaches a terminal."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode bidi / line separators that can reorder or hide text
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


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
