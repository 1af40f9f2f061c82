"""``--user NAME`` (like tcpdump -Z): watch and probe open their sockets as root, then run as NAME.

Live tests in the probe lab (synscope.lab.demo.build_lab: client 198.18.1.2 — router —
server 198.18.2.2, a listener on 8080, nothing on 9090, tcp/8443 dropped), built
in network namespaces (root; CI runs them). synscope runs inside the client
namespace. While a watch or a slow probe is running, /proc/PID/status of its
python process must already show the unprivileged user, and the capture and the
raw send socket, opened as root, must keep working.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from synscope.core.exit_codes import ExitCode
from synscope.lab.demo import CLOSED_PORT, DROPPED_PORT, OPEN_PORT
from tests.helpers import ROOT, cli
from tests.livelib import lab_in_sandbox, wait_line

pytestmark = pytest.mark.live

PY = sys.executable
SYNSCOPE = [PY, "-m", "synscope"]
USER = "nobody"

# One real connection, bounded: 5 s per socket call, at most 1000 reads
CLIENT = textwrap.dedent(
    r"""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    for _ in range(1000):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    print(data.split(b"\r\n", 1)[0].decode())
    """
)


@pytest.fixture(scope="module")
def lab():
    yield from lab_in_sandbox("ssu")


def proc_status(pid: int) -> dict[str, list[str]]:
    """/proc/PID/status as {field: values}."""
    with open(f"/proc/{pid}/status") as f:
        return {k: v.split() for k, _, v in (line.partition(":") for line in f)}


def is_user(pid: int, pw: pwd.struct_passwd) -> bool:
    """Real, effective, saved and filesystem uid and gid of the process are all the user's."""
    st = proc_status(pid)
    return st["Uid"] == [str(pw.pw_uid)] * 4 and st["Gid"] == [str(pw.pw_gid)] * 4


