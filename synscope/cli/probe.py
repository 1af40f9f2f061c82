"""``synscope probe`` (half-open SYN probes, or a full ``--connect``) and ``synscope demo``.

Exit codes (synscope.core.exit_codes.ExitCode): 0 every probed port open; 3 a port
closed (RST) and none filtered; 4 a port filtered (ICMP error or no answer);
2 usage (bad port, unknown host, broadcast/multicast target); 1 runtime error
(no route, interface down); 77 no root / CAP_NET_RAW; 130 interrupted.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from synscope.core.exit_codes import ExitCode
from synscope.core.exit_codes import fail as _fail

DEFAULT_PORTS = "80"


# What runs after --user gives up root, imported while still root: the interpreter's own files may
# be unreadable to that user (a Python under /root), and an import after the drop would fail there
AFTER_DROP_MODULES = (
    "synscope.read.decode",
    "synscope.core.icmp",
    "synscope.cli.privileges",
    "synscope.read.jsonl",
    "synscope.render.probe",
    "synscope.render.table",
    "synscope.render.text",
)


def check_user(user: str) -> None:
    """``--user NAME``, checked before anything is opened: an unknown or root account is a usage
    error (exit 2), running without root (nothing to drop) a privilege error (exit 77)."""
    import pwd

    shown = user if user.isprintable() else repr(user)
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError, ValueError):
        _fail(f"--user {shown}: no such user (not in /etc/passwd or the name service); give an existing account, e.g. nobody", ExitCode.USAGE)
        return
    if pw.pw_uid == 0:
        _fail(f"--user {shown}: that account is root (uid 0), so nothing would be dropped; give an unprivileged account, e.g. nobody", ExitCode.USAGE)
    if os.geteuid() != 0:
        _fail(
            f"--user {shown}: dropping privileges needs root, and this process runs as uid {os.geteuid()}; run it with sudo, or leave out --user",
            ExitCode.NO_PRIVILEGE,
        )


def prepare_drop(user: str, modules: tuple[str, ...] = AFTER_DROP_MODULES) -> Callable[[], None]:
    """Import ``modules`` now (as root) and return the call that gives up root for ``user`` for good
    (:func:`synscope.cli.privileges.drop_privileges`; raises PrivilegeDropError)."""
    import importlib

    for name in modules:
        importlib.import_module(name)
    from synscope.cli.privileges import PrivilegeDropError, drop_privileges

    def drop() -> None:
        try:
            drop_privileges(user)
        except OSError as e:  # the kernel refused a switch (root without CAP_SETUID / CAP_SETGID, as in some containers)
            raise PrivilegeDropError(f"--user {user}: switching to this user was refused ({e.strerror or e}); stopping") from None

    return drop


def _drop_or_probe_error(drop: Callable[[], None]) -> None:
    """Give up root (ProbeConfig.after_open); a failed drop ends the probe as a runtime error (exit 1)."""
    from synscope.cli.privileges import PrivilegeDropError
    from synscope.probe.run import ProbeError

    try:
        drop()
    except PrivilegeDropError as e:
        raise ProbeError(str(e)) from None


def unescape(text: str) -> bytes:
    r"""``--send`` data with C escapes: ``\r``, ``\n``, ``\t``, ``\\``, ``\xNN``, ``\0``."""
    try:
        return codecs.escape_decode(text.encode("utf-8"))[0]  # type: ignore[attr-defined]
    except ValueError as e:
        raise click.BadParameter(f"bad escape in {text!r}: {e}", param_hint="--send") from None


def _without_gc(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a short-lived command with the cyclic garbage collector off: it allocates many small records
    (and scapy many classes at import) and creates no cycles worth collecting; about 5% of a run."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> None:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper


@contextmanager
def _stop_on_signals() -> Iterator[object]:
    """Ctrl-C and SIGTERM ask the probe to stop (results so far are printed); a second Ctrl-C aborts."""
    from synscope.probe.run import Stopper

    stopper = Stopper()

    def handler(signum: int, _frame: object) -> None:
        if stopper.stopped and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stopper()

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield stopper
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@click.command()
@click.argument("host")
@click.option("-p", "--port", "ports", multiple=True, metavar="PORTS", help=f"Ports: 443, 22,80,443 or 8000-8100 (repeatable; default {DEFAULT_PORTS}).")
@click.option("-4", "ipv4", is_flag=True, help="Use the host's IPv4 address.")
@click.option("-6", "ipv6", is_flag=True, help="Use the host's IPv6 address.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True, metavar="N", help="Tries after the first for a port that stays silent.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.01, 60.0),
    default=1.0,
    show_default=True,
    metavar="S",
    help="Wait for an answer to the first try; each retry waits twice as long as the one before (1 s, 2 s, 4 s).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=None,
    metavar="N",
    help="Probes per second (default 100; 0 = as fast as the machine sends). Retries count too.",
)
@click.option(
    "--count",
    type=click.IntRange(1, 10000),
    default=1,
    show_default=True,
    metavar="N",
    help="Probe each port N times (one source port per round) and print min/avg/max/stddev RTT.",
)
@click.option("--sport", type=click.IntRange(1, 65535), metavar="PORT", help="Source port (round k of --count uses PORT+k); default random.")
@click.option("--mss", type=click.IntRange(1, 65535), metavar="N", help="MSS option value (default 1460).")
@click.option("--window", type=click.IntRange(0, 65535), metavar="N", help="Window field of the SYN (default 64240, as Linux).")
@click.option("--no-options", is_flag=True, help="SYN without any TCP option (no MSS, SACK, timestamps, window scale).")
@click.option("--ecn", is_flag=True, help="ECN-setup SYN (ECE+CWR): shows whether the server agrees to ECN.")
@click.option("--ttl", type=click.IntRange(1, 255), default=64, show_default=True, metavar="N", help="IP TTL / hop limit of the SYN.")
@click.option(
    "--connect",
    "connect_mode",
    is_flag=True,
    help="Full handshake with the kernel's connect() instead of a half-open SYN (one port; the kernel times its own SYN "
    "retries, --retries and --timeout bound the attempt).",
)
@click.option("--send", "send_data", metavar="DATA", help=r"With --connect: send DATA after connecting (escapes like \r\n), then read the answer.")
@click.option("--all", "show_all", is_flag=True, help="List every port and show every timeline, open ones too.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per port (packets as in read --json).")
@click.option("--no-packets", is_flag=True, help="With --json: leave out connections and packets (one short line per port; fast for big sweeps).")
@click.option("--absolute", is_flag=True, help="Raw sequence and ack numbers in timelines.")
@click.option("-w", "--write", "write_path", metavar="FILE", help="Save every packet sent and captured to this pcap file (complete even after Ctrl-C).")
@click.option("--user", metavar="NAME", help="Once the sockets and the -w file are open, give up root and run as this user (like tcpdump -Z).")
@_without_gc
def probe(
    host: str,
    ports: tuple[str, ...],
    ipv4: bool,
    ipv6: bool,
    retries: int,
    timeout: float,
    rate: float | None,
    count: int,
    sport: int | None,
    mss: int | None,
    window: int | None,
    no_options: bool,
    ecn: bool,
    ttl: int,
    connect_mode: bool,
    send_data: str | None,
    show_all: bool,
    as_json: bool,
    no_packets: bool,
    absolute: bool,
    write_path: str | None,
    user: str | None,
) -> None:
    """Send SYNs to HOST and explain each answer: open, closed, filtered (needs root or CAP_NET_RAW).

    Crafts Linux-like SYNs, captures the answers with kernel timestamps, and
    prints a result table (port, state, reason, from, RTT, TTL, server
    options) and the timeline of every port that was not open. After a
    SYN-ACK it sends RST, so nothing stays half-open on the target.

    Exit status: 0 all ports open, 3 a port closed, 4 a port filtered or silent,
    2 usage error, 1 runtime error, 77 no privilege, 130 interrupted.
    """
    if user is not None:
        check_user(user)
    from synscope.core.ports import PortSpecError, parse_ports
    from synscope.probe.classify import SynSpec, exit_code, states_exit_code
    from synscope.probe.run import DEFAULT_RATE, ProbeConfig, ProbeError, find_target, run_connect, run_probe

    if ipv4 and ipv6:
        raise click.UsageError("-4 and -6 exclude each other")
    if no_packets and not as_json:
        raise click.UsageError("--no-packets only applies to --json")
    if send_data is not None and not connect_mode:
        raise click.UsageError("--send needs --connect (a half-open probe sends no data)")
    wanted: dict[int, None] = {}  # ordered, without duplicates
    try:
        for spec in ports or (DEFAULT_PORTS,):
            wanted.update(dict.fromkeys(parse_ports(spec)))
    except PortSpecError as e:
        raise click.BadParameter(str(e), param_hint="--port") from None
    port_list = list(wanted)
    if connect_mode and (len(port_list) != 1 or count != 1):
        raise click.UsageError("--connect takes exactly one port and no --count")
    payload = unescape(send_data) if send_data is not None else None
    family = None
    if ipv4 or ipv6:
        import socket

        family = socket.AF_INET if ipv4 else socket.AF_INET6
    out = sys.stdout
    after_open: Callable[[], None] | None = None
    if user is not None:
        after_open = functools.partial(_drop_or_probe_error, prepare_drop(user))
    try:
        target = find_target(host, family)
        with _stop_on_signals() as stopper:
            if connect_mode:
                co = run_connect(target, port_list[0], payload, timeout, retries, write_path, stopper, after_open)  # type: ignore[arg-type]
                from synscope.render.probe import write_connect_json, write_connect_text

                (write_connect_json if as_json else write_connect_text)(co, out, absolute)
                for w in co.warnings:
                    click.echo(f"synscope: warning: {w}", err=True)
                code = states_exit_code([co.state])
                interrupted = co.interrupted
            else:
                syn = dataclasses.replace(SynSpec.bare() if no_options else SynSpec(), ecn=ecn, ttl=ttl)
                if mss is not None:
                    syn = dataclasses.replace(syn, mss=mss)
                if window is not None:
                    syn = dataclasses.replace(syn, window=window)
                cfg = ProbeConfig(port_list, retries, timeout, DEFAULT_RATE if rate is None else rate, count, sport, syn, write_path, after_open)
                outcome = run_probe(target, cfg, stopper)  # type: ignore[arg-type]
                from synscope.render.probe import write_probe_json, write_probe_text

                if as_json:
                    write_probe_json(outcome, out, absolute, packets=not no_packets)
                else:
                    write_probe_text(outcome, out, show_all, absolute)
                for w in outcome.warnings:
                    click.echo(f"synscope: warning: {w}", err=True)
                code = exit_code(outcome.results)
                interrupted = outcome.interrupted
    except ProbeError as e:
        _fail(str(e), e.code)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:  # output piped into head and the like: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(int(ExitCode.OK))
    if interrupted:
        click.echo("synscope: interrupted; results above are partial", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    sys.exit(int(code))


@click.command()
def demo() -> None:
    """Build a private lab of network namespaces, probe it, explain every answer, remove it all (root).

    client — router — server: a listener (8080), a closed port (9090), a port
    the server drops silently (8443), a port the router rejects with ICMP
    admin-prohibited (8444). Takes a few seconds; nothing outside the lab is
    touched, and everything is removed again, also on Ctrl-C.
    """
    from synscope.lab.demo import DemoError, run_demo

    try:
        code = run_demo(sys.stdout)
    except DemoError as e:
        _fail(str(e), e.code)
    except KeyboardInterrupt:
        _fail("interrupted; the lab was removed", ExitCode.INTERRUPTED)
    sys.exit(int(code))
