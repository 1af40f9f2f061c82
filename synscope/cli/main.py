"""Command line: parse options, wire the stages, map errors to messages and exit codes.

Heavy modules are imported inside the commands so ``synscope --help`` is instant.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import NoReturn, TextIO

import click

from synscope import COMPILED_STATE, __version__
from synscope.cli.options import parse_hosts, parse_ports, selection_options
from synscope.core.exit_codes import ExitCode
from synscope.render.view import DEFAULT_CONTEXT, TextView


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synscope", message=f"%(prog)s %(version)s; compiled read path: {COMPILED_STATE}")
def main() -> None:
    """synscope: why did this TCP connection fail?

    Reads captures (read), probes ports (probe) and follows live traffic (watch),
    and explains every connection: timeline, Zeek state, plain-English verdict.
    """


# read's exit codes (synscope.core.exit_codes, the README's table); \b keeps click from rewrapping them
READ_EPILOG = """\b
Exit codes:
  0    done
  2    usage error: bad option, host, port or filter; --conn ID not in the capture
  5    a capture ended mid-record or is corrupt: what came before it is reported
  6    a file is not a capture, is empty, or cannot be opened
  130  interrupted by Ctrl-C: what was read is reported"""


@main.command(short_help="Analyse pcap / pcapng files and explain every connection.", epilog=READ_EPILOG)
@click.argument("files", nargs=-1, required=True, type=str)
@click.option("--all", "show_all", is_flag=True, help="Show the timeline of every connection, not only the ones that went wrong.")
@click.option(
    "--context",
    type=click.IntRange(min=0),
    metavar="N",
    help=f"Timelines: show N packets before and after each event, fold the runs between (default {DEFAULT_CONTEXT}).",
)
@click.option("--all-packets", is_flag=True, help="Timelines: show every packet, nothing folded.")
@click.option("--summary", "summary_only", is_flag=True, help="Only the header, the findings and the table: no timelines.")
@click.option("--conn", "conn_ids", type=int, multiple=True, metavar="ID", help="Show only this connection (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one object per connection (schema in the README).")
@click.option("--absolute", is_flag=True, help="Raw sequence and ack numbers instead of relative ones.")
@selection_options
@click.option("--filter", "bpf", metavar="EXPR", help="tcpdump filter expression applied to every frame (compiled by libpcap).")
@click.option("--stats", is_flag=True, help="Add totals per outcome and top connections by retransmission rate and duration (text view only).")
@click.option("--max-conns", type=click.IntRange(min=1), metavar="N", help="Bound the live connection table; the oldest idle one is evicted (counted).")
@click.option("--payload", is_flag=True, help="Show a preview of each segment's payload (escaped).")
@click.option("--keep-duplicates", is_flag=True, help="Keep frames captured twice (loopback AF_PACKET copies) instead of dropping them.")
@click.option(
    "--verify-checksums",
    is_flag=True,
    help="Verify the IPv4 and TCP checksums of every segment, not only of SYN, FIN and RST (slower).",
)
@click.option(
    "--split-idle",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="A packet for a connection silent this long (capture time) ends its record and starts a new one,"
    " as Zeek's inactivity timeout does (Zeek's tcp_inactivity_timeout: 300 s). Default: never split.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Split the connections over N processes (default: one per core, at most 4, for files over 16 MB). Same output.",
)
def read(
    files: tuple[str, ...],
    show_all: bool,
    context: int | None,
    all_packets: bool,
    summary_only: bool,
    conn_ids: tuple[int, ...],
    as_json: bool,
    absolute: bool,
    hosts: tuple[str, ...],
    ports: tuple[str, ...],
    bpf: str | None,
    stats: bool,
    max_conns: int | None,
    payload: bool,
    keep_duplicates: bool,
    verify_checksums: bool,
    split_idle: float | None,
    workers: int | None,
) -> None:
    """Analyse pcap / pcapng files (gzip too; '-' reads standard input).

    Prints the findings, a table of the connections and the timeline of each one that did not
    end well, folded around its events (--all-packets for every packet, --summary for none).
    Several files: the table's start times count from each file's own first connection.
    """
    from synscope.capture.bpf import FilterError, FrameFilter
    from synscope.read.pipeline import Pipeline, Selection, run
    from synscope.read.sources.pcap import CaptureError, open_capture

    _check_view_options(as_json, stats, context, all_packets, summary_only)
    selection = Selection(parse_hosts(hosts), parse_ports(ports))
    if bpf:
        try:
            selection.frame_filter = FrameFilter(bpf)
        except FilterError as e:
            raise click.BadParameter(str(e), param_hint="--filter") from None
    if workers is not None and workers > 1:
        if max_conns is not None:
            raise click.BadParameter("--max-conns bounds one connection table: use it with --workers 1", param_hint="--workers")

    def make_pipeline() -> Pipeline:
        return Pipeline(
            selection,
            max_conns=max_conns,
            keep_payload=payload,
            dedup=not keep_duplicates,
            idle_timeout=split_idle,
            sweep_idle=False,
            verify_checksums=verify_checksums,
        )

    pipeline = make_pipeline()
    readers = []
    exit_code = ExitCode.OK
    for path in files:
        try:
            readers.append(open_capture(path))
        except CaptureError as e:
            click.echo(f"synscope: {e}", err=True)
            exit_code = ExitCode.BAD_INPUT
    if not readers:
        sys.exit(int(exit_code))
    out = sys.stdout
    from synscope.render.summary import RunSummary

    summary = RunSummary(show_all=show_all or bool(conn_ids))
    view = TextView(absolute, payload, stats, None if all_packets else DEFAULT_CONTEXT if context is None else context, summary_only)
    if conn_ids:
        summary.timeline_limit = len(conn_ids)
    progress = _Progress(readers)
    seen_ids: set[int] = set()
    all_ids = IdsSeen()  # with --conn: the ids in the capture, for the error naming the valid ones
    interrupted = False
    from synscope.read.findings import FindingsEngine

    findings = FindingsEngine()  # (JSON; the text view's RunSummary has its own)
    # (imported once here, not in take(): an import statement runs the import machinery on every
    # call, about 3 % of a SYN flood's run at one call per connection)
    from synscope.read.jsonl import connection_line

    # Lines from a pipe (tcpdump -w - | synscope read --json -) are flushed one by one: the next
    # frames may be long in coming. From files, every thousand frames or so (see on_frames).
    flush_each_line = as_json and any(r.size is None for r in readers)

    def take(report: object) -> None:
        if conn_ids:
            all_ids.add(report.conn.id)  # type: ignore[attr-defined]
        if conn_ids and report.conn.id not in conn_ids:  # type: ignore[attr-defined]
            return
        if conn_ids:
            seen_ids.add(report.conn.id)  # type: ignore[attr-defined]
        if as_json:
            findings.feed(report)  # type: ignore[arg-type]
            out.write(connection_line(report, absolute) + "\n")  # type: ignore[arg-type]
            if flush_each_line:
                out.flush()
        else:
            summary.add(report)  # type: ignore[arg-type]

    def on_frames(index: int, frames: int) -> None:
        # every thousand frames or so: the lines written since reach the reader of our output
        # (`| jq`) at once, without a system call per line
        if as_json:
            out.flush()
        progress.update(index, frames)

    # The read path builds no reference cycles (records point one way: connection → packets →
    # segments), so reference counting frees everything; the cyclic collector would only rescan
    # millions of live objects again and again (about a sixth of the run time on big captures).
    gc.disable()
    # (the text view of chosen connections, --conn, is made in one process: which ones are chosen
    # is known only once they are numbered, after the merge)
    split = _split_workers(workers, max_conns, readers) if as_json or not conn_ids else 1
    text_split: _TextSplit | None = None
    try:
        if split > 1 and not as_json:
            text_split = _TextSplit(readers, make_pipeline, split, summary, view, progress)
            interrupted = text_split.merge(pipeline)
        elif split > 1:
            interrupted = _read_split(readers, make_pipeline, pipeline, split, absolute, conn_ids, seen_ids, all_ids, progress, out, findings)
        else:
            try:
                for report in run(((r.path, r) for r in readers), pipeline, on_frames):
                    take(report)
            except KeyboardInterrupt:
                interrupted = True
                for report in pipeline.finish():
                    take(report)
        if as_json and not conn_ids:
            from synscope.read.findings.lines import finding_line

            for found in findings.findings():  # after every connection they cover
                out.write(finding_line(found) + "\n")
        out.flush()
    except BrokenPipeError:
        _reader_gone()
    gc.enable()
    progress.done()
    for r in readers:
        for w in r.warnings:
            click.echo(f"synscope: warning: {w}", err=True)
        if r.truncated_at is not None and exit_code == ExitCode.OK:
            exit_code = ExitCode.PARTIAL_INPUT
    _warn_run(pipeline)
    missing = set(conn_ids) - seen_ids
    if missing:
        click.echo(f"synscope: {unknown_ids_message(sorted(missing), all_ids)}", err=True)
        exit_code = ExitCode.USAGE
    if not as_json and not (missing and not seen_ids):  # (nothing asked for was found: the error alone)
        try:
            _write_text(readers, pipeline, summary, out, view, None if text_split is None else text_split.timelines)
        except BrokenPipeError:
            _reader_gone()
        finally:
            if text_split is not None:
                text_split.close()
    if interrupted:
        click.echo("synscope: interrupted; results above are partial", err=True)
        if exit_code == ExitCode.OK:
            exit_code = ExitCode.INTERRUPTED
    sys.exit(int(exit_code))


def _check_view_options(as_json: bool, stats: bool, context: int | None, all_packets: bool, summary_only: bool) -> None:
    """Options of the text view are refused with --json (a one-line usage error, exit 2), not
    silently ignored; so are the timeline options with --summary, which prints no timeline."""
    from synscope.core.exit_codes import fail

    if as_json:
        for given, name in ((stats, "--stats"), (context is not None, "--context"), (all_packets, "--all-packets"), (summary_only, "--summary")):
            if given:
                hint = ' (the JSON lines carry every figure it adds up: count their "outcome" with jq)' if name == "--stats" else ""
                fail(f"{name} is for the text view, not --json{hint}", ExitCode.USAGE)
    if summary_only and (all_packets or context is not None):
        fail(f"--summary prints no timelines: {'--all-packets' if all_packets else '--context'} has nothing to do", ExitCode.USAGE)
    if all_packets and context is not None:
        fail("--all-packets shows every packet: --context has nothing to fold", ExitCode.USAGE)


class IdsSeen:
    """The connection ids a run reported, in bounded memory: their count and range, and the
    first KEPT of them (enough to name them when they are not one range)."""

    KEPT = 10_000

    def __init__(self) -> None:
        self.count = 0
        self.low = self.high = 0
        self.ids: list[int] = []

    def add(self, cid: int) -> None:
        """Take one reported id."""
        self.low = cid if not self.count else min(self.low, cid)
        self.high = max(self.high, cid)
        self.count += 1
        if len(self.ids) < self.KEPT:
            self.ids.append(cid)

    def describe(self) -> str:
        """``1–3``, or ``1–3, 7, 9–12`` when they are not one range."""
        if self.count == self.high - self.low + 1:
            return f"{self.low}–{self.high}" if self.high > self.low else str(self.low)
        text = id_ranges(sorted(self.ids))
        return text if text.endswith("…") or self.count == len(self.ids) else text + ", …"


def unknown_ids_message(missing: list[int], ids: IdsSeen) -> str:
    """``no connection with id 9 (valid ids: 1–3)``: the error of ``read --conn``."""
    which = ", ".join(map(str, missing))
    if not ids.count:
        return f"no connection with id {which}: the capture holds no TCP connection (within --host/--port/--filter)"
    return f"no connection with id {which} (valid ids: {ids.describe()})"


def id_ranges(ids: list[int], limit: int = 8) -> str:
    """``1–3, 7, 9–12``: sorted ids as ranges (at most ``limit`` of them, then ``…``)."""
    spans: list[tuple[int, int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    text = ", ".join(f"{a}–{b}" if b > a else str(a) for a, b in spans[:limit])
    return text + (", …" if len(spans) > limit else "")


def _reader_gone() -> NoReturn:
    """The reader of our output went away (``| head``): nothing left to say, and not an error."""
    sys.stderr.close()
    sys.exit(int(ExitCode.OK))


# Files smaller than this in all are read by one process: forking would cost more than it saves
SPLIT_MIN_BYTES = 16_000_000
GZIP_RATIO = 5


def _split_workers(workers: int | None, max_conns: int | None, readers: list) -> int:
    """How many processes read: --workers, or by default one per core for big files."""
    pipe = next((r.path for r in readers if r.size is None), None)
    if workers is not None:
        if workers > 1 and pipe is not None:
            raise click.BadParameter(f"{pipe} is a pipe or standard input, which only one process can read", param_hint="--workers")
        return workers
    if max_conns is not None or pipe is not None:
        return 1
    # a gzip file holds several times its size in frames
    if sum(r.size * (GZIP_RATIO if r.compressed else 1) for r in readers) < SPLIT_MIN_BYTES:
        return 1
    from synscope.read.split import default_workers

    return default_workers()


def _read_split(
    readers: list,
    make_pipeline: object,
    pipeline: object,
    workers: int,
    absolute: bool,
    conn_ids: tuple[int, ...],
    seen_ids: set[int],
    all_ids: IdsSeen,
    progress: _Progress,
    out: TextIO,
    findings: object,
) -> bool:
    """``read --json`` over several processes (synscope.read.split); True if interrupted."""
    from synscope.core.exit_codes import fail
    from synscope.read.split import SplitRun, WorkerFailed, write_all

    split = SplitRun([r.path for r in readers], [r.size for r in readers], make_pipeline, workers, absolute)  # type: ignore[arg-type]
    split.findings = findings  # type: ignore[assignment]  # fed in the merged order, as one process would
    split.on_progress = progress.update
    # the lines come as ASCII bytes: written to the byte stream under stdout, flushed whenever
    # the merge waits for a worker (so they stream without a system call per line)
    out.flush()
    raw = getattr(out, "buffer", None)
    write: Callable[[bytes | memoryview], object] = raw.write if raw is not None else (lambda data: out.write(bytes(data).decode("ascii")))
    fd = _fileno(out)
    if fd is not None:  # (the merge's pieces of a megabyte go to the file itself: see write_all)
        write = partial(write_all, fd)
    split.on_wait = raw.flush if raw is not None else out.flush
    try:
        if not conn_ids:
            split.pour(write)  # (the merge writes in big pieces: no object per line)
        else:
            for cid, line in split:
                all_ids.add(cid)
                if cid not in conn_ids:
                    continue
                seen_ids.add(cid)
                write(line)
        split.on_wait()
    except WorkerFailed as e:
        split.close()
        fail(str(e), ExitCode.ERROR)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        split.close()
        fail("interrupted", ExitCode.INTERRUPTED)
    finally:
        split.close()
    split.totals(pipeline, readers)  # type: ignore[arg-type]
    return split.interrupted


def _fileno(out: TextIO) -> int | None:
    """The file descriptor under ``out`` (None: it has none, as under click's test runner)."""
    try:
        return out.fileno()
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is both of the last)
        return None


