"""``read`` on several cores: workers split the connections, the parent merges.

Every worker reads the whole input but decodes, tracks and analyses only the
connections whose 4-tuple hashes to it (:func:`synscope.read.pipeline.shard_of`),
and renders their JSON; the usual frames of other workers' connections are
passed over undecoded (``Pipeline.consume``). For the text view a worker sends what
the parent's end-of-run summary counts of each connection instead (a :class:`TextShare`
says what, in plain values), and at the end renders the timelines the parent asks for:
no report crosses between processes (compiled ones cannot be pickled). What could
differ from one worker is made not to:

- the capture clock, the sweeps and the duplicate window's generations see
  every frame in every worker (see ``Pipeline.feed`` and ``Pipeline.consume``);
- a connection is handed on at a *stamp* (its input position) and ordered by
  (stamp, position of its first frame), which is the order one worker emits;
- ids are numbered by the position of the frame that opened the connection;
  the parent renumbers them 1, 2, 3... in position order over every worker's
  openings, keeping only the ids still to be looked up;
- retries of one server port come from several 4-tuples, so several workers:
  the parent links them, in the merged order.

``tests/test_parallel.py`` checks the output is byte for byte the single-worker one.
Workers are forked (they inherit the compiled --filter and the options) and talk
to the parent over a pipe, one pickled message per batch of about a thousand frames.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pickle
import select
import signal
import struct
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, BinaryIO, Final, Protocol

from synscope.read.findings import FindingsEngine, facts_of
from synscope.read.jsonl import HEAD_START, head_text, join_line, packets_text
from synscope.read.pipeline import DRAIN_STAMP, Pipeline, RetryLinker, failed_attempt, feed_source, is_attempt
from synscope.read.sources.pcap import open_capture
from synscope.read.tracker import MAX_ORPHAN_ICMP

# Frames per message from a worker
BATCH: Final = 1024
# connections per message when a worker hands on the ones still held at the end of the input
DRAIN_BATCH: Final = 16
# at most this many connections per message otherwise
SEND_ITEMS: Final = 128
PIPE_BYTES: Final = 1 << 20
F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ on Linux), spelled out for older ones
_LEN: Final = struct.Struct("<Q")
_DONE: Final = 1 << 63  # progress of a worker that has sent everything
_HEAD_START: Final = HEAD_START.encode("ascii")
_PACKETS_START: Final = b',"packets":['
_LINE_END: Final = b"]}\n"
# a connection's retry members as a worker writes them (it links nothing: the parent does)
_NO_RETRY: Final = b',"retry_of":null,"retry_number":null,'
# JSON text the parent holds from a worker that is ahead of the merge, before it stops reading
# from that worker (which then waits on its pipe): the parent's memory stays bounded
HOLD_BYTES: Final = 4 << 20
# what the parent counts as held for one connection of the text view (a brief, a row at times)
TEXT_ITEM_BYTES: Final = 100


class TextShare(Protocol):
    """A worker's side of the text view of a split run (made before the workers fork: each
    has its own copy). Both methods run in the worker and return plain values only."""

    def item(self, report: Any) -> Any:
        """What the parent takes of one connection (the worker may hold the report)."""

    def render(self, request: Any) -> Any:
        """The parent's request, made after the merge, answered (the texts of timelines)."""


class WorkerFailed(Exception):
    """A worker process died or raised; the message is one line for the user."""


