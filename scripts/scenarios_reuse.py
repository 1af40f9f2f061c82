"""Captures of a source port used again after an abandoned connect(), with truth (issue 17).

Topology and helpers are make-pcaps': client 198.18.1.2 -- router -- server 198.18.2.2:8082,
captured on the client's veth c0. Agents: scripts/_agents_reuse.py.

port-reuse-abandoned.pcap  socket A (bound to source port 41000, SO_REUSEADDR) connects; an nft
                           rule in the client's input drops the server's SYN-ACKs (c0 still sees
                           them), so A stays in SYN-SENT; after 0.4 s the client close()s A, the
                           rule is deleted, and socket B binds the same port and connects (another
                           ISN) while the server still holds A's request in SYN-RECV.
port-reuse-closed.pcap     counterpart: no rule; A connects, exchanges, the server closes first;
                           0.4 s later B connects from the same port (the server's TIME-WAIT takes
                           the new SYN by its newer timestamp).

The truth files hold what the client and server applications saw (connect() results, ISNs from
B's own socket, bytes), the rule and when it went, ss at the moment A was connecting, the kernel
counter deltas of both hosts, and what tshark shows (the oracle): counts and every frame's flags
with raw sequence numbers.
"""

from __future__ import annotations

import json
import os

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_agents_reuse.py")
PORT, SPORT, ABANDON_AFTER = 8082, 41000, 0.4
TABLE = "inet reuse"
RULE = f"ip saddr {{server}} tcp sport {PORT} tcp flags & (syn|ack) == syn|ack drop"
# tshark display filters whose counts the truth records (the oracle for synscope's counts)
COUNTS = {
    "syn": "tcp.flags.syn==1 && tcp.flags.ack==0",
    "synack": "tcp.flags.syn==1 && tcp.flags.ack==1",
    "rst": "tcp.flags.reset==1",
    "fin": "tcp.flags.fin==1",
    "server_bare_ack": f"tcp.srcport=={PORT} && tcp.flags==0x010 && tcp.len==0",
}


