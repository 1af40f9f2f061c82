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

    @mk.scenario("upload-sink.pcap")
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

    @mk.scenario("half-close-open.pcap")
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

    return ["upload-sink", "half-close-open"]
