"""Loss and reordering scenarios for scripts/make-pcaps, each with a designed truth.

Every scenario captures on the client's veth ``c0`` (the file in pcaps/) and, for the truth,
also on the server's veth ``s0``. The truth file beside each capture is computed from the two
captures and the kernel's counters, never from synscope:

- a data segment in the sender-side capture twice (any byte of it sent before) was retransmitted;
- a segment in the sender's capture but not in the receiver's was lost between them;
- a segment that reached the receiver after one the sender sent later arrived out of order.

From these, ``at_capture`` says what the client-side capture point can know: which of its frames
are retransmissions of data it never saw ("upstream": lost before the capture point), of data it
saw pass ("downstream" when that copy was then lost, "spurious" when it had arrived), and which
arrived out of order. Registered by make-pcaps with ``register()``.
"""

import json
import os
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MY_AGENTS = os.path.join(HERE, "_agents_loss.py")
M = None  # the make-pcaps module (Lab, nsx, expect, addresses), set by register()

SIZE = 600000
LOSS_PERCENT = 4
HOLD_S = 0.003
TBF_LIMIT = "1mb"
# headers only: the files stay small (the truth needs no payload)
SNAPLEN = "128"
HOLD_EVERY = 10
# kernel counters recorded per namespace (deltas over the transfer)
TCPEXT = (
    "TCPLostRetransmit",
    "TCPFastRetrans",
    "TCPSlowStartRetrans",
    "TCPTimeouts",
    "TCPLossProbes",
    "TCPSpuriousRTOs",
    "TCPDSACKRecv",
    "TCPDSACKOldSent",
    "TCPDSACKOfoSent",
    "TCPSACKReorder",
    "TCPTSReorder",
    "TCPOFOQueue",
)
TCP = ("OutSegs", "InSegs", "RetransSegs")


def register(mod):
    """Add these scenarios to make-pcaps' table and run order."""
    global M
    M = mod
    for name, fn in (
        ("loss-download", loss_download),
        ("loss-upload", loss_upload),
        ("reorder-hold", reorder_hold),
        ("healthy-download", healthy_download),
        ("loss-nots", loss_nots),
        ("loss-nots-v6", loss_nots_v6),
        ("loss-upload-nots-v6", loss_upload_nots_v6),
    ):
        mod.SCENARIOS[name] = (fn, [name + ".pcap", name + ".truth.json"])
        mod.ORDER.append(name)


# ------------------------------------------------------------------ kernel counters


def counters(ns):
    """TcpExt and Tcp counters of one namespace."""
    groups = M.kernel_counters(ns)
    out = {k: v for k, v in groups["TcpExt"].items() if k in TCPEXT}
    out.update((k, v) for k, v in groups["Tcp"].items() if k in TCP)
    return out


def delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after}


# ------------------------------------------------------------------ processes


