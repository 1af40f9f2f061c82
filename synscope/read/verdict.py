"""Outcome, Zeek conn_state and history, and a plain-English verdict per connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_endpoint, fmt_ip
from synscope.core.icmp import FILTER_REASONS, icmp_label
from synscope.core.model import ACK, AE, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment
from synscope.core.seqnum import MASK, seq_ge
from synscope.read.analysis import flags as F
from synscope.read.analysis.annotate import backoff_pattern, data_after, gaps_text, kept_sending, linux_syn_layout
from synscope.read.analysis.ecn import ACCECN, DECLINED, NEGOTIATED, NONSTANDARD, REFLECTED, REQUESTED, UNKNOWN, in_use, negotiation
from synscope.read.analysis.engine import ConnAnalysis, DirectionFacts
from synscope.read.analysis.loss import BY_IPID, BY_OVERLAP, BY_POSITION, BY_TSVAL, COPY, DOWNSTREAM, REORDERED, SPURIOUS, UNDECIDED, UPSTREAM, LossFacts
from synscope.read.evidence import CERTAIN, LIKELY, POSSIBLE, Evidence, hedge
from synscope.read.tracker import C2S, Connection, Packet, stale_ack_reset
from synscope.read.zeek_state import INACTIVE as Z_INACTIVE
from synscope.read.zeek_state import PARTIAL as Z_PARTIAL
from synscope.read.zeek_state import RESET as Z_RESET
from synscope.read.zeek_state import ZeekWalk, walk, zeek_conn_state

# Retransmission rate above which loss on the path is the headline
LOSS_RATE_ALERT: Final = 0.01
# Zero-window spans shorter than this are normal flow control, not a stalled reader
ZERO_WINDOW_ALERT: Final = 0.2
# Outcomes that count as "ended well" (not expanded by default)
GOOD_OUTCOMES: Final = frozenset({"closed", "established", "half-closed"})
# Common initial TTLs, to turn a received TTL into a hop count
INITIAL_TTLS: Final = (64, 128, 255)
# A SYN not answered is sent again after about 1 s (Linux's and RFC 6298's initial RTO): a capture
# that ends sooner after the last SYN, with no retransmission seen, cannot tell silence from a slow answer
SYN_RTO_INITIAL: Final = 1.0
# A failed ARP / neighbour discovery lookup answers with host-unreachable only after its probes
# (3 of them, 1 s apart, on Linux): an ICMP host-unreachable sooner than this after the first SYN
# comes from a reject rule or a route, not from a host that does not answer ARP
NEIGH_FAILURE_MIN: Final = 2.5
# What a connection captured with only SYN, FIN, RST and ICMP (watch --handshakes) cannot show
COUNTS_ONLY_NOTE: Final = "handshakes mode: only SYN, FIN, RST and ICMP were captured, so data, plain ACKs and data loss are not seen"
# How many frame numbers of one kind an evidence fact lists (the first ones)
EVIDENCE_FRAMES: Final = 8


@dataclass(slots=True)
class Verdict:
    """What happened to one connection, for people and for scripts."""

    outcome: str  # one word or hyphenated phrase (JSON "outcome")
    conn_state: str  # Zeek conn_state
    history: str  # Zeek history string
    summary: str  # short note for the summary table
    explanation: str  # two or three sentences
    next_step: str  # what to check next ("" when nothing to do)
    ok: bool  # ended well: not expanded by default
    side: str = ""  # client | server | path | capture | ""
    rule: str = ""  # the named rule that decided the cause (JSON "rule")
    confidence: str = CERTAIN  # certain | likely | possible (see synscope.read.evidence)
    evidence: tuple[Evidence, ...] = ()  # the facts the cause rests on, with frame numbers

    # Written out (dataclass keeps it): one per connection, and the generated one runs as Python bytecode
    def __init__(
        self,
        outcome: str,
        conn_state: str,
        history: str,
        summary: str,
        explanation: str,
        next_step: str,
        ok: bool,
        side: str = "",
        rule: str = "",
        confidence: str = CERTAIN,
        evidence: tuple[Evidence, ...] = (),
    ) -> None:
        self.outcome = outcome
        self.conn_state = conn_state
        self.history = history
        self.summary = summary
        self.explanation = explanation
        self.next_step = next_step
        self.ok = ok
        self.side = side
        self.rule = rule
        self.confidence = confidence
        self.evidence = evidence


def hops(ttl: int | None) -> int | None:
    """Hops a packet travelled, guessed from its TTL and the usual initial values."""
    if ttl is None or ttl <= 0:
        return None
    for initial in INITIAL_TTLS:
        if ttl <= initial:
            return initial - ttl
    return None


def _frames(conn: Connection, d: int, want: int, without: int = 0) -> tuple[int, ...]:
    """Frame numbers of the packets in direction ``d`` with all of ``want`` set and none of ``without``."""
    out = [p.seg.frame for p in conn.packets if p.dir == d and p.seg.flags & want == want and not p.seg.flags & without]
    return tuple(out[:EVIDENCE_FRAMES])


def _syn_evidence(conn: Connection) -> Evidence:
    """The client's SYN(s), as one fact."""
    frames = _frames(conn, C2S, SYN, ACK)
    n = conn.client.syn_count
    return Evidence("SYN" if n <= 1 else f"{n} SYNs", frames)


def _rst_evidence(conn: Connection, by_client: bool) -> Evidence:
    """The first RST of one side."""
    side = conn.client if by_client else conn.server
    return Evidence(f"RST from the {'client' if by_client else 'server'}", (side.rst_frame,) if side.rst_frame else ())


def _fin_evidence(conn: Connection) -> tuple[Evidence, ...]:
    """Each side's FIN(s)."""
    out = []
    for d, who in ((C2S, "client"), (1, "server")):
        frames = _frames(conn, d, FIN)
        if frames:
            out.append(Evidence(f"FIN from the {who}", frames))
    return tuple(out)


def capture_quiet_after(conn: Connection, ts: float | None) -> float | None:
    """How long the capture ran on after ``ts`` (the capture clock when the connection was handed
    on); None when unknown, or when a new connection on the same ports ended this record (then the
    capture went on: see :func:`superseded_after`)."""
    if ts is None or conn.retire_clock <= 0.0 or conn.superseded_frame:
        return None
    return max(conn.retire_clock - ts, 0.0)


def superseded_after(conn: Connection, ts: float | None) -> float | None:
    """How long after ``ts`` a SYN with another ISN on the same ports started a new connection
    (None: none did)."""
    if ts is None or not conn.superseded_frame:
        return None
    return max(conn.superseded_at - ts, 0.0)


def _superseded_evidence(conn: Connection, after: float) -> Evidence:
    """The SYN that started the next connection on these ports."""
    return Evidence(f"SYN with another sequence number on the same ports {fmt.duration(after)} later (a new connection)", (conn.superseded_frame,))


def conn_state(conn: Connection, zeek: ZeekWalk | None = None) -> str:
    """Zeek's conn_state code, from Zeek's endpoint states after each packet (see zeek_state)."""
    w = zeek if zeek is not None else walk(conn, gaps=False)
    orig, resp = w.orig, w.resp
    # (the history is needed only to tell RSTOS0 from OTH)
    hist = history(conn, w) if orig.state == Z_RESET and resp.state in (Z_INACTIVE, Z_PARTIAL) else ""
    return zeek_conn_state(orig, resp, conn.client.bytes, conn.server.bytes, hist)


# history letters that repeat logarithmically (1st, 10th, 100th ...)
_LOG_LETTERS: Final = "tgw"
# _History.seen of a letter written without a sequence number (sequence numbers are 0 .. 2**32 - 1)
_NO_SEQ: Final = -1
# the originator's letter of each history letter
_CAPITALS: Final = {letter: letter.upper() for letter in "abcdefghijklmnopqrstuvwxyz"}


class _History:
    """Zeek's rules for adding a letter to a history string."""

    def __init__(self) -> None:
        self.out: list[str] = []
        # per letter as written (case gives the direction): for "adiqr" that it was written, for
        # "fhs" the sequence number it was last written with (_NO_SEQ: none), for "tgw" how often
        # it came. One dict, not a set and two (each letter is in one group): a history is made
        # for every connection, most of them a letter or two long
        self.seen: dict[str, int] = {}

    def add(self, letter: str, d: int, seq: int = _NO_SEQ) -> None:
        # (the capital looked up, and the number a plain int: compiled, upper() is a method call,
        # and an int that may be None is a Python object, made anew for each sequence number)
        ch = _CAPITALS[letter] if d == C2S else letter
        seen = self.seen
        if letter in "adiqr":  # r: an abort's echo RSTs (other seq) add no letter (Zeek: once)
            if ch in seen:
                return
            seen[ch] = 0
        elif letter in "fhs":
            last = seen.get(ch)
            if last is not None and last == seq:
                return
            seen[ch] = seq
        elif letter in _LOG_LETTERS:
            n = seen.get(ch, 0) + 1
            seen[ch] = n
            if n not in (1, 10, 100, 1000, 10000, 100000):
                return
        self.out.append(ch)


def history(conn: Connection, zeek: ZeekWalk | None = None) -> str:
    """Zeek's history string: upper case for the originator, lower for the responder.

    ``g``/``G`` are Zeek's content gaps (data the peer acknowledged that the capture never
    showed, with both endpoints established or cleanly closing: ``zeek_state.walk``), added
    after the letters of the acknowledging packet, 1st, 10th, 100th... time."""
    w = zeek if zeek is not None and zeek.with_gaps else walk(conn)
    gaps: dict[int, list[int]] | None = None  # (most connections: no gap, no dict)
    for index, d in w.gaps:
        if gaps is None:
            gaps = {}
        gaps.setdefault(index, []).append(d)
    h = _History()
    out = h.out
    # Zeek flips a connection whose first packet is not a SYN (a SYN-ACK, or mid-stream) from a
    # likely server port, and the flip writes "^" (Connection::FlipRoles, AddHistory('^');
    # TCPAnalyzer::WantConnection decides): here, when synscope made the first packet's
    # receiver the client (docs/zeek.md: where the two port guesses differ)
    first = conn.packets[0] if conn.packets else None
    if first is not None and first.dir != C2S and (conn.roles_guessed or first.seg.flags & (SYN | ACK) == SYN | ACK):
        out.append("^")
    for index, pkt in enumerate(conn.packets):
        seg = pkt.seg
        fl = seg.flags
        d = pkt.dir
        if fl & SYN:
            if fl & (FIN | RST):
                h.add("q", d)
            h.add("h" if fl & ACK else "s", d, seg.seq)
        if fl & FIN:
            h.add("f", d, seg.seq)
        if fl & RST:
            h.add("r", d, seg.seq)
        if fl & ACK and not seg.length and not fl & (SYN | FIN | RST):
            h.add("a", d)
        if seg.length:
            h.add("d", d)
        if pkt.analysis & (F.A_RETRANSMISSION | F.A_FAST_RETRANSMISSION | F.A_SPURIOUS_RETRANSMISSION) and seg.length:
            h.add("t", d)
        if pkt.analysis & F.A_ZERO_WINDOW:
            h.add("w", d)
        if gaps is not None and index in gaps:
            for gd in gaps[index]:
                h.add("g", gd)
    return "".join(out)


def _half_close(conn: Connection) -> str:
    """A sentence when one side sent FIN and the other kept sending data for a while.

    One answer after the FIN and then the other side's FIN is how an upload ends, not worth a
    sentence (see annotate.kept_sending: loss-upload.pcap's sink answers 3 B and closes 35 us later;
    half-close.pcap's server sends 11 segments over 1 s)."""
    for me, who, other, d in ((conn.client, "client", "server", C2S), (conn.server, "server", "client", 1)):
        if me.fin_ts is None:
            continue
        peer = conn.server if me is conn.client else conn.client
        if peer.fin_ts is not None and peer.fin_ts < me.fin_ts:
            continue
        after = kept_sending(conn, d, me.fin_ts)
        if after:
            sent = sum(p.seg.length for p in after)
            span = (peer.fin_ts or after[-1].seg.ts) - me.fin_ts
            return (
                f"The {who} half-closed (shut down its sending side with FIN) and the {other} kept sending"
                f" {fmt.size(sent)} for {fmt.duration(span)} before closing its side: a deliberate half-close."
            )
    return ""


def _after_fin(conn: Connection, fin_ts: float | None, d: int, who: str, other: str) -> str:
    """How the half-closed verdict's sentence ends: what the other side sent after the FIN of
    direction ``d``. Kept sending (annotate.kept_sending, the one definition the close branch uses)
    is a half-close; one answer is the answer to what the FIN ended (half-close-open.pcap)."""
    if fin_ts is None:
        return "."
    after = data_after(conn, d, fin_ts)
    if not after:
        return "."
    sent = sum(p.seg.length for p in after)
    if kept_sending(conn, d, fin_ts):
        span = after[-1].seg.ts - fin_ts
        segs = len({p.seg.seq for p in after})
        return f", and kept sending data after it: {fmt.size(sent)} in {segs} segments over {fmt.duration(span)} (a half-close)."
    return (
        f", and answered once after it ({fmt.size(sent)}): the FIN marked the end of the {who}'s data and the answer"
        f" followed (how a request or an upload ends, not a half-close kept in use); the capture ends before the {other}'s FIN."
    )


