"""Scenarios for verdicts that rest on one assumption (issue 14): an upload to a sink read as a
request waiting for an answer; one answer after a FIN read as a half-close. Registered into
scripts/make-pcaps by register(); each writes its capture and NAME.truth.json from what the
script did and what the applications saw (scripts/_agents_assume.py).

Topology and helpers are make-pcaps': client 198.18.1.2 -- router -- server 198.18.2.2. Every
socket is held open past the end of the capture, so no connection closes inside it.
"""

import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "_agents_assume.py")


def register(mk):
    """Add this file's scenarios to make-pcaps (module ``mk``); returns their names for ORDER."""

    def server(lab, role, port, **kw):
        args = ["python3", AGENT, role, "--addr", "0.0.0.0", "--port", str(port)]
        for k, v in kw.items():
            args += [f"--{k}", str(v)]
        return lab.spawn(mk.SRV, args, wait_for=("stdout", "ready"))

    def client(lab, role, port, **kw):
        args = ["python3", AGENT, role, "--addr", mk.S4, "--port", str(port)]
        for k, v in kw.items():
            args += [f"--{k}", str(v)]
        return lab.spawn(mk.CLI, args)

    def client_at(lab, role, addr, port, **kw):
        args = ["python3", AGENT, role, "--addr", addr, "--port", str(port)]
        for k, v in kw.items():
            args += [f"--{k}", str(v)]
        return lab.spawn(mk.CLI, args)

    def seen(p, timeout=30.0):
        """The JSON line an agent printed when it finished (bounded wait)."""
        out, err = p.communicate(timeout=timeout)
        for line in (err or b"").decode(errors="replace").strip().splitlines():
            print("    |", line, flush=True)
        lines = (p.early.get("stdout", b"") + (out or b"")).decode(errors="replace").strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            raise mk.Fail(f"agent {p.args[5:7]} printed no result")
        app = json.loads(lines[-1])
        mk.say(f"  app: {app}")
        return app

    def write_truth(lab, name, truth):
        with open(os.path.join(lab.tmp, name), "w") as f:
            json.dump(truth, f, indent=1, sort_keys=True)
            f.write("\n")
        return name

    @mk.scenario("upload-sink.pcap", "upload-sink.truth.json")
    def upload_sink(lab):
        """Port 84: the client uploads 12 x 1000 B, 0.15 s apart, to a sink that only reads; port
        85: the client sends one request to a server that reads it and never answers (keep-alives
        every second show the connection alive). The capture ends before any side closes."""
        out = os.path.join(lab.tmp, "upload-sink.pcap")
        lab.three()
        snk = server(lab, "sink", 84, hold=9)
        mut = server(lab, "mute", 85, hold=9)
        cap = lab.tcpdump(mk.CLI, "c0", out)
        up = client(lab, "upload", 84, chunks=12, chunk=1000, gap=0.15, hold=6)
        ask = client(lab, "ask", 85, hold=6)
        time.sleep(3.0)
        lab.end_capture(cap)
        apps = {name: seen(p) for name, p in (("upload", up), ("ask", ask), ("sink", snk), ("mute", mut))}
        mk.expect(out, "tcp.flags.fin==1 || tcp.flags.reset==1", 0, 0, "no close inside the capture")
        mk.expect(out, "tcp.port==84 && tcp.len>0 && ip.src==" + mk.C4, 12, None, "the upload's segments")
        mk.expect(out, "tcp.port==84 && tcp.len>0 && ip.src==" + mk.S4, 0, 0, "the sink never writes")
        mk.expect(out, "tcp.analysis.keep_alive", 1, None, "keep-alives on the unanswered request")
        if apps["sink"]["bytes_received"] != 12000 or apps["mute"]["bytes_received"] != apps["ask"]["bytes_sent"]:
            raise mk.Fail(f"upload-sink: the servers did not read everything: {apps}")
        truth = {
            "capture": "client veth c0; every socket held open past the end of the capture (no FIN, no RST)",
            "connections": [
                {
                    "server_port": 84,
                    "done": "client uploads 12 x 1000 B, 0.15 s apart; the server is a sink: it reads and never writes",
                    "pattern": "upload",
                    "answer_expected": False,
                    "server_app_stuck": False,
                    "client": apps["upload"],
                    "server": apps["sink"],
                    "closed_in_capture": False,
                },
                {
                    "server_port": 85,
                    "done": "client sends one request; the server reads it and never answers (keep-alive 1 s on the client)",
                    "pattern": "request",
                    "answer_expected": True,
                    "server_app_stuck": True,
                    "client": apps["ask"],
                    "server": apps["mute"],
                    "closed_in_capture": False,
                },
            ],
        }
        return ["upload-sink.pcap", write_truth(lab, "upload-sink.truth.json", truth)]

    @mk.scenario("half-close-open.pcap", "half-close-open.truth.json")
    def half_close_open(lab):
        """The client sends a request and shuts down writing (FIN). Port 82: the server answers once
        (one 800 B segment) and holds its socket; port 83: the server keeps sending, 8 x 800 B 0.1 s
        apart (a real half-close). The capture ends before either server's FIN."""
        out = os.path.join(lab.tmp, "half-close-open.pcap")
        lab.three()
        once = server(lab, "halfserver", 82, answers=1, chunk=800, hold=6)
        many = server(lab, "halfserver", 83, answers=8, chunk=800, gap=0.1, hold=6)
        cap = lab.tcpdump(mk.CLI, "c0", out)
        c1 = client(lab, "halfclient", 82, hold=7)
        c2 = client(lab, "halfclient", 83, hold=7)
        time.sleep(2.0)
        lab.end_capture(cap)
        apps = {name: seen(p) for name, p in (("client82", c1), ("client83", c2), ("server82", once), ("server83", many))}
        mk.expect(out, "tcp.flags.fin==1 && ip.src==" + mk.C4, 2, 2, "one FIN from each client")
        mk.expect(out, "tcp.flags.fin==1 && ip.src==" + mk.S4, 0, 0, "no server FIN inside the capture")
        mk.expect(out, "tcp.srcport==82 && tcp.len>0", 1, 1, "one answer on port 82")
        mk.expect(out, "tcp.srcport==83 && tcp.len>0", 8, None, "eight answers on port 83")
        truth = {
            "capture": "client veth c0; the servers hold their sockets past the end of the capture (no server FIN)",
            "connections": [
                {
                    "server_port": port,
                    "done": f"client: request, shutdown(SHUT_WR); server: read to EOF, then {what}, no close",
                    "fin_by": "client",
                    "server_fin_in_capture": False,
                    "answer_segments": answers,
                    "kept_sending": answers > 1,
                    "client": apps[f"client{port}"],
                    "server": apps[f"server{port}"],
                }
                for port, answers, what in ((82, 1, "one 800 B answer"), (83, 8, "8 x 800 B answers 0.1 s apart"))
            ],
        }
        return ["half-close-open.pcap", write_truth(lab, "half-close-open.truth.json", truth)]

    @mk.scenario("mptcp-subflows.pcap", "mptcp-subflows.truth.json")
    def mptcp_subflows(lab):
        """MPTCP over two veth paths between client and server (no router): path 1 198.18.10.0/24
        (c0-s0; an nft rule on the server drops its data segments out of s0, ACKs pass), path 2 198.18.11.0/24 (c1-s1). The server
        announces 198.18.11.2 (signal endpoint); the client opens a second subflow to it. The
        client's request goes on the first subflow; the server answers 0.5 s later, and the answer
        arrives on the second subflow. Captured on every interface of the client (-i any); sockets held open."""
        out = os.path.join(lab.tmp, "mptcp-subflows.pcap")
        c1, c2, s1, s2 = "198.18.10.1", "198.18.11.1", "198.18.10.2", "198.18.11.2"
        for n in (mk.CLI, mk.SRV):
            lab.netns(n)
            lab.sysctl(n, "net.mptcp.enabled=1")
            mk.nsx(n, "ip", "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2")
        lab.veth(mk.CLI, "c0", mk.SRV, "s0")
        lab.veth(mk.CLI, "c1", mk.SRV, "s1")
        lab.addr(mk.CLI, "c0", c1 + "/24")
        lab.addr(mk.CLI, "c1", c2 + "/24")
        lab.addr(mk.SRV, "s0", s1 + "/24")
        lab.addr(mk.SRV, "s1", s2 + "/24")
        lab.neigh(mk.CLI, "c0", mk.SRV, "s0", [s1], [c1])
        lab.neigh(mk.CLI, "c1", mk.SRV, "s1", [s2], [c2])
        mk.nsx(mk.SRV, "ip", "mptcp", "endpoint", "add", s2, "dev", "s1", "signal")
        # path 1 loses the server's data segments (its ACKs pass): the answer can only arrive over path 2
        drop = 'table inet s10m { chain out { type filter hook output priority 0; oifname "s0" tcp sport 80 ip length > 120 drop; }\n}'
        lab.nft(mk.SRV, drop)
        srv = lab.spawn(
            mk.SRV,
            ["python3", AGENT, "mserver", "--addr", "0.0.0.0", "--port", "80", "--gap", "0.5", "--chunk", "1200", "--hold", "6"],
            wait_for=("stdout", "ready"),
        )
        cap = lab.tcpdump(mk.CLI, "any", out)
        cli = client_at(lab, "mclient", s1, 80, hold=5)
        time.sleep(2.5)
        lab.end_capture(cap)
        apps = {"client": seen(cli), "server": seen(srv)}
        mk.expect(out, "tcp.options.mptcp.subtype==1", 2, None, "MP_JOIN: a second subflow")
        mk.expect(out, f"tcp.len>0 && ip.src=={c1}", 1, None, "the request on the first subflow")
        mk.expect(out, f"tcp.len>0 && ip.src=={s2}", 1, None, "the answer on the second subflow")
        mk.expect(out, f"tcp.len>0 && ip.src=={s1}", 0, 0, "no answer on the first subflow")
        mk.expect(out, "tcp.flags.fin==1 || tcp.flags.reset==1", 0, 0, "no close inside the capture")
        if not (apps["client"].get("mptcp") and apps["client"]["bytes_received"] == 1200):
            raise mk.Fail(f"mptcp-subflows: {apps}")
        truth = {
            "capture": "client namespace, tcpdump -i any (both paths); sockets held open past the end of the capture",
            "done": "MPTCP socket (IPPROTO_MPTCP 262); server signal endpoint 198.18.11.2; nft on the server: " + drop,
            "subflows": [
                {"client": c1, "server": s1, "server_port": 80, "carried": "the request (35 B)", "answer_on_it": False},
                {"client": c2, "server": s2, "server_port": 80, "carried": "the answer (1200 B)", "answer_on_it": True},
            ],
            "server_answered_after_s": 0.5,
            "server_app_stuck": False,
            "client": apps["client"],
            "server": apps["server"],
        }
        return ["mptcp-subflows.pcap", write_truth(lab, "mptcp-subflows.truth.json", truth)]

    return ["upload-sink", "half-close-open", "mptcp-subflows"]