def default_workers() -> int:
    """Worker processes for a split run: the cores this process may use, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


class SplitRun:
    """Runs ``workers`` forked workers over ``paths`` and merges their JSON lines in order.

    ``make_pipeline`` builds each worker's pipeline (the same options as a single run).
    Iterate for (connection id, JSON line as ASCII bytes, newline included); afterwards
    :meth:`totals` gives the run's counters as a single run would have them. ``on_wait`` is
    called whenever the merge has to wait for a worker (the caller flushes its output then,
    so lines stream without a write per line).
    """

    def __init__(
        self,
        paths: list[str],
        sizes: list[int],
        make_pipeline: Callable[[], Pipeline],
        workers: int,
        absolute: bool = False,
        share: TextShare | None = None,
    ) -> None:
        """``sizes``: the files' sizes when they were opened; every worker reads that much.

        ``share``: the text view instead of JSON. Iterating then gives (id, (worker, position,
        what ``share.item`` gave, reused_from, (retry_of, retry_number) or None)) with the
        single run's ids, and :meth:`ask` gets the workers' answers to requests after the merge."""
        self.workers = workers
        self.text = share is not None
        self._requests: list[int] = []  # the parent's end of a pipe to each worker (text view)
        self.interrupted = False
        self._pids: list[int] = []
        self._fds: list[int] = []
        self._buffers = [bytearray() for _ in range(workers)]
        self._queues: list[deque] = [deque() for _ in range(workers)]
        self._progress = [0] * workers
        self._held = [0] * workers  # bytes of JSON text queued per worker
        # Ids: a worker numbers connections by the position of the frame that opened them; the
        # parent renumbers them 1, 2, 3... in position order over all workers, as they are needed
        # (see _number_through), and keeps only what is still to be looked up, so its memory
        # follows the connections open at once, not the file:
        self._unnumbered: list[deque[int]] = [deque() for _ in range(workers)]  # openings not numbered yet
        self._numbered = 0
        self._ids: list[dict[int, int]] = [{} for _ in range(workers)]  # position -> id, not merged yet
        # position -> id of merged connections a later one on the same 4-tuple may name as
        # reused_from (the worker's tracker says when one no longer can: `released`)
        self._nameable: list[dict[int, int]] = [{} for _ in range(workers)]
        self._released_early: list[set[int]] = [set() for _ in range(workers)]  # released before merged
        self._final: list[dict[str, Any] | None] = [None] * workers
        self._answers: list[Any] = [None] * workers
        self._linker = RetryLinker()
        self.findings: FindingsEngine | None = None  # fed every merged connection (ids as in one process)
        self.on_progress: Callable[[int, int, int], None] | None = None
        self.on_wait: Callable[[], None] | None = None
        sys.stdout.flush()
        sys.stderr.flush()
        for index in range(workers):
            r, w = os.pipe()
            with contextlib.suppress(OSError):  # a bigger pipe: workers block less on a busy parent
                fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_BYTES)
            asked, ask = os.pipe() if share is not None else (-1, -1)
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(r)
                for fd in self._fds + self._requests:
                    os.close(fd)
                if ask >= 0:
                    os.close(ask)
                _work(index, workers, paths, sizes, make_pipeline, absolute, w, share, asked)  # never returns
            os.close(w)
            self._pids.append(pid)
            self._fds.append(r)
            if share is not None:
                os.close(asked)
                self._requests.append(ask)
        self._old_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    # ------------------------------------------------------------------ merging
    def __iter__(self) -> Iterator[tuple[int, Any]]:
        # (plain loops: closures in compiled code make reference cycles, and gc is off)
        queues = self._queues
        progress = self._progress
        while True:
            best = -1
            for w, q in enumerate(queues):
                if q and (best < 0 or q[0][:2] < queues[best][0][:2]):
                    best = w
            if best < 0:
                lagging = 0
                for w in range(self.workers):
                    if progress[w] < progress[lagging]:
                        lagging = w
                if progress[lagging] == _DONE:
                    return
                self._receive(lagging)
                continue
            stamp = queues[best][0][0]
            # every other worker must have sent all it has up to this stamp
            waiting = -1
            for w, q in enumerate(queues):
                if w != best and not q and progress[w] < stamp:
                    waiting = w
                    break
            if waiting >= 0:
                self._receive(waiting)
                continue
            item = queues[best].popleft()
            self._held[best] -= _held_bytes(item)
            yield self._merged(best, item)

    def _number_through(self, position: int) -> None:
        """Give single-run ids to every opening up to ``position``, in position order over all
        workers. By the time a connection is merged every worker has sent the openings before it
        (each has sent everything up to the merged connection's stamp, or holds later ones)."""
        unnumbered = self._unnumbered
        while True:
            first = -1
            for w in range(self.workers):
                if unnumbered[w] and unnumbered[w][0] <= position and (first < 0 or unnumbered[w][0] < unnumbered[first][0]):
                    first = w
            if first < 0:
                return
            self._numbered += 1
            self._ids[first][unnumbered[first].popleft()] = self._numbered

    def _merged(self, w: int, item: tuple) -> tuple[int, Any]:
        _stamp, opened_at, reused_from, retire_clock, link, head_rest, packets, facts = item
        self._number_through(opened_at)
        cid = self._ids[w].pop(opened_at)
        if opened_at in self._released_early[w]:
            self._released_early[w].discard(opened_at)
        else:
            self._nameable[w][opened_at] = cid
        if self.findings is not None:
            self.findings.feed_facts(cid, facts)
        linked = None
        if link is not None:
            key, syn_ts, failed, _client_port, failed_at = link
            linked = self._linker.link(key, cid, syn_ts, failed, retire_clock, failed_at)
        if self.text:
            # (the ids its timeline names, as in the JSON below: the single run's)
            named = self._nameable[w].pop(reused_from) if reused_from is not None else None
            return cid, (w, opened_at, packets, named, linked)
        if reused_from is None and linked is None:  # the usual case: only the id to put in
            return cid, b"".join((_HEAD_START, str(cid).encode(), head_rest, _PACKETS_START, packets, _LINE_END))
        if reused_from is None and linked is not None and _NO_RETRY in head_rest:
            # a retry (in a SYN flood, most attempts from a source seen before): its two members
            # written into the text, not the object decoded and encoded again
            head_rest = head_rest.replace(_NO_RETRY, b',"retry_of":%d,"retry_number":%d,' % linked, 1)
            return cid, b"".join((_HEAD_START, str(cid).encode(), head_rest, _PACKETS_START, packets, _LINE_END))
        head = json.loads(_HEAD_START + b"0" + head_rest + b"}")
        head["id"] = cid
        # (links are data beside the verdict's text, which no stage edits: see pipeline.link_sentences)
        if reused_from is not None:
            head["reused_from"] = self._nameable[w].pop(reused_from)  # (named once: the tracker let go of it then)
        if linked is not None:
            head["retry_of"], head["retry_number"] = linked
        return cid, (join_line(head, packets.decode("ascii")) + "\n").encode("ascii")

    def _receive(self, need: int) -> None:
        """Read until a message from worker ``need`` is in; meanwhile take what the others
        sent, so they do not wait on a full pipe, unless the parent already holds HOLD_BYTES
        of theirs (then a worker far ahead of the merge waits until it catches up)."""
        got = False
        if self.on_wait is not None:
            self.on_wait()
        while not got:
            open_fds = [fd for w, fd in enumerate(self._fds) if self._progress[w] != _DONE and (w == need or self._held[w] < HOLD_BYTES)]
            ready, _, _ = select.select(open_fds, [], [])
            for fd in ready:
                w = self._fds.index(fd)
                if self._take(w) and w == need:
                    got = True

    def _take(self, w: int) -> int:
        """Read what worker ``w`` sent (one read) and act on each message it completes; how many."""
        chunk = os.read(self._fds[w], PIPE_BYTES)
        if not chunk:
            self._progress[w] = _DONE
            status = self._reap(w)
            raise WorkerFailed(f"worker {w + 1} of {self.workers} ended without finishing ({status})")
        buf = self._buffers[w]
        buf += chunk
        taken = 0
        while len(buf) >= _LEN.size:
            size = _LEN.unpack_from(buf)[0]
            end = _LEN.size + size
            if len(buf) < end:
                break
            with memoryview(buf) as view:  # (unpickled in place: no copy of the message)
                message = pickle.loads(view[_LEN.size : end])
            del buf[:end]
            self._message(w, message)
            taken += 1
        return taken

    def _message(self, w: int, message: tuple) -> None:
        kind, *rest = message
        if kind == "batch":
            progress, opened, released, items, source, frames, bytes_read = rest
            self._unnumbered[w].extend(opened)
            nameable, early = self._nameable[w], self._released_early[w]
            for position in released:
                if position in nameable:
                    del nameable[position]
                else:  # its connection is not merged yet
                    early.add(position)
            self._queues[w].extend(items)
            held = 0
            for item in items:
                held += _held_bytes(item)
            self._held[w] += held
            self._progress[w] = progress
            if w == 0 and self.on_progress is not None and frames:
                self.on_progress(source, frames, bytes_read)
        elif kind == "done":
            self._final[w] = rest[0]
            self._progress[w] = _DONE
        elif kind == "answer":
            self._answers[w] = rest[0]
        else:  # "failed"
            self._progress[w] = _DONE
            raise WorkerFailed(f"worker {w + 1} of {self.workers} failed: {rest[0]}")

    def ask(self, requests: list[Any]) -> list[Any]:
        """Text view, after the merge: send worker ``w`` ``requests[w]`` and return the answers
        of their shares (:meth:`TextShare.render`), in worker order."""
        for w, request in enumerate(requests):
            body = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(os.dup(self._requests[w]), "wb") as pipe:
                pipe.write(_LEN.pack(len(body)) + body)
        for w in range(self.workers):  # (one at a time: each worker only writes its answer now)
            self._answers[w] = None
            while self._answers[w] is None:
                self._take(w)
        answers = self._answers
        self._answers = [None] * self.workers
        return answers

    def _reap(self, w: int) -> str:
        try:
            _, status = os.waitpid(self._pids[w], 0)
        except ChildProcessError:
            return "already reaped"
        self._pids[w] = 0
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.WEXITSTATUS(status)}"

    # --------------------------------------------------------------- lifecycle
    def _on_sigint(self, signum: int, frame: object) -> None:
        """First Ctrl-C: workers stop reading and hand on what they hold (as a single run
        does on Ctrl-C); a second one stops at once."""
        if self.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.interrupted = True
        for pid in self._pids:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)

    def close(self) -> None:
        """Stop and reap every worker this run started (by PID); restore Ctrl-C."""
        signal.signal(signal.SIGINT, self._old_sigint)
        for w, fd in enumerate(self._requests):  # (a worker waiting for a request ends)
            if fd >= 0:
                os.close(fd)
                self._requests[w] = -1
        for w, fd in enumerate(self._fds):
            if fd >= 0:
                os.close(fd)
                self._fds[w] = -1
        for w, pid in enumerate(self._pids):
            if not pid:
                continue
            if self._final[w] is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._pids[w] = 0

    def totals(self, pipeline: Pipeline, readers: list) -> None:
        """Put the run's counters on ``pipeline`` and ``readers`` as a single run leaves them.

        Frames, decoding, time order and the readers' findings are the same in every worker
        (each reads everything): worker 1's. Duplicates, late packets and the checksum counts
        belong to the connections a worker tracked: summed.
        """
        finals = [f for f in self._final if f is not None]
        if not finals:
            return
        first = finals[0]
        pipeline.stats = first["stats"]
        pipeline.stats.duplicates = sum(f["stats"].duplicates for f in finals)
        pipeline.stats.partial_checksums = sum(f["stats"].partial_checksums for f in finals)
        pipeline.stats.bad_checksums = sum(f["stats"].bad_checksums for f in finals)
        pipeline.decoder.stats = first["decode"]
        tracker = pipeline.tracker
        tracker.stragglers = sum(f["stragglers"] for f in finals)
        tracker.reused = sum(f["reused"] for f in finals)
        tracker.orphan_icmp = sorted((e for f in finals for e in f["orphan_icmp"]), key=lambda e: e.frame)[:MAX_ORPHAN_ICMP]
        for reader, state in zip(readers, first["readers"], strict=False):
            for name, value in state.items():
                setattr(reader, name, value)


