"""Loss or reordering? Each segment below the highest sequence decided from evidence in the packets.

tshark's flags (synscope.read.analysis.flags) guess from timing: a hole filled sooner than the
handshake RTT is "out of order", later a "retransmission". The guess fails both ways (a quick
retransmission is called out of order, a segment held on the path is called a retransmission).
Here every data segment that starts below the highest sequence seen in its direction is decided
from what the packets prove:

- **TSval**: a sender's TCP timestamp never goes back. A segment whose TSval is newer than every
  one seen before in its direction was sent after them: a retransmission. One with an older TSval
  was sent before segments that arrived earlier: a late original (reordering).
- **IP ID**: Linux numbers the packets of a connected socket from a per-socket counter (DF set),
  so a retransmission carries a newer IP ID and a late original an older one. Used only when the
  direction's IDs do grow by small steps (a random or zero ID proves nothing).
- **What the capture already saw**: a segment filling a hole the capture never saw filled was
  lost before the capture point ("upstream"); a segment whose bytes all passed the capture point
  before is a copy: a retransmission of data lost after the capture point ("downstream"), or not
  needed at all ("spurious": the peer's ACK had covered it already, or the peer's D-SACK says it
  arrived twice), or the same packet recorded twice (same IP ID, no newer TSval).
- **The capture point**: a host's own segments cannot arrive out of order at its own capture
  point. When the sender's TTL is an initial value (64, 128, 255: no router between it and the
  capture) and its handshake leg is the short one, a segment below the highest one is a
  retransmission even without TSval or IP ID.

What none of these decides is counted as undecided: the verdict says "cannot tell".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from synscope.core.seqnum import MASK, seq_diff

# What a segment below the highest sequence was
UPSTREAM: Final = 0  # a retransmission of data the capture never saw: lost before the capture point
DOWNSTREAM: Final = 1  # a retransmission of data seen passing: lost after the capture point
SPURIOUS: Final = 2  # a retransmission the receiver did not need (already ACKed, or D-SACKed)
REORDERED: Final = 3  # an original sent before segments that arrived earlier
COPY: Final = 4  # the same packet recorded twice
UNDECIDED: Final = 5  # no evidence either way
KINDS: Final = 6
KIND_NAMES: Final = ("upstream_loss", "downstream_loss", "spurious", "reordered", "capture_copy", "undecided")

# How a decision was reached (for the confidence of the verdict built on it)
BY_TSVAL: Final = 0
BY_IPID: Final = 1
BY_OVERLAP: Final = 2  # part of the bytes seen before, part not: re-sent, repacketised
BY_POSITION: Final = 3  # the sender is at the capture point: its segments cannot be reordered there
BY_NOTHING: Final = 4
WAYS: Final = 5

# TCP timestamp and IP ID arithmetic (RFC 7323: TSvals compare modulo 2^32, like sequence numbers)
TS_MASK: Final = 0xFFFFFFFF
TS_HALF: Final = 0x80000000
IPID_MASK: Final = 0xFFFF
IPID_HALF: Final = 0x8000
# An IP ID is a counter when successive new segments step it by 1..this (a per-socket counter
# steps by one per packet; a per-host one by the host's other packets in between) ...
IPID_MAX_STEP: Final = 1024
# ... in at least this many steps, and at most one step in this many is out of range
IPID_MIN_STEPS: Final = 4
IPID_BAD_RATIO: Final = 10
# Initial TTLs (hop limits): a segment still carrying one crossed no router on its way to the capture
INITIAL_TTLS: Final = (64, 128, 255)
# Frame numbers kept per kind as evidence
MAX_EXAMPLES: Final = 5
# Segments below the highest sequence remembered per direction for a later D-SACK or copy
MAX_RESENDS: Final = 2048
# Decisions remembered per direction by frame number, for the timeline's notes
MAX_DECIDED: Final = 100000
# Merged byte ranges the capture saw, per direction (holes never filled keep ranges apart)
MAX_RANGES: Final = 4096
# A position not known yet (offsets are from the first data byte, never negative)
NONE: Final = -1
# TCP option kinds
_OPT_END: Final = 0
_OPT_NOP: Final = 1
_OPT_SACK: Final = 5
_OPT_TS: Final = 8

# Shared and never written: a direction with no segment below its highest sequence (nearly every
# one) holds these; LossFacts._count gives a direction lists of its own at its first decision. (A
# connection used to allocate 24 lists and 2 dicts here, most of them never written.)
_NO_COUNTS: Final[list[int]] = [0] * KINDS
_NO_WAYS: Final[list[int]] = [0] * WAYS
_NO_EXAMPLES: Final[list[list[int]]] = [[] for _ in range(KINDS)]
_NO_DECISIONS: Final[dict[int, int]] = {}
_NO_RESENDS: Final[list[Resend]] = []


def tsval_of(raw: bytes) -> int:
    """The TSval of a segment's raw TCP options, or -1 without a timestamp option."""
    # the usual layout first: NOP NOP TS (Linux, BSD, Windows)
    if len(raw) >= 12 and raw[2] == _OPT_TS and raw[3] == 10 and raw[0] == _OPT_NOP:
        return (raw[4] << 24) | (raw[5] << 16) | (raw[6] << 8) | raw[7]
    i = 0
    n = len(raw)
    while i < n:
        kind = raw[i]
        if kind == _OPT_END:
            break
        if kind == _OPT_NOP:
            i += 1
            continue
        if i + 1 >= n or raw[i + 1] < 2:
            break
        size = raw[i + 1]
        if kind == _OPT_TS and size == 10 and i + 10 <= n:
            return (raw[i + 2] << 24) | (raw[i + 3] << 16) | (raw[i + 4] << 8) | raw[i + 5]
        i += size
    return -1