def _server_addr(conn: Connection) -> str:
    return fmt_ip(conn.server.ip)


class _Cause:
    """What one branch of :func:`judge` decided: the words, the rule and how sure it is (and, for
    the branches that decide them, whether it ended well and on which side)."""

    __slots__ = ("outcome", "summary", "explanation", "next_step", "rule", "confidence", "evidence", "ok", "side")

    def __init__(
        self,
        outcome: str,
        summary: str,
        explanation: str,
        next_step: str,
        rule: str,
        confidence: str,
        evidence: tuple[Evidence, ...],
        ok: bool = False,
        side: str = "",
    ) -> None:
        self.outcome = outcome
        self.summary = summary
        self.explanation = explanation
        self.next_step = next_step
        self.rule = rule
        self.confidence = confidence
        self.evidence = evidence
        self.ok = ok
        self.side = side


def _icmp_where(conn: Connection) -> str:
    """Where the ICMP error came from, as words: the server itself, or a box some hops from the capture."""
    err = conn.icmp[-1]
    router = fmt_ip(err.router)
    if err.router == conn.server.ip:
        return f"on the server {router} itself"
    router_hops = hops(err.ttl)
    if router_hops is not None:
        return f"at {router}, {router_hops + 1} hop{'s' if router_hops else ''} from the capture point"
    return f"at {router}"


def _icmp_delay(conn: Connection) -> float | None:
    """Time from the attempt's first SYN to the ICMP error (None without a SYN before it)."""
    err = conn.icmp[-1]
    times = conn.client.syn_times
    if not times or err.ts < times[0]:
        return None
    return err.ts - times[0]


def _icmp_sentence(conn: Connection) -> _Cause:
    """The verdict of an attempt killed by ICMP: who sent the error, and what that kind of error means."""
    err = conn.icmp[-1]
    reason = err.name
    router = fmt_ip(err.router)
    label = icmp_label(err.version, err.type, err.code)
    server = _server_addr(conn)
    port = conn.server.port
    where = _icmp_where(conn)
    on_server = err.router == conn.server.ip
    delay = _icmp_delay(conn)
    first = "first SYN" if conn.client.syn_count > 1 else "SYN"
    after = f" {fmt.duration(delay)} after the {first}" if delay is not None else ""
    later = f", {fmt.duration(delay)} later" if delay is not None else ""
    evidence = (_syn_evidence(conn), Evidence(f"{label} from {router} quoting it{later}", (err.frame,)))
    box = f"the server {server}" if on_server else router
    if reason in FILTER_REASONS:
        return _Cause(
            "icmp-prohibited",
            f"{reason} ({label}) from {router}",
            f"A filter {where} rejected the SYN to {server}:{port} with {label} ({reason}): "
            + ("the server's own firewall refused it" if on_server else "the packet never reached the server")
            + ", and the filter said so instead of dropping it silently.",
            f"Check the firewall / ACL on {box} for a reject rule covering port {port} (nft list ruleset, iptables -S).",
            "icmp-filter",
            CERTAIN,
            evidence,
        )
    if reason == "time-exceeded":
        return _Cause(
            "icmp-time-exceeded",
            f"TTL expired at {router}",
            f"The SYN's TTL ran out {where} before it reached {server}. {hedge(LIKELY)}a routing loop or too many hops.",
            f"Run traceroute -T -p {port} {server} and look for a loop.",
            "icmp-time-exceeded",
            LIKELY,
            evidence,
        )
    if reason == "port-unreach":
        # a TCP stack answers a SYN to a closed port with RST; port-unreachable for TCP is a reject
        # rule's default answer (iptables -j REJECT, nft reject)
        return _Cause(
            "icmp-rejected",
            f"port-unreach ({label}) from {router}: reject rule",
            f"{router} answered the SYN to {server}:{port} with {label} (port-unreach){after}. A TCP stack answers a closed"
            f" port with RST, not ICMP: port-unreachable for TCP is what a reject rule sends (iptables -j REJECT, nft reject)."
            f" {hedge(LIKELY)}a reject rule {where}" + (", in front of the service." if on_server else "; the SYN did not reach the server."),
            f"Look for a reject rule on {box} covering port {port}: nft list ruleset | grep -n reject; iptables -S | grep REJECT.",
            "icmp-port-unreach-reject",
            LIKELY,
            evidence,
        )
    if reason in ("host-unreach", "net-unreach"):
        return _host_unreach(conn, evidence, where, box, after, delay)
    if reason in ("frag-needed", "packet-too-big"):
        return _Cause(
            "icmp-unreachable",
            f"{reason} ({label}) from {router}",
            f"{router} answered the SYN to {server}:{port} with {label} ({reason}): the packet is larger than the path allows (MTU {err.mtu}).",
            f"Check the MTU towards {server} on {router} (ip route get {server}; ip link).",
            "icmp-too-big",
            CERTAIN,
            evidence,
        )
    return _Cause(
        "icmp-unreachable",
        f"{reason} ({label}) from {router}",
        f"{router} answered the SYN to {server}:{port} with {label} ({reason}): delivery failed on the way.",
        f"Check routing towards {server} on {router} (ip route get {server}) and whether the server is up.",
        "icmp-unreachable",
        LIKELY,
        evidence,
    )


def _host_unreach(conn: Connection, evidence: tuple[Evidence, ...], where: str, box: str, after: str, delay: float | None) -> _Cause:
    """Host- or net-unreachable: a failed ARP/ND lookup takes seconds; an error within moments is a rule or a route."""
    err = conn.icmp[-1]
    reason = err.name
    router = fmt_ip(err.router)
    label = icmp_label(err.version, err.type, err.code)
    server = _server_addr(conn)
    port = conn.server.port
    head = f"{router} answered the SYN to {server}:{port} with {label} ({reason}){after}."
    kind = reason.split("-")[0]  # host | net
    summary = f"{reason} ({label}) from {router}"
    if delay is not None and delay < NEIGH_FAILURE_MIN and err.router == conn.server.ip:
        # a host does not answer a SYN to its own address with host-unreachable unless told to
        return _Cause(
            "icmp-rejected",
            summary + ": reject rule on the server",
            head + f" That is too soon for a failed ARP/neighbour lookup (it takes about 3 s), and it came from the"
            f" server's own address. {hedge(LIKELY)}a reject rule {where} (nft reject with icmp type {kind}-unreachable,"
            f" iptables -j REJECT --reject-with icmp-{kind}-unreachable), in front of the service.",
            f"On {server}: nft list ruleset | grep -n reject; iptables -S | grep REJECT.",
            "icmp-unreach-from-server",
            LIKELY,
            evidence,
        )
    if delay is not None and delay < NEIGH_FAILURE_MIN:
        return _Cause(
            "icmp-unreachable",
            summary,
            head + f" That is too soon for a failed ARP/neighbour lookup (it takes about 3 s)."
            f" {hedge(POSSIBLE)}a reject rule {where}"
            f" (nft reject with icmp type {'host' if reason == 'host-unreach' else 'net'}-unreachable), or no route"
            f" (or an unreachable/prohibit route) towards {server} there.",
            f"On {box}: nft list ruleset | grep -n reject; ip route get {server}.",
            "icmp-unreach-immediate",
            POSSIBLE,
            evidence,
        )
    if delay is not None:
        return _Cause(
            "icmp-unreachable",
            summary,
            head + f" That is the time a failed ARP/neighbour lookup takes. {hedge(LIKELY)}{router} got no ARP/ND answer from"
            f" {server if reason == 'host-unreach' else 'the next hop'}: the host is down or not on that link.",
            f"Check that {server} is up and on the link of {router}: ip neigh show {server} on {router}.",
            "icmp-unreach-neigh-failed",
            LIKELY,
            evidence,
        )
    return _Cause(
        "icmp-unreachable",
        summary,
        head + f" {hedge(POSSIBLE)}no route towards {server} at {router}, a reject rule, or a failed ARP/ND lookup for the server.",
        f"Check routing towards {server} on {router} (ip route get {server}) and whether the server is up.",
        "icmp-unreachable",
        POSSIBLE,
        evidence,
    )


def _loss_text(f: DirectionFacts, lf: LossFacts, who: str) -> str:
    """How many of a direction's segments were lost and sent again, and what shows it."""
    lost = lf.lost
    rate = lost / f.data_segments if f.data_segments else 0.0
    return f"{fmt.percent(rate)} of the {who}'s data segments were lost and sent again ({lost} of {f.data_segments}, shown by {_ways_text(lf, who)})"


