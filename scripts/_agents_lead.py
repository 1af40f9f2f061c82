#!/usr/bin/env python3
"""Socket programs for the verdict scenarios of scripts/scenarios_lead.py.

Each runs inside a network namespace (``ip netns exec``) and writes what the application saw
(bytes, errno, which call returned what, and when) as JSON to ``--truth``: the designed truth the
tests compare synscope's verdict with. Every role is bounded in time (SIGALRM).
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import socket
import time

from _pcap_agents import listener, ready, recv_until  # (scripts/ is first on sys.path)

BANNER = b"220 mail.example.test ESMTP ready\r\n"
REQUEST = b"GET / HTTP/1.0\r\nHost: synscope.test\r\n\r\n"


def write_truth(path: str | None, facts: dict[str, object]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(facts, f, indent=1, sort_keys=True)


def errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def server_first(a: argparse.Namespace) -> None:
    """A server that speaks first (a banner, as SMTP, SSH, FTP and MySQL servers do), then reads
    the client's greeting, then its command, and answers the command after ``--delay`` s."""
    ls = listener(a.addr, a.port)
    ready()
    c, _ = ls.accept()
    c.sendall(BANNER)
    greeting = c.recv(4096)
    command = c.recv(4096)
    received = time.time()
    time.sleep(a.delay)
    c.sendall(b"250 ok\r\n")
    facts: dict[str, object] = {
        "server_spoke_first": True,
        "banner_bytes": len(BANNER),
        "greeting_bytes": len(greeting),
        "command_bytes": len(command),
        "server_reply_delay": round(time.time() - received, 3),
    }
    facts["client_closed"] = c.recv(4096) == b""
    c.close()
    ls.close()
    write_truth(a.truth, facts)


def server_first_client(a: argparse.Namespace) -> None:
    """Reads the banner, sends a greeting at once, thinks ``--think`` s, sends a command, reads the reply."""
    s = socket.create_connection((a.addr, a.port), timeout=a.timeout)
    banner = s.recv(4096)
    s.sendall(b"HELO client.example.test\r\n")
    time.sleep(a.think)
    s.sendall(b"NOOP\r\n")
    reply = s.recv(4096)
    s.close()
    write_truth(a.truth, {"banner_bytes": len(banner), "reply_bytes": len(reply), "client_think_time": a.think})


def close_unread_server(a: argparse.Namespace) -> None:
    """Answers the request and closes at once (HTTP/1.0): the server's FIN follows its answer."""
    ls = listener(a.addr, a.port)
    ready()
    c, _ = ls.accept()
    recv_until(c, b"\r\n\r\n")
    body = b"HTTP/1.0 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000
    c.sendall(body)
    c.close()
    ls.close()
    write_truth(a.truth, {"server_sent": len(body), "server_closed_with": "close() after the answer (FIN)"})


def close_unread_client(a: argparse.Namespace) -> None:
    """Sends a request, waits for the server's FIN to arrive, and closes WITHOUT reading the answer:
    Linux then sends RST instead of FIN (RFC 2525: data left unread at close)."""
    s = socket.create_connection((a.addr, a.port), timeout=a.timeout)
    s.sendall(REQUEST)
    time.sleep(a.think)
    s.close()
    write_truth(a.truth, {"client_sent": len(REQUEST), "client_read": 0, "client_closed_with": "close() with unread data (RST)"})


def plain_server(a: argparse.Namespace) -> None:
    """Reads a request, answers 300 bytes, waits for the client to close."""
    ls = listener(a.addr, a.port)
    ready()
    c, _ = ls.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 260\r\n\r\n" + b"y" * 260)
    c.recv(4096)
    c.close()
    ls.close()


def plain_client(a: argparse.Namespace) -> None:
    """One request and answer; records connect()'s errno if it failed."""
    t0 = time.time()
    try:
        s = socket.create_connection((a.addr, a.port), timeout=a.timeout)
    except OSError as e:
        write_truth(a.truth, {"connect_errno": errno_name(e), "connect_seconds": round(time.time() - t0, 3)})
        return
    s.sendall(REQUEST)
    got = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
        if len(got) >= 300:
            break
    s.close()
    write_truth(a.truth, {"connect_errno": None, "connect_seconds": round(time.time() - t0, 3), "client_read": len(got)})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "role",
        choices=["server-first", "server-first-client", "close-unread-server", "close-unread-client", "plain-server", "plain-client"],
    )
    p.add_argument("--addr", default="0.0.0.0")
    p.add_argument("--port", type=int, default=25)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--think", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--truth")
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 15)  # hard upper bound on the life of any agent
    {
        "server-first": server_first,
        "server-first-client": server_first_client,
        "close-unread-server": close_unread_server,
        "close-unread-client": close_unread_client,
        "plain-server": plain_server,
        "plain-client": plain_client,
    }[a.role](a)


if __name__ == "__main__":
    main()
