"""``read`` on several cores: workers split the connections, the parent merges.

Every worker reads the whole input but decodes, tracks and analyses only the
connections dealt to it by their 4-tuple (``Pipeline._tracks``),
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
to the parent over a pipe, one message per batch of about a thousand frames: what the
parent needs to merge, pickled, then the batch's JSON text as raw bytes. The parent
never parses or re-encodes a line: it writes the worker's bytes with the id in front,
and with the members that name other connections rewritten at the offset the worker
gave (:func:`synscope.read.jsonl.links_text`) in the rare lines that have any.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import io
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

from synscope.read.findings import ConnFacts, FindingsEngine, facts_of
from synscope.read.jsonl import HEAD_START, head_text, links_text, packets_text
from synscope.read.pipeline import DRAIN_STAMP, Pipeline, RetryLinker, failed_attempt, feed_source, is_attempt, storm_suspect
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
# a worker's message: the size of its pickled part, then of the JSON text after it
_HEADER: Final = struct.Struct("<QQ")
_DONE: Final = 1 << 63  # progress of a worker that has sent everything
# the parent's output is written in pieces of about this size (and whenever it waits for a worker)
OUT_BYTES: Final = 1 << 20
# JSON text the parent holds from a worker that is ahead of the merge, before it stops reading
# from that worker (which then waits on its pipe): the parent's memory stays bounded
HOLD_BYTES: Final = 4 << 20
# what the parent counts as held for one connection of the text view (a brief, a row at times)
TEXT_ITEM_BYTES: Final = 100
# what a connection is to the retry linker (sent with its facts, which hold the rest)
NOT_ATTEMPT: Final = 0
ATTEMPT: Final = 1
FAILED_ATTEMPT: Final = 2
# ... a flood's spoofed SYN, by what the packets show (pipeline.storm_suspect): never linked (RetryLinker.link's linkable)
STORM_ATTEMPT: Final = 3


class _Output:
    """The merge's JSON text on its way to ``write``: put in a buffer of OUT_BYTES in place and
    written when it is full (a bytearray grown again after every write cost page faults)."""

    def __init__(self, write: Callable[[memoryview], object]) -> None:
        self.write = write
        self.buffer = bytearray(OUT_BYTES)
        self.view = memoryview(self.buffer)  # (a bytearray's slice assignment copies a memoryview first)
        self.used = 0

    def put(self, data: bytes | memoryview) -> None:
        """Add ``data`` (written at once when it is bigger than the buffer)."""
        size = len(data)
        at = self.used
        if at + size > OUT_BYTES:
            self.flush()
            at = 0
            if size > OUT_BYTES:
                with memoryview(data) as view:
                    self.write(view)
                return
        self.view[at : at + size] = data
        self.used = at + size

    def flush(self) -> None:
        """Write what the buffer holds."""
        if self.used:
            with self.view[: self.used] as held:
                self.write(held)
            self.used = 0


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
        # what each worker sent that is not taken yet: read into its buffer (never shrunk), up to _filled
        self._buffers = [bytearray(PIPE_BYTES) for _ in range(workers)]
        self._filled = [0] * workers
        self._inputs: list[io.FileIO] = []
        self._queues: list[deque] = [deque() for _ in range(workers)]
        # the JSON text of each worker's queued connections: one per message, in order, and where
        # the first queued connection's line starts in the first of them
        self._texts: list[deque[memoryview]] = [deque() for _ in range(workers)]
        self._cursor = [0] * workers
        # the merge's JSON text on its way out (pour), or to the line iterating gives (_line)
        self._line = bytearray()
        self._output: _Output | None = None
        # of the connection merged last: the single run's id it names as reused_from, its retry link
        self._named: int | None = None
        self._linked: tuple[int, int] | None = None
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
            self._inputs.append(io.FileIO(r, "r", closefd=False))  # (readinto: no new bytes per read)
            if share is not None:
                os.close(asked)
                self._requests.append(ask)
        self._old_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    # ------------------------------------------------------------------ merging
    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while True:
            w = self._next()
            if w < 0:
                return
            yield self._merged(w, self._queues[w].popleft())

    def pour(self, write: Callable[[memoryview], object]) -> None:
        """Merge every JSON line into ``write``, in pieces of up to OUT_BYTES: when they are full
        and whenever the merge has to wait for a worker (then ``on_wait`` too). What iterating
        gives, without an object per line. ``write`` must not keep the memoryview it is given."""
        out = self._output = _Output(write)
        queues = self._queues
        while True:
            w = self._next()
            if w < 0:
                break
            item = queues[w].popleft()
            self._put_line(w, item, self._settle(w, item), out)
        self._flush_out()
        self._output = None

    def _flush_out(self) -> None:
        """Write what the merge holds (pour) and let the caller flush its output."""
        if self._output is not None:
            self._output.flush()
        if self.on_wait is not None:
            self.on_wait()

    def _next(self) -> int:
        """The worker whose first queued connection is the next in the merged order, receiving
        from the workers until it is known; -1 when every worker has sent everything."""
        # (plain loops: closures in compiled code make reference cycles, and gc is off)
        queues = self._queues
        progress = self._progress
        workers = self.workers
        while True:
            best = -1
            best_stamp = best_opened = 0
            for w in range(workers):
                q = queues[w]
                if q:
                    head = q[0]
                    stamp: int = head[0]
                    opened: int = head[1]
                    if best < 0 or stamp < best_stamp or (stamp == best_stamp and opened < best_opened):
                        best, best_stamp, best_opened = w, stamp, opened
            if best < 0:
                lagging = 0
                for w in range(workers):
                    if progress[w] < progress[lagging]:
                        lagging = w
                if progress[lagging] == _DONE:
                    return -1
                self._receive(lagging)
                continue
            # every other worker must have sent all it has up to this stamp
            waiting = -1
            for w in range(workers):
                if w != best and not queues[w] and progress[w] < best_stamp:
                    waiting = w
                    break
            if waiting >= 0:
                self._receive(waiting)
                continue
            return best

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

    def _settle(self, w: int, item: tuple) -> int:
        """Take worker ``w``'s first queued connection into the merge: its single-run id (returned),
        the id it names as reused_from and its retry link (``_named``, ``_linked``), the findings."""
        opened_at: int = item[1]
        reused_from: int | None = item[2]
        size: int = item[6]
        self._held[w] -= size if size else TEXT_ITEM_BYTES
        self._number_through(opened_at)
        ids = self._ids[w]
        cid = ids[opened_at]
        del ids[opened_at]  # (not dict.pop: a method call when compiled)
        early = self._released_early[w]
        if early and opened_at in early:
            early.discard(opened_at)
        elif item[0] != DRAIN_STAMP:
            # (one still open at the end of the input is never named: a reuse of its 4-tuple would
            # have ended it first. A SYN flood's million attempts are all such: not kept)
            self._nameable[w][opened_at] = cid
        facts: ConnFacts = item[5]
        if self.findings is not None:
            self.findings.feed_facts(cid, facts)
        linked = None
        attempt: int = item[4]
        if attempt != NOT_ATTEMPT:
            syn_ts = facts.syn_ts
            assert syn_ts is not None  # (an attempt has a SYN)
            key = (facts.client_ip, facts.server_ip, facts.server_port)
            linked = self._linker.link(key, cid, syn_ts, attempt == FAILED_ATTEMPT, item[3], facts.last_ts, attempt != STORM_ATTEMPT)
        self._linked = linked
        # (the ids its line or timeline names, as in a single run; named once: the tracker let go of it then)
        self._named = self._nameable[w].pop(reused_from) if reused_from is not None else None
        return cid

    def _put_line(self, w: int, item: tuple, cid: int, out: _Output) -> None:
        """Put the JSON line of worker ``w``'s connection just settled in ``out``: the worker's
        text with the single run's id in front (and its links, when it names other connections)."""
        size: int = item[6]
        texts = self._texts[w]
        text = texts[0]
        start = self._cursor[w]
        end = start + size
        if end == len(text):
            texts.popleft()
            self._cursor[w] = 0
        else:
            self._cursor[w] = end
        out.put(f"{HEAD_START}{cid}".encode("ascii"))
        named, linked = self._named, self._linked
        if named is None and linked is None:  # the usual case: only the id to put in
            out.put(text[start:end])
            return
        # (links are data beside the verdict's text, which no stage edits: see pipeline.link_sentences)
        cut: int = start + item[7]
        out.put(text[start:cut])
        retry_of, retry_number = linked if linked is not None else (None, None)
        out.put(links_text(named, retry_of, retry_number).encode("ascii"))
        out.put(text[cut + len(links_text(item[2], None, None)) : end])

    def _merged(self, w: int, item: tuple) -> tuple[int, Any]:
        """Worker ``w``'s connection ``item``, just taken off its queue, merged: (id, its JSON line
        as ASCII bytes, newline included), or for the text view (id, (worker, position, what
        ``share.item`` gave, reused_from, (retry_of, retry_number) or None))."""
        cid = self._settle(w, item)
        if self.text:
            return cid, (w, item[1], item[7], self._named, self._linked)
        if self._output is None:  # (iterating: the line is put together in _line)
            self._output = _Output(self._line.extend)
        self._put_line(w, item, cid, self._output)
        self._output.flush()
        line = bytes(self._line)
        self._line.clear()
        return cid, line

    def _receive(self, need: int) -> None:
        """Read until a message from worker ``need`` is in; meanwhile take what the others
        sent, so they do not wait on a full pipe, unless the parent already holds HOLD_BYTES
        of theirs (then a worker far ahead of the merge waits until it catches up)."""
        got = False
        self._flush_out()
        while not got:
            open_fds = [fd for w, fd in enumerate(self._fds) if self._progress[w] != _DONE and (w == need or self._held[w] < HOLD_BYTES)]
            ready, _, _ = select.select(open_fds, [], [])
            for fd in ready:
                w = self._fds.index(fd)
                if self._take(w) and w == need:
                    got = True

    def _take(self, w: int) -> int:
        """Read what worker ``w`` sent (one read) and act on each message it completes; how many."""
        buf = self._buffers[w]
        filled = self._filled[w]
        with memoryview(buf) as view:
            got = self._inputs[w].readinto(view[filled:])
        if not got:
            self._progress[w] = _DONE
            status = self._reap(w)
            raise WorkerFailed(f"worker {w + 1} of {self.workers} ended without finishing ({status})")
        filled += got
        start = 0
        need = 0
        messages: list[tuple] = []
        texts = self._texts[w]
        with memoryview(buf) as view:  # (unpickled in place: no copy of the message)
            while filled - start >= _HEADER.size:
                size, text_size = _HEADER.unpack_from(buf, start)
                text_at = start + _HEADER.size + size
                end = text_at + text_size
                if filled < end:
                    need = end - start
                    break
                messages.append(pickle.loads(view[start + _HEADER.size : text_at]))
                if text_size:
                    texts.append(memoryview(view[text_at:end].tobytes()))  # (a line is a slice of it)
                start = end
        if start:  # what is left of a message goes to the front
            buf[: filled - start] = buf[start:filled]
            filled -= start
        if need > len(buf):  # a message bigger than the buffer (a connection of many packets)
            buf.extend(bytes(need - len(buf)))
        self._filled[w] = filled
        for message in messages:
            self._message(w, message)
        return len(messages)

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
                size: int = item[6]
                held += size if size else TEXT_ITEM_BYTES
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
                self._inputs[w].close()  # (closefd=False: the descriptor is closed below)
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
            lines: list[str] = []
            items = [_item(r, absolute, lines) for r in piece] if share is None else [_text_item(r, share) for r in piece]
            message = ("batch", sent_progress[0] if following else progress, opened[:], released[:], items, source, frames, bytes_read)
            _send(out, message, "".join(lines).encode("ascii"))
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
            send_batch(stats.frames + stats.frames + 1, source, frames_read, reader.bytes_read, pipeline.ready())
            if stop:
                break
        if stop:
            break
    send_batch(stats.frames + stats.frames + 1, len(readers) - 1, 0, 0, pipeline.ready())
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