def _ways_text(lf: LossFacts, who: str) -> str:
    """The evidence that decided a direction's segments, in words."""
    words = []
    if lf.ways[BY_TSVAL]:
        words.append("their TCP timestamps")
    if lf.ways[BY_IPID]:
        words.append("their IP IDs")
    if lf.ways[BY_OVERLAP]:
        words.append("re-sent bytes")
    if lf.ways[BY_POSITION]:
        words.append(f"the capture being on the {who} itself, which sees its segments in the order they were sent")
    return " and ".join(words) if words else "nothing"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def judge(
    conn: Connection,
    state: ConnAnalysis,
    idle_timeout: float | None = None,
    host_up: bool = False,
    scan: bool = False,
    host_synack: tuple[int, int] = (0, 0),
    idle_option: str = "--idle-timeout",
) -> Verdict:
    """Decide the outcome and word the verdict for one connection.

    ``idle_timeout``: the tracker's (a live source, or ``read --split-idle``); a connection it
    handed on for silence (``conn.timed_out``) is worded as idle rather than as open at the end of
    the capture, and one it opened after that silence (``conn.idle_split``) says it continues
    another record. ``idle_option``: the option that set it, as the notes name it.
    ``state.counts_only``: only SYN/FIN/RST were captured (``watch --handshakes``): no byte counts.
    ``host_up``: the server's host answered on another port in the same run (``probe``): silence
    then cannot mean the host is down. ``scan``: the connection is part of a port scan
    (``synscope.read.scans``): a lone ACK answered by RST is a scanner's probe, not a connection.
    """
    c, s = conn.client, conn.server
    zeek = walk(conn)  # (one pass for both)
    code = cs = conn_state(conn, zeek)
    stale = stale_ack_reset(conn)
    if stale is not None and cs == "RSTO":
        # Zeek's code keeps the RST; the verdict reads the connection without it: the client's RST
        # answered an ACK for an earlier attempt before this one opened (see stale_ack_reset)
        cs = _code_without_stale_reset(conn)
    hist = history(conn, zeek)
    server = _server_addr(conn)
    port = s.port
    fc, fs = state.facts
    syn_times = c.syn_times
    handshake_rtt = conn.handshake_rtt
    notes: list[str] = []
    side = ""
    next_step = ""
    ok = False
    rule = ""
    confidence = CERTAIN
    evidence: tuple[Evidence, ...] = ()

    case = _state_machine_case(conn, state, cs)
    if case is not None:
        outcome, summary, explanation, next_step, side, ok = case.outcome, case.summary, case.explanation, case.next_step, case.side, case.ok
        rule, confidence, evidence = case.rule, case.confidence, case.evidence
    elif conn.midstream and _probe_kind(conn, scan):
        cause = _probe(conn, _probe_kind(conn, scan), scan)
        outcome, summary, explanation, next_step = cause.outcome, cause.summary, cause.explanation, cause.next_step
        rule, confidence, evidence = cause.rule, cause.confidence, cause.evidence
        side = "client"
    elif conn.one_sided():
        outcome, summary, explanation, next_step = _one_sided_sentence(conn)
        side = "capture"
        rule = "one-sided-capture"
        evidence = (Evidence("ACKs for segments in a direction the capture never saw", _frames(conn, C2S if c.packets else 1, ACK)[:3]),)
    elif conn.icmp and not conn.established and s.syn_count == 0:
        cause = _icmp_sentence(conn)
        outcome, summary, explanation, next_step = cause.outcome, cause.summary, cause.explanation, cause.next_step
        rule, confidence, evidence = cause.rule, cause.confidence, cause.evidence
        side = "server" if conn.icmp[-1].router == s.ip else "path"
    elif cs == "REJ" and (path_reset := _reset_by_path(conn, host_synack)) is not None:
        outcome, summary, explanation, next_step = path_reset.outcome, path_reset.summary, path_reset.explanation, path_reset.next_step
        rule, confidence, evidence = path_reset.rule, path_reset.confidence, path_reset.evidence
        side = "path"
    elif cs == "REJ":
        outcome = "refused"
        delay = _server_rst_delay(conn)
        summary = f"RST from server {fmt.duration(delay)} after SYN" if delay is not None else "RST from server"
        tries = f" (all {c.syn_count} SYNs)" if c.syn_count > 1 else ""
        explanation = (
            f"Server {server} answered the SYN{tries} with RST"
            f"{' after ' + fmt.duration(delay) if delay is not None else ''}: "
            f"the host is reachable, but nothing listens on port {port}"
            " (or a firewall on the way sends resets for it)."
        )
        next_step = f"Check the service is running and bound to this address: ss -lntp | grep :{port} on {server}."
        side = "server"
        rule = "refused"
        evidence = (_syn_evidence(conn), _rst_evidence(conn, by_client=False))
    elif cs == "RSTOS0" and not conn.icmp and _self_abort_delay(conn) is not None:
        # the client reset its own attempt before any retransmission timer could fire: nothing
        # here says the server is unreachable
        delay = _self_abort_delay(conn) or 0.0
        outcome = "abandoned"
        summary = f"client reset its own SYN after {fmt.duration(delay)}"
        explanation = (
            f"The client sent RST {fmt.duration(delay)} after its SYN, before any retransmission was due"
            f" (the first one comes after {fmt.short_gap(SYN_RTO_INITIAL)} s or more), and nothing came back from {server} in between."
            " The client gave up by itself: an application that cancelled its connect (its own short timeout, a"
            " happy-eyeballs race won by another address) or a scanner. The capture cannot tell whether the server would have answered."
        )
        next_step = "Check the client application's connect timeout and its logs; test the port again with a longer wait (nc -vz -w 5)."
        side = "client"
        rule, confidence = "client-abandoned-syn", LIKELY
        evidence = (Evidence("client RST before the first SYN retransmission was due", (*_frames(conn, C2S, SYN, ACK), *_frames(conn, C2S, RST))[:4]),)
    elif cs in ("S0", "SH", "RSTOS0") and not conn.icmp:
        cause = _no_answer(conn, cs, server, host_up)
        outcome, summary, explanation, next_step = cause.outcome, cause.summary, cause.explanation, cause.next_step
        rule, confidence, evidence = cause.rule, cause.confidence, cause.evidence
        side = "capture" if rule == "capture-ends-after-syn" else "path"
    elif cs in ("RSTO", "RSTR", "RSTRH"):
        by_client = cs == "RSTO"
        outcome = "reset-by-client" if by_client else "reset-by-server"
        who = "client" if by_client else "server"
        other = "server" if by_client else "client"
        rst_ts = c.rst_ts if by_client else s.rst_ts
        after = fmt.duration((rst_ts or conn.last_ts) - conn.first_ts)
        moved = fc.payload_bytes + fs.payload_bytes
        if not conn.established or (s.syn_count and conn.handshake_ack_ts is None and not conn.midstream):
            if by_client:
                summary = "client reset the half-open handshake"
                explanation = (
                    "The server answered with SYN-ACK, then the client sent RST instead of completing the handshake"
                    " (a port scanner or probe does this, or the client's socket was gone)."
                )
                next_step = "Nothing to fix if this was a scan; otherwise check the client application logs."
                rule, confidence = "client-reset-handshake", POSSIBLE
            else:
                summary = "server reset during the handshake"
                explanation = "The server sent a SYN-ACK and then RST before the handshake completed."
                next_step = f"Check the server's accept queue and application on {server}."
                rule, confidence = "server-reset-handshake", POSSIBLE
            side = who
            evidence = (Evidence("SYN-ACK", _frames(conn, 1, SYN | ACK)), _rst_evidence(conn, by_client))
        else:
            summary = f"RST from {who} after {after}"
            forged = _forged_rst(conn, C2S if by_client else 1, rst_ts or conn.last_ts)
            why, why_next, confidence, evidence = _reset_context(conn, by_client, rst_ts or conn.last_ts, forged)
            amount = "an unknown amount of data" if state.counts_only else f"{fmt.size(moved)} of data"
            explanation = f"The {who} aborted the connection with RST {after} after it started, after {amount}. " + why
            next_step = why_next
            rule = "reset-established"
            side = who
            if forged is not None:
                explanation = f"An RST in the {who}'s name ended the connection {after} after it started, after {amount}. " + why
                summary = f"RST in the {who}'s name, not from its host"
                rule, side = "forged-reset", "path"
    elif cs == "SF":
        outcome = "closed"
        first = "client" if (c.fin_ts or 0) <= (s.fin_ts or 0) else "server"
        summary = f"{first} closed first"
        explanation = (
            _opening_words(conn)
            + ("" if state.counts_only else f" {fmt.size(fc.payload_bytes)} sent and {fmt.size(fs.payload_bytes)} received,")
            + f" closed with FIN by both sides, the {first} first."
        )
        half = _half_close(conn)
        if half:
            explanation += " " + half
            summary += "; half-close"
        ok = True
        rule = "closed"
        evidence = _fin_evidence(conn)
        if conn.midstream:
            # the close is in the packets, but which side was the client rests on a port guess
            confidence = LIKELY
            evidence = (_midstream_evidence(conn), *evidence)
    elif cs in ("S2", "S3", "SHR"):
        who = "client" if cs == "S2" else "server"
        other = "server" if cs == "S2" else "client"
        outcome = "half-closed"
        me = c if who == "client" else s
        summary = f"{who} sent FIN, {other} did not"
        explanation = f"The {who} closed its sending side (FIN); the {other} had not sent its FIN when the capture ended"
        explanation += _after_fin(conn, me.fin_ts, C2S if me is c else 1, who, other)
        next_step = f"If the {other} should have closed: it may still hold the socket in CLOSE-WAIT (ss -tan state close-wait)."
        ok = True
        rule = "half-closed"
        evidence = _fin_evidence(conn)
    elif cs == "OTH" and not conn.midstream and conn.packets and conn.packets[0].seg.flags & (SYN | ACK) == SYN | ACK:
        # the first packet is a SYN-ACK: the roles are known (its sender is the server), the SYN is
        # what the capture lacks
        outcome = "midstream"
        synacks = _frames(conn, 1, SYN | ACK)
        summary = "SYN-ACK without the SYN it answers"
        explanation = (
            f"The capture has the server's SYN-ACK (frame {synacks[0]}) but not the client's SYN before it:"
            " the capture started after the SYN was sent, or the SYN took a path this capture point does not see"
            " (asymmetric routing)."
        )
        if not c.packets:
            explanation += " Nothing from the client followed in the capture."
        next_step = "If the capture began before this connection, capture where both directions pass: the SYN and the SYN-ACK take different paths."
        if conn.reused_from is not None:
            # an attempt on these ports was handed on before (superseded, evicted, timed out):
            # a server retransmits its SYN-ACK for 1 s, 3 s, 7 s... after the SYN
            # (no connection id in the words: a split run numbers the connections after judging;
            # the link sentence names it)
            explanation += " An earlier connection on these ports was handed on before it: this may be the server sending that attempt's SYN-ACK again."
            next_step = "Compare with the earlier connection on these ports: a SYN-ACK that acknowledges its SYN belongs to it."
        rule, confidence, side = "synack-without-syn", POSSIBLE, "capture"
        evidence = (Evidence("SYN-ACK, no SYN before it", synacks),)
    elif cs == "OTH":
        outcome = "midstream"
        summary = "picked up mid-stream, roles guessed from ports"
        explanation = (
            "The capture starts after this connection's handshake, so client and server were guessed from the ports"
            f" ({fmt_ip(c.ip)}:{c.port} taken as the client)."
        )
        if c.fin_seq is not None and s.fin_seq is not None and not (c.rst_ts or s.rst_ts):
            explanation += " It closed with FIN from both sides."
        ok = not (c.rst_ts or s.rst_ts)
        # the roles rest on a port-number guess
        rule, confidence = "midstream", LIKELY
        evidence = (_midstream_evidence(conn),)
        if not ok:
            # the RST's sender is its source address, whatever the roles: name it and read why
            # from the packets before it, as for an established connection (midstream-reset.pcap)
            by_client = c.rst_ts is not None and (s.rst_ts is None or c.rst_ts <= s.rst_ts)
            who, me = ("client", c) if by_client else ("server", s)
            rst_ts = (c.rst_ts if by_client else s.rst_ts) or conn.last_ts
            forged = _forged_rst(conn, C2S if by_client else 1, rst_ts)
            why, next_step, why_confidence, why_evidence = _reset_context(conn, by_client, rst_ts, forged)
            amount = "an unknown amount of data" if state.counts_only else f"{fmt.size(fc.payload_bytes)} sent and {fmt.size(fs.payload_bytes)} received"
            explanation += f" {fmt_ip(me.ip)}:{me.port} (the {who}) aborted it with RST, after {amount} in the capture. " + why
            summary = f"picked up mid-stream; RST from {who}"
            side = who if forged is None else "path"
            confidence = POSSIBLE if why_confidence == POSSIBLE else LIKELY
            evidence = (*evidence, *why_evidence)
    else:  # S1: established, not terminated
        outcome = "established"
        if conn.handshake_ack_ts is None and s.syn_count:
            outcome = "handshake-incomplete"
            summary = "SYN-ACK not acknowledged"
            n = s.syn_count
            evidence = (_syn_evidence(conn), Evidence("SYN-ACK" if n == 1 else f"{n} SYN-ACKs", _frames(conn, 1, SYN | ACK)))
            last_synack = s.syn_times[-1] if s.syn_times else None
            quiet = capture_quiet_after(conn, last_synack)
            replaced = superseded_after(conn, last_synack)
            if replaced is not None:
                # instead of the ACK, a new SYN on the same ports: whoever sent it never had the
                # SYN-ACK in a socket waiting for it (a kernel in SYN-SENT answers it with ACK)
                summary = f"new SYN on these ports {fmt.duration(replaced)} after the SYN-ACK"
                explanation = (
                    f"The server answered with SYN-ACK{' ' + str(n) + ' times' if n > 1 else ''}, and {fmt.duration(replaced)} later a SYN"
                    f" with another sequence number on the same ports started a new connection (frame {conn.superseded_frame})"
                    " instead of the client's ACK: the SYN-ACK did not reach a socket waiting for it. "
                    + hedge(POSSIBLE)
                    + "it was lost on the way back, the client's address is forged (a SYN flood), or its socket was closed and the port bound again."
                )
                next_step = (
                    "Look at the next connection on these ports (it names this one as reused from);"
                    f" if the client is real, check the return path from {server} to it."
                )
                side = "path"
                rule, confidence = "superseded-synack", POSSIBLE
                evidence = (*evidence, _superseded_evidence(conn, replaced))
                ttls = _captured_at_client(conn)
                if ttls is not None and conn.superseded_by_client:
                    # the SYN-ACK arrived where the client's own packets are captured: not lost on
                    # the way back; the client host made the new SYN from the same port
                    explanation = (
                        f"The server answered with SYN-ACK{' ' + str(n) + ' times' if n > 1 else ''}, and it reached the client's host:"
                        f" the capture is on the client's host or link (the client's SYN still has its initial TTL {ttls[0]},"
                        f" the SYN-ACK arrives with TTL {ttls[1]}). {fmt.duration(replaced)} later the client sent a SYN with another"
                        f" sequence number from the same port (frame {conn.superseded_frame}) instead of the ACK: the SYN-ACK never reached"
                        f" the socket that sent the SYN. {hedge(LIKELY)}the application closed the connecting socket and bound the port"
                        " again (a short connect timeout, a cancelled attempt), or the client host dropped the SYN-ACK after the capture"
                        " point (an input firewall rule, rp_filter) and the application then gave up and tried again."
                    )
                    next_step = (
                        f"On the client {fmt_ip(c.ip)}: check the application's connect timeout and retries (it binds source port {c.port}),"
                        f" and input rules dropping packets from {fmt_ip(s.ip)}:{port} (nft list ruleset, iptables -S INPUT)."
                    )
                    side = "client"
                    confidence = LIKELY
                    evidence = (*evidence, Evidence(f"client SYN TTL {ttls[0]} (not routed yet), SYN-ACK TTL {ttls[1]}", ttls[2]))
            elif n == 1 and quiet is not None and quiet < SYN_RTO_INITIAL:
                # the client's ACK is one trip away; the server re-sends its SYN-ACK only after about 1 s
                summary = f"capture ends {fmt.duration(quiet)} after the SYN-ACK"
                explanation = (
                    f"The server answered with SYN-ACK, and the capture ends {fmt.duration(quiet)} later: too soon to tell whether the client's ACK was coming."
                )
                next_step = "Capture for longer (at least a few seconds after the last SYN-ACK) to see how the handshake ends."
                side = "capture"
                rule, confidence = "capture-ends-after-synack", POSSIBLE
            else:
                explanation = (
                    f"The server answered with SYN-ACK{' ' + str(n) + ' times' if n > 1 else ''}, but no ACK from the client is in the capture. "
                    + hedge(POSSIBLE)
                    + "the SYN-ACK is lost on the way back, or the client gave up."
                )
                if n > 1:
                    explanation += f" The server retransmitted the SYN-ACK (gaps {gaps_text(s.syn_times)})."
                next_step = f"Check the return path from {server} to the client (asymmetric routing, a stateful firewall dropping the SYN-ACK)."
                side = "path"
                rule, confidence = "synack-unanswered", POSSIBLE
        else:
            if conn.timed_out and idle_timeout is not None:
                summary = f"idle {fmt.duration(idle_timeout)}, still open"
                explanation = "The connection was established and still open when it went idle."
            else:
                summary = "open at end of capture"
                explanation = "The connection was established and still open when the capture ended."
            ok = True
            rule = "open"
            evidence = (Evidence("SYN, SYN-ACK", (*_frames(conn, C2S, SYN, ACK)[:1], *_frames(conn, 1, SYN | ACK)[:1])),)

    notes.extend(_echo_rst_notes(conn))
    # secondary findings that apply to established connections
    if conn.established:
        extra, worst, tag = _secondary(conn, state, handshake_rtt)
        notes.extend(extra)
        if tag:
            summary += "; " + tag
        if worst:
            ok = False
            if not next_step:
                next_step = worst
    if s.syn_count > 1 and conn.established:
        notes.append(
            f"the server retransmitted its SYN-ACK {s.syn_count - 1} time(s) (gaps {gaps_text(s.syn_times)}): the first SYN-ACK or the client's ACK was lost"
        )
        summary += f"; SYN-ACK sent {s.syn_count}x"
        next_step = next_step or (f"Check the return path from {server} to the client: loss, asymmetric routing, or a stateful firewall dropping SYN-ACKs.")
        ok = False
    if c.syn_count > 1 and conn.established and stale is not None:
        ack, rst = stale
        # (no connection id here: a split run numbers the connections after judging)
        resent = [p for p in conn.packets if p.dir == C2S and p.seg.flags & SYN and p.seg.ts > rst.seg.ts]
        again = f" and sent its SYN again {fmt.duration(resent[0].seg.ts - rst.seg.ts)} later" if resent else ""
        notes.append(
            f"the client sent {c.syn_count} SYNs: the server answered the first with an ACK for another connection's sequence numbers"
            f" (frame {ack.seg.frame}): it still held an earlier attempt on these ports. The client's kernel answered that ACK"
            f" with RST (frame {rst.seg.frame}, seq = its ACK number), which resets the earlier attempt,{again}: nothing was lost"
        )
        summary += f"; {c.syn_count} SYNs"
        answered = Evidence("the server's ACK for an earlier attempt on these ports, the client's RST answering it", (ack.seg.frame, rst.seg.frame))
        evidence = (*evidence, answered)
    elif c.syn_count > 1 and conn.established and outcome not in ("refused", "no-answer"):
        notes.append(
            f"the client sent {c.syn_count} SYNs before the handshake completed (gaps {gaps_text(syn_times)}): "
            + (
                "on one host there is no path to lose them on, so the local stack dropped the first SYN(s) or SYN-ACK(s)"
                " (a full listen queue, a firewall rule on lo)"
                if _on_one_host(conn)
                else "the first SYN(s) or SYN-ACK(s) were lost"
            )
        )
        summary += f"; {c.syn_count} SYNs"
        ok = False
    if conn.synack_before_syn:
        notes.append(
            "the SYN-ACK is in the capture before the SYN it answers: this capture's timestamps (or the merge of"
            " several captures) are out of order here, so no handshake time is given"
        )
    if state.clock_steps and not conn.synack_before_syn:
        more = state.clock_steps - 1
        notes.append(
            f"the capture's clock went backwards at frame #{state.clock_step_frame} (stamped {fmt.duration(state.clock_step_by)}"
            f" earlier than a packet before it{f', and {more} more time(s)' if more else ''}): handshake times and RTT samples"
            " spanning it are withheld, since they would be made of timestamps that cannot both be right"
        )
        summary += "; capture clock went backwards"
    # (a reused 4-tuple and an application retry are links between connections: ConnReport carries
    # them and the renderers word them, since a split run numbers the connections after judging)
    if conn.evicted:
        notes.append("evicted from the full connection table (--max-conns) to make room; any later packets of it start a new entry")
    tw = ""
    if cs == "SF":
        ct, st = conn.state_of(c), conn.state_of(s)
        if ct == st == "TIME-WAIT":
            tw = "both sides end in TIME-WAIT"
        elif ct == "TIME-WAIT":
            tw = "the client ends in TIME-WAIT"
        elif st == "TIME-WAIT":
            tw = (
                "the server ends in TIME-WAIT (it closed first; each such socket holds memory and blocks its 4-tuple"
                " for reuse until it expires, but uses no port of the server's own)"
            )
        if tw:
            notes.append(tw)
    if handshake_rtt is not None and outcome in ("closed", "established", "half-closed", "reset-by-client", "reset-by-server"):
        summary = f"handshake {fmt.duration(handshake_rtt)}; " + summary
    if conn.timed_out and idle_timeout is not None:
        notes.append(f"no packet for {fmt.duration(idle_timeout)} ({idle_option}): reported as it stood; a later packet on these ports starts a new entry")
    if conn.idle_split and idle_timeout is not None:
        notes.append(
            f"first packet after at least {fmt.duration(idle_timeout)} of silence ({idle_option}):"
            f"{' picked up mid-stream,' if conn.midstream else ''} it continues the earlier record on these ports (reused_from)"
        )
    if state.bad_checksums:
        corrupt, in_transit = _checksum_notes(conn, state)
        notes.extend(corrupt)
        if in_transit:
            summary += "; corrupted in transit (bad checksum)"
    ecn = _ecn_finding(conn, state)
    if ecn is not None:
        notes.extend(ecn.notes)
        if ecn.tag and conn.established:
            summary += "; " + ecn.tag
    if notes:
        explanation = explanation.rstrip() + " " + " ".join(n[0].upper() + n[1:] + "." for n in notes)
    if state.counts_only:
        explanation = explanation.rstrip() + f" ({COUNTS_ONLY_NOTE}.)"
    loss_rule, loss_confidence, loss_evidence = _loss_rule(conn, state, outcome)
    if loss_rule:
        # loss or reordering is what this verdict is about: its rule, confidence and evidence lead
        rule, confidence, evidence = loss_rule, loss_confidence, (*evidence, *loss_evidence)
    elif ecn is not None and ecn.rule and outcome in GOOD_OUTCOMES:
        # congestion signalled with ECN is what this verdict is about; the connection still ended well
        rule, confidence, evidence = ecn.rule, ecn.confidence, (*evidence, *ecn.evidence)
        side = side or "path"
        next_step = next_step or ecn.next_step
    return Verdict(outcome, code, hist, summary, explanation, next_step, ok, side, rule, confidence, evidence)


