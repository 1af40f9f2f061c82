"""Checksum scenario (issue 14, item 17) for scripts/make-pcaps, with a designed truth.

checksum-offload: make-pcaps turns TX checksum offload off on every veth; here it is turned back on
for the client's veth ``c0`` (``ethtool -K c0 tx on``), where tcpdump captures. The client's
kernel then hands its segments down with only the pseudo-header sum in the TCP checksum field (the
NIC, here veth, is trusted to finish it), and the capture records them so; the server gets them
intact and answers normally. Corruption in transit is not made here (a kernel does not corrupt
on demand): tests/test_checksums.py crafts it. Registered by make-pcaps with ``register()``.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
AGENTS = os.path.join(HERE, "_pcap_agents.py")
M = None  # the make-pcaps module, set by register()


def register(mod):
    """Add this scenario to make-pcaps' table and run order."""
    global M
    M = mod
    mod.SCENARIOS["checksum-offload"] = (checksum_offload, ["checksum-offload.pcap", "checksum-offload.truth.json"])
    mod.ORDER.append("checksum-offload")


def checked(path, dfilter):
    """Frames matching ``dfilter`` with tshark verifying TCP checksums (it does not by default)."""
    return len([line for line in M.tshark(path, "-o", "tcp.check_checksum:TRUE", "-Y", dfilter).splitlines() if line.strip()])


def checksum_offload(lab):
    """One HTTP exchange captured on the client's veth with TX checksum offload on."""
    name = "checksum-offload"
    out = os.path.join(lab.tmp, name + ".pcap")
    lab.three(v6=False)
    M.nsx(M.CLI, "ethtool", "-K", "c0", "tx", "on", quiet=True)
    features = M.nsx(M.CLI, "ethtool", "-k", "c0", quiet=True).stdout
    tx = [line.strip() for line in features.splitlines() if line.strip().startswith("tx-checksumming")]
    srv = M.http_server(lab, mode="http", size=2000)
    cap = lab.tcpdump(M.CLI, "c0", out)
    r = M.nsx(M.CLI, "python3", AGENTS, "client", "--mode", "http", "--addr", M.S4, "--port", "80", timeout=30, check=False)
    for line in r.stderr.splitlines():
        print("    |", line, flush=True)
    lab.wait(srv)
    lab.end_capture(cap)
    bad_from_client = checked(out, f"ip.src=={M.C4} && tcp.checksum.status==0")
    from_client = checked(out, f"ip.src=={M.C4} && tcp")
    bad_from_server = checked(out, f"ip.src=={M.S4} && tcp.checksum.status==0")
    if bad_from_client != from_client or bad_from_server:
        raise M.Fail(f"expected every client segment unfilled and no server one: {bad_from_client}/{from_client}, server {bad_from_server}")
    truth = {
        "capture": "client veth c0, TX checksum offload on for c0 (ethtool -K c0 tx on): " + "; ".join(tx),
        "done": "one HTTP exchange (2000-byte body); nothing corrupts any packet",
        "offload_on": "client (the capturing host)",
        "client_segments": from_client,
        "client_segments_unfilled_tshark": bad_from_client,
        "server_segments_bad_tshark": bad_from_server,
        "corrupted": 0,
        "app": {"exit": r.returncode},
    }
    with open(os.path.join(lab.tmp, name + ".truth.json"), "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write("\n")
    return [name + ".pcap", name + ".truth.json"]
