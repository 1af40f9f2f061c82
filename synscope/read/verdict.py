"""Outcome, Zeek conn_state and history, and a plain-English verdict per connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from synscope.core import fmt
from synscope.core.addr import fmt_ip
from synscope.core.icmp import FILTER_REASONS, icmp_label
from synscope.core.model import ACK, FIN, RST, SYN
from synscope.read.analysis import flags as F
from synscope.read.analysis.annotate import backoff_pattern, data_after, gaps_text
from synscope.read.analysis.engine import ConnAnalysis, DirectionFacts
from synscope.read.analysis.loss import BY_IPID, BY_OVERLAP, BY_POSITION, BY_TSVAL, COPY, DOWNSTREAM, REORDERED, SPURIOUS, UNDECIDED, UPSTREAM, LossFacts
from synscope.read.evidence import CERTAIN, LIKELY, POSSIBLE, Evidence
from synscope.read.tracker import C2S, Connection

# Retransmission rate above which loss on the path is the headline
LOSS_RATE_ALERT: Final = 0.01
# Zero-window spans shorter than this are normal flow control, not a stalled reader
ZERO_WINDOW_ALERT: Final = 0.2
# Outcomes that count as "ended well" (not expanded by default)
GOOD_OUTCOMES: Final = frozenset({"closed", "established", "half-closed"})
# Common initial TTLs, to turn a received TTL into a hop count
INITIAL_TTLS: Final = (64, 128, 255)


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


def conn_state(conn: Connection) -> str:
    """Zeek's conn_state code."""
    c, s = conn.client, conn.server
    orig_syn = c.syn_count > 0
    resp_synack = s.syn_count > 0
    if conn.midstream and not orig_syn and not resp_synack:
        return "OTH"
    if not orig_syn and resp_synack:
        if s.rst_ts is not None:
            return "RSTRH"
        if s.fin_seq is not None:
            return "SHR"
        return "OTH"
    if not resp_synack:
        if s.rst_ts is not None:
            return "REJ"
        if c.rst_ts is not None:
            return "RSTOS0"
        if c.fin_seq is not None:
            return "SH"
        if s.packets == 0:
            return "S0"
        return "OTH"
    # established (SYN and SYN-ACK seen)
    if c.rst_ts is not None and (s.rst_ts is None or c.rst_ts <= s.rst_ts):
        return "RSTO"
    if s.rst_ts is not None:
        return "RSTR"
    if c.fin_seq is not None and s.fin_seq is not None:
        return "SF"
    if c.fin_seq is not None:
        return "S2"
    if s.fin_seq is not None:
        return "S3"
    return "S1"


# history letters that repeat logarithmically (1st, 10th, 100th ...)
_LOG_LETTERS: Final = "tgw"


class _History:
    """Zeek's rules for adding a letter to a history string."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.once: set[str] = set()
        self.last_seq: dict[str, int | None] = {}
        self.counts: dict[str, int] = {}

    def add(self, letter: str, d: int, seq: int | None = None) -> None:
        ch = letter.upper() if d == C2S else letter
        if letter in "adiq":
            if ch in self.once:
                return
            self.once.add(ch)
        elif letter in "fhrs":
            if ch in self.last_seq and self.last_seq[ch] == seq:
                return
            self.last_seq[ch] = seq
        elif letter in _LOG_LETTERS:
            n = self.counts.get(ch, 0) + 1
            self.counts[ch] = n
            if n not in (1, 10, 100, 1000, 10000, 100000):
                return
        self.out.append(ch)


def history(conn: Connection) -> str:
    """Zeek's history string: upper case for the originator, lower for the responder."""
    h = _History()
    add = h.add
    out = h.out
    if conn.roles_guessed and conn.packets and conn.packets[0].dir != C2S:
        out.append("^")
    for pkt in conn.packets:
        seg = pkt.seg
        fl = seg.flags
        d = pkt.dir
        if fl & SYN:
            if fl & (FIN | RST):
                add("q", d)
            add("h" if fl & ACK else "s", d, seg.seq)
        if fl & FIN:
            add("f", d, seg.seq)
        if fl & RST:
            add("r", d, seg.seq)
        if fl & ACK and not seg.length and not fl & (SYN | FIN | RST):
            add("a", d)
        if seg.length:
            add("d", d)
        if pkt.analysis & (F.A_RETRANSMISSION | F.A_FAST_RETRANSMISSION | F.A_SPURIOUS_RETRANSMISSION) and seg.length:
            add("t", d)
        if pkt.analysis & F.A_LOST_SEGMENT:
            add("g", d)
        if pkt.analysis & F.A_ZERO_WINDOW:
            add("w", d)
    return "".join(out)