def _code_without_stale_reset(conn: Connection) -> str:
    """The conn_state code of a connection whose client RST answered an ACK for an earlier attempt
    (:func:`stale_ack_reset`), as if that RST were not there: RSTO when another RST came (the
    tracker's rst_ts leaves that one out) or the handshake never completed; else SF, S2, S3 or S1
    by which sides sent FIN."""
    c, s = conn.client, conn.server
    if c.rst_ts is not None or s.rst_ts is not None or not conn.established:
        return "RSTO"
    if c.fin_seq is not None and s.fin_seq is not None:
        return "SF"
    if c.fin_seq is not None:
        return "S2"
    return "S3" if s.fin_seq is not None else "S1"


def _no_answer(conn: Connection, cs: str, server: str, host_up: bool = False) -> _Cause:
    """SYNs and silence: dropped on the way or a dead host (the packets cannot tell which), unless
    the capture ends before the client would even have tried again. (``server``: its address, as
    :func:`_server_addr` writes it: the judge has it already.)"""
    c = conn.client
    port = conn.server.port
    syn_times = c.syn_times
    quiet = capture_quiet_after(conn, syn_times[-1] if syn_times else None)
    evidence: tuple[Evidence, ...] = (_syn_evidence(conn),)
    replaced = superseded_after(conn, syn_times[-1] if syn_times else None)
    if c.syn_count <= 1 and cs == "S0" and replaced is not None and replaced < SYN_RTO_INITIAL:
        # the capture went on: the client (or whoever forged its address) started over on the
        # same ports before any answer was overdue; this attempt says nothing about the server
        return _Cause(
            "no-answer",
            f"1 SYN; new SYN on these ports {fmt.duration(replaced)} later",
            f"One SYN, and {fmt.duration(replaced)} later a SYN with another sequence number on the same ports started a new"
            f" connection (frame {conn.superseded_frame}): nothing came back before that, but an answer was not overdue yet"
            f" (the client would send its SYN again after about {SYN_RTO_INITIAL:g} s), so this attempt says nothing about the server."
            " A client that reuses its source port this soon is a crafted one (a flood or a scanner), or a socket closed and"
            " bound to the same port again.",
            "Look at the next connection on these ports (it names this one as reused from) for what the server did.",
            "superseded-syn",
            POSSIBLE,
            (*evidence, _superseded_evidence(conn, replaced)),
        )
    if c.syn_count <= 1 and cs == "S0" and quiet is not None and quiet < SYN_RTO_INITIAL:
        return _Cause(
            "capture-ended",
            f"1 SYN; capture ends {fmt.duration(quiet)} after it",
            f"One SYN, and the capture ends {fmt.duration(quiet)} after it: too soon to call. An answer could still have"
            f" been on its way, and the client would only send its SYN again after about {SYN_RTO_INITIAL:g} s.",
            "Capture for longer (at least a few seconds after the SYN, to see its retransmissions or the answer).",
            "capture-ends-after-syn",
            POSSIBLE,
            (*evidence, Evidence(f"last frame of the capture {fmt.duration(quiet)} after the SYN")),
        )
    if c.syn_count > 1:  # (the gaps and their pattern are worded only here: most attempts send one SYN)
        span = syn_times[-1] - syn_times[0] if len(syn_times) > 1 else 0.0
        pattern = backoff_pattern(syn_times, c.syn_options is not None and linux_syn_layout(c.syn_options))
        gaps = gaps_text(syn_times)
        summary = f"{c.syn_count} SYNs, gaps {gaps}, nothing back"
        explanation = (
            f"{c.syn_count} SYNs over {fmt.duration(span)} (gaps {gaps}"
            f"{'; ' + pattern if pattern else ''}), and nothing came back: no SYN-ACK, no RST, no ICMP."
        )
    else:
        summary = "1 SYN, nothing back"
        # (each a single f-string: one string made, not three)
        if replaced is not None:
            explanation = f"{_ONE_SYN}a new connection on the same ports began {fmt.duration(replaced)} later (frame {conn.superseded_frame})."
        elif quiet is not None:
            explanation = f"{_ONE_SYN}the capture ended {fmt.duration(quiet)} later."
        else:
            explanation = f"{_ONE_SYN}the capture ended."
    words = _silence_words(summary, explanation, c.syn_count > 1, server, port, host_up, _on_one_host(conn), cs == "RSTOS0")
    summary, explanation, next_step, confidence, fact = words
    if fact:
        evidence = (*evidence, Evidence(fact))
    if cs == "RSTOS0":
        evidence = (*evidence, _rst_evidence(conn, by_client=True))
    return _Cause("no-answer", summary, explanation, next_step, "no-answer", confidence, evidence)


# how the explanation of one SYN that got nothing back begins
_ONE_SYN: Final = "One SYN and nothing came back (no SYN-ACK, RST or ICMP) before "


def silence_words(
    summary: str, explanation: str, resent: bool, server: str, port: int, host_up: bool, one_host: bool, gave_up: bool
) -> tuple[str, str, str, str, str]:
    """How :func:`_no_answer` ends its words for SYNs that got nothing back, from the words so
    far: (summary, explanation, next step, confidence, the fact of an evidence without frames
    or ""). ``resent``: more than one SYN; ``server``: its address as :func:`_server_addr`
    writes it; ``host_up``: see :func:`judge`; ``one_host``: :func:`_on_one_host`; ``gave_up``:
    the client ended with RST (RSTOS0)."""
    # silence cannot tell a DROP rule from a host that is down: after retransmissions, one of the two is
    # likely; a single SYN could also be a client that gave up at once
    confidence = LIKELY if resent else POSSIBLE
    fact = ""
    if host_up:
        # the host answered on another port in this run: it is up, so this port's SYNs are dropped
        confidence = LIKELY
        summary += "; filtered: the host answered on other ports"
        explanation += (
            f" {server} answered on another port in this run, so it is up. {hedge(confidence)}a firewall on the way"
            f" or on {server} drops packets to port {port}."
        )
        fact = f"{server} answered on another port in the same run"
    elif one_host:
        # loopback (or one address): no path to lose packets on, and the host is the one sending
        explanation += f" Client and server are on one host, so no path lost them: the local stack dropped the SYNs to port {port} (a firewall rule)."
        fact = "client and server on one host"
    else:
        explanation += f" {hedge(confidence)}packets to {server}:{port} are dropped on the way, or the host is down" + (
            " (silence cannot tell which)." if confidence == LIKELY else "."
        )
    if gave_up:
        explanation += " The client then gave up with RST."
    next_step = f"Check firewalls / security groups on the path for DROP rules on port {port}; test from closer to the server (nc -vz {server} {port})" + (
        f" and on {server} itself (nft list ruleset)." if host_up else " and check the host is up."
    )
    return summary, explanation, next_step, confidence, fact


def _silence_words(
    summary: str, explanation: str, resent: bool, server: str, port: int, host_up: bool, one_host: bool, gave_up: bool
) -> tuple[str, str, str, str, str]:
    """:func:`silence_words`, remembered by its arguments: the attempts of a flood to one
    server port end their words alike (tests/unit/read/test_verdict_words.py holds the two equal)."""
    key: tuple = (summary, explanation, resent, server, port, host_up, one_host, gave_up)
    words = _SILENCE_WORDS.get(key)
    if words is None:
        if len(_SILENCE_WORDS) >= MAX_REMEMBERED:
            _SILENCE_WORDS.clear()
        words = _SILENCE_WORDS[key] = silence_words(summary, explanation, resent, server, port, host_up, one_host, gave_up)
    return words