def register(mk) -> list[str]:
    """Add the port-reuse-after-abandon scenarios to make-pcaps (module ``mk``); returns their names."""

    def spawn(lab, ns: str, role: str, *args: object, token: str):
        argv = ["python3", AGENT, role, "--addr", mk.S4, "--port", str(PORT), *(str(x) for x in args)]
        return lab.spawn(ns, argv, wait_for=("stdout", token), timeout=15.0)

    def result(p, timeout: float = 30.0) -> dict:
        try:
            out, err = p.communicate(timeout=timeout)
        except Exception as e:
            p.kill()
            p.communicate()
            raise mk.Fail(f"agent {p.args[4:7]} did not finish") from e
        for line in (err or b"").decode(errors="replace").strip().splitlines():
            print("    |", line, flush=True)
        lines = [x for x in (p.early["stdout"] + (out or b"")).decode().splitlines() if x.startswith("{")]
        if not lines:
            raise mk.Fail(f"agent {p.args[4:7]} printed no result")
        return json.loads(lines[-1])

    def counters(ns: str) -> dict:
        return {f"{g}.{k}": v for g, values in mk.kernel_counters(ns).items() if g in ("Tcp", "TcpExt") for k, v in values.items()}

    def delta(before: dict, after: dict) -> dict:
        return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] != before.get(k, 0)}

    def ss(ns: str) -> list[str]:
        return [" ".join(x.split()) for x in mk.nsx(ns, "ss", "-tan", quiet=True).stdout.splitlines()[1:] if x.strip()]

    def oracle(path: str) -> dict:
        """What tshark shows: counts per filter and each frame (number, sender, flags, raw seq/ack)."""
        fields = ["frame.number", "frame.time_relative", "ip.src", "tcp.srcport", "tcp.flags.str", "tcp.seq_raw", "tcp.ack_raw", "tcp.len", "tcp.stream"]
        args = ["-Y", "tcp", "-T", "fields", "-E", "separator=|"] + [x for f in fields for x in ("-e", f)]
        frames = []
        for line in mk.tshark(path, *args).splitlines():
            v = line.split("|")
            frames.append(
                {
                    "frame": int(v[0]),
                    "t": round(float(v[1]), 6),
                    "from": "client" if v[2] == mk.C4 else "server",
                    "flags": v[4].replace("·", "").strip(),
                    "seq_raw": int(v[5]),
                    "ack_raw": int(v[6] or 0),
                    "len": int(v[7]),
                    "tshark_stream": int(v[8]),
                }
            )
        counts = {k: mk.count(path, f) for k, f in COUNTS.items()}
        counts["frames"] = len(frames)
        return {"counts": counts, "frames": frames, "tshark_filters": COUNTS}

    def write(lab, name: str, truth: dict) -> list[str]:
        with open(os.path.join(lab.tmp, name + ".truth.json"), "w") as f:
            json.dump(truth, f, indent=1, sort_keys=True)
            f.write("\n")
        return [name + ".pcap", name + ".truth.json"]

    def run(lab, name: str, abandoned: bool) -> dict:
        out = os.path.join(lab.tmp, name + ".pcap")
        lab.three()
        rule = RULE.format(server=mk.S4)
        if abandoned:
            lab.nft(mk.CLI, f"table {TABLE} {{\n chain in {{\n  type filter hook input priority 0;\n  {rule}\n }}\n}}\n")
        srv = spawn(lab, mk.SRV, "server", "--conns", 1 if abandoned else 2, token="ready")
        cap = lab.tcpdump(mk.CLI, "c0", out)
        before = {n: counters(n) for n in (mk.CLI, mk.SRV)}
        mode = "abandoned" if abandoned else "closed"
        nft = {"namespace": "client", "table": TABLE, "hook": "input", "rule": rule, "removed": "by the client agent right after close(A), before B was made"}
        cli = spawn(lab, mk.CLI, "client", "--mode", mode, "--sport", SPORT, "--abandon-after", ABANDON_AFTER, "--unblock", TABLE, token="pending")
        during = {"client": ss(mk.CLI), "server": ss(mk.SRV)} if abandoned else None
        c, s = result(cli), result(srv)
        after = {n: counters(n) for n in (mk.CLI, mk.SRV)}
        lab.end_capture(cap)
        if c["B"].get("connect") != "ok":
            raise mk.Fail(f"B should connect: {c}")
        truth = {
            "capture": "tcpdump on the client's veth c0: it sees incoming packets before the client's netfilter input",
            "client": f"{mk.C4}:{SPORT}",
            "server": f"{mk.S4}:{PORT}",
            "done": {
                "source_port": SPORT,
                "sockets": "A then B, each bound to the source port with SO_REUSEADDR",
                "nft": nft if abandoned else None,
                "A": f"close()d {ABANDON_AFTER} s after its connect() began, still connecting" if abandoned else "connects, one exchange, server closes first",
                "B": f"binds the same port, connects {'at once' if abandoned else f'{ABANDON_AFTER} s after A closed'}, one exchange, server closes first",
            },
            "applications": {"client": c, "server": s},
            "kernel": {
                "ss_while_A_connects": during,
                "counters": {"client": delta(before[mk.CLI], after[mk.CLI]), "server": delta(before[mk.SRV], after[mk.SRV])},
            },
            "tshark": oracle(out),
        }
        truth["observed"] = observed(truth)
        return truth

    def observed(truth: dict) -> dict:
        """What the kernels did, read off tshark's frames and the sockets' ISNs (not expectations)."""
        frames = truth["tshark"]["frames"]
        a, b = truth["applications"]["client"]["A"], truth["applications"]["client"]["B"]
        isn_a, isn_b = a["isn"].get("own_isn"), b["isn"].get("own_isn")
        syns = [f for f in frames if f["from"] == "client" and f["flags"] == "S"]
        out = {
            "client_isns_in_capture": sorted({f["seq_raw"] for f in syns}),
            "A_isn_matches_capture": isn_a == syns[0]["seq_raw"],
            "B_isn_matches_capture": isn_b in [f["seq_raw"] for f in syns[1:]],
            "syn_frames": {"A": [f["frame"] for f in syns if f["seq_raw"] == isn_a], "B": [f["frame"] for f in syns if f["seq_raw"] == isn_b]},
        }
        # the server's bare ACKs acknowledging A's ISN after B's first SYN, and the client's RSTs
        b_first = out["syn_frames"]["B"][0] if out["syn_frames"]["B"] else 0
        stale = [f for f in frames if f["from"] == "server" and f["flags"] == "A" and f["frame"] > b_first and f["ack_raw"] == (isn_a + 1) % 2**32]
        rsts = [f for f in frames if f["flags"] in ("R", "AR")]
        out["server_acks_for_A_after_B_syn"] = [f["frame"] for f in stale]
        out["client_rsts"] = [
            {"frame": f["frame"], "seq_raw": f["seq_raw"], "equals_ack_of": [s["frame"] for s in stale if s["ack_raw"] == f["seq_raw"]]} for f in rsts
        ]
        if len(out["syn_frames"]["B"]) > 1 and rsts:
            b2 = next(f for f in frames if f["frame"] == out["syn_frames"]["B"][1])
            out["B_syn_resent_after_rst_s"] = round(b2["t"] - rsts[0]["t"], 6)
        synacks = [f for f in frames if f["flags"] == "AS"]
        owner = {(isn_a + 1) % 2**32: "A", (isn_b + 1) % 2**32: "B"}
        out["synacks"] = [{"frame": f["frame"], "acks": owner.get(f["ack_raw"], "?")} for f in synacks]
        return out

    @mk.scenario("port-reuse-abandoned.pcap", "port-reuse-abandoned.truth.json")
    def port_reuse_abandoned(lab):
        name = "port-reuse-abandoned"
        truth = run(lab, name, abandoned=True)
        a = truth["applications"]["client"]["A"]
        if a["connect"] != "EINPROGRESS" or a["tcp_info_before_close"]["state"] != "SYN-SENT":
            raise mk.Fail(f"A should still be connecting when closed: {a}")
        if truth["applications"]["client"]["unblock"]["rc"] != 0:
            raise mk.Fail("the drop rule was not removed")
        mk.expect(os.path.join(lab.tmp, name + ".pcap"), "tcp.flags.syn==1 && tcp.flags.ack==1", 2, None, "SYN-ACKs (A's dropped one, B's)")
        return write(lab, name, truth)

    @mk.scenario("port-reuse-closed.pcap", "port-reuse-closed.truth.json")
    def port_reuse_closed(lab):
        name = "port-reuse-closed"
        truth = run(lab, name, abandoned=False)
        mk.expect(os.path.join(lab.tmp, name + ".pcap"), "tcp.flags.reset==1", 0, 0, "no RST")
        mk.expect(os.path.join(lab.tmp, name + ".pcap"), "tcp.flags.syn==1 && tcp.flags.ack==0", 2, 2, "two SYNs")
        return write(lab, name, truth)

    return ["port-reuse-abandoned", "port-reuse-closed"]
