"""Real-kernel captures, with truth, of a capture started mid-connection and of a SYN that took
another path (asymmetric routing). Agents: scripts/_agents_truth.py.

midstream-close.pcap   client 198.18.1.2:43001 -- router -- server 198.18.2.2:8084. The client
                       connects; only then does tcpdump start on the client's veth c0 (the script
                       waits for connect() to return, starts tcpdump, then lets the client go).
                       Request 1500 B in 3 pieces, answer 4000 B in 3 pieces; the SERVER closes
                       first, the client closes 50 ms after its EOF.
midstream-reset.pcap   the same start; after the answer the CLIENT aborts (SO_LINGER {1,0} +
                       close(): RST, no FIN); the server's recv() gets ECONNRESET.
asymmetric-route.pcap  client -- r1 -- server plus a second router r2 between them: the client's
                       route to 198.18.2.2 goes via r2, the server's route back via r1. tcpdump
                       on r1's server-side veth (r1) sees the SYN-ACK and everything the server
                       sends, nothing the client sends. One request/answer, the server closes first.
symmetric-route.pcap   counterpart: the same four namespaces and capture point, no route via r2.
asymmetric-open.pcap   asymmetric-route's routes, but tcpdump stops once connect() has returned (before
                       any data): the capture holds the server's SYN-ACK alone.

Each truth file holds what was done, where and when tcpdump ran, what each application saw (bytes,
errno, times), kernel counters (routers' forwarded datagrams: which path the packets took) and
what tshark shows (counts and every frame's sender and flags): written by this script, never
derived from synscope.
"""

from __future__ import annotations

import json
import os
import time
from types import ModuleType
from typing import Any

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_agents_truth.py")
PORT = 8084
# the client's source port, one per capture: all bundled captures read in one run stay apart
SPORTS = {"midstream-close": 43001, "midstream-reset": 43002, "asymmetric-route": 43003, "symmetric-route": 43004, "asymmetric-open": 43005}
REQUEST, ANSWER, CHUNKS = 1500, 4000, 3
# the second router of the asymmetric scenarios and its links
R2_A0, R2_A1, C_C1, S_S1 = "198.18.3.1", "198.18.4.1", "198.18.3.2", "198.18.4.2"
COUNTS = {
    "syn": "tcp.flags.syn==1 && tcp.flags.ack==0",
    "synack": "tcp.flags.syn==1 && tcp.flags.ack==1",
    "fin": "tcp.flags.fin==1",
    "rst": "tcp.flags.reset==1",
    "from_client": "ip.src==198.18.1.2",
    "from_server": "ip.src==198.18.2.2",
    "tshark_lost_segment": "tcp.analysis.lost_segment",
    "tshark_ack_lost_segment": "tcp.analysis.ack_lost_segment",
}


