"""Pure parts of ``probe``: crafting, classifying, RTT, aggregation, rendering — no socket, no root."""

from __future__ import annotations

import io
import json
import random
import socket
import struct

import pytest
from click.testing import CliRunner

from synscope.core.exit_codes import ExitCode
from synscope.core.model import ACK, CWR, ECE, RST, SYN, IcmpError, LinkType, RawFrame, Segment
from synscope.probe.classify import (
    LINUX_WINDOW,
    PortResult,
    ProbeId,
    Reply,
    Round,
    SynSpec,
    SynTemplate,
    Try,
    aggregate,
    answered_try,
    backoff_waits,
    build_rst,
    build_syn,
    classify_reply,
    exit_code,
    reply_key,
    rtt_of,
    rtt_stats,
    scapy_options,
)
from synscope.read.decode import Decoder

C4, S4, R4 = "198.18.1.2", "198.18.2.2", "198.18.1.1"
C6, S6, R6 = "2001:db8:1::2", "2001:db8:2::2", "2001:db8:1::1"
ISN = 0x11223344


def packed(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


def decode(data: bytes, ts: float = 100.0, frame: int = 1) -> Segment | IcmpError:
    item = Decoder().decode(RawFrame(frame, ts, LinkType.RAW, data, len(data)))
    assert item is not None
    return item


def probe_id(v6: bool = False, sport: int = 40000, dport: int = 8080, seq: int = ISN) -> ProbeId:
    return ProbeId(packed(C6 if v6 else C4), packed(S6 if v6 else S4), sport, dport, seq)


def tcp_reply(flags: str, seq: int = 5000, ack: int = ISN + 1, v6: bool = False, options=None, ttl: int = 63, sport: int = 8080, dport: int = 40000) -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    tcp = TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=65160, options=options or [])
    if v6:
        return bytes(IPv6(src=S6, dst=C6, hlim=ttl) / tcp)
    return bytes(IP(src=S4, dst=C4, ttl=ttl) / tcp)


def icmp_about(syn: bytes, itype: int, code: int, v6: bool = False, router: str | None = None) -> bytes:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import IPv6, _ICMPv6Error  # noqa: F401 - registers the error types

    if v6:
        from scapy.layers.inet6 import ICMPv6DestUnreach

        return bytes(IPv6(src=router or R6, dst=C6, hlim=64) / ICMPv6DestUnreach(code=code) / syn)
    return bytes(IP(src=router or R4, dst=C4, ttl=64) / ICMP(type=itype, code=code) / syn)


# ---------------------------------------------------------------- crafting


def test_default_syn_is_a_linux_syn() -> None:
    data = build_syn(C4, S4, 40000, 8080, ISN, SynSpec(), ts_val=0xAABBCCDD, ip_id=7)
    ihl = (data[0] & 0x0F) * 4
    assert data[8] == 64  # TTL
    assert struct.unpack_from("!H", data, 6)[0] & 0x4000  # DF
    tcp = data[ihl:]
    sport, dport, seq, ack, off, flags, win = struct.unpack_from("!HHIIBBH", tcp)
    assert (sport, dport, seq, ack, flags, win) == (40000, 8080, ISN, 0, SYN, LINUX_WINDOW)
    # mss 1460, sackOK, TS val/ecr, nop, wscale 7: exactly what a Linux client sends (40-byte header)
    assert (off >> 4) * 4 == 40
    assert tcp[20:40] == bytes.fromhex("020405b40402080aaabbccdd0000000001030307")


@pytest.mark.parametrize(
    ("spec", "options_hex"),
    [
        (SynSpec(mss=1200), "020404b00402080a000000010000000001030307"),
        (SynSpec.bare(), ""),
        (SynSpec(timestamps=False), "020405b40101040201030307"),
        (SynSpec(sack=False, wscale=None), "020405b40101080a0000000100000000"),
        (SynSpec(mss=None, sack=False, timestamps=False, wscale=14), "0103030e"),
    ],
)
def test_option_variants_stay_aligned(spec: SynSpec, options_hex: str) -> None:
    data = build_syn(C4, S4, 1, 2, 3, spec, ts_val=1)
    tcp = data[20:]
    hlen = (tcp[12] >> 4) * 4
    assert tcp[20:hlen].hex() == options_hex
    assert hlen % 4 == 0