# silence_words' answers by its arguments (emptied when full): the words of a verdict depend on
# nothing else, and the attempts of a flood share a few dozen of them
_SILENCE_WORDS: Final[dict[tuple, tuple[str, str, str, str, str]]] = {}
MAX_REMEMBERED: Final = 4096


# Scanner probes by their flags (nmap -sF, -sN, -sX, -sA; OS detection sends the same kinds)
_PROBE_NAMES: Final = ((FIN | PSH | URG, "Xmas"), (FIN, "FIN"), (0, "NULL"))


def _probe_kind(conn: Connection, scan: bool) -> str:
    """The name of a scanner's probe this connection is, or "": a first segment with neither SYN
    nor ACK (no TCP stack sends one without a connection: RFC 9293 has every segment after the
    SYN carry ACK), or, in a scan, a lone ACK with no data answered by RST or by nothing."""
    if not conn.packets:
        return ""
    first = conn.packets[0].seg
    flags = first.flags
    if not flags & (SYN | ACK):
        odd = flags & (FIN | PSH | URG)
        for want, name in _PROBE_NAMES:
            if odd == want:
                return name
        return "odd-flags"
    prober = conn.side(conn.packets[0].dir)
    if scan and flags & (SYN | ACK | FIN | RST) == ACK and not first.length and prober.packets == 1:
        peer = conn.server if prober is conn.client else conn.client
        if peer.packets == 0 or (peer.packets == 1 and peer.rst_ts is not None):
            return "ACK"
    return ""


def _probe(conn: Connection, kind: str, scan: bool) -> _Cause:
    """A scanner's probe (see _probe_kind): what it is and what its answer tells the scanner."""
    d = conn.packets[0].dir
    prober, target = conn.side(d), conn.side(1 - d)
    who, where = fmt_ip(prober.ip), fmt_endpoint(target.ip, target.port)
    answered = target.rst_ts is not None
    if kind == "ACK":
        tells = "an RST came back: the port is unfiltered (ACK scans map firewall rules)" if answered else "nothing came back: filtered"
    else:
        tells = (
            "an RST came back: the port is closed"
            if answered
            else "nothing came back: the port is open or filtered (a listening socket drops such a segment without a word)"
        )
    flags = "no flags at all" if kind == "NULL" else "FIN, PSH and URG" if kind == "Xmas" else kind if kind != "odd-flags" else "odd flags"
    if kind == "ACK":
        what = f"{who} sent a lone ACK to {where} with no handshake before it, in the middle of its port scan: an ACK-scan probe (nmap -sA, -O)"
    else:
        what = (
            f"{who} sent a {kind} probe to {where} ({flags}, no handshake before it), which no TCP stack sends on its own;"
            " port scanners and OS fingerprinting do (nmap -sF/-sN/-sX, -O)"
        )
    explanation = f"Not a connection: {what}. {tells[0].upper() + tells[1:]}."
    next_step = (
        f"Part of a port scan by {who}: see the port-scan finding (is {who} yours?)."
        if scan
        else f"Check who {who} is: a port scanner or a fingerprinting tool sends these."
    )
    frames = tuple(p.seg.frame for p in conn.packets[:2])
    return _Cause(
        "probe",
        f"{kind} probe, " + ("RST back" if answered else "no answer"),
        explanation,
        next_step,
        "scan-probe",
        CERTAIN if kind != "ACK" else LIKELY,
        (Evidence(f"{kind} probe" + (" and the RST it drew" if answered else ", nothing back"), frames),),
    )


LOOPBACK6: Final = b"\x00" * 15 + b"\x01"
# An RST this long after the peer's last data is not the kernel answering that data: an application close()
RST_ANSWER_MAX: Final = 0.05
# Retransmissions of the same data in a row before an RST that read as "the sender gave up"
GAVE_UP_RETRANSMISSIONS: Final = 3


def _on_one_host(conn: Connection) -> bool:
    """Both ends on one host (loopback, or the same address): no wire, no path between them."""
    a, b = conn.client.ip, conn.server.ip
    return a == b or a[:1] == b"\x7f" or a == LOOPBACK6 or b[:1] == b"\x7f" or b == LOOPBACK6


def _one_sided_sentence(conn: Connection) -> tuple[str, str, str, str]:
    """Outcome, table note, explanation and next step for a capture that holds one direction only."""
    seen, unseen = (conn.client, conn.server) if conn.client.packets else (conn.server, conn.client)
    seen_name, unseen_name = ("client", "server") if seen is conn.client else ("server", "client")
    explanation = (
        f"Only the {seen_name}'s packets are in the capture ({seen.packets}), yet they acknowledge segments from the"
        f" {unseen_name} ({fmt_ip(unseen.ip)}) that the capture never saw: this capture point sees one direction of the"
        " connection (asymmetric routing, a one-way tap or SPAN session, or a capture filter)."
        f" What the {unseen_name} sent, and how the connection stands on either side, cannot be told from it."
    )
    next_step = "Capture where both directions pass: on one of the hosts, or with both directions of the SPAN/tap."
    return "one-sided", f"only {seen_name} -> {unseen_name} captured", explanation, next_step


def _forged_rst(conn: Connection, direction: int, rst_ts: float) -> tuple[int, int] | None:
    """(the RST's TTL, the sender's usual TTL) when an RST's TTL differs from the TTL every other
    packet of its direction had: packets of one host on one path arrive with one TTL, so a
    different one says another box sent it. None when there is no such contrast to weigh."""
    usual: set[int] = set()
    rst_ttl = -1
    for pkt in conn.packets:
        if pkt.dir != direction:
            continue
        if pkt.seg.flags & RST and rst_ttl < 0 and pkt.seg.ts >= rst_ts:
            rst_ttl = pkt.seg.ttl
        elif not pkt.seg.flags & RST:
            usual.add(pkt.seg.ttl)
    if rst_ttl < 0 or len(usual) != 1:
        return None
    (ttl,) = usual
    return (rst_ttl, ttl) if ttl != rst_ttl and ttl > 0 and rst_ttl > 0 else None


def _server_rst_delay(conn: Connection) -> float | None:
    """The client's first SYN to the server's RST (None when either is missing or out of order)."""
    rst_ts, syn_ts = conn.server.rst_ts, conn.syn_ts
    return rst_ts - syn_ts if rst_ts is not None and syn_ts is not None and rst_ts >= syn_ts else None


def _reset_by_path(conn: Connection, host_synack: tuple[int, int]) -> _Cause | None:
    """An RST answering the SYN whose TTL is not the server host's own (its SYN-ACKs on other
    connections in the capture): another box sent it in the server's name, a reject rule on the
    path (nft ``reject with tcp reset``, iptables ``REJECT --reject-with tcp-reset``) or an injected
    reset (reject-reset.pcap: the router's RST arrives with TTL 64, the server's packets with 63).
    None when there is no such contrast to weigh."""
    host_ttl, synack_frame = host_synack
    s = conn.server
    rst_ttl = s.ttl
    if host_ttl <= 0 or rst_ttl is None or rst_ttl <= 0 or rst_ttl == host_ttl or s.syn_count:
        return None
    server, port = _server_addr(conn), s.port
    delay = _server_rst_delay(conn)
    after = f" {fmt.duration(delay)} after it" if delay is not None else ""
    rst_hops, host_hops = hops(rst_ttl), hops(host_ttl)
    closer = host_hops - rst_hops if rst_hops is not None and host_hops is not None else 0
    where = f"a box {closer} hop(s) closer to the capture point than {server}" if closer > 0 else f"a box other than {server}"
    explanation = (
        f"An RST answered the SYN{after} in the name of {server}, but with TTL {rst_ttl}, where {server}'s own"
        f" packets (its SYN-ACK on another connection in this capture) arrive with TTL {host_ttl}: {where} sent it."
        f" Likely a firewall's reject rule for port {port} (nft reject with tcp reset, iptables REJECT --reject-with"
        " tcp-reset) or a reset injected on the path; the server itself probably never saw the SYN, and whether"
        f" anything listens on port {port} there the capture cannot tell."
    )
    box = f"the box {closer} hop(s) from the capture point towards {server}" if closer > 0 else f"the firewalls between the client and {server}"
    next_step = f"Look for a reject rule for port {port} on {box} (nft list ruleset, iptables -S); traceroute -T -p {port} {server} shows which hop answers."
    evidence = (
        _syn_evidence(conn),
        Evidence(f"RST in the name of {server} with TTL {rst_ttl}", _frames(conn, 1, RST)[:1]),
        # (its frame is another connection's: named in the fact, not cited as this one's packet)
        Evidence(f"{server}'s own SYN-ACK (frame {synack_frame}, another connection) arrived with TTL {host_ttl}", ()),
    )
    summary = f"RST from the path (TTL {rst_ttl}, not {server}'s {host_ttl})"
    return _Cause("refused", summary, explanation, next_step, "reset-by-path", LIKELY, evidence)


def _self_abort_delay(conn: Connection) -> float | None:
    """Time from the client's only SYN to its own RST, when that is shorter than any first
    retransmission timeout (the client abandoned the attempt; the kernel did not give up)."""
    c = conn.client
    if c.syn_count != 1 or c.rst_ts is None or conn.syn_ts is None or conn.server.packets:
        return None
    delay = c.rst_ts - conn.syn_ts
    return delay if 0 <= delay < SYN_RTO_INITIAL else None


def _reset_context(conn: Connection, by_client: bool, rst_ts: float, forged: tuple[int, int] | None) -> tuple[str, str, str, tuple[Evidence, ...]]:
    """Why an established connection was reset, from what came before the RST in the capture.

    Returns (sentences, next step, confidence, evidence). The RST itself proves who aborted;
    the packets before it narrow down why: the peer had closed already, the resetting side had
    closed and still got data, the resetting side retransmitted without an answer, or the
    peer's window was closed. Without any of these the cause cannot be told from the packets."""
    who, other = ("client", "server") if by_client else ("server", "client")
    me = conn.client if by_client else conn.server
    peer = conn.server if by_client else conn.client
    my_dir = C2S if by_client else 1
    rst_frames = _frames(conn, my_dir, RST)[:1]
    ip = fmt_ip(me.ip)
    if forged is not None:  # (from _forged_rst: the RST's TTL and its sender's usual one)
        rst_ttl, usual_ttl = forged
        return (
            f"The RST arrived with TTL {rst_ttl} while every other packet from the {who} had TTL {usual_ttl}. {hedge(LIKELY)}it"
            f" did not come from the {who}'s host but from a box on the path that forges resets (an IPS, a firewall, a"
            " censoring middlebox).",
            f"Look for a device between the capture point and {ip} that injects resets (IPS/firewall logs); capture at {ip} to confirm.",
            LIKELY,
            (Evidence(f"RST with TTL {rst_ttl}, the {who}'s other packets TTL {usual_ttl}", rst_frames),),
        )
    if peer.fin_ts is not None and peer.fin_ts <= rst_ts:
        fin_frames = _frames(conn, 1 - my_dir, FIN)[:1]
        return (
            f"The {other} had closed first (its FIN is in the capture before the RST). {hedge(LIKELY)}the {who} answered the"
            " close with RST, as a socket closed with unread data or with SO_LINGER 0 does.",
            f"Check how the {who} application on {ip} closes this connection (unread data at close(), SO_LINGER 0).",
            LIKELY,
            (Evidence(f"FIN from the {other}", fin_frames), Evidence(f"then RST from the {who}", rst_frames)),
        )
    if me.fin_ts is not None and me.fin_ts <= rst_ts:
        fin_frames = _frames(conn, my_dir, FIN)[:1]
        after = [p for p in data_after(conn, my_dir, me.fin_ts) if p.seg.ts <= rst_ts]
        answer = after[-1].seg.ts if after else None
        if answer is not None and rst_ts - answer > RST_ANSWER_MAX:
            # the RST came long after the peer's last data: the application's close(), not an answer to it
            # (rst-own-fin.pcap: shutdown(SHUT_WR), then close() with 1,500 B unread, 0.4 s after the last of them)
            return (
                f"The {who} had closed its sending side first (FIN); the {other} sent {fmt.size(sum(p.seg.length for p in after))} after it,"
                f" and the RST came {fmt.duration(rst_ts - answer)} after the last of it, not in answer to it. {hedge(LIKELY)}the {who}"
                f" application half-closed, then closed the socket with the {other}'s data unread (or with SO_LINGER 0): the kernel"
                " then resets instead of finishing the close.",
                f"Check how the {who} application on {ip} closes: it shut down writing and closed without reading what the {other} sent"
                " (read to EOF before close()).",
                LIKELY,
                (
                    Evidence(f"FIN from the {who}", fin_frames),
                    Evidence(f"data from the {other} after it", tuple(p.seg.frame for p in after[:3])),
                    Evidence(f"then RST from the {who}", rst_frames),
                ),
            )
        return (
            f"The {who} had closed its side first (FIN). {hedge(LIKELY)}the {other} kept sending, and data for a closed socket is answered with RST.",
            f"Check the application protocol: the {other} ({fmt_ip(peer.ip)}) sent data after the {who} closed.",
            LIKELY,
            (Evidence(f"FIN from the {who}", fin_frames), Evidence(f"then RST from the {who}", rst_frames)),
        )
    # retransmissions of the data the resetting side sent last, since the peer last acknowledged
    # anything new (new data sent in between does not matter: rst-gave-up.pcap sends 80 KB more
    # before its first timeout)
    resent: dict[int, int] = {}
    last_sent = -1
    peer_ack = -1
    for pkt in conn.packets:
        seg = pkt.seg
        if seg.ts > rst_ts:
            break
        if pkt.dir == my_dir:
            if seg.length:
                last_sent = seg.seq
                if pkt.analysis & (F.A_RETRANSMISSION | F.A_FAST_RETRANSMISSION):
                    resent[seg.seq] = resent.get(seg.seq, 0) + 1
        elif seg.length or seg.flags & FIN or (seg.flags & ACK and seg.ack != peer_ack):
            if seg.flags & ACK:
                peer_ack = seg.ack
            resent.clear()
    repeats = resent.get(last_sent, 0)
    if repeats >= GAVE_UP_RETRANSMISSIONS:
        return (
            f"Before the RST the {who} sent the same data {repeats + 1} times with no answer from the {other}."
            f" {hedge(LIKELY)}the {other} or the path to it stopped responding, and the {who} application gave up and aborted"
            " (a kernel that gives up by itself, after tcp_retries2, ends the connection without an RST).",
            f"Check that {fmt_ip(peer.ip)} is up and reachable from {ip} (the path in both directions).",
            LIKELY,
            (Evidence(f"{repeats + 1} unanswered transmissions of the same data, then RST", rst_frames),),
        )
    zero_frames = tuple([pkt.seg.frame for pkt in conn.packets if pkt.dir != my_dir and pkt.analysis & F.A_ZERO_WINDOW and pkt.seg.ts <= rst_ts][:3])
    if zero_frames:
        return (
            f"The {other} had advertised a zero window before the RST. {hedge(POSSIBLE)}the {other} had stopped reading and"
            f" the {who} gave up on it, or an abort unrelated to it.",
            f"Check why the application on {fmt_ip(peer.ip)} stopped reading from the socket.",
            POSSIBLE,
            (Evidence(f"zero window from the {other}", zero_frames), Evidence(f"then RST from the {who}", rst_frames)),
        )
    last_data = None
    for pkt in conn.packets:
        if pkt.seg.length and pkt.seg.ts <= rst_ts:
            last_data = pkt
    if last_data is not None and rst_ts - last_data.seg.ts < 0.5:
        why = f"Data was still flowing. {hedge(POSSIBLE)}an application closing with unread data or with SO_LINGER 0, a crash, or a middlebox cutting it."
    else:
        why = f"The connection was idle before it. {hedge(POSSIBLE)}an application abort (SO_LINGER 0), a crash, or an idle timeout on a firewall or NAT."
    if conn.client.fin_ts is None and conn.server.fin_ts is None:
        why = f"Neither side had sent FIN. {why}"
    return (
        why,
        f"Check the {who} application's logs around that time, and any firewall or load balancer idle timeouts.",
        POSSIBLE,
        (Evidence(f"RST from the {who}", rst_frames),),
    )