def first_sack_blocks(raw: bytes) -> list[int]:
    """The SACK blocks of raw TCP options as a flat list [left0, right0, left1, right1, ...]."""
    out: list[int] = []
    i = 0
    n = len(raw)
    while i < n:
        kind = raw[i]
        if kind == _OPT_END:
            break
        if kind == _OPT_NOP:
            i += 1
            continue
        if i + 1 >= n or raw[i + 1] < 2:
            break
        size = raw[i + 1]
        if kind == _OPT_SACK and i + size <= n:
            j = i + 2
            while j + 8 <= i + size:
                out.append((raw[j] << 24) | (raw[j + 1] << 16) | (raw[j + 2] << 8) | raw[j + 3])
                out.append((raw[j + 4] << 24) | (raw[j + 5] << 16) | (raw[j + 6] << 8) | raw[j + 7])
                j += 8
            break
        i += size
    return out


def dsack_block(ack: int, blocks: list[int]) -> tuple[int, int] | None:
    """RFC 2883: the first SACK block reports a duplicate when it lies below the cumulative ACK,
    or inside the second block. Returns it (left, right) as sequence numbers, or None."""
    if len(blocks) < 2:
        return None
    left, right = blocks[0], blocks[1]
    if seq_diff(right, ack) <= 0:
        return left, right
    if len(blocks) >= 4 and seq_diff(left, blocks[2]) >= 0 and seq_diff(right, blocks[3]) <= 0:
        return left, right
    return None


# The timeline's words for each kind and way (see note())
_KIND_NOTES: Final = (
    "evidence: sent again, lost before the capture point",
    "evidence: sent again, lost after the capture point",
    "evidence: sent again, not needed",
    "evidence: a late original, reordered",
    "evidence: the same packet recorded twice",
    "retransmission or late original: cannot tell",
)
_WAY_NOTES: Final = (" (TSval)", " (IP ID)", " (re-sent bytes)", " (sender's own capture point)", "")


