"""Replay every bundled capture and check what an engineer would read."""

from __future__ import annotations

import json

import pytest

from synscope.core.addr import fmt_ip
from synscope.read.analysis.annotate import backoff_pattern
from synscope.read.analysis.flags import flag_names
from synscope.read.pipeline import link_sentences
from tests.helpers import PCAPS, analyse, cli, pcap


def notes(report) -> list[str]:
    return [n for p in report.conn.packets for n in (p.notes or [])]


def test_normal_exchange_is_closed_with_client_in_time_wait() -> None:
    [r] = analyse("normal.pcap")
    c = r.conn
    assert fmt_ip(c.client.ip) == "198.18.1.2" and fmt_ip(c.server.ip) == "198.18.2.2" and c.server.port == 80
    assert not c.roles_guessed
    assert (r.verdict.outcome, r.verdict.conn_state, r.verdict.history) == ("closed", "SF", "ShADadFf")
    assert r.verdict.ok
    assert c.state_of(c.client) == "TIME-WAIT" and c.state_of(c.server) == "CLOSED"
    # relative numbers: the server's first data byte is seq 1, the client's ACK of it is 1 + len
    data = next(p for p in c.packets if p.dir == 1 and p.seg.length)
    assert c.server.rel_seq(data.seg.seq) == 1
    assert any(n.startswith("handshake RTT") for n in notes(r))
    assert r.analysis.facts[1].payload_bytes > r.analysis.facts[0].payload_bytes > 0


def test_refused_names_the_server_and_the_port() -> None:
    [r] = analyse("refused.pcap")
    v = r.verdict
    assert (v.outcome, v.conn_state, v.history, v.side) == ("refused", "REJ", "Sr", "server")
    assert "nothing listens on port 81" in v.explanation and "198.18.2.2" in v.explanation
    assert "ss -lntp" in v.next_step
    assert "RST from server: no listener on port 81" in notes(r)


def test_no_answer_counts_syns_and_recognises_linux_linear_backoff() -> None:
    [r] = analyse("no-answer.pcap")
    v = r.verdict
    assert (v.outcome, v.conn_state, v.history) == ("no-answer", "S0", "S")
    assert r.conn.client.syn_count == 8
    assert "gaps 1, 1, 1, 1, 1, 2, 4 s" in v.explanation
    assert "then doubling" in v.explanation
    assert "firewall" in v.next_step.lower()
    assert "SYN retransmission #7" in " ".join(notes(r))


def test_no_answer_classic_backoff_doubles() -> None:
    [r] = analyse("no-answer-classic.pcap")
    assert r.conn.client.syn_count == 4
    assert "gaps 1, 2, 4 s" in r.verdict.explanation
    assert "exponential backoff" in r.verdict.explanation


def test_backoff_patterns() -> None:
    assert backoff_pattern([0, 1, 3, 7, 15]).startswith("exponential")
    assert "then doubling" in backoff_pattern([0, 1, 2, 3, 5, 9])
    assert "every 3 s" in backoff_pattern([0, 3, 6, 9])
    assert "irregular" in backoff_pattern([0, 0.3, 5, 5.1])


def test_icmp_admin_prohibited_names_the_router() -> None:
    [r] = analyse("icmp-prohibited.pcap")
    v = r.verdict
    assert v.outcome == "icmp-prohibited" and v.side == "path"
    [err] = r.conn.icmp[:1]
    assert (err.type, err.code, fmt_ip(err.router)) == (3, 13, "198.18.1.1")
    assert "198.18.1.1" in v.explanation and "admin-prohibited" in v.explanation
    assert "never reached the server" in v.explanation


def test_rst_midstream_is_reset_by_server_with_data_moved() -> None:
    [r] = analyse("rst-midstream.pcap")
    v = r.verdict
    assert (v.outcome, v.conn_state) == ("reset-by-server", "RSTR")
    assert r.analysis.facts[1].payload_bytes > 0
    assert "server aborted" in v.explanation
    assert any(n == "RST from server: connection aborted" for n in notes(r))


def test_half_close_is_explained() -> None:
    [r] = analyse("half-close.pcap")
    assert r.verdict.outcome == "closed"
    assert "client half-closed" in r.verdict.explanation
    assert any("FIN: client half-closes" in n for n in notes(r))