def register(mk: ModuleType) -> list[str]:
    """Add this file's scenarios to make-pcaps (module ``mk``); returns their names."""
    R2 = mk.PREFIX + "r2"

    def spawn(lab: Any, ns: str, role: str, *args: object, token: str) -> Any:
        argv = ["python3", AGENT, role, "--addr", mk.S4, "--port", str(PORT), "--request", str(REQUEST), "--answer", str(ANSWER)]
        argv += ["--chunks", str(CHUNKS), *(str(x) for x in args)]
        return lab.spawn(ns, argv, wait_for=("stdout", token), timeout=15.0)

    def result(p: Any, timeout: float = 30.0) -> dict:
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
        wanted = ("Ip.ForwDatagrams", "Tcp.ActiveOpens", "Tcp.PassiveOpens", "Tcp.EstabResets", "Tcp.OutRsts", "Tcp.InSegs", "Tcp.OutSegs")
        flat = {f"{g}.{k}": v for g, values in mk.kernel_counters(ns).items() for k, v in values.items()}
        return {k: flat[k] for k in wanted}

    def delta(before: dict, after: dict) -> dict:
        return {k: after[k] - before[k] for k in sorted(after)}

    def oracle(path: str) -> dict:
        """What tshark shows: counts per filter, and each frame (number, epoch time, sender, flags, length)."""
        fields = ["frame.number", "frame.time_epoch", "ip.src", "tcp.flags.str", "tcp.len", "tcp.seq_raw", "tcp.ack_raw"]
        args = ["-Y", "tcp", "-T", "fields", "-E", "separator=|"] + [x for f in fields for x in ("-e", f)]
        frames = []
        for line in mk.tshark(path, *args).splitlines():
            v = line.split("|")
            who = {mk.C4: "client", mk.S4: "server"}.get(v[2], v[2])
            frames.append(
                {
                    "frame": int(v[0]),
                    "t": float(v[1]),
                    "from": who,
                    "flags": v[3].replace("·", "").strip(),
                    "len": int(v[4]),
                    "seq_raw": int(v[5]),
                    "ack_raw": int(v[6] or 0),
                }
            )
        counts = {k: mk.count(path, f) for k, f in COUNTS.items()}
        counts["frames"] = len(frames)
        return {"counts": counts, "frames": frames, "tshark_filters": COUNTS}

    def write(lab: Any, name: str, truth: dict) -> list[str]:
        with open(os.path.join(lab.tmp, name + ".truth.json"), "w") as f:
            json.dump(truth, f, indent=1, sort_keys=True)
            f.write("\n")
        return [name + ".pcap", name + ".truth.json"]

    def firsts(frames: list[dict]) -> dict:
        """Who sent the first FIN and the first RST in the capture (None: none)."""
        fin = next((f for f in frames if "F" in f["flags"]), None)
        rst = next((f for f in frames if "R" in f["flags"]), None)
        return {
            "first_fin": None if fin is None else {"frame": fin["frame"], "from": fin["from"]},
            "first_rst": None if rst is None else {"frame": rst["frame"], "from": rst["from"]},
        }

    # ------------------------------------------------------------ capture started mid-connection
    def midstream(lab: Any, name: str, ending: str) -> list[str]:
        out = os.path.join(lab.tmp, name + ".pcap")
        go = os.path.join(lab.tmp, "go")
        lab.three()
        before = {n: counters(n) for n in (mk.CLI, mk.SRV)}
        srv = spawn(lab, mk.SRV, "server", "--ending", ending, token="ready")
        cli = spawn(lab, mk.CLI, "client", "--ending", ending, "--sport", SPORTS[name], "--go", go, token="connected")
        connected_seen = time.time()  # connect() has returned: the handshake is over
        cap = lab.tcpdump(mk.CLI, "c0", out)
        capture_listening = time.time()
        open(go, "w").close()
        c, s = result(cli), result(srv)
        lab.end_capture(cap)
        after = {n: counters(n) for n in (mk.CLI, mk.SRV)}
        seen = oracle(out)
        frames = seen["frames"]
        if not frames or seen["counts"]["syn"] or seen["counts"]["synack"]:
            raise mk.Fail(f"{name}: the capture should start after the handshake: {seen['counts']}")
        if c.get("connect") != "ok" or frames[0]["t"] <= c["connected_at"]:
            raise mk.Fail(f"{name}: first frame not after connect() returned: {c}")
        closer = {"server-closes": "server", "client-resets": "client"}[ending]
        truth = {
            "capture": {
                "where": "tcpdump on the client's veth c0",
                "started": "after the client's connect() returned and the server's accept() returned (the handshake is not in the capture)",
                "client_connected_at": c["connected_at"],
                "script_saw_connected_at": connected_seen,
                "tcpdump_listening_at": capture_listening,
                "first_frame_at": frames[0]["t"],
            },
            "client": f"{mk.C4}:{SPORTS[name]}",
            "server": f"{mk.S4}:{PORT}",
            "done": {
                "ending": ending,
                "request": f"{REQUEST} B from the client in {CHUNKS} pieces 20 ms apart, after tcpdump listened",
                "answer": f"{ANSWER} B from the server in {CHUNKS} pieces 20 ms apart",
                "close": {
                    "server-closes": "the server close()s right after its answer (its FIN first); the client reads EOF and close()s 50 ms later",
                    "client-resets": "the client reads the answer, then SO_LINGER {1, 0} + close(): RST, no FIN; the server is blocked in recv()",
                }[ending],
                "closed_first" if ending == "server-closes" else "reset_by": closer,
            },
            "applications": {"client": c, "server": s},
            "kernel": {"counters": {"client": delta(before[mk.CLI], after[mk.CLI]), "server": delta(before[mk.SRV], after[mk.SRV])}},
            "tshark": seen,
            "observed": firsts(frames) | {"first_frame": frames[0]["frame"], "first_frame_from": frames[0]["from"]},
        }
        return write(lab, name, truth)

    @mk.scenario("midstream-close.pcap", "midstream-close.truth.json")
    def midstream_close(lab: Any) -> list[str]:
        files = midstream(lab, "midstream-close", "server-closes")
        path = os.path.join(lab.tmp, "midstream-close.pcap")
        mk.expect(path, "tcp.flags.fin==1", 2, 2, "a FIN from each side")
        mk.expect(path, "tcp.flags.reset==1", 0, 0, "no RST")
        return files

    @mk.scenario("midstream-reset.pcap", "midstream-reset.truth.json")
    def midstream_reset(lab: Any) -> list[str]:
        files = midstream(lab, "midstream-reset", "client-resets")
        path = os.path.join(lab.tmp, "midstream-reset.pcap")
        mk.expect(path, f"tcp.flags.reset==1 && ip.src=={mk.C4}", 1, 1, "the client's RST")
        mk.expect(path, "tcp.flags.fin==1", 0, 0, "no FIN")
        return files

    # ------------------------------------------------------------ the SYN on another path
    def four(lab: Any, asymmetric: bool) -> dict:
        """make-pcaps' three namespaces plus r2 (client c1 == a0 r2 a1 == s1 server); with
        ``asymmetric`` the client's route to the server goes via r2, the server's back via r1."""
        lab.three()
        lab.netns(R2)
        lab.veth(mk.CLI, "c1", R2, "a0")
        lab.veth(R2, "a1", mk.SRV, "s1")
        lab.addr(mk.CLI, "c1", C_C1 + "/24")
        lab.addr(R2, "a0", R2_A0 + "/24")
        lab.addr(R2, "a1", R2_A1 + "/24")
        lab.addr(mk.SRV, "s1", S_S1 + "/24")
        lab.sysctl(R2, "net.ipv4.ip_forward=1")
        mk.nsx(R2, "ip", "route", "add", mk.S4 + "/32", "via", S_S1)
        # the server takes the client's packets on s1 although its route back is via s0
        for k in ("all", "default", "s0", "s1"):
            lab.sysctl(mk.SRV, f"net.ipv4.conf.{k}.rp_filter=0")
        lab.neigh(mk.CLI, "c1", R2, "a0", [R2_A0], [C_C1])
        lab.neigh(R2, "a1", mk.SRV, "s1", [S_S1], [R2_A1])
        if asymmetric:
            # (src: the client's packets keep its c0 address, the one the server's route leads back to)
            mk.nsx(mk.CLI, "ip", "route", "add", mk.S4 + "/32", "via", R2_A0, "src", mk.C4)
        route = {
            "client_to_server": mk.nsx(mk.CLI, "ip", "route", "get", mk.S4, quiet=True).stdout.strip(),
            "server_to_client": mk.nsx(mk.SRV, "ip", "route", "get", mk.C4, quiet=True).stdout.strip(),
        }
        return {" ".join(k.split()): " ".join(v.split()) for k, v in route.items()}

    def routed(lab: Any, name: str, asymmetric: bool, capture_handshake_only: bool = False) -> list[str]:
        out = os.path.join(lab.tmp, name + ".pcap")
        go = os.path.join(lab.tmp, "go")
        routes = four(lab, asymmetric)
        if not capture_handshake_only:
            open(go, "w").close()  # no waiting: the capture runs from before the connect to the end
        before = {n: counters(n) for n in (mk.CLI, mk.RTR, R2, mk.SRV)}
        srv = spawn(lab, mk.SRV, "server", "--ending", "server-closes", token="ready")
        cap = lab.tcpdump(mk.RTR, "r1", out)
        capture_listening = time.time()
        cli = spawn(lab, mk.CLI, "client", "--ending", "server-closes", "--sport", SPORTS[name], "--go", go, token="connected")
        if capture_handshake_only:
            lab.end_capture(cap)  # connect() has returned: the capture ends before any data
            capture_ended = time.time()
            open(go, "w").close()
        c, s = result(cli), result(srv)
        if not capture_handshake_only:
            lab.end_capture(cap)
            capture_ended = time.time()
        after = {n: counters(n) for n in (mk.CLI, mk.RTR, R2, mk.SRV)}
        if c.get("connect") != "ok" or c.get("bytes_received") != ANSWER or s.get("bytes_received") != REQUEST:
            raise mk.Fail(f"{name}: the exchange should complete: client {c} server {s}")
        fwd = {
            "r1": after[mk.RTR]["Ip.ForwDatagrams"] - before[mk.RTR]["Ip.ForwDatagrams"],
            "r2": after[R2]["Ip.ForwDatagrams"] - before[R2]["Ip.ForwDatagrams"],
        }
        seen = oracle(out)
        truth = {
            "capture": {
                "where": "tcpdump on r1's server-side veth r1 (router r1 between client and server)",
                "tcpdump_listening_at": capture_listening,
                "started": "before the client's connect()",
                "ended": "after connect() returned, before any data was sent" if capture_handshake_only else "after both applications finished",
                "tcpdump_stopped_at": capture_ended,
            },
            "client": f"{mk.C4}:{SPORTS[name]}",
            "server": f"{mk.S4}:{PORT}",
            "done": {
                "topology": "client c0 == r0 r1 r1 == s0 server, and client c1 == a0 r2 a1 == s1 server",
                "routes": routes,
                "asymmetric": asymmetric,
                "path_client_to_server": "r2 (not captured)" if asymmetric else "r1 (captured)",
                "path_server_to_client": "r1 (captured)",
                "exchange": ("(after the capture ended) " if capture_handshake_only else "")
                + f"connect, {REQUEST} B request, {ANSWER} B answer, the server closes first, the client 50 ms after EOF",
                "closed_first": "server",
            },
            "applications": {"client": c, "server": s},
            "kernel": {
                "forwarded_datagrams": fwd,
                "counters": {"client": delta(before[mk.CLI], after[mk.CLI]), "server": delta(before[mk.SRV], after[mk.SRV])},
            },
            "tshark": seen,
            "observed": firsts(seen["frames"]) | {"first_frame_from": seen["frames"][0]["from"] if seen["frames"] else None},
        }
        # the routers' counters say where the client's packets went, whatever the capture shows
        client_segs = truth["kernel"]["counters"]["client"]["Tcp.OutSegs"]
        if asymmetric and (fwd["r2"] < client_segs or seen["counts"]["from_client"] != 0):
            raise mk.Fail(f"{name}: the client's packets should all go via r2: {fwd}, {seen['counts']}")
        if not asymmetric and (fwd["r2"] != 0 or seen["counts"]["from_client"] != client_segs):
            raise mk.Fail(f"{name}: every packet should go via r1: {fwd}, {seen['counts']}")
        return write(lab, name, truth)

    @mk.scenario("asymmetric-route.pcap", "asymmetric-route.truth.json")
    def asymmetric_route(lab: Any) -> list[str]:
        files = routed(lab, "asymmetric-route", asymmetric=True)
        path = os.path.join(lab.tmp, "asymmetric-route.pcap")
        mk.expect(path, "tcp.flags.syn==1 && tcp.flags.ack==0", 0, 0, "no SYN (it went via r2)")
        mk.expect(path, "tcp.flags.syn==1 && tcp.flags.ack==1", 1, 1, "the server's SYN-ACK")
        return files

    @mk.scenario("symmetric-route.pcap", "symmetric-route.truth.json")
    def symmetric_route(lab: Any) -> list[str]:
        files = routed(lab, "symmetric-route", asymmetric=False)
        path = os.path.join(lab.tmp, "symmetric-route.pcap")
        mk.expect(path, "tcp.flags.syn==1 && tcp.flags.ack==0", 1, 1, "the client's SYN")
        mk.expect(path, "tcp.flags.fin==1", 2, 2, "a FIN from each side")
        return files

    @mk.scenario("asymmetric-open.pcap", "asymmetric-open.truth.json")
    def asymmetric_open(lab: Any) -> list[str]:
        files = routed(lab, "asymmetric-open", asymmetric=True, capture_handshake_only=True)
        path = os.path.join(lab.tmp, "asymmetric-open.pcap")
        mk.expect(path, "tcp", 1, 1, "the SYN-ACK alone (the SYN and the ACK went via r2)")
        mk.expect(path, "tcp.flags.syn==1 && tcp.flags.ack==1", 1, 1, "the server's SYN-ACK")
        return files

    return ["midstream-close", "midstream-reset", "asymmetric-route", "symmetric-route", "asymmetric-open"]