def _attempt(report: Any) -> int:
    """What RetryLinker needs of a connection beyond its facts (its SYN time, 4-tuple and last
    packet are there), linked by the parent in the merged order: NOT_ATTEMPT, ATTEMPT, FAILED_ATTEMPT or STORM_ATTEMPT."""
    if not is_attempt(report):
        return NOT_ATTEMPT
    if storm_suspect(report):
        return STORM_ATTEMPT
    return FAILED_ATTEMPT if failed_attempt(report.conn, report.verdict) else ATTEMPT


def _item(report: Any, absolute: bool, lines: list[str]) -> tuple:
    """What the parent needs of one connection: merge key, ids to renumber, retry facts, findings
    facts, and how its JSON line goes (appended to ``lines``: the line after its id, newline
    included, and where in it the members that name other connections start)."""
    conn = report.conn
    head = head_text(report, absolute)
    start = f"{HEAD_START}{conn.id},"
    if not head.startswith(start):  # the schema's first members moved: fail loudly, not wrongly
        raise AssertionError(f"JSON object starts {head[:40]!r}, expected {start!r}")
    # (the worker links no retries: the parent does, in the merged order, and writes them in)
    links = links_text(conn.reused_from, None, None)
    cut = head.find(f",{links},", len(start) - 1) + 1 - (len(start) - 1)
    if cut <= 0:
        raise AssertionError(f"JSON object without {links!r}")
    line = f'{head[len(start) - 1 :]},"packets":[{packets_text(report, absolute)}]}}\n'
    lines.append(line)
    return (conn.retired_at, conn.opened_at, conn.reused_from, conn.retire_clock, _attempt(report), facts_of(report), len(line), cut)


