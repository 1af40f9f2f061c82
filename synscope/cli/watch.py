"""``synscope watch``: follow live connections on an interface as they happen."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

import click

from synscope.cli.options import parse_hosts, parse_ports, selection_options
from synscope.core.exit_codes import ExitCode


@click.command()
@click.option("-i", "--interface", "iface", default="any", show_default=True, metavar="IFACE", help="Interface to capture on ('any': all of them, cooked).")
@click.option("--filter", "bpf", metavar="EXPR", help="tcpdump filter expression, ANDed with the built-in one and run in the kernel (compiled by libpcap).")
@selection_options
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    metavar="S",
    help="Report a connection that has had no packet for S seconds as it stands (later packets start a new entry).",
)
@click.option("--all", "show_all", is_flag=True, help="Show the timeline of every connection, not only the ones that went wrong.")
@click.option(
    "--handshakes",
    is_flag=True,
    help=(
        "Kernel filter keeping only SYN, FIN, RST and ICMP errors: for busy servers where only set-up and teardown matter"
        " (no data or loss analysis; IPv6: TCP right after the IPv6 header, no extension headers)."
    ),
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one object per connection as it finishes (the same objects as read --json).")
@click.option("--absolute", is_flag=True, help="Raw sequence and ack numbers instead of relative ones.")
@click.option("-w", "--write", "write_path", metavar="FILE", help="Also write every captured packet to this pcap file as it arrives.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S", help="Stop after S seconds.")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N packets.")
@click.option("--max-conns", type=click.IntRange(min=1), metavar="N", help="Bound the connection table; the oldest idle one is evicted (counted).")
@click.option(
    "-B",
    "--buffer",
    "buffer_mb",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    metavar="MiB",
    help="Kernel receive buffer: bursts wait here instead of being dropped.",
)
@click.option("--user", metavar="NAME", help="Once the capture and the -w file are open, give up root and run as this user (like tcpdump -Z).")
def watch(
    iface: str,
    bpf: str | None,
    hosts: tuple[str, ...],
    ports: tuple[str, ...],
    idle_timeout: float,
    show_all: bool,
    handshakes: bool,
    as_json: bool,
    absolute: bool,
    write_path: str | None,
    duration: float | None,
    count: int | None,
    max_conns: int | None,
    buffer_mb: int,
    user: str | None,
) -> None:
    """Follow live TCP connections on an interface (needs root or CAP_NET_RAW).

    Prints one line per connection as it ends (FIN/RST, or idle past
    --idle-timeout) and the annotated timeline of those that did not end well.
    On a terminal, a status line on stderr shows open connections, packets and
    kernel drops. Ctrl-C or SIGTERM prints the summary of everything seen.
    """
    drop: Callable[[], None] | None = None
    if user is not None:
        from synscope.cli.probe import check_user, prepare_drop

        check_user(user)  # an unknown user is a usage error before anything is opened
        drop = prepare_drop(user)
    from synscope.capture.bpf import CompiledFilter, FilterError
    from synscope.capture.live import InterfaceError, LiveCapture, PcapWriter, PrivilegeError
    from synscope.core.exit_codes import fail as _fail
    from synscope.core.model import LinkType
    from synscope.read.pipeline import Pipeline, Selection
    from synscope.watch.watcher import WATCH_CLOSED_LINGER, WatchConfig, Watcher, kernel_filter, limit_to_handshakes

    host_set = parse_hosts(hosts)
    port_set = parse_ports(ports)
    expr = kernel_filter(bpf, host_set, port_set, handshakes)
    try:
        CompiledFilter(expr, LinkType.ETHERNET)  # a bad --filter is a usage error, before anything is opened
    except FilterError as e:
        if bpf and "does not compile" in str(e):
            _fail(f"--filter: {bpf!r} does not compile: {str(e).rsplit(': ', 1)[-1]}", ExitCode.USAGE)
        _fail(str(e), ExitCode.ERROR)
    cap_iface = None if iface == "any" else iface
    try:
        capture = LiveCapture(cap_iface, expr, buffer_bytes=buffer_mb * 1024 * 1024)
    except PrivilegeError as e:
        _fail(str(e), ExitCode.NO_PRIVILEGE)
    except InterfaceError as e:
        missing = not os.path.exists(f"/sys/class/net/{iface}")
        _fail(str(e), ExitCode.USAGE if missing else ExitCode.ERROR)
    except FilterError as e:
        _fail(str(e), ExitCode.USAGE)
    except OSError as e:
        _fail(f"cannot capture on {iface}: {e.strerror or e}", ExitCode.ERROR)
    writer = None
    if write_path:
        try:
            writer = PcapWriter(write_path, capture.linktype, capture.snaplen)
        except OSError as e:
            capture.close()
            _fail(f"cannot write {write_path}: {e.strerror or e}", ExitCode.ERROR)
    if drop is not None:
        # every privileged thing is open: give up root before the first packet is read
        from synscope.cli.privileges import PrivilegeDropError

        try:
            drop()
        except PrivilegeDropError as e:
            capture.close()
            if writer is not None:
                writer.close()
            _fail(str(e), ExitCode.ERROR)
    pipeline = Pipeline(
        Selection(host_set, port_set),
        max_conns=max_conns,
        closed_linger=WATCH_CLOSED_LINGER,
        idle_timeout=idle_timeout,
        prepare=limit_to_handshakes if handshakes else None,
    )
    config = WatchConfig(iface, idle_timeout, show_all, handshakes, as_json, absolute, duration, count)
    out = sys.stdout
    err = sys.stderr
    watcher = Watcher(capture, pipeline, config, out, err, writer)
    previous = {sig: signal.signal(sig, watcher.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    mode = " (handshakes mode: SYN, FIN, RST and ICMP errors only)" if handshakes else ""
    err.write(f"synscope: watching {iface}{mode}; Ctrl-C stops and prints the summary\n")  # like tcpdump's "listening on"
    err.flush()
    code = ExitCode.OK
    try:
        try:
            watcher.run()
        except OSError as e:
            click.echo(f"\nsynscope: capture on {iface} failed: {e.strerror or e}", err=True)
            code = ExitCode.ERROR
        finally:
            capture.close()
            if writer is not None:
                writer.close()
        # a second Ctrl-C while the summary is written ends at once (no traceback: see below)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        watcher.finish()
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)
    if watcher.broken_pipe:
        # the reader went away (| head): nothing more can be written, and that is no error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(int(code))