def test_ecn_and_ttl_and_window() -> None:
    data = build_syn(C4, S4, 1, 2, 3, SynSpec(ecn=True, ttl=5, window=1024))
    assert data[8] == 5
    assert data[20 + 13] == SYN | ECE | CWR
    assert struct.unpack_from("!H", data, 20 + 14)[0] == 1024


def test_ipv6_syn() -> None:
    data = build_syn(C6, S6, 1, 2, 3)
    assert data[0] >> 4 == 6 and data[6] == 6 and data[7] == 64  # next header TCP, hop limit 64
    seg = decode(data)
    assert isinstance(seg, Segment) and seg.options.describe() == "mss 1460 sack ts ws 7"


@pytest.mark.parametrize("src,dst", [(C4, S4), (C6, S6)])
@pytest.mark.parametrize("spec", [SynSpec(), SynSpec.bare(), SynSpec(mss=536, ecn=True, ttl=3), SynSpec(timestamps=False)])
def test_template_matches_scapy_byte_for_byte(src: str, dst: str, spec: SynSpec) -> None:
    template = SynTemplate(src, dst, spec)
    rng = random.Random(4)
    for _ in range(20):
        sport, dport, seq, ts, ip_id = rng.randrange(65536), rng.randrange(65536), rng.getrandbits(32), rng.getrandbits(32), rng.randrange(1, 65536)
        want = build_syn(src, dst, sport, dport, seq, spec, ts if spec.timestamps else 0, 0 if ":" in dst else ip_id)
        assert template.packet(sport, dport, seq, ts, ip_id) == want


@pytest.mark.parametrize("src,dst", [(C4, S4), (C6, S6)])
def test_rst_checksums_and_flags(src: str, dst: str) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    data = build_rst(packed(src), packed(dst), 40000, 8080, ISN + 1, 5001, ip_id=9)
    pkt = IPv6(data) if ":" in src else IP(data)
    tcp = pkt[TCP]
    sent = tcp.chksum
    del tcp.chksum
    if ":" not in src:
        ip_sum = pkt[IP].chksum
        del pkt[IP].chksum
    rebuilt = (IPv6 if ":" in src else IP)(bytes(pkt))
    assert rebuilt[TCP].chksum == sent
    if ":" not in src:
        assert rebuilt[IP].chksum == ip_sum
    assert int(tcp.flags) == RST | ACK and tcp.seq == ISN + 1 and tcp.ack == 5001


def test_scapy_options_never_star_import() -> None:
    import synscope.probe.classify as mod

    source = open(mod.__file__).read()
    assert "scapy.all" not in source
    assert scapy_options(SynSpec.bare()) == []


# ---------------------------------------------------------------- classifying answers


def test_syn_ack_is_open_with_server_details() -> None:
    opts = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (777, 1234)), ("NOP", None), ("WScale", 9)]
    seg = decode(tcp_reply("SA", seq=5000, options=opts, ttl=61), ts=100.5, frame=3)
    reply = classify_reply(seg, probe_id())
    assert reply is not None
    assert (reply.state, reply.reason, reply.isn, reply.window, reply.ttl, reply.frame) == ("open", "syn-ack", 5000, 65160, 61, 3)
    assert reply.sender == packed(S4)
    assert reply.options is not None and (reply.options.mss, reply.options.wscale, reply.options.sack_permitted) == (1400, 9, True)
    assert reply.options.ts_ecr == 1234
    assert reply.hops == 3
    assert reply.describe() == "win 65160 mss 1400 sack ts ws 9"
    assert not reply.ece


