"""ICMP / ICMPv6 errors: the one definition of which messages synscope reads, what they are
called (nmap's reason words where nmap has one), how they are labelled, and what they say.

Every stage asks this module: the decoder (which messages quote a TCP header), the kernel
capture filters of ``probe`` and ``watch`` (the same messages, as a tcpdump expression), the
probe classifier (which errors answer a port) and the verdict (which errors are a filter).
"""

from typing import Final

# ICMP (RFC 792) and ICMPv6 (RFC 4443) types of the error messages. Each quotes the offending
# packet: its IP header and at least the first 8 bytes of its transport header, so ports and
# sequence number. Echo, timestamp, router and neighbour messages quote nothing.
V4_UNREACH: Final = 3
V4_SOURCE_QUENCH: Final = 4
V4_REDIRECT: Final = 5
V4_TIME_EXCEEDED: Final = 11
V4_PARAM_PROBLEM: Final = 12
V6_UNREACH: Final = 1
V6_PACKET_TOO_BIG: Final = 2
V6_TIME_EXCEEDED: Final = 3
V6_PARAM_PROBLEM: Final = 4
V4_QUOTING_TYPES: Final = frozenset({V4_UNREACH, V4_SOURCE_QUENCH, V4_REDIRECT, V4_TIME_EXCEEDED, V4_PARAM_PROBLEM})
V6_QUOTING_TYPES: Final = frozenset({V6_UNREACH, V6_PACKET_TOO_BIG, V6_TIME_EXCEEDED, V6_PARAM_PROBLEM})
# ICMP 3/4 "fragmentation needed and DF set" carries the next hop's MTU (RFC 1191)
V4_FRAG_NEEDED: Final = 4

_V4_UNREACH_NAMES: Final = {
    0: "net-unreach",
    1: "host-unreach",
    2: "proto-unreach",
    3: "port-unreach",
    4: "frag-needed",
    5: "source-route-failed",
    6: "net-unknown",
    7: "host-unknown",
    8: "host-isolated",
    9: "net-prohibited",
    10: "host-prohibited",
    11: "net-tos-unreach",
    12: "host-tos-unreach",
    13: "admin-prohibited",
    14: "host-precedence-violation",
    15: "precedence-cutoff",
}
_V6_UNREACH_NAMES: Final = {
    0: "net-unreach",  # no route to destination
    1: "admin-prohibited",
    2: "beyond-scope",
    3: "host-unreach",  # address unreachable
    4: "port-unreach",
    5: "source-policy-failed",
    6: "reject-route",
}
_V4_OTHER_NAMES: Final = {
    V4_SOURCE_QUENCH: "source-quench",
    V4_REDIRECT: "redirect",
    V4_TIME_EXCEEDED: "time-exceeded",
    V4_PARAM_PROBLEM: "param-problem",
}
_V6_OTHER_NAMES: Final = {
    V6_PACKET_TOO_BIG: "packet-too-big",
    V6_TIME_EXCEEDED: "time-exceeded",
    V6_PARAM_PROBLEM: "param-problem",
}

# ICMP errors that mean "a filter rejected this" rather than "nothing is there".
FILTER_REASONS: Final = frozenset({"admin-prohibited", "net-prohibited", "host-prohibited", "source-policy-failed", "reject-route"})
# ICMP errors that say something about the path, not about the port: the packet was (or will be,
# smaller) delivered, so a probe keeps waiting for the port's own answer.
PATH_ONLY_REASONS: Final = frozenset({"frag-needed", "packet-too-big", "source-quench", "redirect"})


def quotes_tcp(version: int, icmp_type: int) -> bool:
    """Is this ICMP (version 4) or ICMPv6 (version 6) type an error that quotes the offending
    packet, and so can be matched to a TCP connection?"""
    return icmp_type in (V4_QUOTING_TYPES if version == 4 else V6_QUOTING_TYPES)


def icmp_reason(version: int, icmp_type: int, code: int) -> str:
    """Short name of an ICMP error, e.g. ``admin-prohibited`` or ``time-exceeded``."""
    if version == 4:
        if icmp_type == V4_UNREACH:
            return _V4_UNREACH_NAMES.get(code, f"unreach-code-{code}")
        return _V4_OTHER_NAMES.get(icmp_type, f"icmp-{icmp_type}-{code}")
    if icmp_type == V6_UNREACH:
        return _V6_UNREACH_NAMES.get(code, f"unreach-code-{code}")
    return _V6_OTHER_NAMES.get(icmp_type, f"icmp6-{icmp_type}-{code}")


def icmp_label(version: int, icmp_type: int, code: int) -> str:
    """``ICMP 3/13`` or ``ICMPv6 1/1``: the numbers an engineer greps for."""
    return f"ICMP{'v6' if version == 6 else ''} {icmp_type}/{code}"


def capture_filter() -> str:
    """The tcpdump expression (compiled by libpcap) that keeps exactly the ICMP and ICMPv6
    messages the decoder reads (:func:`quotes_tcp`). ICMPv6 is matched directly behind the
    fixed IPv6 header (``ip6[40]`` is its type), as libpcap's ``icmp6`` does not chase
    extension headers either."""
    v4 = " or ".join(f"icmp[0] == {t}" for t in sorted(V4_QUOTING_TYPES))
    v6 = " or ".join(f"ip6[40] == {t}" for t in sorted(V6_QUOTING_TYPES))
    return f"(icmp and ({v4})) or (icmp6 and ({v6}))"