def run_mine(lab, ns, role, *args, timeout=60.0):
    """Run one of _agents_loss.py's roles to completion; its JSON report."""
    argv = ["ip", "netns", "exec", ns, "python3", MY_AGENTS, role] + [str(a) for a in args]
    M.say(f"  $ [{ns}] {role} {' '.join(str(a) for a in args)}")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lab.procs.append(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        p.kill()
        p.communicate()
        raise M.Fail(f"{role} timed out") from e
    return _report(out)


def spawn_mine(lab, ns, role, *args):
    """Start a role that prints "ready" (server, relay)."""
    return lab.spawn(ns, ["python3", MY_AGENTS, role] + [str(a) for a in args], wait_for=("stdout", "ready"))


def finish_mine(lab, p, stop=False):
    """Wait for (or stop with SIGINT) a spawned role; its JSON report."""
    if stop and p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired as e:
        p.kill()
        p.communicate()
        raise M.Fail(f"{p.args[4:7]} did not finish") from e
    for line in (err or b"").decode(errors="replace").strip().splitlines():
        print("    |", line, flush=True)
    return _report((p.early.get("stdout", b"") + (out or b"")).decode(errors="replace"))


def _report(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


# ------------------------------------------------------------------ truth from two captures


def transmissions(path, src, v6=False):
    """Data segments sent by ``src`` in a capture, in capture order:
    (frame, seq_raw, len, ip_id or None, tsval or None)."""
    ipf = "ipv6.src" if v6 else "ip.src"
    fields = ["frame.number", "tcp.seq_raw", "tcp.len", "ip.id", "tcp.options.timestamp.tsval"]
    cmd = ["tshark", "-n", "-r", path, "-Y", f"tcp.len>0 && {ipf}=={src}", "-T", "fields", "-E", "separator=/t"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        ipid = int(parts[3], 16) if parts[3] else None
        tsval = int(parts[4]) if parts[4] else None
        rows.append((int(parts[0]), int(parts[1]), int(parts[2]), ipid, tsval))
    return rows


def match(sent, got):
    """For each segment in the receiver-side list, the index of the same transmission in the sender-side
    list. With an IP ID (per-socket counter) or TSval, the same (seq, len, id, tsval) is the same packet;
    without them the path is FIFO here (no relay), so the k-th arrival of a range is the next unmatched
    sending of that range after the previous match."""
    index = {}
    for i, (_, seq, ln, ipid, ts) in enumerate(sent):
        index.setdefault((seq, ln, ipid, ts), []).append(i)
    out = []
    last = -1
    for _, seq, ln, ipid, ts in got:
        cands = index.get((seq, ln, ipid, ts), [])
        pick = None
        if ipid or ts is not None:
            pick = cands.pop(0) if cands else None
        else:
            for k, i in enumerate(cands):
                if i > last:
                    pick = cands.pop(k)
                    break
        out.append(pick)
        if pick is not None:
            last = pick
    return out


def truth_direction(sent, got, capture_is_sender):
    """What happened to one direction's data, and what the client-side capture point can know.

    ``sent``: the sender-side capture's transmissions; ``got``: the receiver side's. The capture in
    pcaps/ is the sender side when ``capture_is_sender`` (upload), else the receiver side (download).
    """
    base = sent[0][1] if sent else 0
    hi = 0
    resent = []
    ranges = []
    for _, seq, ln, _, _ in sent:
        s = (seq - base) & 0xFFFFFFFF
        resent.append(s < hi)
        ranges.append((s, s + ln))
        hi = max(hi, s + ln)
    m = match(sent, got)
    delivered = [False] * len(sent)
    for i in m:
        if i is not None:
            delivered[i] = True
    unmatched = sum(1 for i in m if i is None)
    lost = [i for i in range(len(sent)) if not delivered[i]]

    def earlier_delivered(i):
        s, e = ranges[i]
        return any(delivered[j] for j in range(i) if ranges[j][0] < e and s < ranges[j][1])

    # arrival order: a segment is late when one sent after it arrived before it
    reordered = []
    top = -1
    for k, i in enumerate(m):
        if i is None:
            continue
        if i < top:
            reordered.append(k)
        top = max(top, i)
    retrans = [i for i in range(len(sent)) if resent[i]]
    if capture_is_sender:
        frame = [row[0] for row in sent]
        seen = retrans
        upstream = []
        downstream = [frame[i] for i in seen if not earlier_delivered(i)]
        spurious = [frame[i] for i in seen if earlier_delivered(i)]
        late = []
    else:
        pos = {i: k for k, i in enumerate(m) if i is not None}
        seen = [i for i in retrans if delivered[i]]
        upstream = [got[pos[i]][0] for i in seen if not earlier_delivered(i)]
        downstream = []
        spurious = [got[pos[i]][0] for i in seen if earlier_delivered(i)]
        late = [got[k][0] for k in reordered]
    return {
        "sent_segments": len(sent),
        "retransmitted_segments": len(retrans),
        "lost_segments": len(lost),
        "lost_retransmissions": sum(1 for i in lost if resent[i]),
        "received_segments": len(got),
        "received_unmatched": unmatched,
        "arrived_out_of_order": len(reordered),
        "at_capture": {
            "where": "sender" if capture_is_sender else "receiver",
            "retransmitted": len(seen),
            "upstream_loss": len(upstream),
            "downstream_loss": len(downstream),
            "spurious": len(spurious),
            "reordered": len(late),
            "frames": {"upstream_loss": upstream, "downstream_loss": downstream, "spurious": spurious, "reordered": late},
        },
    }


# ------------------------------------------------------------------ scenarios


def _drop_rule(src, v6, percent):
    fam = "ip6" if v6 else "ip"
    # data only (IPv4 length > 100 / IPv6 payload > 80: not a bare ACK, SYN or FIN)
    size = "ip6 length > 80" if v6 else "ip length > 100"
    return f"""
table inet ssc {{
  chain filt {{
    type filter hook forward priority 0;
    {fam} saddr {src} tcp flags & (syn|fin|rst) == 0 {size} numgen random mod 100 < {percent} counter drop
  }}
}}"""


def _nft_dropped(lab):
    out = M.nsx(M.RTR, "nft", "list", "chain", "inet", "ssc", "filt", quiet=True, check=False).stdout
    for line in out.splitlines():
        if "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    return None


def _qdisc_dropped(dev):
    out = M.nsx(M.RTR, "tc", "-s", "qdisc", "show", "dev", dev, quiet=True, check=False).stdout
    if "dropped" not in out:
        return None
    return int(out.split("dropped")[1].split()[0].rstrip(","))


def _transfer(lab, name, upload, percent, timestamps=True, v6=False):
    """client -- router -- server with random data loss on the router (one direction), a 20 Mbit/s
    bottleneck towards the receiver (so the path has a queue, long enough never to overflow), capture on c0 and s0."""
    out = os.path.join(lab.tmp, name + ".pcap")
    other = os.path.join(lab.tmp, name + ".s0.pcap")
    lab.three()
    sysctls = []
    if not timestamps:
        for ns in (M.CLI, M.SRV):
            lab.sysctl(ns, "net.ipv4.tcp_timestamps=0")
        sysctls.append("net.ipv4.tcp_timestamps=0 on client and server")
    server_ip, client_ip = (M.S6, M.C6) if v6 else (M.S4, M.C4)
    sender = client_ip if upload else server_ip
    rules = ""
    if percent:
        rules = _drop_rule(sender, v6, percent)
        lab.nft(M.RTR, rules)
    # the queue holds the whole transfer: the router's nft rule is the only loss
    qdev = "r1" if upload else "r0"
    M.nsx(M.RTR, "tc", "qdisc", "add", "dev", qdev, "root", "tbf", "rate", "20mbit", "burst", "4kb", "limit", TBF_LIMIT)
    before = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    cap = lab.tcpdump(M.CLI, "c0", out, snaplen=SNAPLEN)
    cap2 = lab.tcpdump(M.SRV, "s0", other, snaplen=SNAPLEN)
    if upload:
        srv = spawn_mine(lab, M.SRV, "sink", "--addr", "::" if v6 else "0.0.0.0")
        app_client = run_mine(lab, M.CLI, "upload", "--addr", server_ip, "--size", SIZE)
        app_server = finish_mine(lab, srv)
    else:
        srv = M.http_server(lab, mode="bulk", size=SIZE, cc="cubic", addr="::" if v6 else "0.0.0.0")
        rc = M.client(lab, "bulk", addr=server_ip, cc="cubic")
        app_client = {"role": "client bulk (_pcap_agents.py): reads to EOF", "exit_code": rc}
        app_server = {"role": "server bulk (_pcap_agents.py)", "sent": SIZE, "exit_code": lab.wait(srv)}
    lab.end_capture(cap)
    lab.end_capture(cap2)
    after = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    dropped = _nft_dropped(lab) if percent else 0
    qdrops = _qdisc_dropped(qdev)
    s_pkts = transmissions(other, sender, v6)
    c_pkts = transmissions(out, sender, v6)
    sent, got = (c_pkts, s_pkts) if upload else (s_pkts, c_pkts)
    direction = truth_direction(sent, got, capture_is_sender=upload)
    truth = {
        "scenario": name,
        "capture": "tcpdump on the client's veth c0 (this file); truth from a second capture on the server's veth s0",
        "transfer": f"{SIZE} B {'client -> server (upload)' if upload else 'server -> client (download)'}, cubic, IPv{6 if v6 else 4}",
        "done": {
            "nft_router_forward": rules.strip() or None,
            "tbf": f"20mbit burst 4kb limit {TBF_LIMIT} on router {'r1 (towards the server)' if upload else 'r0 (towards the client)'}",
            "sysctls": sysctls,
            "loss_where": None if not percent else ("downstream of the capture point" if upload else "upstream of the capture point"),
        },
        "router_dropped_packets": dropped,
        "router_queue_dropped_packets": qdrops,
        "applications": {"client": app_client, "server": app_server},
        "kernel_counters_delta": {"client": delta(before[M.CLI], after[M.CLI]), "server": delta(before[M.SRV], after[M.SRV])},
        "data_direction": "c2s" if upload else "s2c",
        "data": direction,
    }
    _write_truth(lab, name, truth)
    M.say(f"  truth: {json.dumps({k: v for k, v in direction.items() if k != 'at_capture'})}")
    M.say(f"  at capture: {json.dumps({k: v for k, v in direction['at_capture'].items() if k != 'frames'})}")
    if percent and direction["lost_segments"] < 3:
        raise M.Fail(f"{name}: only {direction['lost_segments']} segments lost")
    if direction["received_unmatched"]:
        raise M.Fail(f"{name}: {direction['received_unmatched']} received segments not matched to a sent one")
    return [name + ".pcap", name + ".truth.json"]


def _write_truth(lab, name, truth):
    with open(os.path.join(lab.tmp, name + ".truth.json"), "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write("\n")


def loss_download(lab):
    """(a) 4% of the server's data dropped on the router: loss upstream of the client-side capture."""
    return _transfer(lab, "loss-download", upload=False, percent=LOSS_PERCENT)


def loss_upload(lab):
    """(b) 4% of the client's data dropped on the router: the client-side capture holds originals and copies."""
    return _transfer(lab, "loss-upload", upload=True, percent=LOSS_PERCENT)


def healthy_download(lab):
    """(d) the same download with no loss."""
    return _transfer(lab, "healthy-download", upload=False, percent=0)


def loss_nots(lab):
    """(a) without TCP timestamps: only the IP ID sequence tells a retransmission from a late original."""
    return _transfer(lab, "loss-nots", upload=False, percent=LOSS_PERCENT, timestamps=False)


def loss_nots_v6(lab):
    """(a) over IPv6 without TCP timestamps: no IP ID either, so the capture point often cannot tell."""
    return _transfer(lab, "loss-nots-v6", upload=False, percent=LOSS_PERCENT, timestamps=False, v6=True)


def loss_upload_nots_v6(lab):
    """(b) over IPv6 without TCP timestamps: no TSval, no IP ID; only the capture point (the client's
    own) says that a segment sent again is a retransmission and not a late original."""
    return _transfer(lab, "loss-upload-nots-v6", upload=True, percent=LOSS_PERCENT, timestamps=False, v6=True)


def reorder_hold(lab):
    """(c) pure reordering: a userspace L2 relay holds every 10th server->client data frame 3 ms; nothing dropped."""
    name = "reorder-hold"
    out = os.path.join(lab.tmp, name + ".pcap")
    other = os.path.join(lab.tmp, name + ".s0.pcap")
    cip, sip = "198.18.3.2", "198.18.3.3"
    for n in (M.CLI, M.RTR, M.SRV):
        lab.netns(n)
    lab.veth(M.CLI, "c0", M.RTR, "r0")
    lab.veth(M.RTR, "r1", M.SRV, "s0")
    for i in ("r0", "r1"):
        lab.sysctl(M.RTR, f"net.ipv6.conf.{i}.disable_ipv6=1")
        M.nsx(M.RTR, "ip", "link", "set", i, "promisc", "on")
    lab.addr(M.CLI, "c0", cip + "/24")
    lab.addr(M.SRV, "s0", sip + "/24")
    rel = spawn_mine(lab, M.RTR, "holdrelay", "--left", "if:r0", "--right", "if:r1", "--every", HOLD_EVERY, "--hold", HOLD_S, "--timeout", 40)
    lab.neigh(M.CLI, "c0", M.SRV, "s0", [sip], [cip])
    before = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    cap = lab.tcpdump(M.CLI, "c0", out, snaplen=SNAPLEN)
    cap2 = lab.tcpdump(M.SRV, "s0", other, snaplen=SNAPLEN)
    srv = M.http_server(lab, mode="bulk", size=SIZE // 2, cc="cubic")
    M.client(lab, "bulk", addr=sip, cc="cubic")
    lab.wait(srv)
    lab.end_capture(cap)
    lab.end_capture(cap2)
    relay = finish_mine(lab, rel, stop=True)
    after = {ns: counters(ns) for ns in (M.CLI, M.SRV)}
    sent, got = transmissions(other, sip), transmissions(out, sip)
    direction = truth_direction(sent, got, capture_is_sender=False)
    truth = {
        "scenario": name,
        "capture": "tcpdump on the client's veth c0 (this file); truth from a second capture on the server's veth s0",
        "transfer": f"{SIZE // 2} B server -> client (download), cubic, IPv4",
        "done": {
            "relay": (
                f"userspace L2 relay on the router (no kernel forwarding) holds every {HOLD_EVERY}th"
                f" server->client data frame {HOLD_S * 1000:.0f} ms; drops nothing"
            ),
            "nft_router_forward": None,
            "sysctls": [],
            "loss_where": None,
        },
        "relay": relay,
        "kernel_counters_delta": {"client": delta(before[M.CLI], after[M.CLI]), "server": delta(before[M.SRV], after[M.SRV])},
        "data_direction": "s2c",
        "data": direction,
    }
    _write_truth(lab, name, truth)
    M.say(f"  truth: {json.dumps({k: v for k, v in direction.items() if k != 'at_capture'})}")
    M.say(f"  at capture: {json.dumps({k: v for k, v in direction['at_capture'].items() if k != 'frames'})}")
    if direction["lost_segments"]:
        raise M.Fail(f"{name}: {direction['lost_segments']} segments lost; this scenario must lose none")
    if direction["arrived_out_of_order"] < 3:
        raise M.Fail(f"{name}: only {direction['arrived_out_of_order']} segments reordered")
    time.sleep(0.1)
    return [name + ".pcap", name + ".truth.json"]