def test_syn_ack_with_ece_means_ecn() -> None:
    reply = classify_reply(decode(tcp_reply("SAE")), probe_id())
    assert reply is not None and reply.ece and reply.describe().endswith("ecn")


def test_syn_ack_for_another_isn_is_not_ours() -> None:
    assert classify_reply(decode(tcp_reply("SA", ack=ISN + 2)), probe_id()) is None


def test_rst_is_closed() -> None:
    reply = classify_reply(decode(tcp_reply("RA", seq=0)), probe_id())
    assert reply is not None and (reply.state, reply.reason) == ("closed", "reset")
    assert classify_reply(decode(tcp_reply("RA", seq=0, ack=99)), probe_id()) is None  # acks something else
    bare = classify_reply(decode(tcp_reply("R", seq=0, ack=0)), probe_id())  # RST without ACK: still a refusal
    assert bare is not None and bare.state == "closed"


def test_bare_syn_back_is_a_split_handshake() -> None:
    reply = classify_reply(decode(tcp_reply("S", ack=0)), probe_id())
    assert reply is not None and (reply.state, reply.reason) == ("open", "split-handshake-syn")


def test_answer_on_other_ports_is_ignored() -> None:
    assert classify_reply(decode(tcp_reply("SA", dport=40001)), probe_id()) is None
    assert classify_reply(decode(tcp_reply("SA", sport=8081)), probe_id()) is None
    assert classify_reply(decode(tcp_reply("A")), probe_id()) is None  # a plain ACK says nothing


def test_icmp_admin_prohibited_from_router() -> None:
    syn = build_syn(C4, S4, 40000, 8080, ISN)
    err = decode(icmp_about(syn, 3, 13), ts=101.0)
    assert isinstance(err, IcmpError)
    reply = classify_reply(err, probe_id())
    assert reply is not None
    assert (reply.state, reply.reason, reply.sender, reply.ttl) == ("filtered", "admin-prohibited", packed(R4), 64)
    assert reply.describe(packed(S4)) == "ICMP 3/13 from a router one hop out"
    assert reply_key(err, packed(C4), packed(S4)) == (40000, 8080)


@pytest.mark.parametrize(
    ("itype", "code", "reason"),
    [(3, 0, "net-unreach"), (3, 1, "host-unreach"), (3, 3, "port-unreach"), (3, 9, "net-prohibited"), (3, 10, "host-prohibited"), (11, 0, "time-exceeded")],
)
def test_icmp_reasons_use_nmaps_words(itype: int, code: int, reason: str) -> None:
    syn = build_syn(C4, S4, 40000, 8080, ISN)
    reply = classify_reply(decode(icmp_about(syn, itype, code)), probe_id())
    assert reply is not None and (reply.state, reply.reason) == ("filtered", reason)


def test_icmp_from_the_target_itself() -> None:
    syn = build_syn(C4, S4, 40000, 8080, ISN)
    reply = classify_reply(decode(icmp_about(syn, 3, 3, router=S4)), probe_id())
    assert reply is not None and reply.describe(packed(S4)) == "ICMP 3/3 from the target itself"


def test_icmp_that_is_not_about_the_port_is_no_answer() -> None:
    syn = build_syn(C4, S4, 40000, 8080, ISN)
    assert classify_reply(decode(icmp_about(syn, 3, 4)), probe_id()) is None  # fragmentation needed
    other = build_syn(C4, S4, 40000, 8080, ISN + 5)  # quotes another sequence number
    assert classify_reply(decode(icmp_about(other, 3, 13)), probe_id()) is None


def test_icmpv6_admin_prohibited() -> None:
    syn = build_syn(C6, S6, 40000, 8080, ISN)
    reply = classify_reply(decode(icmp_about(syn, 1, 1, v6=True)), probe_id(v6=True))
    assert reply is not None and (reply.state, reply.reason, reply.sender) == ("filtered", "admin-prohibited", packed(R6))
    assert reply.describe() == "ICMPv6 1/1 from a router one hop out"