class _TextSplit:
    """The text view over several processes (synscope.read.split): every connection counted into
    the summary as the merge hands it on, then the timelines it shows made by their workers."""

    def __init__(self, readers: list, make_pipeline: object, workers: int, summary: object, view: TextView, progress: _Progress) -> None:
        from synscope.read.split import SplitRun
        from synscope.render.summary import RunSummary, WorkerShare

        assert isinstance(summary, RunSummary)
        self.summary = summary
        # (made before the workers fork: each counts into its own copy)
        share = WorkerShare(summary.show_all, summary.row_limit, summary.timeline_limit, view)
        self.split = SplitRun([r.path for r in readers], [r.size for r in readers], make_pipeline, workers, share=share)  # type: ignore[arg-type]
        self.split.findings = summary.findings  # fed in the merged order, as one process would
        self.split.on_progress = progress.update
        self.readers = readers

    def merge(self, pipeline: object) -> bool:
        """Count every connection into the summary; put the run's totals on ``pipeline`` and the
        readers. True if interrupted."""
        from synscope.render.summary import Sent

        count = self.summary.count
        with self._failing():
            for cid, merged in self.split:
                w, position, (brief, row, timeline), reused_from, retry = merged
                count(cid, brief, Sent(cid, row, (w, position, cid, reused_from, retry) if timeline else None))
        self.split.totals(pipeline, self.readers)  # type: ignore[arg-type]
        return self.split.interrupted

    def timelines(self, handles: list[object], cited: frozenset[int]) -> list[str]:
        """The texts of the timelines shown, in the order of ``handles``, each from its worker."""
        requests: list[tuple[frozenset[int], list[tuple]]] = [(cited, []) for _ in range(self.split.workers)]
        shown: list[tuple] = handles  # type: ignore[assignment]  # (worker, position, id, reused_from, retry)
        for w, position, cid, reused_from, retry in shown:
            requests[w][1].append((position, cid, reused_from, retry))
        with self._failing():
            answers = [iter(a) for a in self.split.ask(requests)]
        return [next(answers[handle[0]]) for handle in shown]

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """A worker that failed, or a second Ctrl-C: one line and the exit code, no worker left."""
        from synscope.core.exit_codes import fail
        from synscope.read.split import WorkerFailed

        try:
            yield
        except WorkerFailed as e:
            self.close()
            fail(str(e), ExitCode.ERROR)
        except KeyboardInterrupt:
            self.close()
            fail("interrupted", ExitCode.INTERRUPTED)

    def close(self) -> None:
        """Stop and reap the workers."""
        self.split.close()