# ---------------------------------------------------------------------- worker
def _work(
    index: int,
    workers: int,
    paths: list[str],
    sizes: list[int],
    make_pipeline: Callable[[], Pipeline],
    absolute: bool,
    fd: int,
    share: TextShare | None = None,
    asked: int = -1,
) -> None:
    """A forked worker's whole life: read everything, track its share, send JSON (or what the
    text view takes, then answer the parent's request from ``asked``), exit."""
    status = 0
    out = os.fdopen(fd, "wb", buffering=1 << 20)
    try:
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (see SplitRun._on_sigint)
        signal.signal(signal.SIGUSR1, _on_stop)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the parent went away: so do we
        _run_worker(index, workers, paths, sizes, make_pipeline(), absolute, out, _STOP, share)
        if share is not None:
            _answer(share, asked, out)
    except BaseException as e:
        status = 1
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        with contextlib.suppress(Exception):
            _send(out, ("failed", last))
    finally:
        with contextlib.suppress(Exception):
            out.flush()
        os._exit(status)


# set in a worker when the parent asks it to stop early (SIGUSR1: the user pressed Ctrl-C)
_STOP: Final[list[bool]] = []


def _on_stop(signum: int, frame: object) -> None:
    _STOP.append(True)


def _run_worker(
    index: int,
    workers: int,
    paths: list[str],
    sizes: list[int],
    pipeline: Pipeline,
    absolute: bool,
    out: BinaryIO,
    stop: list,
    share: TextShare | None = None,
) -> None:
    pipeline.share(index, workers)
    pipeline.link_retries = False
    tracker = pipeline.tracker
    tracker.ids_from_position = True
    opened: list[int] = []
    tracker.opened = opened
    released: list[int] = []
    tracker.released = released
    # every worker reads the same bytes, also of a file still being written (its size when the
    # parent opened it)
    readers = [open_capture(p, limit=size) for p, size in zip(paths, sizes, strict=True)]
    stats = pipeline.stats

    sent_progress = [0]

    def send_batch(progress: int, source: int, frames: int, bytes_read: int, reports: Iterable, per_message: int = SEND_ITEMS) -> None:
        # A sweep can hand on thousands of connections at once (5,000 closed together): they go
        # per_message at a time, rendered piece by piece, so neither side holds them all as text.
        # Pieces before the last repeat the progress already sent: they claim nothing new.
        pending = iter(reports)
        piece = list(islice(pending, per_message))
        while True:
            following = list(islice(pending, per_message))
            items = [_item(r, absolute) for r in piece] if share is None else [_text_item(r, share) for r in piece]
            _send(out, ("batch", sent_progress[0] if following else progress, opened[:], released[:], items, source, frames, bytes_read))
            opened.clear()
            released.clear()
            if not following:
                break
            piece = following
        sent_progress[0] = progress

    for source, reader in enumerate(readers):
        # (common frames go to the pipeline straight from the read buffer: other workers' ones
        # are passed over there, undecoded)
        for frames_read in feed_source(pipeline, source, reader.path, reader, BATCH):
            send_batch(2 * stats.frames + 1, source, frames_read, reader.bytes_read, pipeline.ready())
            if stop:
                break
        if stop:
            break
    send_batch(2 * stats.frames + 1, len(readers) - 1, 0, 0, pipeline.ready())
    # the connections still held, made one at a time and sent a few per message (long ones at the
    # end of a capture are the biggest), so the parent merges them as they come
    send_batch(DRAIN_STAMP, len(readers) - 1, 0, 0, pipeline.finishing(), DRAIN_BATCH)
    reader_state = [
        {"linktypes": r.linktypes, "ts_resolution": r.ts_resolution, "warnings": r.warnings, "truncated_at": r.truncated_at, "frames": r.frames}
        for r in readers
    ]
    _send(
        out,
        (
            "done",
            {
                "stats": stats,
                "decode": pipeline.decoder.stats,
                "stragglers": tracker.stragglers,
                "reused": tracker.reused,
                "orphan_icmp": tracker.orphan_icmp,
                "readers": reader_state,
            },
        ),
    )


