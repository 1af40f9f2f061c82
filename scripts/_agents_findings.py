#!/usr/bin/env python3
"""Agents for the findings scenarios (scripts/scenarios_findings.py), run inside namespaces.

Roles:
  backlog-server  listen(BACKLOG), do not accept() for HOLD seconds, then serve every
                  connection (read one request, answer, close), keep listening LINGER
                  seconds more; prints a JSON report
  burst-clients   N clients connect at the same moment and send a request; each reads
                  TCP_INFO at a sample time (is its request still unacknowledged?) and
                  then what recv() returns; prints a JSON report
  delay-relay     L2 wire between two interfaces that holds every frame DELAY seconds
  loop-server     serve requests one connection after another: answer each request, and
                  either close after the first answer (--close server) or wait for the
                  client's close; prints a JSON report
  loop-client     COUNT requests, PER_CONN on each connection, connections opened one after
                  the other (optionally from one fixed source port); records per connection
                  the local port, connect() result (errno, e.g. EADDRNOTAVAIL), bytes and who
                  closed first; prints a JSON report
  syn-storm       CRAFTED SYNs (raw socket, IP_HDRINCL) from several source addresses and
                  ports at a bounded rate, while a few real client sockets connect and send a
                  request during the storm; prints a JSON report (what was sent, what each
                  real client saw)

Every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import json
import select
import signal
import socket
import struct
import sys
import threading
import time

from _pcap_agents import checksum, drain  # (scripts/ is this script's directory, first on sys.path)

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
TCP_INFO_FMT = "8B24I"  # struct tcp_info up to tcpi_total_retrans
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 7: "CLOSE", 8: "CLOSE_WAIT", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 11: "CLOSING"}
REQUEST = b"GET / HTTP/1.0\r\nHost: backlog\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
KEEPALIVE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def ready() -> None:
    print("ready", flush=True)


def tcp_info(s: socket.socket) -> dict:
    """State, unacknowledged segments and retransmissions of a socket, from the kernel."""
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, struct.calcsize(TCP_INFO_FMT))
    v = struct.unpack(TCP_INFO_FMT, raw[: struct.calcsize(TCP_INFO_FMT)])
    return {"state": TCP_STATES.get(v[0], str(v[0])), "unacked": v[8 + 4], "retransmits": v[2], "total_retrans": v[8 + 23]}


def backlog_server(a: argparse.Namespace) -> None:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(a.backlog)
    ready()
    t0 = time.time()
    time.sleep(a.hold)  # the application is busy: nothing calls accept()
    accepted_at = time.time()
    served: list[dict[str, object]] = []
    deadline = time.monotonic() + a.timeout
    ls.settimeout(0.5)
    while len(served) < a.conns and time.monotonic() < deadline:
        try:
            c, peer = ls.accept()
        except TimeoutError:
            continue
        c.settimeout(5.0)
        got = b""
        try:
            while b"\r\n\r\n" not in got and len(got) < 4096:
                chunk = c.recv(4096)
                if not chunk:
                    break
                got += chunk
            c.sendall(RESPONSE)
            result = "served"
        except OSError as e:
            result = errno.errorcode.get(e.errno or 0, str(e))
        served.append({"client_port": peer[1], "t": round(time.time() - t0, 6), "request_bytes": len(got), "result": result})
        c.close()
    time.sleep(a.linger)  # keep listening (SYNs still arriving, SYN-ACKs to retransmit)
    ls.close()
    print(json.dumps({"backlog": a.backlog, "hold": a.hold, "first_accept_after": round(accepted_at - t0, 6), "accepted": served}), flush=True)


def burst_clients(a: argparse.Namespace) -> None:
    barrier = threading.Barrier(a.count)
    results: list[dict] = [{} for _ in range(a.count)]

    def one(i: int) -> None:
        r = results[i]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        barrier.wait()
        time.sleep(i * a.stagger)  # (0: all at once)
        t0 = time.time()
        r["start"] = t0
        try:
            s.connect((a.addr, a.port))
            r["client_port"] = s.getsockname()[1]
            r["connect"] = "ok"
            r["connect_s"] = round(time.time() - t0, 6)
            r["sent"] = s.send(REQUEST)
            time.sleep(max(0.0, a.sample - (time.time() - t0)))
            r["at_sample"] = tcp_info(s)
            received = drain(s)
            r["recv"] = "eof"
            r["received"] = received
        except OSError as e:
            r.setdefault("connect", "ok" if "client_port" in r else "failed")
            r["error"] = errno.errorcode.get(e.errno or 0, type(e).__name__)
            r["received"] = 0
        r["end_s"] = round(time.time() - t0, 6)
        r["final"] = tcp_info(s)
        s.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.timeout + 5)
    base = min(r.get("start", 0) for r in results)
    for r in results:
        r["start"] = round(r.get("start", base) - base, 6)
        r["connect_at"] = r["start"]
    print(json.dumps(results), flush=True)


def delay_relay(a: argparse.Namespace) -> None:
    """Frames from each interface go out of the other DELAY seconds later (in order)."""
    socks = []
    for name in (a.left, a.right):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        socks.append(s)
    stop: list[int] = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ready()
    held: list[tuple[float, int, int, bytes]] = []
    n = 0
    deadline = time.monotonic() + a.timeout
    while not stop and time.monotonic() < deadline and n < a.count:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, out, frame = heapq.heappop(held)
            socks[out].send(frame)
            if a.debug:
                print(f"{time.time():.6f} sent {_} to {out}", file=sys.stderr, flush=True)
        wait = max(0.0, min(0.01, held[0][0] - now)) if held else 0.01
        try:
            r, _, _ = select.select(socks, [], [], wait)
        except InterruptedError:
            continue
        for s in r:
            frame, addr = s.recvfrom(65535)
            if addr[2] == PACKET_OUTGOING:
                continue
            n += 1
            out = 1 if s is socks[0] else 0
            heapq.heappush(held, (time.monotonic() + a.delay, n, out, frame))
            if a.debug:
                print(f"{time.time():.6f} got {n} from {out ^ 1} pkttype {addr[2]} len {len(frame)}", file=sys.stderr, flush=True)
    for _, _, out, frame in sorted(held):
        socks[out].send(frame)
    print(f"delay-relay: {n} frames", file=sys.stderr, flush=True)


def _request_done(buf: bytes) -> bool:
    return b"\r\n\r\n" in buf


def loop_server(a: argparse.Namespace) -> None:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(128)
    ls.settimeout(0.5)
    ready()
    served = 0
    conns = 0
    closed_first = 0
    deadline = time.monotonic() + a.timeout
    while served < a.count and time.monotonic() < deadline:
        try:
            c, _ = ls.accept()
        except TimeoutError:
            continue
        conns += 1
        c.settimeout(5.0)
        buf = b""
        try:
            while time.monotonic() < deadline:  # (to the client's close, after the last request too)
                chunk = c.recv(4096)
                if not chunk:
                    break
                buf += chunk
                while _request_done(buf):
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    c.sendall(KEEPALIVE_RESPONSE)
                    served += 1
                if a.close == "server" and served and not buf:
                    closed_first += 1
                    break
        except OSError:
            pass
        c.close()
    ls.close()
    print(json.dumps({"connections": conns, "requests_served": served, "server_closed_first": closed_first}), flush=True)


def loop_client(a: argparse.Namespace) -> None:
    results: list[dict[str, object]] = []
    errors: dict[str, int] = {}
    done = 0
    tries = 0
    t0 = time.time()
    deadline = time.monotonic() + a.timeout
    while done < a.count and tries < a.count * 20 and time.monotonic() < deadline:
        tries += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5.0)
        if a.bind_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        r: dict[str, object] = {"t": round(time.time() - t0, 6)}
        try:
            if a.bind_port:
                s.bind(("0.0.0.0", a.bind_port))
            s.connect((a.addr, a.port))
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, type(e).__name__)
            errors[name] = errors.get(name, 0) + 1
            s.close()
            time.sleep(a.retry_gap)  # (EADDRNOTAVAIL: no local port free yet)
            continue
        r["local_port"] = s.getsockname()[1]
        got = 0
        n = 0
        try:
            while n < a.per_conn and done < a.count:
                s.sendall(REQUEST)
                buf = b""
                while len(buf) < len(KEEPALIVE_RESPONSE):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("EOF before the answer")
                    buf += chunk
                got += len(buf)
                n += 1
                done += 1
            if a.close == "server":  # (an EOF here: the server's FIN came first)
                r["closed_first"] = "server" if s.recv(1) == b"" else "client"
        except OSError as e:
            r["error"] = errno.errorcode.get(e.errno or 0, type(e).__name__)
        r["requests"] = n
        r["bytes_received"] = got
        s.close()
        results.append(r)
        if a.gap:
            time.sleep(a.gap)
    print(
        json.dumps(
            {
                "requests": done,
                "connections": len(results),
                "connect_errors": errors,
                "distinct_local_ports": len({r["local_port"] for r in results}),
                "elapsed_s": round(time.time() - t0, 6),
                "per_connection": results,
            }
        ),
        flush=True,
    )


def crafted_syn(src: str, dst: str, sport: int, dport: int, seq: int, ident: int) -> bytes:
    """An IPv4 SYN with an MSS option (1460), checksums filled."""
    opts = struct.pack("!BBH", 2, 4, 1460)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, (5 + len(opts) // 4) << 4, 0x02, 64240, 0, 0) + opts
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ident, 0x4000, 64, socket.IPPROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def _real_client(addr: str, port: int, at: float, t0: float, out: list) -> None:
    time.sleep(max(0.0, t0 + at - time.time()))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5.0)
    r: dict[str, object] = {"t": round(time.time() - t0, 6)}
    try:
        s.connect((addr, port))
        r["client_port"] = s.getsockname()[1]
        r["connect"] = "ok"
        s.sendall(REQUEST)
        r["response_bytes"] = drain(s)
        r["error"] = None
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, "ETIMEDOUT")  # (socket.timeout has no errno)
        r.setdefault("connect", name)
        r["error"] = name
    finally:
        s.close()
    out.append(r)


def syn_storm(a: argparse.Namespace) -> None:
    sources = a.sources.split(",")
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    t0 = time.time()
    real: list[dict[str, object]] = []
    threads = [threading.Thread(target=_real_client, args=(a.addr, a.port, (i + 1) * a.real_every, t0, real)) for i in range(a.real)]
    for t in threads:
        t.start()
    sent: list[dict[str, object]] = []
    deadline = time.monotonic() + a.timeout
    for i in range(a.count):
        if time.monotonic() > deadline:
            break
        due = t0 + i / a.rate
        if due > time.time():
            time.sleep(due - time.time())
        src, sport = sources[i % len(sources)], a.first_port + i
        raw.sendto(crafted_syn(src, a.addr, sport, a.port, (i * 2654435761) & 0xFFFFFFFF, i & 0xFFFF), (a.addr, 0))
        sent.append({"src": src, "sport": sport})
    raw.close()
    for t in threads:
        t.join(timeout=a.timeout)
    per_source: dict[str, int] = {}
    for x in sent:
        per_source[str(x["src"])] = per_source.get(str(x["src"]), 0) + 1
    report = {
        "syns_sent": len(sent),
        "per_source": per_source,
        "source_ports": [a.first_port, a.first_port + len(sent) - 1] if sent else [],
        "rate_per_s": a.rate,
        "duration_s": round(time.time() - t0, 3),
        "real_clients": sorted(real, key=lambda r: float(r["t"])),  # type: ignore[arg-type]
    }
    print(json.dumps(report), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["backlog-server", "burst-clients", "delay-relay", "loop-server", "loop-client", "syn-storm"])
    p.add_argument("--addr", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--backlog", type=int, default=1)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--conns", type=int, default=6)
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--sample", type=float, default=2.0)
    p.add_argument("--delay", type=float, default=0.02)
    p.add_argument("--stagger", type=float, default=0.0)
    p.add_argument("--left")
    p.add_argument("--right")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--debug", action="store_true")
    p.add_argument("--per-conn", type=int, default=1)
    p.add_argument("--close", choices=["client", "server"], default="client")
    p.add_argument("--bind-port", type=int, default=0)
    p.add_argument("--gap", type=float, default=0.0)
    p.add_argument("--retry-gap", type=float, default=0.05)
    p.add_argument("--linger", type=float, default=0.0)
    p.add_argument("--sources", default="")
    p.add_argument("--rate", type=float, default=400.0)
    p.add_argument("--first-port", type=int, default=20000)
    p.add_argument("--real", type=int, default=0)
    p.add_argument("--real-every", type=float, default=0.5)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 15)  # hard upper bound on the life of any agent
    roles = {"backlog-server": backlog_server, "burst-clients": burst_clients, "delay-relay": delay_relay}
    roles.update({"loop-server": loop_server, "loop-client": loop_client, "syn-storm": syn_storm})
    roles[a.role](a)


if __name__ == "__main__":
    main()
