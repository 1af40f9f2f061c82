"""Command-line options that `read` and `watch` share, and the parsing of their values."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def selection_options(command: F) -> F:
    """``--host`` and ``--port``: which connections a command reports."""
    command = click.option("--port", "ports", multiple=True, metavar="PORTS", help="Only connections using these ports, e.g. 443 or 8000-8100 (repeatable).")(
        command
    )
    return click.option("--host", "hosts", multiple=True, metavar="IP", help="Only connections to or from this address (repeatable).")(command)


def parse_ports(values: tuple[str, ...]) -> frozenset[int]:
    """The ports of every ``--port`` value (a usage error for a bad one)."""
    from synscope.core.ports import PortSpecError
    from synscope.core.ports import parse_ports as parse

    ports: set[int] = set()
    for v in values:
        try:
            ports.update(parse(v))
        except PortSpecError as e:
            raise click.BadParameter(str(e), param_hint="--port") from None
    return frozenset(ports)


def parse_hosts(values: tuple[str, ...]) -> frozenset[bytes]:
    """The packed addresses of every ``--host`` value (a usage error for a name or a bad one)."""
    from synscope.core.addr import parse_ip

    hosts: set[bytes] = set()
    for v in values:
        try:
            hosts.add(parse_ip(v))
        except ValueError:
            raise click.BadParameter(f"{v!r} is not an IP address (give a literal IPv4 or IPv6 address)", param_hint="--host") from None
    return frozenset(hosts)