def note(code: int) -> str:
    """The timeline note for a ``LossFacts.decided`` value."""
    return _KIND_NOTES[code // WAYS] + _WAY_NOTES[code % WAYS]


def _ts_newer(a: int, b: int) -> bool:
    d = (a - b) & TS_MASK
    return 0 < d < TS_HALF


def _ipid_newer(a: int, b: int) -> bool:
    d = (a - b) & IPID_MASK
    return 0 < d < IPID_HALF


def _order(tsval: int, ip_id: int, other_tsval: int, other_ip_id: int) -> int:
    """1 if a packet was sent after another one, -1 if before, 0 if the evidence cannot tell
    (same TSval and IP ID: the same packet; or no evidence)."""
    if tsval >= 0 and other_tsval >= 0 and tsval != other_tsval:
        return 1 if _ts_newer(tsval, other_tsval) else -1
    if ip_id != other_ip_id and (ip_id or other_ip_id):
        return 1 if _ipid_newer(ip_id, other_ip_id) else -1
    return 0


def at_own_capture_point(ttl: int, sender_leg: float | None, other_leg: float | None) -> bool:
    """Is the capture taken on (or one link from) the host that sent this direction?

    Its segments carry an initial TTL (no router decremented it), and its handshake leg (capture
    point to it and back) is not the longer one. Nothing between a host and such a capture point
    can reorder its segments.
    """
    if ttl not in INITIAL_TTLS:
        return False
    return sender_leg is None or other_leg is None or sender_leg <= other_leg


@dataclass(slots=True)
class Resend:
    """A segment below the highest sequence, remembered for a later D-SACK or a later copy of it
    (offsets from the direction's first byte)."""

    start: int
    end: int
    kind: int
    tsval: int
    ip_id: int
    frame: int

    def __init__(self, start: int, end: int, kind: int, tsval: int, ip_id: int, frame: int) -> None:
        self.start = start
        self.end = end
        self.kind = kind
        self.tsval = tsval
        self.ip_id = ip_id
        self.frame = frame


@dataclass(slots=True)
class LossFacts:
    """One direction's segments below the highest sequence, decided from evidence.

    ``counts[k]`` and ``examples[k]`` by kind (UPSTREAM … UNDECIDED); ``ways[w]`` how many
    decisions each kind of evidence made (BY_TSVAL … BY_NOTHING).
    """

    counts: list[int]
    ways: list[int]
    examples: list[list[int]]
    dsacks: int  # D-SACK blocks the receiver sent about this direction's data
    gaps: int  # holes opened: data beyond the highest byte seen
    # running state (offsets are from the first data byte seen, unwrapped past 2^32)
    _hi_seq: int  # the highest sequence seen (seq + len), as on the wire
    _hi_off: int  # ... and as an offset
    _max_ts: int  # newest TSval seen in this direction (-1: none)
    _ipid_last: int  # IP ID of the last segment that advanced the highest sequence
    _ipid_max: int  # newest IP ID seen (modulo 2^16)
    _ipid_steps: int  # new segments whose IP ID stepped by 1..IPID_MAX_STEP
    _ipid_bad: int  # ... and by anything else
    _ranges: list[int]  # merged byte ranges seen, flat and sorted: [start0, end0, start1, end1, ...]
    _resends: list[Resend]
    _own: int  # the capture point is the sender's own (-1 not decided yet, 0 no, 1 yes)
    decided: dict[int, int]  # frame number -> kind * WAYS + way, for the timeline (MAX_DECIDED at most)

    def __init__(self) -> None:
        self.counts = _NO_COUNTS
        self.ways = _NO_WAYS
        self.examples = _NO_EXAMPLES
        self.dsacks = 0
        self.gaps = 0
        self._hi_seq = NONE
        self._hi_off = 0
        self._max_ts = -1
        self._ipid_last = NONE
        self._ipid_max = NONE
        self._ipid_steps = 0
        self._ipid_bad = 0
        self._ranges = []
        self._resends = _NO_RESENDS
        self._own = -1
        self.decided = _NO_DECISIONS

    # -- what the verdict reads

    @property
    def upstream(self) -> int:
        """Retransmissions filling holes the capture never saw: lost before the capture point."""
        return self.counts[UPSTREAM]

    @property
    def downstream(self) -> int:
        """Retransmissions of data seen passing the capture point: lost after it."""
        return self.counts[DOWNSTREAM]

    @property
    def spurious(self) -> int:
        """Retransmissions of data the receiver already had."""
        return self.counts[SPURIOUS]

    @property
    def reordered(self) -> int:
        """Originals that arrived after segments sent later."""
        return self.counts[REORDERED]

    @property
    def copies(self) -> int:
        """The same packet recorded twice."""
        return self.counts[COPY]

    @property
    def undecided(self) -> int:
        """Segments below the highest sequence that no evidence decides."""
        return self.counts[UNDECIDED]

    @property
    def lost(self) -> int:
        """Segments lost on the path (upstream or downstream) and sent again."""
        return self.counts[UPSTREAM] + self.counts[DOWNSTREAM]

    @property
    def retransmitted(self) -> int:
        """Segments sent again, needed or not."""
        return self.counts[UPSTREAM] + self.counts[DOWNSTREAM] + self.counts[SPURIOUS]

    def ipid_counter(self) -> bool:
        """Do this direction's IP IDs count up (a per-socket or per-host counter)?"""
        return self._ipid_steps >= IPID_MIN_STEPS and self._ipid_bad * IPID_BAD_RATIO <= self._ipid_steps

    def decided_by_evidence(self) -> bool:
        """Every decision rests on TSval, IP ID or overlapping bytes (none on position alone)."""
        return self.ways[BY_POSITION] == 0 and self.ways[BY_NOTHING] == 0

    # -- fed by the analysis engine

    def on_data(self, frame: int, seq: int, seglen: int, tsval: int, ip_id: int, peer_ack: int) -> int:
        """Place one data segment; returns its kind, or -1 when it is new data (at or above the highest)
        sent after everything seen before.

        ``tsval``: -1 without timestamps; ``peer_ack``: the last ACK the receiver sent (-1 none).
        Before a segment below the highest one, the caller says where the capture point is
        (:meth:`needs_position`, :meth:`set_position`).
        """
        if self._hi_seq == NONE:
            self._hi_seq = (seq + seglen) & MASK
            self._hi_off = seglen
            self._add_range(0, seglen)
            self._new_evidence(tsval, ip_id, True)
            return -1
        off = self._hi_off + seq_diff(seq, self._hi_seq)
        end = off + seglen
        if off >= self._hi_off:  # new data (a hole before it when beyond the highest)
            if off > self._hi_off:
                self.gaps += 1
            kind = -1
            newer, way = self._newer(tsval, ip_id)
            if newer == 0:
                # sent before a segment that arrived earlier (a retransmission passed it): late
                # too, though it leaves no hole in the sequence
                kind = REORDERED
                self._count(kind, way, frame)
            self._hi_seq = (seq + seglen) & MASK
            self._hi_off = end
            self._add_range(off, end)
            self._new_evidence(tsval, ip_id, kind == -1)
            return kind
        kind, way = self._decide(off, end, tsval, ip_id, peer_ack, self._own)
        self._count(kind, way, frame)
        if kind != COPY:
            if len(self._resends) >= MAX_RESENDS:
                del self._resends[: MAX_RESENDS // 2]
            self._resends.append(Resend(off, end, kind, tsval, ip_id, frame))
        if end > self._hi_off:  # a retransmission carrying new bytes too
            self._hi_seq = (seq + seglen) & MASK
            self._hi_off = end
        self._add_range(off, end)
        self._new_evidence(tsval, ip_id, False)
        return kind

    def _count(self, kind: int, way: int, frame: int) -> None:
        if self.counts is _NO_COUNTS:  # the first decision: lists of its own (see _NO_COUNTS)
            self.counts = [0] * KINDS
            self.ways = [0] * WAYS
            self.examples = [[] for _ in range(KINDS)]
            self.decided = {}
            self._resends = []
        self.counts[kind] += 1
        self.ways[way] += 1
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(frame)
        if len(self.decided) < MAX_DECIDED:
            self.decided[frame] = kind * WAYS + way

    def needs_position(self, seq: int) -> bool:
        """Would a segment at ``seq`` be below the highest one (so the capture point matters)?"""
        return self._own == -1 and self._hi_seq != NONE and seq_diff(seq, self._hi_seq) < 0

    def set_position(self, own: bool) -> None:
        """Record whether the capture point is the sender's own."""
        self._own = 1 if own else 0

    def on_dsack(self, left: int, right: int) -> None:
        """The receiver reports [left, right) arrived twice: a retransmission of it was not needed."""
        if self._hi_seq == NONE:
            return
        self.dsacks += 1
        start = self._hi_off + seq_diff(left, self._hi_seq)
        end = self._hi_off + seq_diff(right, self._hi_seq)
        resend = self._resend_over(start, end)
        if resend is not None:
            self._make_spurious(resend)

    def _resend_over(self, start: int, end: int) -> Resend | None:
        """The latest retransmission overlapping [start, end), if remembered."""
        for r in reversed(self._resends):
            if r.start < end and start < r.end:
                return r
        return None

    def _make_spurious(self, resend: Resend) -> None:
        if resend.kind == UPSTREAM or resend.kind == DOWNSTREAM:
            self.counts[resend.kind] -= 1
            self.counts[SPURIOUS] += 1
            examples = self.examples[resend.kind]
            if resend.frame in examples:
                examples.remove(resend.frame)
            if len(self.examples[SPURIOUS]) < MAX_EXAMPLES:
                self.examples[SPURIOUS].append(resend.frame)
                self.examples[SPURIOUS].sort()
            resend.kind = SPURIOUS
            way = self.decided.get(resend.frame, NONE)
            if way != NONE:
                self.decided[resend.frame] = SPURIOUS * WAYS + way % WAYS

    # -- inside

    def _decide(self, off: int, end: int, tsval: int, ip_id: int, peer_ack: int, own_capture: int) -> tuple[int, int]:
        seen = self._covered(off, end)
        if 0 < seen < end - off:
            # part seen, part not: only a sender re-packing data sends that
            return UPSTREAM, BY_OVERLAP
        if seen == 0:
            newer, way = self._newer(tsval, ip_id)
            if newer == 1:
                return (DOWNSTREAM if own_capture == 1 else UPSTREAM), way
            if newer == 0:
                return REORDERED, way
            if own_capture == 1:
                # the capture missed the original (capture drop) and the host sent it again
                return DOWNSTREAM, BY_POSITION
            return UNDECIDED, BY_NOTHING
        # every byte seen before: sent again, or the same packet recorded twice, or an original
        # arriving after its own retransmission
        newer, way = self._newer(tsval, ip_id)
        if newer == 0:
            earlier = self._resend_over(off, end)
            if earlier is not None:
                order = _order(tsval, ip_id, earlier.tsval, earlier.ip_id)
                if order < 0:
                    # the original of a retransmission that arrived first: both arrived, so
                    # nothing was lost, the retransmission was not needed and this one was late
                    self._make_spurious(earlier)
                    return REORDERED, way
                if order > 0:
                    # sent after a copy that had arrived (itself late): not needed
                    return SPURIOUS, way
            return COPY, way
        if newer == -1:
            if self._same_as_newest(tsval, ip_id):
                return COPY, BY_IPID
            if own_capture != 1:
                return UNDECIDED, BY_NOTHING
            way = BY_POSITION
        acked = peer_ack != NONE and self._hi_off + seq_diff(peer_ack, self._hi_seq) >= end
        return (SPURIOUS if acked else DOWNSTREAM), way

    def _newer(self, tsval: int, ip_id: int) -> tuple[int, int]:
        """(1 sent after everything seen before, 0 sent before some of it, -1 cannot tell; the evidence)."""
        if tsval >= 0 and self._max_ts >= 0:
            if _ts_newer(tsval, self._max_ts):
                return 1, BY_TSVAL
            if tsval != self._max_ts:
                return 0, BY_TSVAL
            # same clock tick (TSval counts ms on Linux): the IP ID may still tell
        if self._ipid_max != NONE and self.ipid_counter() and ip_id != self._ipid_max:
            return (1 if _ipid_newer(ip_id, self._ipid_max) else 0), BY_IPID
        return -1, BY_NOTHING

    def _same_as_newest(self, tsval: int, ip_id: int) -> bool:
        """The newest TSval and the newest IP ID of a counting sequence: the newest packet, again."""
        return self.ipid_counter() and ip_id == self._ipid_max and (tsval < 0 or tsval == self._max_ts)

    def _new_evidence(self, tsval: int, ip_id: int, advances: bool) -> None:
        if tsval >= 0 and (self._max_ts < 0 or _ts_newer(tsval, self._max_ts)):
            self._max_ts = tsval
        if advances:
            if self._ipid_last != NONE:
                step = (ip_id - self._ipid_last) & IPID_MASK
                if 1 <= step <= IPID_MAX_STEP:
                    self._ipid_steps += 1
                else:
                    self._ipid_bad += 1
            self._ipid_last = ip_id
        if self._ipid_max == NONE or _ipid_newer(ip_id, self._ipid_max):
            self._ipid_max = ip_id

    def _covered(self, start: int, end: int) -> int:
        """How many bytes of [start, end) the capture saw before."""
        r = self._ranges
        total = 0
        i = self._find(start)
        n = len(r)
        while i < n and r[i] < end:
            lo = r[i] if r[i] > start else start
            hi = r[i + 1] if r[i + 1] < end else end
            if hi > lo:
                total += hi - lo
            i += 2
        return total

    def _find(self, pos: int) -> int:
        """Index (even) of the first range ending after ``pos``."""
        r = self._ranges
        lo, hi = 0, len(r) // 2
        while lo < hi:
            mid = (lo + hi) // 2
            if r[2 * mid + 1] <= pos:
                lo = mid + 1
            else:
                hi = mid
        return 2 * lo

    def _add_range(self, start: int, end: int) -> None:
        """Merge [start, end) into the ranges seen."""
        r = self._ranges
        n = len(r)
        if n and r[n - 1] == start:  # the usual case: in order, right after the last range
            r[n - 1] = end
            return
        if not n or r[n - 1] < start:
            if n >= 2 * MAX_RANGES:  # forget the oldest holes
                del r[:MAX_RANGES]
            r.append(start)
            r.append(end)
            return
        i = self._find(start)
        if i > 0 and r[i - 1] == start:  # touches the range before it
            i -= 2
        j = i
        while j < n and r[j] <= end:  # ranges overlapping or touching [start, end)
            j += 2
        if j == i:
            r[i:i] = [start, end]
            return
        lo = r[i] if r[i] < start else start
        hi = r[j - 1] if r[j - 1] > end else end
        r[i:j] = [lo, hi]
