"""Captures for the reset contexts of an established connection (issue 14), with truth.

Topology and helpers are make-pcaps': client 198.18.1.2 -- router -- server 198.18.2.2, captured
on the client's veth. Agents: scripts/_agents_rst.py.

rst-own-fin.pcap      the server shuts down writing (FIN) without reading the request, the client
                      reads EOF and sends 500 B more, the server close()s with all 1,500 B unread:
                      the kernel sends RST (after the server's own FIN).
rst-gave-up.pcap      the client streams to a sink; an nft rule on the router then drops everything
                      from the client; the client's data is retransmitted unanswered until no ACK
                      came for 3 s, and the application aborts (SO_LINGER 0): RST.
rst-zero-window.pcap  the server never reads; the client fills the window (zero window), its send
                      buffer stays full for 2 s, and the application aborts (SO_LINGER 0): RST.
"""

from __future__ import annotations

import json
import os
import time

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_agents_rst.py")


def register(mk) -> list[str]:
    """Add the reset scenarios to make-pcaps (module ``mk``); returns their names for ORDER."""

    def server(lab, mode: str, *extra: str):
        return lab.spawn(mk.SRV, ["python3", AGENT, "server", "--mode", mode, "--addr", mk.S4, *extra], wait_for=("stdout", "ready"))

    def result(p, timeout: float = 30.0) -> dict:
        out, err = p.communicate(timeout=timeout)
        lines = [x for x in (p.early["stdout"] + out).decode().splitlines() if x.startswith("{")]
        if not lines:
            raise mk.Fail(f"agent printed no result: {err.decode()[-300:]}")
        got = json.loads(lines[-1])
        mk.say(f"  {got}")
        return got

    def write(lab, name: str, truth: dict) -> list[str]:
        with open(os.path.join(lab.tmp, name + ".truth.json"), "w") as f:
            json.dump(truth, f, indent=1, sort_keys=True)
            f.write("\n")
        return [name + ".pcap", name + ".truth.json"]

    @mk.scenario("rst-own-fin.pcap", "rst-own-fin.truth.json")
    def rst_own_fin(lab):
        out = os.path.join(lab.tmp, "rst-own-fin.pcap")
        lab.three()
        srv = server(lab, "own-fin", "--fin-after", "0.1", "--close-after", "0.6")
        cap = lab.tcpdump(mk.CLI, "c0", out)
        cli = lab.spawn(mk.CLI, ["python3", AGENT, "client", "--mode", "own-fin", "--addr", mk.S4])
        c, s = result(cli), result(srv)
        lab.end_capture(cap)
        mk.expect(out, f"ip.src=={mk.S4} && tcp.flags.fin==1", 1, 1, "the server's FIN")
        mk.expect(out, f"ip.src=={mk.S4} && tcp.flags.reset==1", 1, 1, "the server's RST")
        truth = {
            "capture": "client veth c0",
            "reset_by": "server",
            "server_closed_first": True,
            "cause": "the server application shut down writing (FIN), then close()d with the client's data unread: the kernel sends RST",
            "unread_bytes_at_close": s["unread_bytes_at_close"],
            "client_sent_after_server_fin": c["sent_after_eof"],
            "client": c,
            "server": s,
        }
        if s["unread_bytes_at_close"] <= 0 or c.get("send_after_server_close_errno") not in ("ECONNRESET", "EPIPE"):
            raise mk.Fail("not the designed reset")
        return write(lab, "rst-own-fin", truth)

    @mk.scenario("rst-gave-up.pcap", "rst-gave-up.truth.json")
    def rst_gave_up(lab):
        out = os.path.join(lab.tmp, "rst-gave-up.pcap")
        lab.three()
        srv = server(lab, "sink", "--timeout", "10")
        cap = lab.tcpdump(mk.CLI, "c0", out, snaplen="96")
        cli = lab.spawn(
            mk.CLI, ["python3", AGENT, "client", "--mode", "stall", "--addr", mk.S4, "--stall", "3", "--timeout", "15"], wait_for=("stdout", "streaming")
        )
        rules = f"table inet s2rst {{ chain filt {{ type filter hook forward priority 0; ip saddr {mk.C4} drop; }}\n}}"
        lab.nft(mk.RTR, rules)
        c = result(cli)
        s = result(srv, timeout=20)
        lab.end_capture(cap)
        mk.expect(out, f"ip.src=={mk.C4} && tcp.flags.reset==1", 1, None, "the client's RST (and its echoes)")
        truth = {
            "capture": "client veth c0 (96-byte snaplen)",
            "reset_by": "client",
            "cause": "the path dropped everything from the client (nft on the router, forward hook) mid-transfer; the client's data went"
            " unanswered until no ACK for 3 s, then the application aborted (SO_LINGER 0)",
            "path_rule": rules,
            "server_alive": True,
            "client_tcp_info_before_abort": c["tcp_info_before_abort"],
            "client": c,
            "server": s,
        }
        if c["tcp_info_before_abort"]["retransmits"] < 3:
            raise mk.Fail("fewer than 3 retransmissions before the abort")
        return write(lab, "rst-gave-up", truth)

    @mk.scenario("rst-zero-window.pcap", "rst-zero-window.truth.json")
    def rst_zero_window(lab):
        out = os.path.join(lab.tmp, "rst-zero-window.pcap")
        lab.three()
        lab.sysctl(mk.SRV, "net.ipv4.tcp_rmem=4096 8192 16384")
        lab.sysctl(mk.CLI, "net.ipv4.tcp_wmem=4096 8192 16384")
        srv = server(lab, "no-read", "--close-after", "5")
        cap = lab.tcpdump(mk.CLI, "c0", out, snaplen="96")
        cli = lab.spawn(mk.CLI, ["python3", AGENT, "client", "--mode", "fill", "--addr", mk.S4, "--stall", "2", "--timeout", "10"])
        c = result(cli)
        s = result(srv)
        time.sleep(0.2)
        lab.end_capture(cap)
        mk.expect(out, "tcp.analysis.zero_window", 1, None, "zero window from the server")
        mk.expect(out, f"ip.src=={mk.C4} && tcp.flags.reset==1", 1, 1, "the client's RST")
        truth = {
            "capture": "client veth c0 (96-byte snaplen)",
            "reset_by": "client",
            "cause": "the server application never read; its receive window closed (zero window); the client's send buffer stayed full"
            " for 2 s and the client application aborted (SO_LINGER 0)",
            "server_reading": False,
            "sysctls": {"server": "net.ipv4.tcp_rmem=4096 8192 16384", "client": "net.ipv4.tcp_wmem=4096 8192 16384"},
            "client": c,
            "server": s,
        }
        return write(lab, "rst-zero-window", truth)

    return ["rst-own-fin", "rst-gave-up", "rst-zero-window"]
