"""A scripted TCP exchange for unit tests: segments in, tracker + analysis state out.

Segments are fed exactly as the pipeline feeds them (``Tracker.feed``, then
``Analyser.on_packet`` on the packet record it appended), with no capture file,
no decoder and no duplicate filter in between. Each side's next sequence number
is kept, so a test only spells out the numbers that matter to it.
"""

from __future__ import annotations

from synscope.core.model import ACK, FIN, SYN, Segment
from synscope.core.seqnum import MASK, seq_gt
from synscope.read.analysis.engine import Analyser
from synscope.read.analysis.flags import flag_names
from synscope.read.tracker import Connection, Packet, Tracker

CLIENT, SERVER = bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2])
CPORT, SPORT = 40000, 80
WIN = 64000


def names(pkt: Packet) -> list[str]:
    """tshark's names of the analysis flags on one packet."""
    return flag_names(pkt.analysis)


class Flow:
    """One 4-tuple between CLIENT:cport and SERVER:sport, driven segment by segment."""

    def __init__(self, cisn: int = 1000, sisn: int = 5000, cport: int = CPORT, sport: int = SPORT, tracker: Tracker | None = None) -> None:
        self.tracker = tracker if tracker is not None else Tracker()
        self.analyser = Analyser()
        self.cport, self.sport = cport, sport
        self.frame = 0
        # next sequence number each side would send (True: the client)
        self.nxt = {True: cisn & MASK, False: sisn & MASK}
        self.conn: Connection | None = None

    def send(
        self,
        t: float,
        from_client: bool,
        flags: int,
        length: int = 0,
        *,
        seq: int | None = None,
        ack: int | None = None,
        win: int = WIN,
        options: bytes = b"",
    ) -> Packet:
        """One segment; ``seq`` defaults to the sender's next number, ``ack`` (when ACK is set)
        to everything the other side sent so far. Returns its packet record, analysed."""
        self.frame += 1
        s = self.nxt[from_client] if seq is None else seq & MASK
        a = (self.nxt[not from_client] if ack is None else ack & MASK) if flags & ACK else 0
        src, dst, sp, dp = (CLIENT, SERVER, self.cport, self.sport) if from_client else (SERVER, CLIENT, self.sport, self.cport)
        seg = Segment(self.frame, t, src, dst, sp, dp, s, a, flags, win, length, ttl=64, raw_options=options)
        end = (s + length + (1 if flags & (SYN | FIN) else 0)) & MASK
        if seq_gt(end, self.nxt[from_client]):
            self.nxt[from_client] = end
        conn = self.tracker.feed(seg)
        assert conn is not None, "segment absorbed as a straggler"
        self.conn = conn
        pkt = conn.packets[-1]
        self.analyser.on_packet(conn, pkt)
        return pkt

    def c(self, t: float, flags: int, length: int = 0, **kw: object) -> Packet:
        """A segment from the client."""
        return self.send(t, True, flags, length, **kw)  # type: ignore[arg-type]

    def s(self, t: float, flags: int, length: int = 0, **kw: object) -> Packet:
        """A segment from the server."""
        return self.send(t, False, flags, length, **kw)  # type: ignore[arg-type]

    def handshake(self, t: float = -1.0, leg: float = 1 / 128, options: bytes = b"") -> None:
        """SYN, SYN-ACK, ACK, ``leg`` apart: the handshake RTT is 2 * leg (dyadic: exact in floats)."""
        self.c(t, SYN, options=options)
        self.s(t + leg, SYN | ACK, options=options)
        self.c(t + 2 * leg, ACK)