def _half_close(conn: Connection) -> str:
    """A sentence when one side sent FIN and the other kept sending data for a while."""
    for me, who, other, d in ((conn.client, "client", "server", C2S), (conn.server, "server", "client", 1)):
        if me.fin_ts is None:
            continue
        peer = conn.server if me is conn.client else conn.client
        if peer.fin_ts is not None and peer.fin_ts < me.fin_ts:
            continue
        after = data_after(conn, d, me.fin_ts)
        if after:
            sent = sum(p.seg.length for p in after)
            span = (peer.fin_ts or after[-1].seg.ts) - me.fin_ts
            return (
                f"The {who} half-closed (shut down its sending side with FIN) and the {other} kept sending"
                f" {fmt.size(sent)} for {fmt.duration(span)} before closing its side: a deliberate half-close."
            )
    return ""


def _server_addr(conn: Connection) -> str:
    return fmt_ip(conn.server.ip)


def _icmp_sentence(conn: Connection) -> tuple[str, str, str, str]:
    """(outcome, summary, explanation, next step) for an attempt killed by ICMP."""
    err = conn.icmp[-1]
    reason = err.name
    router = fmt_ip(err.router)
    label = icmp_label(err.version, err.type, err.code)
    server = _server_addr(conn)
    port = conn.server.port
    where = f"at {router}"
    router_hops = hops(err.ttl)
    if err.router == conn.server.ip:
        where = f"by the server {server} itself"
    elif router_hops is not None:
        where = f"at {router}, {router_hops + 1} hop{'s' if router_hops else ''} from the capture point"
    if reason in FILTER_REASONS:
        outcome = "icmp-prohibited"
        summary = f"{reason} ({label}) from {router}"
        expl = (
            f"A filter {where} rejected the SYN to {server}:{port} with {label} ({reason}): "
            f"the packet never reached the server, and the filter said so instead of dropping it silently."
        )
        nxt = f"Check the firewall / ACL on {router} for a reject rule covering port {port} (nft list ruleset, iptables -S)."
    elif reason == "time-exceeded":
        outcome = "icmp-time-exceeded"
        summary = f"TTL expired at {router}"
        expl = f"The SYN's TTL ran out {where} before it reached {server}: a routing loop or too many hops."
        nxt = f"Run traceroute -T -p {port} {server} and look for a loop."
    else:
        outcome = "icmp-unreachable"
        summary = f"{reason} ({label}) from {router}"
        expl = f"{router} answered the SYN to {server}:{port} with {label} ({reason}): "
        if reason == "port-unreach":
            expl += "the host says nothing listens on that port."
        elif reason in ("host-unreach", "net-unreach"):
            expl += "it has no way to deliver to the server (no route, or ARP/ND for the server fails)."
        elif reason in ("frag-needed", "packet-too-big"):
            expl += f"the packet is larger than the path allows (MTU {err.mtu})."
        else:
            expl += "delivery failed on the way."
        nxt = f"Check routing towards {server} on {router} (ip route get {server}) and whether the server is up."
    return outcome, summary, expl, nxt


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


