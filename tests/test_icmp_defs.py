"""One definition of ICMP errors (synscope.core.icmp), and every stage holding to it.

The decoder, the kernel filters of ``probe`` and ``watch``, the probe classifier and the verdict
used to keep their own lists of ICMP types: an error one of them let through and another dropped
was silently lost (a redirect was decoded by ``read`` but filtered out by ``probe``). These tests
feed every ICMP and ICMPv6 type through each stage and compare them with the definition.
"""

from __future__ import annotations

import socket
import struct

import pytest

from synscope.capture.bpf import CompiledFilter
from synscope.core import icmp
from synscope.core.model import IcmpError, RawFrame
from synscope.probe.classify import ProbeId, classify_reply
from synscope.probe.run import ICMP_FILTER
from synscope.read.decode import Decoder
from synscope.watch.watcher import kernel_filter
from tests.craft import SYN, checksum, ether, ipv4, ipv4_tcp, ipv6_tcp

C4, S4, R4 = "198.18.0.2", "198.18.1.2", "198.18.0.1"
C6, S6, R6 = "2001:db8::2", "2001:db8:1::2", "2001:db8::1"
ISN = 123456789
ETHERNET = 1


def _icmp4(itype: int, code: int) -> bytes:
    """An Ethernet frame: an ICMP message of this type quoting a SYN from C4 to S4."""
    quoted = ipv4_tcp(C4, S4, 40000, 8080, ISN, 0, SYN)
    body = struct.pack("!BBHI", itype, code, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ether(ipv4(R4, C4, 1, body))


def _icmp6(itype: int, code: int) -> bytes:
    """An Ethernet frame: an ICMPv6 message of this type quoting a SYN from C6 to S6."""
    quoted = ipv6_tcp(C6, S6, 40000, 8080, ISN, 0, SYN)
    body = struct.pack("!BBHI", itype, code, 0, 1280) + quoted
    src, dst = socket.inet_pton(socket.AF_INET6, R6), socket.inet_pton(socket.AF_INET6, C6)
    return ether(struct.pack("!IHBB", 6 << 28, len(body), 58, 64) + src + dst + body)


def _frames() -> list[tuple[int, int, bytes]]:
    return [(4, t, _icmp4(t, 0)) for t in range(256)] + [(6, t, _icmp6(t, 0)) for t in range(256)]


def _decoded(data: bytes) -> object:
    return Decoder().decode(RawFrame(1, 1.0, ETHERNET, data, len(data)))


def test_the_decoder_reads_exactly_the_quoting_types() -> None:
    """Every ICMP / ICMPv6 type: decoded as an error quoting our SYN iff the definition says so."""
    wrong = []
    for version, itype, data in _frames():
        err = _decoded(data)
        got = isinstance(err, IcmpError) and (err.sport, err.dport, err.seq) == (40000, 8080, ISN)
        if got != icmp.quotes_tcp(version, itype):
            wrong.append((version, itype))
    assert wrong == []


@pytest.mark.parametrize(
    "expression",
    [ICMP_FILTER, kernel_filter(), kernel_filter(handshakes=True), kernel_filter(None, (), [8080])],
    ids=["probe", "watch", "watch-handshakes", "watch-port"],
)
def test_kernel_filters_keep_exactly_the_quoting_types(expression: str) -> None:
    """The kernel filters of probe and watch pass the ICMP messages the decoder reads, no fewer
    (an error lost before synscope sees it) and no more (echo or neighbour discovery woken for)."""
    compiled = CompiledFilter(expression, ETHERNET)
    wrong = [(version, itype) for version, itype, data in _frames() if compiled.matches(data, len(data)) != icmp.quotes_tcp(version, itype)]
    assert wrong == []


def test_every_quoting_type_has_a_name() -> None:
    """No error the decoder keeps is shown as a bare number pair (``icmp-5-0``)."""
    for version, types in ((4, icmp.V4_QUOTING_TYPES), (6, icmp.V6_QUOTING_TYPES)):
        for itype in types:
            assert not icmp.icmp_reason(version, itype, 0).startswith(("icmp", "unreach-code"))


@pytest.mark.parametrize(
    ("version", "itype", "code", "state"),
    [
        (4, 3, 13, "filtered"),
        (4, 3, 3, "filtered"),
        (4, 11, 0, "filtered"),
        (4, 3, 4, None),  # frag-needed: about the path
        (4, 4, 0, None),  # source quench
        (4, 5, 1, None),  # redirect: the SYN was forwarded, the port has not answered yet
        (6, 1, 1, "filtered"),
        (6, 2, 0, None),  # packet too big
    ],
)
def test_probe_answers_follow_the_definition(version: int, itype: int, code: int, state: str | None) -> None:
    data = _icmp4(itype, code) if version == 4 else _icmp6(itype, code)
    err = _decoded(data)
    assert isinstance(err, IcmpError)
    src, dst = (C4, S4) if version == 4 else (C6, S6)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    probe = ProbeId(socket.inet_pton(family, src), socket.inet_pton(family, dst), 40000, 8080, ISN)
    reply = classify_reply(err, probe)
    assert (reply.state if reply is not None else None) == state
    assert (reply is None) == (err.name in icmp.PATH_ONLY_REASONS)
