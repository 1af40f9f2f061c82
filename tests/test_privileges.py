"""drop_privileges: root opens the raw socket, then the process becomes `nobody` for good.

Each check runs in a subprocess: a process that dropped root cannot get it back,
which is the point, and pytest must keep running as root.
"""

from __future__ import annotations

import ast
import os
import pwd
import subprocess
import sys
import textwrap

import pytest

from synscope.cli.privileges import PrivilegeDropError, drop_privileges
from tests.helpers import ROOT

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the test opens an AF_PACKET socket, then drops to nobody")


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports synscope from this checkout."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@needs_root
def test_drop_keeps_the_packet_socket_and_cannot_regain_root() -> None:
    nobody = pwd.getpwnam("nobody")
    proc = run_child(
        """
        import os, socket, time, errno
        from synscope.cli.privileges import drop_privileges

        ETH_P_ALL = 3
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        raw.bind(("lo", 0))
        raw.settimeout(5)
        drop_privileges("nobody")
        print("uid", os.getuid(), os.geteuid(), os.getresuid())
        print("gid", os.getgid(), os.getegid(), os.getresgid())
        print("groups", sorted(os.getgroups()))
        old = os.umask(0); print("umask", oct(old))

        # the socket opened as root still reads: send ourselves a UDP datagram on lo (no privilege needed)
        marker = b"synscope-drop-test-%d" % os.getpid()
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.sendto(marker, rx.getsockname())
        deadline = time.monotonic() + 5
        seen = False
        while time.monotonic() < deadline and not seen:
            seen = marker in raw.recv(65535)
        print("socket-readable", seen)

        # and root is gone for good
        for name, call in (("setuid", lambda: os.setuid(0)), ("seteuid", lambda: os.seteuid(0)),
                           ("setresuid", lambda: os.setresuid(0, 0, 0)), ("setgid", lambda: os.setgid(0)),
                           ("new-packet-socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))):
            try:
                call()
                print(name, "SUCCEEDED")
            except PermissionError:
                print(name, "refused")
        print("no_new_privs", [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1])
        print("caps", [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapPrm", "CapEff"))])
        """
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    u, g = nobody.pw_uid, nobody.pw_gid
    assert f"uid {u} {u} ({u}, {u}, {u})" in out
    assert f"gid {g} {g} ({g}, {g}, {g})" in out
    groups = ast.literal_eval(next(line for line in out.splitlines() if line.startswith("groups "))[7:])
    assert 0 not in groups and g in groups, groups
    assert "umask 0o77" in out
    assert "socket-readable True" in out
    for name in ("setuid", "seteuid", "setresuid", "setgid", "new-packet-socket"):
        assert f"{name} refused" in out, out
    assert "no_new_privs 1" in out
    assert "caps ['0000000000000000', '0000000000000000']" in out


@needs_root
def test_numeric_uid_is_accepted() -> None:
    nobody = pwd.getpwnam("nobody")
    proc = run_child(f"from synscope.cli.privileges import drop_privileges; import os; drop_privileges('{nobody.pw_uid}'); print(os.geteuid())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(nobody.pw_uid)


def test_unknown_user_is_a_clear_error() -> None:
    with pytest.raises(PrivilegeDropError, match=r"no such user .*nobody"):
        drop_privileges("no-such-user-synscope")
    with pytest.raises(PrivilegeDropError, match="no such user"):
        drop_privileges("4294967295999")


def test_root_is_not_a_drop() -> None:
    with pytest.raises(PrivilegeDropError, match="root"):
        drop_privileges("root")


@needs_root
def test_not_root_is_a_clear_error() -> None:
    # effective uid nobody (the real one stays root: the interpreter under /root must stay readable)
    proc = run_child(
        """
        import os
        from synscope.cli.privileges import drop_privileges, PrivilegeDropError
        os.seteuid(65534)
        try:
            drop_privileges("nobody")
        except PrivilegeDropError as e:
            print("error:", e)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "needs root" in proc.stdout and "sudo" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1


def test_odd_user_names_are_clean_errors() -> None:
    from synscope.cli.privileges import PrivilegeDropError, drop_privileges

    for name in ("²", "a\x00b"):
        try:
            drop_privileges(name)
        except PrivilegeDropError as e:
            assert "no such user" in str(e)
        else:  # pragma: no cover - would mean we dropped root inside the test process
            raise AssertionError(f"{name!r} was accepted")