def _secondary(conn: Connection, state: ConnAnalysis, handshake_rtt: float | None) -> tuple[list[str], str, str]:
    """Loss, reordering, zero window, keep-alive and capture-artefact findings.

    Returns (sentences, next step for the worst finding, short tag for the table).
    Where the loss happened is read from what the capture saw: a retransmission
    whose original the capture never saw was lost between the sender and the
    capture point; one whose original passed the capture point was lost beyond it.
    """
    notes: list[str] = []
    worst = ""
    tag = ""
    rtt_txt = f"; handshake RTT {fmt.duration(handshake_rtt)}" if handshake_rtt is not None else ""
    for d, who in ((C2S, "client"), (1, "server")):
        f = state.facts[d]
        pf = state.facts[1 - d]
        lf: LossFacts = state.loss[d]
        peer = "server" if who == "client" else "client"
        lost = lf.lost
        artefact = bool(f.spurious_retransmissions and pf.acked_unseen and not lost)
        if lost:
            rate = lost / f.data_segments if f.data_segments else 0.0
            where = []
            if lf.upstream:
                where.append(f"{lf.upstream} lost between the {who} and the capture point (the capture never saw the original)")
            if lf.downstream:
                where.append(f"{lf.downstream} lost after passing the capture point, on the way to the {peer} (or their ACKs were lost)")
            text = _loss_text(f, lf, who) + rtt_txt
            if rate >= LOSS_RATE_ALERT:
                text += ": loss on the path"
                tag = tag or f"{fmt.percent(rate)} of {who} data lost"
                worst = worst or _loss_next_step(conn, lf, d, who, peer)
            notes.append(text + (" — " + "; ".join(where) if where else ""))
        if lf.reordered and not artefact:
            notes.append(
                f"{_plural(lf.reordered, 'segment')} from the {who} arrived out of order (sent before segments that arrived"
                f" earlier, by {_ways_text(lf, who)}): reordering on the path, not loss"
            )
            tag = tag or f"reordering ({lf.reordered} late)"
        if lf.spurious and not artefact:
            why = f"reordering made the {who} resend them" if lf.reordered else "a timer that fired too early, or lost ACKs"
            notes.append(
                f"{_plural(lf.spurious, 'retransmission')} from the {who} were not needed: the {peer} already had the data"
                f" (D-SACK, already acknowledged, or the original arrived too): {why}"
            )
        if lf.undecided:
            notes.append(
                f"{_plural(lf.undecided, 'segment')} from the {who} came below the highest sequence, but this capture cannot tell"
                f" retransmissions from late originals: no TCP timestamps, no counting IP ID, and the capture point is not the {who}'s own"
            )
            if f.data_segments and lf.undecided / f.data_segments >= LOSS_RATE_ALERT:
                tag = tag or "loss or reordering: cannot tell"
                worst = worst or (
                    f"Capture on the {who} itself (its own segments cannot be reordered there) or with TCP timestamps on, to tell loss from reordering."
                )
        if lf.copies:
            notes.append(
                f"{_plural(lf.copies, 'segment')} from the {who} appear twice with the same IP ID and TCP timestamp:"
                " the same packet recorded twice (or duplicated by the network), not retransmissions"
            )
        if artefact:
            notes.append(
                f"{f.spurious_retransmissions} segment(s) from the {who} look retransmitted only because the capture "
                "recorded them after their ACK: capture artefact, not network loss"
            )
            tag = tag or "capture artefact: reordered in capture"
        unexplained_gaps = lf.gaps - lf.upstream - lf.reordered - lf.undecided
        if unexplained_gaps > 0 and not pf.acked_unseen:
            notes.append(f"{unexplained_gaps} gap(s) in the {who}'s data that the capture never filled")
        if pf.acked_unseen and not lost and not artefact:
            notes.append(
                f"the {peer} acknowledged data from the {who} that the capture never saw ({pf.acked_unseen} time(s)): "
                "missing from the capture (capture drops), not lost on the network: capture artefact"
            )
            tag = tag or "capture missed packets"
        if f.zero_window_time >= ZERO_WINDOW_ALERT and f.zero_window_adverts:
            probes = pf.zero_window_probes + pf.keep_alives
            notes.append(
                f"the {who} stopped reading: it advertised a zero window for {fmt.duration(f.zero_window_time)}"
                f" ({f.zero_window_adverts} times) while the {peer} probed {probes} time{'s' if probes != 1 else ''}"
            )
            tag = tag or f"{who} zero window {fmt.duration(f.zero_window_time)}"
            worst = worst or f"The {who} application is not reading its socket fast enough: check its CPU, locks, or back-pressure."
        if f.keep_alives and not pf.zero_window_adverts:
            notes.append(f"the {who} sent {f.keep_alives} keep-alive(s) on an idle connection (longest idle gap {fmt.duration(f.max_idle)})")
            tag = tag or f"{f.keep_alives} keep-alives"
    app_note, app_tag, app_next = _application_latency(conn, handshake_rtt)
    if app_note:
        notes.append(app_note)
        tag = tag or app_tag
        worst = worst or app_next
    for err in conn.icmp:
        router = fmt_ip(err.router)
        if err.mtu:
            notes.append(
                f"{router} sent {icmp_label(err.version, err.type, err.code)} ({err.name}, MTU {err.mtu}): the path MTU is smaller"
                " than the packets sent; if such ICMP errors are filtered elsewhere, large transfers stall (PMTU black hole)"
            )
        else:
            notes.append(f"{router} sent {icmp_label(err.version, err.type, err.code)} ({err.name}) about this connection")
        tag = tag or f"ICMP {err.name} from {router}"
    return notes, worst, tag


def _loss_next_step(conn: Connection, lf: LossFacts, d: int, who: str, peer: str) -> str:
    """Where to look for the loss: the stretch of path the capture point puts it on."""
    me_ip = fmt_ip(conn.side(d).ip)
    peer_ip = fmt_ip(conn.side(1 - d).ip)
    if lf.upstream and not lf.downstream:
        stretch = f"between the {who} {me_ip} and the capture point"
    elif lf.downstream and not lf.upstream:
        stretch = f"between the capture point and the {peer} {peer_ip}"
    else:
        stretch = f"between {me_ip} and {peer_ip}"
    return f"Look for packet loss {stretch}: interface errors and drops (ip -s link), a congested or policing link, mtr along that stretch."


# Outcomes whose verdict the loss / reordering finding is about
LOSS_RULE_OUTCOMES: Final = frozenset({"closed", "established", "half-closed", "midstream"})
# Examples of each kind of segment (frame numbers) given as evidence
LOSS_EXAMPLES: Final = 3
_KIND_FACTS: Final = (
    (UPSTREAM, "{n} {who} segment(s) filled gaps the capture never saw and were sent after the segments around them: lost before the capture point"),
    (DOWNSTREAM, "{n} {who} segment(s) re-sent data the capture had seen pass: lost after the capture point"),
    (SPURIOUS, "{n} {who} retransmission(s) of data the {peer} already had"),
    (REORDERED, "{n} {who} segment(s) sent before segments that arrived earlier: late, not lost"),
    (COPY, "{n} {who} segment(s) recorded twice (same IP ID and TCP timestamp)"),
    (UNDECIDED, "{n} {who} segment(s) below the highest sequence that no evidence decides"),
)


def _loss_rule(conn: Connection, state: ConnAnalysis, outcome: str) -> tuple[str, str, tuple[Evidence, ...]]:
    """(rule, confidence, evidence) of the loss / reordering finding, when it is what the verdict is
    about (a connection that otherwise went well; a reset or a failed handshake has its own cause).

    Certain when TSval, IP ID or re-sent bytes decided every segment; likely when some rest on the
    capture point alone; possible when some could not be decided.
    """
    if not conn.established or outcome not in LOSS_RULE_OUTCOMES:
        return "", CERTAIN, ()
    evidence: list[Evidence] = []
    lost = reordered = undecided = 0
    confidence = CERTAIN
    for d, who in ((C2S, "client"), (1, "server")):
        lf: LossFacts = state.loss[d]
        peer = "server" if who == "client" else "client"
        for kind, fact in _KIND_FACTS:
            n = lf.counts[kind]
            if n:
                evidence.append(Evidence(fact.format(n=n, who=who, peer=peer), tuple(lf.examples[kind][:LOSS_EXAMPLES])))
        lost += lf.lost
        reordered += lf.reordered
        undecided += lf.undecided
        if lf.undecided:
            confidence = POSSIBLE
        elif lf.ways[BY_POSITION] and confidence == CERTAIN:
            confidence = LIKELY
    if not evidence:
        return "", CERTAIN, ()
    rule = "path-loss" if lost else "reordering" if reordered else "loss-or-reordering" if undecided else "spurious-retransmission"
    return rule, confidence, tuple(evidence)


# The server's first byte after a request is "slow" past this many handshake RTTs and this long
APP_LATENCY_RTTS: Final = 10
APP_LATENCY_MIN: Final = 0.2
# An open connection whose request got no answer for this long before the capture ended
UNANSWERED_AFTER: Final = 1.0


MPTCP_OPTION: Final = 30  # RFC 8684


def _is_mptcp(conn: Connection) -> bool:
    """The handshake carried the MPTCP option: this connection is one subflow of several."""
    for side in (conn.client, conn.server):
        opts = side.syn_options
        if opts is not None and MPTCP_OPTION in opts.unknown:
            return True
    return False


def _mptcp_note(unanswered: bool) -> str:
    """The note for a connection that is one subflow of an MPTCP connection: each side sends each
    byte over whichever subflow it picks, so one subflow's silence blames no server."""
    note = "this connection is one subflow of an MPTCP connection (MPTCP option in its handshake): each side sends over whichever subflow it picks"
    if unanswered:
        note += (
            "; the client's request on it got no answer on it, and the answer may have come over another subflow,"
            " so this subflow alone does not show a slow or stuck server"
        )
    return note


