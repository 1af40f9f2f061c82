"""What carried a tunnelled connection: the encapsulation layers around its inner packets.

The decoder describes each layer it steps through (a VLAN tag, a VXLAN header with its outer
IP endpoints, an MPLS label stack...) and interns the whole description as one :class:`Encap`,
shared by every segment that came through the same layers. Its ``key`` is a small int that
tells tunnels apart in a connection's flow key (0 for a plain frame, so the usual frame's key
is untouched): the same 4-tuple in two VLANs or two VNIs is two connections, as in Zeek.
"""

from __future__ import annotations

from typing import Any, Final

from synscope.core.addr import fmt_ip

# One layer: (type, identifier or NO_ID, outer source, outer destination, extra numbers: the
# MPLS labels, the ERSPAN type 1/2/3).
# Outer addresses are b"" for layers without their own IP header (vlan, mpls, pppoe).
Layer = tuple[str, int, bytes, bytes, tuple[int, ...]]
NO_ID: Final = -1

# What each layer type calls its identifier in the JSON and the text
ID_NAMES: Final[dict[str, str]] = {
    "vlan": "id",
    "vxlan": "vni",
    "geneve": "vni",
    "gre": "key",
    "erspan": "session",
    "pppoe": "session",
    "gtp-u": "teid",
    "pptp": "call_id",
}
# Layers whose identifier differs between the two directions of one conversation: it is shown
# but not part of the key, or each direction would become a connection of its own. MPLS labels
# are local to each hop and chosen by the receiving router, GTP-U TEIDs by each endpoint, PPTP
# call IDs by each peer.
PER_DIRECTION: Final = frozenset({"mpls", "gtp-u", "pptp"})


class Encap:
    """The encapsulation layers of a frame, outermost first (interned: one object per distinct
    description), and the key id shared by both directions of the same tunnel."""

    __slots__ = ("key", "layers")

    def __init__(self, key: int, layers: tuple[Layer, ...]) -> None:
        self.key = key
        self.layers = layers

    def objects(self) -> list[dict[str, Any]]:
        """The layers as JSON objects, e.g. ``{"type": "vxlan", "vni": 42, "outer": "a → b"}``."""
        return [layer_object(layer) for layer in self.layers]

    def describe(self) -> str:
        """One line for people, e.g. ``vlan 100 › vxlan vni 42 (198.18.250.1 → 198.18.250.2)``."""
        return " › ".join(layer_text(layer) for layer in self.layers)


def direction_free(layers: tuple[Layer, ...]) -> tuple[tuple[str, int, bytes, bytes], ...]:
    """What identifies the tunnel whichever way a packet goes: each layer's type, its identifier
    (unless it is chosen per direction) and its outer endpoints, the lower one first."""
    out = []
    for kind, ident, src, dst, _extra in layers:
        if kind in PER_DIRECTION:
            ident = NO_ID
        out.append((kind, ident, src, dst) if src <= dst else (kind, ident, dst, src))
    return tuple(out)


def _outer(src: bytes, dst: bytes) -> str:
    return f"{fmt_ip(src)} → {fmt_ip(dst)}"


def layer_object(layer: Layer) -> dict[str, Any]:
    """One layer as a JSON object (members in a fixed order)."""
    kind, ident, src, dst, extra = layer
    obj: dict[str, Any] = {"type": kind}
    if kind == "mpls":
        obj["labels"] = list(extra)
    elif kind == "erspan":
        obj["erspan_type"] = extra[0] if extra else None
    if ident != NO_ID and kind in ID_NAMES:
        obj[ID_NAMES[kind]] = ident
    if src:
        obj["outer"] = _outer(src, dst)
    return obj


def layer_text(layer: Layer) -> str:
    """One layer for people: ``vxlan vni 42 (198.18.250.1 → 198.18.250.2)``."""
    kind, ident, src, dst, extra = layer
    parts = [kind]
    if kind == "mpls":
        parts.append("labels " + "/".join(str(label) for label in extra))
    elif kind == "erspan" and extra:
        parts[0] = f"erspan type {'I' if extra[0] == 1 else 'II' if extra[0] == 2 else 'III'}"
    if ident != NO_ID and kind == "vlan":
        parts.append(str(ident))
    elif ident != NO_ID and kind in ID_NAMES:
        parts.append(f"{ID_NAMES[kind].replace('_', ' ')} {ident}")
    text = " ".join(parts)
    return f"{text} ({_outer(src, dst)})" if src else text