@pytest.mark.parametrize("name", ["loss-upload", "loss-upload-nots-v6"])
def test_an_upload_ended_by_shutdown_is_not_a_half_close_story(name: str) -> None:
    """The uploader shuts down writing after its data and the sink answers once, then closes
    (truth: what each application did): the FIN ends the upload, the answer follows; nothing
    "kept sending" after it."""
    t = json.loads((PCAPS / f"{name}.truth.json").read_text())["applications"]
    assert t["client"]["role"] == "upload" and t["server"]["role"] == "sink"
    [r] = analyse(f"{name}.pcap")
    assert r.verdict.outcome == "closed"
    assert r.analysis.facts[1].payload_bytes == len(t["client"]["answer"].encode())
    assert "half-close" not in r.verdict.explanation and "half-close" not in r.verdict.summary
    assert not any("half-closes" in n for n in notes(r))


def test_port_reuse_makes_two_connections() -> None:
    first, second = analyse("port-reuse.pcap")
    assert (first.conn.client.ip, first.conn.client.port, first.conn.server.port) == (second.conn.client.ip, second.conn.client.port, second.conn.server.port)
    assert first.conn.client.isn != second.conn.client.isn
    assert second.conn.reused_from == first.conn.id
    assert "reused_ports" in flag_names(second.conn.packets[0].analysis)
    assert f"used before by connection #{first.conn.id} (port reuse)" in link_sentences(second)


def test_ipv6_closed_and_refused() -> None:
    ok, refused = analyse("ipv6.pcap")
    assert fmt_ip(ok.conn.client.ip).startswith("2001:db8:")
    assert ok.verdict.outcome == "closed" and refused.verdict.outcome == "refused"


def test_any_interface_captures_sll_and_sll2_decode_the_same() -> None:
    [sll2] = analyse("any.pcap")
    [sll] = analyse("any-sll.pcap")
    for r in (sll, sll2):
        assert (r.verdict.outcome, r.verdict.conn_state) == ("closed", "SF")
        assert r.conn.packets[0].seg.pkttype in (0, 4), "SLL carries the packet direction"


def test_loopback_duplicates_are_dropped_and_counted() -> None:
    from synscope.read.pipeline import Pipeline, run
    from synscope.read.sources.pcap import open_capture

    pipeline = Pipeline()
    reader = open_capture(pcap("loopback-dup.pcap"))
    [r] = list(run([(reader.path, reader)], pipeline))
    assert pipeline.stats.duplicates == pipeline.stats.frames // 2
    assert r.verdict.outcome == "closed" and r.verdict.ok
    assert not any(p.analysis for p in r.conn.packets), "a dropped duplicate must not look like a retransmission"


def test_vlan_qinq_nanosecond_gzip_pcapng_all_decode() -> None:
    for name in ("vlan.pcap", "qinq.pcap", "nanosecond.pcap", "normal.pcap.gz", "normal.pcapng"):
        reports = analyse(name)
        assert [r.verdict.outcome for r in reports] == ["closed"], name


def test_nanosecond_timestamps_keep_sub_microsecond_precision() -> None:
    [r] = analyse("nanosecond.pcap")
    fractions = {round(p.seg.ts * 1e9) % 1000 for p in r.conn.packets}
    assert fractions != {0}


def test_bulk_loss_blames_the_path_and_locates_the_loss() -> None:
    [r] = analyse("bulk-loss.pcap")
    v = r.verdict
    server = r.analysis.facts[1]
    assert server.fast_retransmissions > 0
    assert "loss on the path" in v.explanation
    assert "of the server's data segments were lost and sent again" in v.explanation
    # the drops were on the router, upstream of the client-side capture
    assert "lost between the server and the capture point" in v.explanation
    assert r.analysis.loss[1].upstream > 0 and r.analysis.loss[1].downstream == 0
    assert not v.ok and "ip -s link" in v.next_step


def test_zero_window_says_who_stopped_reading() -> None:
    [r] = analyse("zero-window.pcap")
    v = r.verdict
    assert "client stopped reading" in v.explanation
    assert "zero window" in v.explanation
    assert r.analysis.facts[0].zero_window_time > 1.0
    assert not v.ok


def test_keepalive_on_idle_connection() -> None:
    [r] = analyse("keepalive.pcap")
    assert "keep-alive" in r.verdict.explanation
    assert any(n == "keep-alive" for n in notes(r))


