"""Per-packet annotations that need the whole connection (hindsight), in an engineer's words."""

from __future__ import annotations

from typing import Final

from synscope.core import fmt
from synscope.core.model import ACK, FIN, RST, SYN, TcpOptions
from synscope.read.analysis import flags as F
from synscope.read.analysis.engine import ConnAnalysis
from synscope.read.analysis.loss import note as loss_note
from synscope.read.tracker import C2S, Connection, Packet, stale_ack_reset

# Two gaps are "the same" when within this ratio; "doubled" when the ratio is 2 within it.
GAP_TOLERANCE: Final = 0.3


def backoff_pattern(times: list[float], linux_syn: bool = False) -> str:
    """Name the pattern of (re)transmission times: doubling, linear then doubling, constant.

    Linux doubles the SYN timeout from 1 s (1, 2, 4, 8 s) with
    ``tcp_syn_linear_timeouts=0``; newer kernels by default send the first
    retries 1 s apart, then double (1, 1, 1, 1, 2, 4 s). macOS has the same shape
    (1, 1, 1, 1, 1, 2, 4 s), so the schedule alone names no system: the kernel is named
    only when ``linux_syn`` says the SYN's options are laid out as Linux lays them out.
    """
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    if len(gaps) < 2:
        return ""
    same, doubled = _same_gap, _doubled_gap
    if all(doubled(a, b) for a, b in zip(gaps, gaps[1:], strict=False)):
        return "exponential backoff (each wait doubles)"
    i = 0
    while i + 1 < len(gaps) and same(gaps[i], gaps[i + 1]):
        i += 1
    if i + 1 == len(gaps):
        return f"retried every {fmt.short_gap(gaps[0])} s (linear timeouts)"
    if all(doubled(a, b) for a, b in zip(gaps[i:], gaps[i + 1 :], strict=False)):
        named = " (Linux linear SYN timeouts)" if linux_syn else ""
        return f"{i + 1} retries {fmt.short_gap(gaps[0])} s apart, then doubling{named}"
    return "irregular gaps (not a kernel's backoff: an application or middlebox retrying?)"


# Kinds of TCP options in the order Linux writes them in a SYN (tcp_options_write): MSS, then
# SACK-permitted and timestamps (or NOPs in their place), then NOP + window scale
_LINUX_SYN_LAYOUTS: Final = (
    (2, 4, 8, 1, 3),  # mss, sackOK, ts, nop, wscale
    (2, 1, 1, 8, 1, 3),  # mss, nop, nop, ts, nop, wscale (no SACK)
    (2, 1, 1, 4, 1, 3),  # mss, nop, nop, sackOK, nop, wscale (no timestamps)
    (2, 4, 8),  # mss, sackOK, ts (no window scaling)
    (2, 1, 1, 4),  # mss, nop, nop, sackOK
)


def linux_syn_layout(options: TcpOptions) -> bool:
    """True when a SYN's options are in one of Linux's layouts (other stacks order them differently)."""
    return options.kinds in _LINUX_SYN_LAYOUTS


def _same_gap(a: float, b: float) -> bool:
    return abs(a - b) <= GAP_TOLERANCE * max(a, b)


def _doubled_gap(a: float, b: float) -> bool:
    return abs(b - 2 * a) <= GAP_TOLERANCE * 2 * a


def gaps_text(times: list[float]) -> str:
    """``1, 2, 4 s`` from transmission times."""
    if len(times) < 2:
        return ""
    # (indexes, not zip() and a generator: compiled, this is a native loop; verdicts of retried
    # attempts call it once per connection)
    return ", ".join([fmt.short_gap(times[i + 1] - times[i]) for i in range(len(times) - 1)]) + " s"


def answer_note(delay: float) -> str:
    """The note on a SYN-ACK that answers the SYN ``delay`` seconds after it."""
    return f"server answers {fmt.duration(delay)} after the SYN"


def _remembered_answer_note(delay: float) -> str:
    """:func:`answer_note`, looked up by the delay: differences of capture times come in steps
    of the times' precision (about 0.24 µs in 2023), so a flood's SYN-ACKs share a few hundred.
    Numbers that compare equal have one text (0.0 and -0.0 both write 0 µs; NaN equals nothing)."""
    note = _ANSWER_NOTES.get(delay)
    if note is None:
        if len(_ANSWER_NOTES) >= MAX_ANSWER_NOTES:
            _ANSWER_NOTES.clear()
        note = _ANSWER_NOTES[delay] = answer_note(delay)
    return note


# answer_note's notes by delay (emptied when full)
_ANSWER_NOTES: Final[dict[float, str]] = {}
MAX_ANSWER_NOTES: Final = 4096