def test_ipv6_syn_ack() -> None:
    reply = classify_reply(decode(tcp_reply("SA", v6=True, options=[("MSS", 1440)])), probe_id(v6=True))
    assert reply is not None and reply.state == "open" and reply.options.mss == 1440  # type: ignore[union-attr]


# ---------------------------------------------------------------- tries, RTT, aggregation


def _reply(ts: float, ts_ecr: int | None = None, state: str = "open", reason: str = "syn-ack") -> Reply:
    from synscope.core.model import TcpOptions

    opts = TcpOptions(ts_val=1, ts_ecr=ts_ecr) if ts_ecr is not None else None
    return Reply(state, reason, packed(S4), ts, 1, 63, flags=SYN | ACK, isn=1, ack=ISN + 1, window=1, options=opts)


def test_rtt_is_kernel_timestamp_difference() -> None:
    tries = [Try(10, sent_wall=99.0, captured_ts=100.000100)]
    rtt, kernel = rtt_of(tries, _reply(100.000145))
    assert kernel and rtt == pytest.approx(45e-6, abs=1e-9)


def test_tsecr_tells_which_try_a_late_answer_belongs_to() -> None:
    tries = [Try(10, 0, captured_ts=100.0), Try(1010, 0, captured_ts=101.0)]
    late_answer_to_first = _reply(101.2, ts_ecr=10)
    assert answered_try(tries, late_answer_to_first) == 0
    assert rtt_of(tries, late_answer_to_first)[0] == pytest.approx(1.2)
    # without timestamps: the latest try sent before the answer
    assert answered_try(tries, _reply(101.2)) == 1
    assert answered_try(tries, _reply(100.5)) == 0


def test_rtt_falls_back_to_user_time_when_the_capture_missed_the_syn() -> None:
    rtt, kernel = rtt_of([Try(None, sent_wall=100.0)], _reply(100.25))
    assert not kernel and rtt == pytest.approx(0.25)


def test_backoff_doubles() -> None:
    assert backoff_waits(1.0, 2) == [1.0, 2.0, 4.0]
    assert backoff_waits(0.3, 0) == [0.3]


def test_aggregate_best_state_and_mean_rtt() -> None:
    r0 = Round(0, 40000, ISN, [Try(None, 0, 100.0)], _reply(100.001))
    r1 = Round(1, 40001, ISN, [Try(None, 0, 200.0)], _reply(200.003))
    r2 = Round(2, 40002, ISN, [Try(None, 0, 300.0), Try(None, 0, 301.0)], gave_up=True)
    result = aggregate(8080, [r2, r0, r1], backoff_waits(1.0, 1))
    assert (result.state, result.reason, result.tries) == ("open", "syn-ack", 4)
    assert result.rtt == pytest.approx(0.002)
    assert result.rtts() == pytest.approx([0.001, 0.003])
    cut_short = aggregate(8443, [Round(0, 40000, ISN, [Try(None, 0, 300.0)])])
    assert (cut_short.state, cut_short.reason) == ("unknown", "interrupted")
    assert aggregate(8443, [Round(0, 40000, ISN)]).reason == "not-probed"
    silent = aggregate(8443, [r2], backoff_waits(1.0, 1))
    assert (silent.state, silent.reason, silent.rtt, silent.sender, silent.tries) == ("filtered", "no-response", None, None, 2)


def test_rtt_stats_hping_style() -> None:
    mn, avg, mx, sd = rtt_stats([0.001, 0.002, 0.003])  # type: ignore[misc]
    assert (mn, avg, mx) == pytest.approx((0.001, 0.002, 0.003))
    assert sd == pytest.approx(0.000816496, rel=1e-5)
    assert rtt_stats([]) is None


def _result(port: int, state: str, reason: str = "") -> PortResult:
    return PortResult(port, state, reason, None, None, 1, None, [])