def _text_item(report: Any, share: TextShare) -> tuple:
    """:func:`_item` for the text view: what ``share`` takes of the connection instead of its JSON."""
    conn = report.conn
    return (conn.retired_at, conn.opened_at, conn.reused_from, conn.retire_clock, _attempt(report), facts_of(report), 0, share.item(report))


def _answer(share: TextShare, asked: int, out: BinaryIO) -> None:
    """Wait for the parent's one request (none: it closed the pipe) and send the answer."""
    with os.fdopen(asked, "rb") as pipe:
        head = pipe.read(_LEN.size)
        if len(head) < _LEN.size:
            return
        request = pickle.loads(pipe.read(_LEN.unpack(head)[0]))
    _send(out, ("answer", share.render(request)))


def _send(out: BinaryIO, message: tuple, text: bytes = b"") -> None:
    """One message to the parent: ``message`` pickled, then ``text`` (a batch's JSON lines) as is."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()  # (nothing is left in it: every message goes out whole, here)
    fd = out.fileno()
    write_all(fd, _HEADER.pack(len(body), len(text)) + body)
    if text:
        write_all(fd, text)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd``. A write to a pipe that a signal interrupts (the user's
    Ctrl-C, a worker's SIGUSR1) may write only part of it, and io.BufferedWriter then loses the
    rest of a write bigger than its buffer (CPython 3.11, tests/test_parallel.py's Ctrl-C test
    caught it): the merge's big pieces and the workers' messages go around it."""
    written = os.write(fd, data)
    if written == len(data):  # (the usual case: no slice)
        return
    with memoryview(data) as view:
        while written < len(data):
            written += os.write(fd, view[written:])


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the parent dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