class _Progress:
    """Progress on stderr (packets, MB, rate, ETA) when it is a terminal and the read takes over a second."""

    DELAY = 1.0

    def __init__(self, readers: list) -> None:
        import time

        self.readers = readers
        self.enabled = sys.stderr.isatty()
        self.start = time.monotonic()
        self.shown = False
        self.frames = 0
        self._clock = time.monotonic

    def update(self, index: int, frames: int, done: int | None = None) -> None:
        """Called by the pipeline every thousand frames or so; ``done``: bytes read, when
        the reading happens in another process."""
        self.frames += 1024
        if not self.enabled:
            return
        elapsed = self._clock() - self.start
        if elapsed < self.DELAY:
            return
        reader = self.readers[index]
        if done is None:
            done = reader.bytes_read
        total = reader.size
        rate = frames / elapsed if elapsed else 0.0
        text = f"{reader.name if hasattr(reader, 'name') else reader.path}: {frames:,} packets, {done / 1e6:,.0f} MB"
        if total:
            frac = min(done / total, 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
            text += f" of {total / 1e6:,.0f} MB ({frac:.0%}), {rate:,.0f} pkt/s, ETA {eta:,.0f} s"
        else:
            text += f", {rate:,.0f} pkt/s"
        sys.stderr.write("\r" + text[:150] + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        """Clear the progress line."""
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _warn_run(pipeline: object) -> None:
    from synscope.read.pipeline import Pipeline

    assert isinstance(pipeline, Pipeline)
    st = pipeline.stats
    ds = pipeline.decoder.stats
    if st.duplicates:
        click.echo(
            f"synscope: note: {st.duplicates} duplicate frames, the same packet captured twice within 1 ms "
            "(loopback through AF_PACKET, or -i any on a host that forwards it): listed, not analysed; --keep-duplicates analyses them",
            err=True,
        )
    if st.reordered:
        click.echo(
            f"synscope: note: {st.reordered} frames were written out of time order (interfaces interleaved in batches); "
            "analysed in time order, frame numbers unchanged",
            err=True,
        )
    if st.backwards:
        click.echo(
            f"synscope: warning: {st.backwards} frames are stamped earlier than a frame before them "
            "(clock stepped, or a damaged capture): times and RTTs around them are unreliable",
            err=True,
        )
    if st.partial_checksums:
        click.echo(
            f"synscope: note: {st.partial_checksums} segments carry only the pseudo-header checksum: checksum offload on the capturing"
            " host (captured before the NIC filled it in); not an error",
            err=True,
        )
    if st.bad_checksums:
        click.echo(
            f"synscope: warning: {st.bad_checksums} segments have bad checksums (corrupted in transit, or in the capture): see their connections",
            err=True,
        )
    for lt, n in ds.unknown_linktype.items():
        click.echo(f"synscope: warning: {n} frames with unsupported link type {lt} skipped", err=True)
    for what, n in sorted(ds.encap_skipped.items()):
        click.echo(f"synscope: note: {n} frames inside an encapsulation not followed ({what}) skipped", err=True)
    if ds.truncated:
        click.echo(
            f"synscope: note: {ds.truncated} packets were cut short by the capture's snaplen; headers were decoded as far "
            "as the bytes go (packets too short for a TCP header are skipped)",
            err=True,
        )
    if ds.malformed:
        click.echo(f"synscope: warning: {ds.malformed} malformed frames skipped", err=True)
    if pipeline.tracker.stragglers:
        click.echo(
            f"synscope: note: {pipeline.tracker.stragglers} late packets of connections that had already ended and been reported were counted, not shown",
            err=True,
        )
    if pipeline.tracker.evicted:
        click.echo(f"synscope: warning: {pipeline.tracker.evicted} connections evicted from the table (--max-conns)", err=True)


def _write_text(readers: list, pipeline: object, summary: object, out: TextIO, view: TextView, timelines: object = None) -> None:
    from synscope.render.summary import RunSummary
    from synscope.render.text import write_header

    assert isinstance(summary, RunSummary)
    st = pipeline.stats  # type: ignore[attr-defined]
    names = ", ".join(r.path for r in readers)
    kinds = []
    for r in readers:
        desc = [r.format + (" (gzip)" if r.compressed else "")]
        desc.append(_linktype_names(r.linktypes))
        desc.append(f"{r.ts_resolution} timestamps")
        kinds.append(", ".join(d for d in desc if d))
    span = (st.last_ts - st.first_ts) if st.frames else 0.0
    write_header(names, summary.total, st.frames, span, "; ".join(kinds), out)
    if not summary.total:
        out.write("No TCP connections found.\n")
        return
    summary.write(out, view, timelines)  # type: ignore[arg-type]


_LINKTYPE_NAMES = {
    0: "null/loopback",
    1: "ethernet",
    12: "raw IP",
    14: "raw IP",
    101: "raw IP",
    108: "loopback",
    113: "linux cooked (SLL)",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "linux cooked v2 (SLL2)",
}


def _linktype_names(linktypes: object) -> str:
    return "+".join(_LINKTYPE_NAMES.get(lt, f"linktype {lt}") for lt in sorted(linktypes))  # type: ignore[call-overload]


# --- further commands register here (one line each) ---
from synscope.cli.probe import demo, probe  # noqa: E402

main.add_command(probe)
main.add_command(demo)
from synscope.cli.watch import watch  # noqa: E402

main.add_command(watch)
# what `synscope --help` lists for each, whole (click cuts a docstring's first line at 45 characters)
probe.short_help = "Send SYNs to a host's ports and explain each answer."
demo.short_help = "Build a private namespace lab, probe it, explain it (root)."
watch.short_help = "Follow live TCP connections and explain each one."


if __name__ == "__main__":
    main()