def test_exit_code_precedence() -> None:
    assert exit_code([_result(1, "open")]) == ExitCode.OK
    assert exit_code([_result(1, "open"), _result(2, "closed")]) == ExitCode.CLOSED
    assert exit_code([_result(1, "closed"), _result(2, "filtered")]) == ExitCode.FILTERED


# ---------------------------------------------------------------- a probe run, replayed offline


class _Frames:
    """Raw IPv4 frames of one probe of an open and a closed port, as the capture would hold them."""

    def __init__(self) -> None:
        self.n = 0
        self.frames: list[RawFrame] = []

    def add(self, data: bytes, ts: float) -> RawFrame:
        self.n += 1
        f = RawFrame(self.n, ts, LinkType.RAW, data, len(data))
        self.frames.append(f)
        return f


def _offline_outcome():
    from synscope.probe.run import ProbeConfig, ProbeOutcome, Target

    target = Target(S4, S4, socket.AF_INET, C4, "c0", False)
    cfg = ProbeConfig([8080, 9090, 8443], retries=1, timeout=0.5)
    fr = _Frames()
    t0 = 1_700_000_000.0
    syn_open = build_syn(C4, S4, 40000, 8080, ISN, ts_val=10)
    syn_closed = build_syn(C4, S4, 40000, 9090, ISN + 7, ts_val=10)
    syn_silent = build_syn(C4, S4, 40000, 8443, ISN + 9, ts_val=10)
    captured = {8080: [], 9090: [], 8443: []}
    captured[8080].append(fr.add(syn_open, t0))
    captured[9090].append(fr.add(syn_closed, t0 + 0.001))
    captured[8443].append(fr.add(syn_silent, t0 + 0.002))
    captured[8080].append(fr.add(tcp_reply("SA", seq=5000, options=[("MSS", 1460), ("Timestamp", (5, 10))]), t0 + 0.000050))
    captured[9090].append(fr.add(tcp_reply("RA", seq=0, ack=ISN + 8, sport=9090), t0 + 0.001040))
    captured[8443].append(fr.add(build_syn(C4, S4, 40000, 8443, ISN + 9, ts_val=510), t0 + 0.502))
    # the local kernel's RST (plain RST, IP id 0) and ours (RST+ACK), both from the client
    from scapy.layers.inet import IP, TCP

    kernel_rst = bytes(IP(src=C4, dst=S4, id=0, flags="DF") / TCP(sport=40000, dport=8080, seq=ISN + 1, flags="R", window=0))
    captured[8080].append(fr.add(kernel_rst, t0 + 0.000060))
    captured[8080].append(fr.add(build_rst(packed(C4), packed(S4), 40000, 8080, ISN + 1, 5001, ip_id=3), t0 + 0.0007))
    rounds = {
        8080: Round(0, 40000, ISN, [Try(10, 0, t0)], _reply(t0 + 0.000050)),
        9090: Round(0, 40000, ISN + 7, [Try(10, 0, t0 + 0.001)], Reply("closed", "reset", packed(S4), t0 + 0.001040, 6, 63, flags=RST | ACK)),
        8443: Round(0, 40000, ISN + 9, [Try(10, 0, t0 + 0.002), Try(510, 0, t0 + 0.502)], gave_up=True),
    }
    results = [aggregate(p, [rounds[p]], backoff_waits(0.5, 1)) for p in cfg.ports]
    return ProbeOutcome(target, cfg, [40000], results, fr.n, 0, 1.5, captured=captured, our_rsts={(40000, 8080, ISN + 1)}, rsts_sent=1)


def test_offline_run_labels_both_rsts_and_renders_text() -> None:
    from synscope.render.probe import write_probe_text

    outcome = _offline_outcome()
    out = io.StringIO()
    write_probe_text(outcome, out, show_all=True)
    text = out.getvalue()
    assert " 8080  open      syn-ack" in text
    assert "9090  closed    reset" in text
    assert "8443  filtered  no-response" in text and "2 tries, waited 0.5 s, 1 s" in text
    assert "RST from the local kernel: it never opened this connection" in text
    assert "RST from synscope: closes the half-open connection on the target" in text
    assert "Port 8080 is open" in text
    assert "1 open, 1 closed, 1 filtered" in text