def assert_is_synscope(pid: int, command: str) -> None:
    """``ip netns exec`` execs: the Popen pid is the python process itself, not a wrapper."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert [a.decode() for a in argv[:4]] == [*SYNSCOPE, command], argv


def wait_until_user(proc: subprocess.Popen, pw: pwd.struct_passwd, timeout: float = 10.0) -> bool:
    """Poll the running process until it runs as ``pw`` (True) or exits / time is up (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            if is_user(proc.pid, pw):
                return True
        except OSError:
            return False
        time.sleep(0.01)
    return False


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "Error:" not in stderr, stderr


# ------------------------------------------------------------------ watch


def test_watch_runs_as_user_and_still_captures(lab, tmp_path) -> None:
    sb, topo = lab.sb, lab.topo
    nobody = pwd.getpwnam(USER)
    pcap = tmp_path / "watch.pcap"
    w = sb.spawn(
        topo.client,
        [*SYNSCOPE, "watch", "-i", topo.client_if, "--user", USER, "--json", "-w", str(pcap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    wait_line(w.stderr, "synscope: watching")
    assert_is_synscope(w.pid, "watch")
    st = proc_status(w.pid)
    assert st["Uid"] == [str(nobody.pw_uid)] * 4, st["Uid"]
    assert st["Gid"] == [str(nobody.pw_gid)] * 4, st["Gid"]
    assert st["CapEff"] == ["0" * 16] and st["CapPrm"] == ["0" * 16]
    assert st["NoNewPrivs"] == ["1"]

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(w.stdout), daemon=True)
    reader.start()
    client = sb.run(topo.client, [PY, "-c", CLIENT, topo.server_ip, str(OPEN_PORT)], timeout=30)
    assert client.stdout.strip() == "HTTP/1.0 200 OK"
    end = time.monotonic() + 10  # a closed connection is printed about 1 s after its last packet
    while not lines and time.monotonic() < end:
        time.sleep(0.05)
    rc = sb.stop(w)
    reader.join(5)
    err = w.stderr.read()
    assert rc == ExitCode.OK, err
    no_traceback(err)
    objs = [json.loads(line) for line in lines]
    assert len(objs) == 1, objs
    o = objs[0]
    assert (o["client"]["ip"], o["server"]["ip"], o["server"]["port"], o["outcome"]) == (topo.client_ip, topo.server_ip, OPEN_PORT, "closed")
    # -w was opened as root before the drop, and written as nobody through the open descriptor
    assert os.stat(pcap).st_uid == 0
    read = cli("read", "--json", str(pcap))
    assert read.returncode == 0, read.stderr
    assert [x["outcome"] for x in map(json.loads, read.stdout.splitlines())] == ["closed"]


# ------------------------------------------------------------------ probe


def test_probe_runs_as_user_and_classifies(lab, tmp_path) -> None:
    sb, topo = lab.sb, lab.topo
    nobody = pwd.getpwnam(USER)
    pcap = tmp_path / "probe.pcap"
    # the dropped port keeps the probe waiting (2 s), long enough to look at its ids meanwhile
    p = sb.spawn(
        topo.client,
        [
            *SYNSCOPE,
            "probe",
            topo.server_ip,
            "-p",
            f"{OPEN_PORT},{CLOSED_PORT},{DROPPED_PORT}",
            "--retries",
            "0",
            "--timeout",
            "2",
            "--json",
            "--user",
            USER,
            "-w",
            str(pcap),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    dropped = wait_until_user(p, nobody)
    out, err = p.communicate(timeout=30)
    assert dropped, "probe --user did not run as nobody while it waited for answers"
    no_traceback(err)
    assert p.returncode == ExitCode.FILTERED, err
    objs = {o["port"]: o for o in map(json.loads, out.splitlines())}
    assert {port: o["state"] for port, o in objs.items()} == {OPEN_PORT: "open", CLOSED_PORT: "closed", DROPPED_PORT: "filtered"}
    assert objs[OPEN_PORT]["reason"] == "syn-ack" and objs[CLOSED_PORT]["reason"] == "reset"
    assert 0 < objs[OPEN_PORT]["rtt"] < 0.5  # kernel timestamps from the capture opened as root
    # the raw socket opened as root still sends after the drop: synscope's RST closes the half-open connection
    notes = " | ".join(pk["note"] or "" for pk in objs[OPEN_PORT]["packets"])
    assert "RST from synscope" in notes
    assert os.stat(pcap).st_uid == 0 and os.path.getsize(pcap) > 24


def test_probe_connect_runs_as_user(lab) -> None:
    sb, topo = lab.sb, lab.topo
    nobody = pwd.getpwnam(USER)
    # a silently dropped port: connect() waits (about 1.5 s), the process must be nobody by then
    p = sb.spawn(
        topo.client,
        [*SYNSCOPE, "probe", "--connect", topo.server_ip, "-p", str(DROPPED_PORT), "--timeout", "0.5", "--retries", "1", "--json", "--user", USER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    dropped = wait_until_user(p, nobody)
    out, err = p.communicate(timeout=30)
    assert dropped, "probe --connect --user did not run as nobody while connect() waited"
    no_traceback(err)
    assert p.returncode == ExitCode.FILTERED, err
    assert json.loads(out)["state"] == "filtered"

    for port, code, state in ((OPEN_PORT, ExitCode.OK, "open"), (CLOSED_PORT, ExitCode.CLOSED, "closed")):
        proc = sb.run(
            topo.client,
            [*SYNSCOPE, "probe", "--connect", topo.server_ip, "-p", str(port), "--send", r"GET / HTTP/1.0\r\n\r\n", "--json", "--user", USER],
            check=False,
            timeout=60,
        )
        no_traceback(proc.stderr)
        assert proc.returncode == code, proc.stderr
        o = json.loads(proc.stdout)
        assert o["state"] == state
        if state == "open":
            assert o["sent"] == 18 and o["answer"].startswith("HTTP/1.0 200 OK")
            assert o["connections"][0]["outcome"] == "closed"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "args",
    [
        ["watch", "-i", "lo"],
        ["probe", "127.0.0.1", "-p", "9"],
        ["probe", "--connect", "127.0.0.1", "-p", "9"],
    ],
    ids=["watch", "probe", "connect"],
)
@pytest.mark.parametrize("user", ["no-such-user-synscope", "4294967295999", "root"])
def test_bad_user_is_a_usage_error_before_anything_opens(args: list[str], user: str) -> None:
    proc = cli(*args, "--user", user, timeout=30)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"synscope: --user {user}: ")
    assert ("that account is root" if user == "root" else "no such user") in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="switches its effective uid to nobody, which needs root")
@pytest.mark.parametrize("command", ["watch", "probe"])
def test_user_without_root_is_a_clear_error(command: str) -> None:
    # effective uid nobody, the real one stays root (the interpreter may live under /root, unreadable to nobody);
    # click loads difflib while it parses a short option, so it is loaded before the switch
    code = f"""
        import difflib, os, sys
        import synscope.cli.main
        os.seteuid({pwd.getpwnam(USER).pw_uid})
        sys.argv = ["synscope", {command!r}, "--user", {USER!r}, *({["-i", "lo"] if command == "watch" else ["127.0.0.1", "-p", "9"]!r})]
        synscope.cli.main.main()
    """
    proc = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == ExitCode.NO_PRIVILEGE, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "dropping privileges needs root" in lines[0] and "sudo" in lines[0]