def test_synack_lost_server_retransmits() -> None:
    [r] = analyse("synack-lost.pcap")
    # the timer's retransmission, then an immediate byte-identical one in answer to the client's
    # repeated SYN: that one is a real packet, not a capture duplicate
    assert r.conn.server.syn_count == 3
    assert "retransmitted its SYN-ACK" in r.verdict.explanation
    assert any("SYN-ACK retransmission #1" in n for n in notes(r))
    assert any("SYN-ACK retransmission #2" in n for n in notes(r))
    assert not r.verdict.ok


def test_reordering_is_not_called_loss() -> None:
    [r] = analyse("reorder.pcap")
    v = r.verdict
    assert "out of order" in v.explanation and "reordering on the path" in v.explanation
    assert "loss on the path" not in v.explanation
    assert r.analysis.loss[1].lost == 0 and r.analysis.loss[1].reordered > 0


def test_sequence_wraparound_is_followed() -> None:
    [r] = analyse("wraparound.pcap")
    assert r.verdict.outcome == "closed"
    assert not any(p.analysis for p in r.conn.packets), "wrapping past 2^32 must not look like loss or retransmission"
    assert r.conn.client.isn > 0xF0000000
    assert r.analysis.facts[0].payload_bytes > 0


def test_refused_retries_are_recognised_as_application_retries() -> None:
    reports = analyse("refused-retry.pcap")
    assert [r.verdict.outcome for r in reports] == ["refused"] * len(reports)
    assert len({r.conn.client.port for r in reports}) == len(reports)
    assert reports[1].retry_of == reports[0].conn.id
    assert f"attempt 2 by the application (new source port), after connection #{reports[0].conn.id} failed" in link_sentences(reports[1])
    assert "attempt" not in link_sentences(reports[0])
    assert "attempt" not in reports[1].verdict.explanation  # a link, worded by the renderers, not part of the verdict


def test_json_lines_schema() -> None:
    proc = cli("read", "--json", pcap("refused.pcap"), pcap("normal.pcap"))
    assert proc.returncode == 0
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(objs) == 2
    for o in objs:
        assert o["schema"] == 1
        for key in (
            "id",
            "client",
            "server",
            "start",
            "end",
            "state",
            "history",
            "outcome",
            "verdict",
            "syn_retransmissions",
            "handshake_rtt",
            "icmp",
            "packets",
        ):
            assert key in o
        for p in o["packets"]:
            assert set(("frame", "t", "dir", "flags", "seq", "ack", "len", "win", "analysis", "note")) <= set(p)
    refused = next(o for o in objs if o["outcome"] == "refused")
    assert refused["packets"][0]["flags"] == "S" and refused["packets"][1]["flags"] == "RA"
    assert refused["packets"][0]["frame"] == 1
    closed = next(o for o in objs if o["outcome"] == "closed")
    assert closed["handshake_rtt"] > 0 and closed["client"]["ip"] == "198.18.1.2"


def test_icmp_in_json() -> None:
    proc = cli("read", "--json", pcap("icmp-prohibited.pcap"))
    [o] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert o["icmp"][0]["from"] == "198.18.1.1" and (o["icmp"][0]["type"], o["icmp"][0]["code"]) == (3, 13)


def test_text_output_shows_table_then_failed_timelines() -> None:
    proc = cli("read", pcap("ipv6.pcap"))
    out = proc.stdout
    assert proc.returncode == 0
    assert out.index("outcome") < out.index("#2 ")
    assert "#1 " not in out, "a connection that ended well is not expanded by default"
    assert "[RST from server: no listener on port 81]" in out
    assert "#1 " in cli("read", "--all", pcap("ipv6.pcap")).stdout


def test_absolute_numbers() -> None:
    rel = cli("read", "--conn", "1", pcap("wraparound.pcap")).stdout
    ab = cli("read", "--conn", "1", "--absolute", pcap("wraparound.pcap")).stdout
    assert "4294963200" in ab and "4294963200" not in rel


def test_stats_view() -> None:
    out = cli("read", "--stats", pcap("refused-retry.pcap"), pcap("bulk-loss.pcap")).stdout
    assert "Outcomes" in out and "refused" in out
    assert "Top connections by retransmission rate" in out and "Top connections by duration" in out


def test_fast_json_lines_equal_the_json_objects() -> None:
    """The streamed JSON line, written as text, is byte for byte the documented object as the
    JSON encoder writes it, packets included, on every bundled capture."""
    from synscope.read.jsonl import compact, connection_line, connection_object

    names = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert len(names) >= 20
    for name in names:
        for r in analyse(name):
            for absolute in (False, True):
                assert connection_line(r, absolute) == compact(connection_object(r, absolute)), (name, r.conn.id)


