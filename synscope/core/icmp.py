"""ICMP / ICMPv6 error vocabulary, in nmap's reason words where nmap has one."""

from typing import Final

_V4_UNREACH: Final = {
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
_V6_UNREACH: Final = {
    0: "net-unreach",  # no route to destination
    1: "admin-prohibited",
    2: "beyond-scope",
    3: "host-unreach",  # address unreachable
    4: "port-unreach",
    5: "source-policy-failed",
    6: "reject-route",
}

# ICMP errors that mean "a filter rejected this" rather than "nothing is there".
FILTER_REASONS: Final = frozenset({"admin-prohibited", "net-prohibited", "host-prohibited", "source-policy-failed", "reject-route"})


def icmp_reason(version: int, icmp_type: int, code: int) -> str:
    """Short name of an ICMP error, e.g. ``admin-prohibited`` or ``time-exceeded``."""
    if version == 4:
        if icmp_type == 3:
            return _V4_UNREACH.get(code, f"unreach-code-{code}")
        if icmp_type == 11:
            return "time-exceeded"
        if icmp_type == 12:
            return "param-problem"
        if icmp_type == 4:
            return "source-quench"
        return f"icmp-{icmp_type}-{code}"
    if icmp_type == 1:
        return _V6_UNREACH.get(code, f"unreach-code-{code}")
    if icmp_type == 2:
        return "packet-too-big"
    if icmp_type == 3:
        return "time-exceeded"
    if icmp_type == 4:
        return "param-problem"
    return f"icmp6-{icmp_type}-{code}"


def icmp_label(version: int, icmp_type: int, code: int) -> str:
    """``ICMP 3/13`` or ``ICMPv6 1/1``: the numbers an engineer greps for."""
    return f"ICMP{'v6' if version == 6 else ''} {icmp_type}/{code}"