def _retry_facts(report: Any) -> tuple | None:
    """What RetryLinker needs of a connection, linked by the parent in the merged order."""
    conn = report.conn
    if not is_attempt(report):
        return None
    return ((conn.client.ip, conn.server.ip, conn.server.port), conn.syn_ts, failed_attempt(conn, report.verdict), conn.client.port, conn.last_ts)


def _item(report: Any, absolute: bool) -> tuple:
    """What the parent needs of one connection: merge key, ids to renumber, retry facts, JSON."""
    conn = report.conn
    link = _retry_facts(report)
    # the object without packets, as JSON text after its id (the parent puts in the final id)
    head = head_text(report, absolute)
    start = f"{HEAD_START}{conn.id},"
    if not head.startswith(start):  # the schema's first members moved: fail loudly, not wrongly
        raise AssertionError(f"JSON object starts {head[:40]!r}, expected {start!r}")
    # (ASCII bytes: the parent joins them into the line it writes, without decoding or encoding)
    return (
        conn.retired_at,
        conn.opened_at,
        conn.reused_from,
        conn.retire_clock,
        link,
        head[len(start) - 1 :].encode("ascii"),
        packets_text(report, absolute).encode("ascii"),
        facts_of(report),
    )


def _text_item(report: Any, share: TextShare) -> tuple:
    """:func:`_item` for the text view: what ``share`` takes of the connection instead of its JSON."""
    conn = report.conn
    return (conn.retired_at, conn.opened_at, conn.reused_from, conn.retire_clock, _retry_facts(report), b"", share.item(report), facts_of(report))


def _held_bytes(item: tuple) -> int:
    """About how much of the parent's memory a connection waiting to be merged takes."""
    text = item[6]
    return len(item[5]) + len(text) if isinstance(text, bytes) else TEXT_ITEM_BYTES


def _answer(share: TextShare, asked: int, out: BinaryIO) -> None:
    """Wait for the parent's one request (none: it closed the pipe) and send the answer."""
    with os.fdopen(asked, "rb") as pipe:
        head = pipe.read(_LEN.size)
        if len(head) < _LEN.size:
            return
        request = pickle.loads(pipe.read(_LEN.unpack(head)[0]))
    _send(out, ("answer", share.render(request)))


def _send(out: BinaryIO, message: tuple) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(body)))
    out.write(body)
    out.flush()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the parent dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