def _application_latency(conn: Connection, handshake_rtt: float | None) -> tuple[str, str, str]:
    """Tell network delay from application delay: the request is acknowledged at once, the
    answer comes much later (a slow server application), or never comes."""
    first_req = last_req = first_ack = first_answer = None
    server_ack: int | None = None  # the server's latest ACK of the client's data
    req_bytes = 0
    req_seqs: set[int] = set()
    upload = False  # the client sent new data after the server acknowledged earlier data, not waiting for an answer
    for pkt in conn.packets:
        seg = pkt.seg
        if pkt.dir == C2S:
            if seg.length and not pkt.analysis & (F.A_KEEP_ALIVE | F.A_ZERO_WINDOW_PROBE):
                # the answer's wait counts from the request's last segment: an upload is not a slow server
                last_req = seg
                if first_req is None:
                    first_req = seg
                elif server_ack is not None and seq_ge(seg.seq, server_ack) and server_ack != first_req.seq:
                    upload = True
                if seg.seq not in req_seqs:
                    req_seqs.add(seg.seq)
                    req_bytes += seg.length
            continue
        if first_req is None:
            if seg.length and not pkt.analysis & (F.A_KEEP_ALIVE | F.A_ZERO_WINDOW_PROBE):
                # the server spoke first (SSH, SMTP, FTP, MySQL banners): the client's first bytes
                # answer the server, so "the server's delay after the request" means nothing here
                return (_mptcp_note(False), "MPTCP subflow", "") if _is_mptcp(conn) else ("", "", "")
            continue
        if first_req is not None:
            if seg.flags & ACK:
                server_ack = seg.ack
                if first_ack is None:
                    first_ack = seg
            if seg.length and not pkt.analysis & F.A_KEEP_ALIVE:
                first_answer = seg
                break
    if _is_mptcp(conn):
        # an MPTCP subflow: the answer may have come over another subflow (mptcp-subflows.pcap)
        return _mptcp_note(first_req is not None and first_answer is None), "MPTCP subflow", ""
    if first_req is None:
        return "", "", ""
    server = fmt_ip(conn.server.ip)
    acked = f"; the request itself was acknowledged after {fmt.duration(first_ack.ts - first_req.ts)}" if first_ack else ""
    if first_answer is not None and last_req is not None:
        wait = first_answer.ts - last_req.ts
        floor = max(APP_LATENCY_MIN, APP_LATENCY_RTTS * (handshake_rtt or 0.0))
        if wait >= floor:
            return (
                f"the server took {fmt.duration(wait)} to send its first byte after the client's request{acked}:"
                " the delay is in the server application, not the network",
                f"server answered after {fmt.duration(wait)}",
                f"Look at the server application on {server} (slow handler, locks, a backend it waits for).",
            )
        return "", "", ""
    # (still open: a FIN or RST ends the upload, and the close is the verdict's to word)
    still_open = conn.server.rst_ts is None and conn.client.rst_ts is None and conn.server.fin_seq is None and conn.client.fin_seq is None
    if upload and last_req is not None and still_open:
        return _upload_note(conn, first_req, last_req, server_ack, req_bytes, len(req_seqs))
    # (not when the client reset it: it did not wait for the end of the capture, and why it reset is
    # the verdict's; rst-gave-up.pcap and rst-zero-window.pcap: an upload the client aborted)
    if conn.server.fin_seq is None and conn.server.rst_ts is None and conn.client.rst_ts is None and conn.last_ts - first_req.ts >= UNANSWERED_AFTER:
        return (
            f"the client's request got no answer for {fmt.duration(conn.last_ts - first_req.ts)} until the capture ended{acked}:"
            " the server application has not responded",
            "request unanswered",
            f"Check the server application on {server}: is it stuck, or waiting for something?",
        )
    return "", "", ""


def _upload_note(conn: Connection, first: Segment, last: Segment, server_ack: int | None, sent: int, segs: int) -> tuple[str, str, str]:
    """What an upload without an answer shows (upload-sink.pcap): the client kept sending as the
    server acknowledged, so it was not waiting for an answer; the server's ACKs show the data
    arrived. Whether an answer was due after the upload's end the capture cannot tell."""
    end = (last.seq + last.length) & MASK
    delivered = server_ack is not None and seq_ge(server_ack, end)
    acked = "the server acknowledged all of it" if delivered else "the server acknowledged part of it"
    sent_text = f"the client sent {fmt.size(sent)} in {segs} segments over {fmt.duration(last.ts - first.ts)}, {acked} and sent no data"
    ran_on = capture_quiet_after(conn, last.ts)
    quiet = ran_on if ran_on is not None else conn.last_ts - last.ts
    if quiet < UNANSWERED_AFTER:
        return (
            f"{sent_text}: an upload (the client kept sending without waiting for an answer) that was still going"
            f" {fmt.duration(quiet)} before the capture ended; no answer is due while it goes on, so this is not a slow server",
            "upload acknowledged" if delivered else "upload",
            "",
        )
    return (
        f"{sent_text}, not even in the {fmt.duration(quiet)} from its last segment to the end of the capture: an upload (the client kept sending without"
        " waiting for an answer); whether the protocol expects an answer after it (a sink expects none) the capture cannot tell",
        "upload, no answer seen",
        "",
    )


# ------------------------------------------------------------------ TCP state-machine cases
# Cases the RFC 9293 state machine explains and a client/server reading gets wrong: crossing
# SYNs or FINs, a keep-alive timeout, a SYN-ACK dropped on the client host. Each is a rule with
# its evidence; judge() takes the first that applies before its usual cascade.


def _state_machine_case(conn: Connection, state: ConnAnalysis, cs: str) -> _Cause | None:
    """The first state-machine rule that explains this connection, or None."""
    if conn.simultaneous_open and cs in ("SF", "S1", "S2", "S3"):
        return _simultaneous_open(conn, state, cs)
    if cs == "SF" and conn.simultaneous_close:
        return _simultaneous_close(conn, state)
    if cs in ("RSTO", "RSTR"):
        return _keepalive_timeout(conn)
    if cs == "S1" and conn.handshake_ack_ts is None and conn.server.syn_count:
        return _synack_dropped_on_client(conn)
    return None


def _frame_numbers(packets: list[Packet]) -> tuple[int, ...]:
    return tuple(p.seg.frame for p in packets)


def _fin_packets(conn: Connection) -> list[Packet]:
    """Each side's first FIN."""
    out: list[Packet] = []
    for side in (conn.client, conn.server):
        for pkt in conn.packets:
            if pkt.seg.flags & FIN and pkt.seg.ts == side.fin_ts and (pkt.dir == C2S) == (side is conn.client):
                out.append(pkt)
                break
    return out


_SIMULTANEOUS_CLOSE_TEXT: Final = (
    "Both sides closed at the same time: the FINs crossed (neither FIN acknowledges the other's), so both went"
    " through CLOSING and both hold TIME-WAIT (RFC 9293 simultaneous close)."
)


def _simultaneous_open(conn: Connection, state: ConnAnalysis, cs: str) -> _Cause:
    """Rule simultaneous-open: both sides sent a bare SYN, the SYNs crossed, each answered the
    other's with a SYN-ACK carrying its own ISN. Both opened: neither is the server."""
    c, s = conn.client, conn.server
    fc, fs = state.facts
    syns = [p for p in conn.packets if p.seg.flags & SYN and not p.seg.flags & ACK][:2]
    answers = [p for p in (c.open_answer, s.open_answer) if p is not None]
    a, b = f"{fmt_ip(c.ip)}:{c.port}", f"{fmt_ip(s.ip)}:{s.port}"
    explanation = (
        f"Simultaneous open: {a} and {b} both sent a SYN and the SYNs crossed; each answered the other's SYN"
        " with a SYN-ACK carrying its own ISN (RFC 9293). Both sides opened, so neither is the server"
        f" ({a}, whose SYN the capture saw first, is listed as the client). Not a fault: no SYN or SYN-ACK was lost."
        f" {fmt.size(fc.payload_bytes)} went one way and {fmt.size(fs.payload_bytes)} the other."
    )
    evidence = [Evidence("a SYN from each side, neither acknowledging the other", _frame_numbers(syns))]
    if answers:
        evidence.append(Evidence("each side's SYN-ACK repeats its own SYN's ISN", _frame_numbers(answers)))
    outcome, summary = {"SF": ("closed", "simultaneous open"), "S1": ("established", "simultaneous open; open at end of capture")}.get(
        cs, ("half-closed", "simultaneous open; one side sent FIN")
    )
    if cs == "SF":
        if conn.simultaneous_close:
            explanation += " " + _SIMULTANEOUS_CLOSE_TEXT
            summary += "; simultaneous close"
        else:
            first = "client" if (c.fin_ts or 0) <= (s.fin_ts or 0) else "server"
            explanation += f" Closed with FIN by both sides, the {first} ({a if first == 'client' else b}) first."
    return _Cause(outcome, summary, explanation, "", "simultaneous-open", CERTAIN, tuple(evidence), ok=True, side="")


def _simultaneous_close(conn: Connection, state: ConnAnalysis) -> _Cause:
    """Rule simultaneous-close: both FINs sent before either side saw the other's."""
    fc, fs = state.facts
    fins = _fin_packets(conn)
    explanation = f"{_opening_words(conn)} {fmt.size(fc.payload_bytes)} sent and {fmt.size(fs.payload_bytes)} received. " + _SIMULTANEOUS_CLOSE_TEXT
    evidence: tuple[Evidence, ...] = (Evidence("each FIN's ACK number stops short of the other side's FIN", _frame_numbers(fins)),)
    if conn.midstream:
        # both sides closing at once does not depend on which side was the client
        evidence = (_midstream_evidence(conn), *evidence)
    return _Cause("closed", "simultaneous close", explanation, "", "simultaneous-close", CERTAIN, evidence, ok=True, side="")


def _opening_words(conn: Connection) -> str:
    """How a closed connection's explanation begins: with the handshake it had, or, for one picked
    up mid-stream, with what the capture did not see (no handshake, roles guessed from the ports)."""
    if not conn.midstream:
        return "Normal connection: handshake,"
    return (
        "Picked up mid-stream (the capture starts after the handshake; client and server were guessed from the"
        f" ports, {fmt_ip(conn.client.ip)}:{conn.client.port} taken as the client): in the capture"
    )


def _midstream_evidence(conn: Connection) -> Evidence:
    """The first packet of a connection picked up mid-stream (no SYN before it)."""
    return Evidence("first packet, no SYN before it", (conn.packets[0].seg.frame,) if conn.packets else ())


def _keepalive_timeout(conn: Connection) -> _Cause | None:
    """Rule keepalive-timeout: one side's keep-alive probes went unanswered (nothing at all came
    back after the first), then that side's kernel reset the connection: tcp_keepalive_probes
    were exhausted and its application got ETIMEDOUT. The peer host or the path to it went away;
    the packets cannot tell which."""
    c, s = conn.client, conn.server
    by_client = c.rst_ts is not None and (s.rst_ts is None or c.rst_ts <= s.rst_ts)
    direction = C2S if by_client else 1
    rst_index = next((i for i, p in enumerate(conn.packets) if p.dir == direction and p.seg.flags & RST), -1)
    probes: list[Packet] = []
    for pkt in reversed(conn.packets[:rst_index]):
        if pkt.dir != direction or not pkt.analysis & F.A_KEEP_ALIVE:
            break  # an answer from the peer, or anything but a probe, ends the run
        probes.append(pkt)
    if rst_index < 0 or not probes:
        return None
    probes.reverse()
    rst = conn.packets[rst_index]
    who, other = ("client", "server") if by_client else ("server", "client")
    peer = s if by_client else c
    last_heard = next((p for p in reversed(conn.packets[:rst_index]) if p.dir != direction), None)
    if last_heard is not None and last_heard.seg.win == 0 and not last_heard.seg.flags & RST:
        return None  # the peer's window was closed: zero-window probes (persist timer), not keep-alives
    heard = f" the last packet from the {other} came {fmt.duration(probes[0].seg.ts - last_heard.seg.ts)} before the first probe." if last_heard else ""
    n = len(probes)
    gaps = gaps_text([p.seg.ts for p in probes] + [rst.seg.ts])
    explanation = (
        f"The {who}'s kernel sent {n} keep-alive probe{'s' if n > 1 else ''} on the idle connection and none was answered"
        f" (gaps {gaps});{heard} It then reset the connection: tcp_keepalive_probes were exhausted, and the {who}"
        f" application got ETIMEDOUT. The {other} ({fmt_ip(peer.ip)}) or the path to it went away (host down or"
        " unplugged, a route gone, a firewall or NAT that dropped the flow); this capture cannot tell which."
        f" Not an abort by the {who} application."
    )
    next_step = (
        f"Check that {fmt_ip(peer.ip)} is up and reachable from the {who} (ping, ip route get {fmt_ip(peer.ip)});"
        f" if it is, look for a stateful firewall or NAT between them that forgot the connection."
    )
    evidence = [
        Evidence(f"{n} keep-alive probe(s) from the {who}, none answered", _frame_numbers(probes)),
        Evidence(f"RST from the {who} after the last probe", (rst.seg.frame,)),
    ]
    if last_heard is not None:
        evidence.append(Evidence(f"last packet from the {other}", (last_heard.seg.frame,)))
    summary = f"{n} keep-alives unanswered, {who} kernel reset it"
    return _Cause("keepalive-timeout", summary, explanation, next_step, "keepalive-timeout", CERTAIN, tuple(evidence), ok=False, side="path")