def judge(conn: Connection, state: ConnAnalysis) -> Verdict:
    """Decide the outcome and word the verdict for one connection."""
    c, s = conn.client, conn.server
    cs = conn_state(conn)
    hist = history(conn)
    server = _server_addr(conn)
    port = s.port
    fc, fs = state.facts
    syn_times = c.syn_times
    handshake_rtt = conn.handshake_rtt
    notes: list[str] = []
    side = ""
    next_step = ""
    ok = False

    if conn.icmp and not conn.established and s.syn_count == 0:
        outcome, summary, explanation, next_step = _icmp_sentence(conn)
        side = "path"
    elif cs == "REJ":
        outcome = "refused"
        delay = (s.rst_ts - conn.syn_ts) if (s.rst_ts is not None and conn.syn_ts is not None and s.rst_ts >= conn.syn_ts) else None
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
    elif cs in ("S0", "SH", "RSTOS0") and not conn.icmp:
        outcome = "no-answer"
        span = syn_times[-1] - syn_times[0] if len(syn_times) > 1 else 0.0
        pattern = backoff_pattern(syn_times)
        gaps = gaps_text(syn_times)
        if c.syn_count > 1:
            summary = f"{c.syn_count} SYNs, gaps {gaps}, nothing back"
            explanation = (
                f"{c.syn_count} SYNs over {fmt.duration(span)} (gaps {gaps}"
                f"{'; ' + pattern if pattern else ''}), and nothing came back: no SYN-ACK, no RST, no ICMP."
            )
        else:
            summary = "1 SYN, nothing back"
            explanation = "One SYN and nothing came back (no SYN-ACK, RST or ICMP) before the capture ended."
        explanation += f" Packets to {server}:{port} are dropped on the way, or the host is down."
        if cs == "RSTOS0":
            explanation += " The client then gave up with RST."
        next_step = (
            f"Check firewalls / security groups on the path for DROP rules on port {port}; "
            f"test from closer to the server (nc -vz {server} {port}) and check the host is up."
        )
        side = "path"
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
            else:
                summary = "server reset during the handshake"
                explanation = "The server sent a SYN-ACK and then RST before the handshake completed."
                next_step = f"Check the server's accept queue and application on {server}."
            side = who
        else:
            summary = f"RST from {who} after {after}"
            explanation = f"The {who} aborted the connection with RST {after} after it started, after {fmt.size(moved)} of data; the {other} did not close it. "
            last_data = None
            for pkt in conn.packets:
                if pkt.seg.length:
                    last_data = pkt
            if last_data is not None and last_data.seg.ts <= (rst_ts or 0) and (rst_ts or 0) - last_data.seg.ts < 0.5:
                explanation += "Data was still flowing: an application closing with unread data, a crash, or a middlebox cutting it."
            else:
                explanation += "An application abort (SO_LINGER 0), a crash, or an idle timeout on a firewall/NAT."
            next_step = f"Check the {who} application's logs around that time, and any firewall or load balancer idle timeouts."
            side = who
    elif cs == "SF":
        outcome = "closed"
        first = "client" if (c.fin_ts or 0) <= (s.fin_ts or 0) else "server"
        summary = f"{first} closed first"
        explanation = (
            f"Normal connection: handshake, {fmt.size(fc.payload_bytes)} sent and {fmt.size(fs.payload_bytes)} received,"
            f" closed with FIN by both sides, the {first} first."
        )
        half = _half_close(conn)
        if half:
            explanation += " " + half
            summary += "; half-close"
        ok = True
    elif cs in ("S2", "S3", "SHR"):
        who = "client" if cs == "S2" else "server"
        other = "server" if cs == "S2" else "client"
        outcome = "half-closed"
        me = c if who == "client" else s
        kept_sending = me.fin_ts is not None and data_after(conn, C2S if me is c else 1, me.fin_ts)
        summary = f"{who} sent FIN, {other} did not"
        explanation = f"The {who} closed its sending side (FIN); the {other} had not sent its FIN when the capture ended"
        explanation += ", and kept sending data after it (a half-close)." if kept_sending else "."
        next_step = f"If the {other} should have closed: it may still hold the socket in CLOSE-WAIT (ss -tan state close-wait)."
        ok = True
    elif cs == "OTH":
        outcome = "midstream"
        summary = "picked up mid-stream, roles guessed from ports"
        explanation = (
            "The capture starts after this connection's handshake, so client and server were guessed from the ports"
            f" ({fmt_ip(c.ip)}:{c.port} taken as the client)."
        )
        if c.rst_ts or s.rst_ts:
            explanation += " It ended with RST."
        elif c.fin_seq is not None and s.fin_seq is not None:
            explanation += " It closed with FIN from both sides."
        ok = not (c.rst_ts or s.rst_ts)
    else:  # S1: established, not terminated
        outcome = "established"
        if conn.handshake_ack_ts is None and s.syn_count:
            outcome = "handshake-incomplete"
            summary = "SYN-ACK not acknowledged"
            n = s.syn_count
            explanation = (
                f"The server answered with SYN-ACK{' ' + str(n) + ' times' if n > 1 else ''}, but no ACK from the client is in the capture: "
                "the SYN-ACK is lost on the way back, or the client gave up."
            )
            if n > 1:
                explanation += f" The server retransmitted the SYN-ACK (gaps {gaps_text(s.syn_times)})."
            next_step = f"Check the return path from {server} to the client (asymmetric routing, a stateful firewall dropping the SYN-ACK)."
            side = "path"
        else:
            summary = "open at end of capture"
            explanation = "The connection was established and still open when the capture ended."
            ok = True

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
    if c.syn_count > 1 and conn.established and outcome not in ("refused", "no-answer"):
        notes.append(
            f"the client sent {c.syn_count} SYNs before the handshake completed (gaps {gaps_text(syn_times)}): the first SYN(s) or SYN-ACK(s) were lost"
        )
        summary += f"; {c.syn_count} SYNs"
        ok = False
    if conn.reused_from is not None:
        notes.append(f"this 4-tuple was used before by connection #{conn.reused_from} (port reuse)")
    if conn.evicted:
        notes.append("evicted from the full connection table (--max-conns) to make room; any later packets of it start a new entry")
    tw = ""
    if cs == "SF":
        ct, st = conn.state_of(c), conn.state_of(s)
        if ct == "TIME-WAIT":
            tw = "the client ends in TIME-WAIT"
        elif st == "TIME-WAIT":
            tw = "the server ends in TIME-WAIT (it closed first; many of these can exhaust its ports)"
        if tw:
            notes.append(tw)
    if handshake_rtt is not None and outcome in ("closed", "established", "half-closed", "reset-by-client", "reset-by-server"):
        summary = f"handshake {fmt.duration(handshake_rtt)}; " + summary
    if notes:
        explanation = explanation.rstrip() + " " + " ".join(n[0].upper() + n[1:] + "." for n in notes)
    return Verdict(outcome, cs, hist, summary, explanation, next_step, ok, side, *_loss_rule(conn, state, outcome))


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


