"""Giving up root once the raw sockets are open (``--user NAME``, like ``tcpdump -Z``).

synscope needs root (or CAP_NET_RAW) for one thing: opening AF_PACKET / raw
sockets. Everything after that, parsing bytes crafted by strangers included,
runs better as a user who can do nothing. The order that makes this work:

1. open every raw socket (and, if they should belong to root, output files);
2. :func:`drop_privileges` — before the first packet is read;
3. read packets: the sockets keep working, since the kernel checks privilege
   when a socket is created, not when it is read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
import pwd

__all__ = ["SAFE_UMASK", "PrivilegeDropError", "drop_privileges"]

# Files created after the drop (-w captures) are readable by their owner only:
# a capture holds other people's traffic.
SAFE_UMASK = 0o077

_PR_SET_NO_NEW_PRIVS = 38

# Modules a run imports lazily, after the drop (synscope.render.table imports tabulate when it
# first draws a table): imported before it, while the process can read any installation, which
# the user it becomes may not (a Python installed under /root)
LOAD_BEFORE_DROP = ("tabulate",)


class PrivilegeDropError(Exception):
    """Privileges could not be dropped as asked; the message is one line for users.

    The caller must stop: carrying on as root would be the opposite of what was asked.
    """


def drop_privileges(user: str, umask: int = SAFE_UMASK) -> None:
    """Switch the whole process from root to ``user`` for good, or raise PrivilegeDropError.

    Looks ``user`` up in the password database (a name, or a numeric uid), then
    sets the supplementary groups to that user's (``initgroups``), the real,
    effective and saved group ids, then the real, effective and saved user ids,
    so no id is left to switch back to. Sets ``no_new_privs`` so no set-uid
    program run later can give root back, and the umask to ``umask``.

    Then verifies: all ids are the user's, ``setuid(0)`` fails, and the kernel
    left no capability in the permitted or effective set. Sockets opened before
    stay open and readable. The working directory is kept (relative ``-w``
    paths still work if ``user`` may write there).

    Raises PrivilegeDropError, with what to do, when the user is unknown, when
    the process is not root (nothing to drop; ``--user`` needs ``sudo``), when
    ``user`` is root itself, or if any check after the switch fails.
    """
    try:
        pw = pwd.getpwuid(int(user)) if user.isascii() and user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError, ValueError):  # ValueError: a NUL byte in the name
        raise PrivilegeDropError(f"--user {user}: no such user (not in /etc/passwd or the name service); give an existing account, e.g. nobody") from None
    uid, gid = pw.pw_uid, pw.pw_gid
    if uid == 0:
        raise PrivilegeDropError(f"--user {user}: that account is root (uid 0), so nothing would be dropped; give an unprivileged account, e.g. nobody")
    if os.geteuid() != 0:
        raise PrivilegeDropError(
            f"--user {user}: dropping privileges needs root, and this process runs as uid {os.geteuid()}; run it with sudo, or leave out --user"
        )
    if gid == 0:
        raise PrivilegeDropError(f"--user {user}: that account's primary group is root (gid 0); give an unprivileged account, e.g. nobody")
    for name in LOAD_BEFORE_DROP:
        importlib.import_module(name)
    try:
        try:
            os.initgroups(pw.pw_name, gid)
        except OSError:
            os.setgroups([gid])  # name service without group lookups: at least no root's groups
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:  # e.g. root without CAP_SETUID/CAP_SETGID in a container
        raise PrivilegeDropError(f"--user {user}: the kernel refused the switch ({e.strerror or e}); stopping") from None
    _no_new_privs()
    os.umask(umask)
    _verify(user, uid, gid)


def _no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): execve can no longer grant privileges (set-uid, file caps)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the uid checks below still hold


def _verify(user: str, uid: int, gid: int) -> None:
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeDropError(f"--user {user}: the switch did not take (uids {os.getresuid()}, gids {os.getresgid()}); stopping")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeDropError(f"--user {user}: root could be regained after the switch; stopping")
    caps = _capabilities()
    if caps:
        raise PrivilegeDropError(f"--user {user}: capabilities left after the switch ({caps}); stopping")


def _capabilities() -> str:
    """Non-empty permitted / effective capability sets of this process, as 'CapEff=…' text ('' if none)."""
    try:
        with open("/proc/self/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    left = [line.replace(":\t", "=") for line in lines if line.startswith(("CapPrm:", "CapEff:")) and int(line.split()[1], 16)]
    return ", ".join(left)