def _initial_ttl(ttl: int | None) -> bool:
    return ttl is not None and ttl in INITIAL_TTLS


def _captured_at_client(conn: Connection) -> tuple[int, int, tuple[int, int]] | None:
    """(client SYN TTL, SYN-ACK TTL, their frames) when the capture sits on the client's host or
    link: its first SYN still carries an initial TTL, the server's first SYN-ACK a decremented one."""
    syn = next((p for p in conn.packets if p.dir == C2S and p.seg.flags & (SYN | ACK) == SYN), None)
    synack = next((p for p in conn.packets if p.dir != C2S and p.seg.flags & (SYN | ACK) == SYN | ACK), None)
    if syn is None or synack is None or not _initial_ttl(syn.seg.ttl) or _initial_ttl(synack.seg.ttl):
        return None
    return syn.seg.ttl, synack.seg.ttl, (syn.seg.frame, synack.seg.frame)


def _synack_dropped_on_client(conn: Connection) -> _Cause | None:
    """Rule synack-dropped-on-client: the capture sits on the client's host or link (the client's
    SYN still carries an initial TTL, the server's SYN-ACK a decremented one), it saw SYN-ACKs
    arrive, and the client went on resending its SYN as if none had come: they were dropped on
    the client host after the capture point (its firewall input chain, rp_filter, conntrack)."""
    c, s = conn.client, conn.server
    syns = [p for p in conn.packets if p.dir == C2S and p.seg.flags & SYN and not p.seg.flags & ACK]
    synacks = [p for p in conn.packets if p.dir != C2S and p.seg.flags & SYN and p.seg.flags & ACK]
    if not syns or not synacks or any(p.dir == C2S and p.seg.flags & (RST | FIN) for p in conn.packets):
        return None
    later = [p for p in syns if p.seg.ts > synacks[0].seg.ts]
    if not later or not _initial_ttl(syns[0].seg.ttl) or _initial_ttl(synacks[0].seg.ttl):
        return None  # no SYN resent after a SYN-ACK, or the capture point is unknown
    client = fmt_ip(c.ip)
    explanation = (
        f"The server's SYN-ACK reached the client's side of the path ({len(synacks)} captured here), but the client never"
        f" answered it and kept resending its SYN ({len(later)} more after the first SYN-ACK), as if no SYN-ACK had come."
        f" The capture is on the client's host or link: the client's SYN still has its initial TTL {syns[0].seg.ttl},"
        f" the SYN-ACK arrives with TTL {synacks[0].seg.ttl} (routed). So the SYN-ACK was likely dropped on the client"
        " host after the capture point: its firewall input chain, reverse-path filtering (rp_filter) or conntrack."
    )
    next_step = (
        f"On the client {client}: look for input rules dropping packets from {fmt_ip(s.ip)}:{s.port}"
        " (nft list ruleset, iptables -S INPUT), check sysctl net.ipv4.conf.all.rp_filter, and conntrack -S (invalid)."
    )
    evidence = (
        Evidence("SYN-ACKs captured arriving at the client", _frame_numbers(synacks)),
        Evidence("client SYNs resent after the SYN-ACK, no ACK from the client", _frame_numbers(later)),
        Evidence(f"client SYN TTL {syns[0].seg.ttl} (not routed yet), SYN-ACK TTL {synacks[0].seg.ttl}", (syns[0].seg.frame, synacks[0].seg.frame)),
    )
    summary = "SYN-ACK reached the client host, never answered"
    return _Cause("handshake-incomplete", summary, explanation, next_step, "synack-dropped-on-client", LIKELY, evidence, ok=False, side="client")


def _echo_rst_notes(conn: Connection) -> list[str]:
    """A side's RSTs after its first: the kernel answering segments that were in flight when the
    connection was aborted (the socket is gone). They are echoes of one abort, not new aborts."""
    out: list[str] = []
    if conn.client.rst_ts is None and conn.server.rst_ts is None:
        return out  # (most connections: no RST at all)
    for side, direction, who, other in ((conn.client, C2S, "client", "server"), (conn.server, 1, "server", "client")):
        if side.rst_ts is None:
            continue
        echoes = [p for p in conn.packets if p.dir == direction and p.seg.flags & RST and p.seg.ts > side.rst_ts]
        if echoes:
            out.append(
                f"the {who} sent {len(echoes)} more RST{'s' if len(echoes) > 1 else ''} after its abort, each answering a"
                f" {other} segment still in flight (the socket was gone): echoes of the one abort, not new aborts"
            )
    return out


def _frame_list(frames: list[int]) -> str:
    """``#3, #5, #9`` (the frames an ECN fact names)."""
    return ", ".join(["#" + str(n) for n in frames[:ECN_SHOWN]])


# frame numbers an ECN sentence names (the evidence keeps up to ECN_FRAMES)
ECN_SHOWN: Final = 3


class _EcnFinding:
    """What :func:`_ecn_finding` found: sentences, a tag for the summary, and the rule
    ``ecn-congestion`` (with its confidence, evidence and next step) when CE marks are present."""

    __slots__ = ("notes", "tag", "rule", "confidence", "evidence", "next_step")

    def __init__(self, notes: list[str], tag: str, rule: str, confidence: str, evidence: tuple[Evidence, ...], next_step: str) -> None:
        self.notes = notes
        self.tag = tag
        self.rule = rule
        self.confidence = confidence
        self.evidence = evidence
        self.next_step = next_step


def _ecn_finding(conn: Connection, state: ConnAnalysis) -> _EcnFinding | None:
    """ECN: the negotiation, CE marks with the receiver's ECE echoes and the sender's CWR, ECT on a
    connection that did not agree to ECN, and ECT missing where it did. None when the connection
    shows nothing of ECN."""
    if state.ecn is None:
        return None
    client, server = state.ecn
    outcome = negotiation(client, server, conn.client.syn_count > 0)
    syn = f"SYN #{client.setup_frame}"
    synack = f"SYN-ACK #{server.setup_frame}"
    notes: list[str] = []
    tag = ""
    if outcome == NEGOTIATED:
        asked = "AccECN" if client.setup == AE | CWR | ECE else "ECN"
        agreed = "agreed to classic ECN" if asked == "AccECN" else "agreed"
        bits = "AE+ECE+CWR" if asked == "AccECN" else "ECE+CWR"
        notes.append(f"ECN negotiated: the client asked for {asked} ({syn} with {bits}), the server {agreed} ({synack} with ECE)")
    elif outcome == ACCECN:
        notes.append(
            f"AccECN negotiated ({syn} with AE+CWR+ECE, {synack} accepting): AE, CWR and ECE on later segments are"
            " AccECN's counter of CE marks, not ECE echoes or window reductions"
        )
    elif outcome == DECLINED:
        notes.append(f"the client asked for ECN ({syn} with ECE+CWR) and the server declined ({synack} without ECE): no ECN on this connection")
    elif outcome == REFLECTED:
        notes.append(
            f"{synack} repeats the SYN's ECN setup bits (ECE+CWR): a reflector or a broken middlebox answering, not an"
            " ECN agreement (RFC 3168: such a connection uses no ECN)"
        )
        tag = "ECN setup reflected"
    elif outcome == NONSTANDARD:
        notes.append(f"the handshake carries ECN setup bits no RFC defines ({syn}, {synack}): ECN not in use")
    elif outcome == REQUESTED:
        notes.append(f"the client asked for ECN ({syn} with ECE+CWR); no SYN-ACK was captured")
    ecn_on = in_use(outcome)
    evidence: list[Evidence] = []
    congestion = False
    echoed = False
    reduced = False
    for d, facts, who in ((C2S, client, "client"), (1, server, "server")):
        peer_facts = server if d == C2S else client
        peer = "server" if who == "client" else "client"
        data = state.facts[d].data_segments
        ect = facts.ect0 + facts.ect1 + facts.ce
        if ect and not ecn_on and outcome != UNKNOWN:
            notes.append(
                f"{_plural(ect, 'segment')} from the {who} carry an ECN codepoint (ECT or CE) though ECN was not negotiated:"
                f" the {who} marks ECT without agreeing (a sender bug), or a middlebox between the {who} and the capture point rewrites the ECN field"
            )
            tag = tag or "ECT without ECN negotiated"
        if ecn_on and data and not facts.ect_data:
            notes.append(
                f"ECN was negotiated, but none of the {who}'s {_plural(data, 'data segment')} carries ECT at the capture point:"
                f" the ECN field was cleared (bleached) between the {who} and the capture point, or the {who} does not mark its data"
            )
            tag = tag or f"ECT bleached ({who} side)"
        # the receiver's echoes and the sender's reductions (classic ECN only: AccECN's bits are a counter)
        echoes = peer_facts.ece if outcome == NEGOTIATED else 0
        cwr = facts.cwr if outcome == NEGOTIATED else 0
        if not facts.ce and not echoes:
            continue
        congestion = True
        parts = []
        if facts.ce:
            parts.append(f"CE marked {_plural(facts.ce, 'segment')} from the {who} ({_frame_list(facts.ce_frames)}), between the {who} and the capture point")
            evidence.append(Evidence(f"{facts.ce} CE-marked segment(s) from the {who}", tuple(facts.ce_frames)))
        if echoes:
            echoed = True
            start = "the" if facts.ce else f"no CE from the {who} was captured, yet the"
            where = "" if facts.ce else f": marked after the capture point, on the way to the {peer}"
            parts.append(f"{start} {peer} echoed ECE from #{peer_facts.ece_frames[0]} ({_plural(echoes, 'ACK')}){where}")
            evidence.append(Evidence(f"ECE echoed by the {peer}", tuple(peer_facts.ece_frames)))
        if cwr:
            reduced = True
            parts.append(f"the {who} reduced its congestion window (CWR {_frame_list(facts.cwr_frames)})")
            evidence.append(Evidence(f"CWR from the {who}", tuple(facts.cwr_frames)))
        elif echoes:
            parts.append(f"no CWR from the {who} was captured")
        notes.append(
            "; ".join(parts)
            + ": congestion on the path, signalled by a hop's queue management (an AQM such as fq_codel or RED with ECN marking) instead of drops"
        )
        tag = tag or f"congestion: CE marks on {_plural(facts.ce or echoes, who + ' segment')}"
    if not congestion and ecn_on and outcome == NEGOTIATED:
        notes.append("no CE marks and no ECE echoes: the path signalled no congestion")
    if not notes:
        return None
    if not congestion:
        return _EcnFinding(notes, tag, "", CERTAIN, (), "")
    # CE is only set by a congested hop; its echo and the sender's reduction confirm it was heard
    confidence = CERTAIN if (echoed and reduced) else LIKELY
    next_step = (
        "Nothing is broken: the path was congested and ECN slowed the sender without loss. To find the hop,"
        " look at the marking counters of the queues on the way (tc -s qdisc: ecn_mark / marked)."
    )
    return _EcnFinding(notes, tag, "ecn-congestion", confidence, tuple(evidence), next_step)


def _segment_name(flags: int) -> str:
    """SYN, SYN-ACK, FIN, RST or segment: what a checksum sentence calls a packet."""
    if flags & SYN:
        return "SYN-ACK" if flags & ACK else "SYN"
    if flags & RST:
        return "RST"
    return "FIN" if flags & FIN else "segment"


def _checksum_notes(conn: Connection, state: ConnAnalysis) -> tuple[list[str], bool]:
    """A sentence per segment whose checksum the decoder found wrong (not a TX-offload partial sum):
    sent again and not answered in between is corruption in transit (the receiver discarded it);
    answered anyway, the packet reached the receiver intact and the capture's copy is damaged.
    Also whether any was corrupted in transit."""
    out: list[str] = []
    in_transit = False
    packets = conn.packets
    for frame in state.bad_checksums:
        at = next((i for i, p in enumerate(packets) if p.seg.frame == frame), -1)
        if at < 0:
            continue
        bad = packets[at]
        seg = bad.seg
        who = "client" if bad.dir == C2S else "server"
        peer = "server" if who == "client" else "client"
        name = _segment_name(seg.flags)
        covered = (seg.seq + seg.length + (1 if seg.flags & (SYN | FIN) else 0)) & MASK
        resent = 0
        answered = 0
        for p in packets[at + 1 :]:
            s = p.seg
            if p.dir == bad.dir and s.seq == seg.seq and (s.length or s.flags & (SYN | FIN | RST)):
                resent = s.frame
                break
            if p.dir != bad.dir and s.flags & ACK and covered != seg.seq and seq_ge(s.ack, covered):
                answered = s.frame
                break
        if answered:
            out.append(
                f"{name} #{frame} from the {who} has a bad checksum, yet the {peer} answered it (#{answered}):"
                f" it reached the {peer} intact, so the capture's copy is damaged (or was recorded before a box rewrote it)"
            )
        elif resent:
            in_transit = True
            out.append(
                f"{name} #{frame} from the {who} has a bad checksum and the {who} sent it again (#{resent}) with no answer in between:"
                f" corrupted in transit, the {peer} discarded it"
            )
        else:
            out.append(f"{name} #{frame} from the {who} has a bad checksum: corrupted in transit or in the capture (nothing after it tells which)")
    return out, in_transit