def _application_latency(conn: Connection, handshake_rtt: float | None) -> tuple[str, str, str]:
    """Tell network delay from application delay: the request is acknowledged at once, the
    answer comes much later (a slow server application), or never comes."""
    first_req = last_req = first_ack = first_answer = None
    for pkt in conn.packets:
        seg = pkt.seg
        if pkt.dir == C2S:
            if seg.length and not pkt.analysis & (F.A_KEEP_ALIVE | F.A_ZERO_WINDOW_PROBE):
                # the answer's wait counts from the request's last segment: an upload is not a slow server
                last_req = seg
                if first_req is None:
                    first_req = seg
            continue
        if first_req is not None:
            if first_ack is None and seg.flags & ACK:
                first_ack = seg
            if seg.length and not pkt.analysis & F.A_KEEP_ALIVE:
                first_answer = seg
                break
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
    if conn.server.fin_seq is None and conn.server.rst_ts is None and conn.last_ts - first_req.ts >= UNANSWERED_AFTER:
        return (
            f"the client's request got no answer for {fmt.duration(conn.last_ts - first_req.ts)} until the capture ended{acked}:"
            " the server application has not responded",
            "request unanswered",
            f"Check the server application on {server}: is it stuck, or waiting for something?",
        )
    return "", "", ""