def annotate(conn: Connection, state: ConnAnalysis, host_ttl: int = 0) -> None:
    """Attach bracketed notes to the packets of a finished connection (``host_ttl``: the TTL
    of the server host's own SYN-ACKs elsewhere in the capture, 0 when unknown)."""
    c, s = conn.client, conn.server
    # per direction: SYNs seen so far, and when the last one was (a variable per direction, not a
    # list: compiled, they stay native)
    client_syns = server_syns = 0
    client_syn_ts = server_syn_ts = 0.0
    handshake_noted = False
    first_fin_dir: int | None = None
    # the last window each direction advertised (-1: none yet): a "keep-alive" sent into a zero
    # window is a zero-window probe (tshark labels Linux's probes keep_alive; its flag stays in JSON)
    # (a variable per direction, not a list: compiled, they stay native, where a list would hold
    # every packet's window as an object)
    client_win = server_win = -1
    # per direction: its receive window was last seen closed (zero) or filled by the peer; only the
    # window update that reopens it is worth a note (on a growing window every ACK is one; the
    # flag itself stays in JSON's "analysis", as tshark sets it)
    client_stalled = server_stalled = False
    stale = stale_ack_reset(conn)
    for pkt in conn.packets:
        seg = pkt.seg
        flags = seg.flags
        from_client = pkt.dir == C2S
        who = "client" if from_client else "server"
        other = "server" if from_client else "client"
        me = c if from_client else s
        if flags & SYN and conn.simultaneous_open and _open_note(conn, pkt, who, other):
            pass
        elif flags & SYN:
            n = client_syns if from_client else server_syns
            if n:
                kind = "SYN" if not flags & ACK else "SYN-ACK"
                gap = seg.ts - (client_syn_ts if from_client else server_syn_ts)
                pkt.note(
                    f"{kind} retransmission #{n}, +{fmt.duration(gap)} after #{n - 1 if n > 1 else 'original'}"
                    if n > 1
                    else f"{kind} retransmission #1, +{fmt.duration(gap)} after the original"
                )
            elif flags & ACK and conn.syn_ts is not None and seg.ts >= conn.syn_ts:
                pkt.note(_remembered_answer_note(seg.ts - conn.syn_ts))
            if from_client:
                client_syns = n + 1
                client_syn_ts = seg.ts
            else:
                server_syns = n + 1
                server_syn_ts = seg.ts
        elif (
            not handshake_noted
            and not conn.simultaneous_open
            and conn.handshake_ack_ts is not None
            and seg.ts == conn.handshake_ack_ts
            and pkt.dir == C2S
            and conn.syn_ts is not None
        ):
            handshake_noted = True
            rtt, server_leg, client_leg = conn.handshake_rtt, conn.server_leg, conn.client_leg
            if rtt is not None:
                legs = ""
                if server_leg is not None and client_leg is not None:
                    legs = f": {fmt.duration(server_leg)} to the server and back, {fmt.duration(client_leg)} to the client and back"
                pkt.note(f"handshake RTT {fmt.duration(rtt)}{legs}")
        if stale is not None and pkt is stale[0]:
            pkt.note("ACK for another connection's sequence numbers, not for this SYN: the server still holds an earlier attempt on these ports")
        elif stale is not None and pkt is stale[1]:
            pkt.note("RST from client: its kernel answers that ACK (seq = its ACK number), which clears the server's earlier attempt")
        elif flags & RST:
            if me.rst_ts is not None and seg.ts > me.rst_ts:
                # the socket is gone: the kernel answers each segment still in flight
                pkt.note(f"RST echo: {who}'s kernel answers a segment for the aborted connection")
            else:
                pkt.note(_rst_note(conn, pkt.dir, who, pkt.seg.ttl, host_ttl))
        if flags & FIN and me.fin_ts == seg.ts:
            if conn.simultaneous_close:
                pkt.note(f"FIN: {who} closes; crosses the {other}'s FIN (simultaneous close)")
            elif first_fin_dir is None:
                first_fin_dir = pkt.dir
                peer = s if pkt.dir == C2S else c
                if kept_sending(conn, pkt.dir, seg.ts):
                    pkt.note(f"FIN: {who} half-closes; the {other} keeps sending")
                elif peer.fin_seq is None and conn.one_sided():
                    # the other direction is not in the capture: its FIN may well have come
                    # (asymmetric-route.pcap: the server's last ACK covers the client's FIN)
                    pkt.note(f"FIN: {who} closes its side; the {other}'s direction is not in the capture")
                elif peer.fin_seq is None:
                    pkt.note(f"FIN: {who} closes its side; no FIN back from the {other}")
                else:
                    pkt.note(f"FIN: {who} closes first")
            else:
                pkt.note(f"FIN: {who} closes too")
        bits = pkt.analysis
        if bits:
            if bits & F.A_WINDOW_FULL:  # the peer filled this sender's window
                if from_client:
                    server_stalled = True
                else:
                    client_stalled = True
            _flag_notes(pkt, who, (server_win if from_client else client_win) == 0, client_stalled if from_client else server_stalled)
        if bits & F.A_ZERO_WINDOW:
            if from_client:
                client_stalled = True
            else:
                server_stalled = True
        elif seg.win and not flags & (SYN | RST) and flags & ACK:
            if from_client:
                client_stalled = False
            else:
                server_stalled = False
        if seg.length:
            decided = state.loss[pkt.dir].decided
            if decided:
                code = decided.get(seg.frame, -1)
                if code >= 0:
                    pkt.note(loss_note(code))
        if not flags & (SYN | RST):
            if from_client:
                client_win = seg.win
            else:
                server_win = seg.win