class _Frames:
    """A capture reader as run() sees it, counting the frames it yields. ``direct=False`` hides
    its ``sink``, so the pipeline gets every frame as a RawFrame."""

    def __init__(self, reader: object, direct: bool) -> None:
        self.reader = reader
        self.direct = direct
        self.yielded = 0

    def __getattr__(self, name: str) -> object:
        if name == "sink" and not self.direct:
            raise AttributeError(name)
        return getattr(self.reader, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "sink":
            setattr(self.reader, name, value)
        else:
            object.__setattr__(self, name, value)

    def __iter__(self):
        for frame in self.reader:  # type: ignore[attr-defined]
            self.yielded += 1
            yield frame


@pytest.mark.parametrize("options", [{}, {"max_conns": 2}, {"keep_payload": True}, {"dedup": False}], ids=["default", "max-conns", "payload", "no-dedup"])
def test_frames_taken_from_the_read_buffer_are_analysed_as_fed_frames(options: dict) -> None:
    """The reader hands the common frames (Ethernet, IPv4, TCP) to the pipeline straight from its
    buffer; every other frame, and any frame of a source that is not a reader, is decoded from a
    RawFrame. Both ways must give the same output and the same counts, on every bundled capture."""
    from synscope.read.jsonl import connection_line
    from synscope.read.pipeline import Pipeline, run
    from synscope.read.sources.pcap import open_capture

    names = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
    taken = frames = 0
    for name in names:
        results = []
        for direct in (True, False):
            pipeline = Pipeline(**options)
            reader = open_capture(pcap(name))
            source = _Frames(reader, direct)
            reports = list(run([(reader.path, source)], pipeline))  # type: ignore[list-item]
            lines = [connection_line(r) for r in reports]
            payloads = [p.seg.payload for r in reports for p in r.conn.packets]
            results.append((lines, payloads, pipeline.stats, pipeline.decoder.stats, pipeline.tracker.evicted, reader.frames))
            if direct:
                taken += pipeline.stats.frames - source.yielded
                frames += pipeline.stats.frames
        assert results[0] == results[1], name
    assert taken > frames // 2, "the readers handed the pipeline few frames: the direct path is not in use"


def test_long_connections_keep_every_flagged_packet_but_not_every_plain_one() -> None:
    from synscope.read.pipeline import Pipeline, run
    from synscope.read.sources.pcap import open_capture

    full = analyse("bulk-loss.pcap")[0]
    pipeline = Pipeline()
    pipeline.analyser.max_kept_packets = 50
    reader = open_capture(pcap("bulk-loss.pcap"))
    [r] = list(run([(reader.path, reader)], pipeline))
    total = sum(f.packets for f in r.analysis.facts)
    assert r.analysis.omitted > 0 and len(r.conn.packets) + r.analysis.omitted == total
    flagged = lambda rep: [p.seg.frame for p in rep.conn.packets if p.analysis or p.seg.flags & 0x07]  # noqa: E731
    assert flagged(r) == flagged(full), "flagged and SYN/FIN/RST packets must all be kept"
    assert r.verdict.explanation == full.verdict.explanation


def test_read_path_makes_no_reference_cycles() -> None:
    """`read` turns the cyclic garbage collector off; that is only safe while nothing builds cycles."""
    import gc
    import io

    from synscope.read.jsonl import write_connection
    from synscope.render.text import write_connection as write_text

    # warm up imports and caches, the renderers' too (render/table imports tabulate when it
    # first draws a table: an import builds cycles of its own)
    for r in analyse("normal.pcap"):
        write_connection(r, io.StringIO())
        write_text(r, io.StringIO())
    gc.collect()
    gc.disable()
    try:
        for name in ("bulk-loss.pcap", "zero-window.pcap", "icmp-prohibited.pcap", "port-reuse.pcap", "reorder.pcap"):
            for r in analyse(name):
                write_connection(r, io.StringIO())
                write_text(r, io.StringIO())
        del r
        assert gc.collect() == 0, "the read path left reference cycles behind"
    finally:
        gc.enable()


def test_max_conns_evicts_idle_connections_and_says_so() -> None:
    proc = cli("read", "--json", "--max-conns", "1", pcap("ipv6.pcap"), pcap("refused.pcap"))
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and len(objs) == 3
    assert "evicted" in proc.stderr
    assert any("evicted from the full connection table" in o["verdict"].lower() for o in objs)