def test_offline_run_json_fields() -> None:
    from synscope.render.probe import write_probe_json

    out = io.StringIO()
    write_probe_json(_offline_outcome(), out)
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [o["port"] for o in objs] == [8080, 9090, 8443]
    for o in objs:
        for key in ("host", "port", "state", "reason", "from", "rtt", "tries", "ttl", "options", "packets", "schema"):
            assert key in o
    op, cl, si = objs
    assert (op["state"], op["reason"], op["from"], op["ttl"]) == ("open", "syn-ack", S4, 63)
    assert op["rtt"] == pytest.approx(50e-6, abs=1e-7)
    assert op["server"]["isn"] == 1 and op["server"]["window"] == 1
    assert [p["flags"] for p in op["packets"]] == ["S", "SA", "R", "RA"]
    assert "local kernel" in op["packets"][2]["note"] and "synscope" in op["packets"][3]["note"]
    assert (cl["state"], cl["reason"], cl["rtt"]) == ("closed", "reset", pytest.approx(40e-6, abs=1e-7))
    assert (si["state"], si["reason"], si["rtt"], si["from"], si["tries"], si["waits"]) == ("filtered", "no-response", None, None, 2, [0.5, 1.0])
    assert [p["flags"] for p in si["packets"]] == ["S", "S"]
    assert si["connections"][0]["outcome"] == "no-answer"


def test_many_ports_fold_into_a_not_shown_line() -> None:
    from synscope.render.probe import result_rows

    results = [_result(p, "closed", "reset") for p in range(1, 100)] + [_result(100, "open", "syn-ack")]
    rows, note = result_rows(results, packed(S4), show_all=False)
    assert [r[0] for r in rows[1:]] == ["100"]
    assert note.startswith("Not shown: 99 closed (reset)")
    rows, note = result_rows(results, packed(S4), show_all=True)
    assert len(rows) == 101 and not note


# ---------------------------------------------------------------- command line (no packets sent)


def _cli(*args: str):
    from synscope.cli.main import main

    return CliRunner().invoke(main, list(args))


def test_send_escapes() -> None:
    from synscope.cli.probe import unescape

    assert unescape(r"GET / HTTP/1.0\r\n\r\n") == b"GET / HTTP/1.0\r\n\r\n"
    assert unescape(r"\x00\tA\\") == b"\x00\tA\\"


def test_unknown_host_is_a_usage_error(monkeypatch) -> None:
    """Name resolution fails (faked: a test must not send a DNS query to the host's resolver)."""
    import socket

    def no_such_host(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    result = _cli("probe", "no-such-host.invalid")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "unknown host" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "198.18.2.2", "-p", "0"], "out of range"),
        (["probe", "198.18.2.2", "-p", "90-80"], "runs backwards"),
        (["probe", "198.18.2.2", "-p", "http"], "is not a port"),
        (["probe", "198.18.2.2", "--send", "x"], "--send needs --connect"),
        (["probe", "--connect", "198.18.2.2", "-p", "1,2"], "exactly one port"),
        (["probe", "-4", "-6", "198.18.2.2"], "exclude each other"),
        (["probe", "224.0.0.1"], "multicast"),
        (["probe", "255.255.255.255"], "broadcast"),
        (["probe", "0.0.0.0"], "unspecified"),
        (["probe", "ff02::1"], "multicast"),
    ],
)
def test_usage_errors_exit_2_before_sending_anything(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_help_texts() -> None:
    for cmd in ("probe", "demo"):
        result = _cli(cmd, "--help")
        assert result.exit_code == 0 and len(result.output) > 200
    assert "--connect" in _cli("probe", "--help").output