def _open_note(conn: Connection, pkt: Packet, who: str, other: str) -> bool:
    """Notes on the SYNs of a simultaneous open; False for a SYN that is just a retransmission."""
    me = conn.client if pkt.dir == C2S else conn.server
    if pkt.seg.flags & ACK:
        if me.open_answer is pkt:
            pkt.note(f"SYN-ACK: the {who} answers the {other}'s SYN with its own ISN (simultaneous open)")
            return True
        return False
    if me is conn.server and me.syn_times and me.syn_times[0] == pkt.seg.ts:
        pkt.note(f"SYN from the {who} too: the two SYNs crossed, both sides opened (simultaneous open)")
        return True
    return False


def _rst_note(conn: Connection, direction: int, who: str, rst_ttl: int = 0, host_ttl: int = 0) -> str:
    if direction == 1 and not conn.established and conn.server.syn_count == 0:
        if rst_ttl > 0 and host_ttl > 0 and rst_ttl != host_ttl:  # (verdict._reset_by_path)
            return f"RST in the server's name, TTL {rst_ttl} (the server's own: {host_ttl}): from a box on the path"
        return f"RST from server: no listener on port {conn.server.port}"
    if direction == C2S and not conn.established and conn.server.syn_count:
        return "RST from client: handshake abandoned after the SYN-ACK"
    if not conn.established and direction == C2S:
        return "RST from client: attempt cancelled"
    return f"RST from {who}: connection aborted"


def data_after(conn: Connection, direction: int, ts: float) -> list[Packet]:
    """Data segments (keep-alive bytes aside) the other side sent after ``ts``."""
    return [pkt for pkt in conn.packets if pkt.dir != direction and pkt.seg.ts > ts and pkt.seg.length > 0 and not pkt.analysis & F.A_KEEP_ALIVE]


def kept_sending(conn: Connection, direction: int, fin_ts: float) -> list[Packet]:
    """The other side's data after a FIN from ``direction`` when it *kept sending* (a half-close
    worth a word): more than one data segment (retransmissions of one count once). One answer and
    then the other side's FIN is how an upload or a request ends (shutdown(SHUT_WR) marks the end
    of the data, the answer follows): [] then (loss-upload.pcap)."""
    after = data_after(conn, direction, fin_ts)
    return after if len({pkt.seg.seq for pkt in after}) > 1 else []


def _flag_notes(pkt: Packet, who: str, into_zero_window: bool = False, reopens: bool = False) -> None:
    """Notes for tshark's analysis flags; a window update only when it ``reopens`` a window that
    was zero or full."""
    bits = pkt.analysis
    if not bits:
        return
    flags = pkt.seg.flags
    if bits & F.A_REUSED_PORTS:
        pkt.note("4-tuple reused: a new connection on the same ports")
    if bits & (F.A_RETRANSMISSION | F.A_FAST_RETRANSMISSION | F.A_SPURIOUS_RETRANSMISSION) and not flags & SYN:
        kind = (
            "fast retransmission"
            if bits & F.A_FAST_RETRANSMISSION
            else "spurious retransmission: already acked"
            if bits & F.A_SPURIOUS_RETRANSMISSION
            else "retransmission"
        )
        if pkt.rto is not None:
            kind += f", +{fmt.duration(pkt.rto)} after the original"
        pkt.note(kind)
    if bits & F.A_OUT_OF_ORDER:
        pkt.note("out of order")
    if bits & F.A_LOST_SEGMENT:
        pkt.note("previous segment not captured")
    if bits & F.A_ACK_LOST_SEGMENT:
        pkt.note("ACKs a segment the capture did not see")
    if bits & F.A_DUPLICATE_ACK:
        pkt.note(f"dup ACK #{pkt.dupack_num} of frame {pkt.dupack_frame}")
    if bits & F.A_ZERO_WINDOW:
        pkt.note(f"zero window: {who} cannot take more data")
    if bits & F.A_ZERO_WINDOW_PROBE:
        pkt.note("zero-window probe")
    if bits & F.A_ZERO_WINDOW_PROBE_ACK:
        pkt.note("zero-window probe ACK")
    if bits & F.A_WINDOW_FULL:
        pkt.note("window full")
    if bits & F.A_WINDOW_UPDATE and reopens:
        pkt.note("window update")
    if bits & F.A_KEEP_ALIVE:
        pkt.note("zero-window probe" if into_zero_window else "keep-alive")
    if bits & F.A_KEEP_ALIVE_ACK:
        pkt.note("keep-alive ACK")
