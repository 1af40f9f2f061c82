#!/usr/bin/env python3
"""Socket programs for the loss / reordering scenarios (scripts/scenarios_loss.py).

Run inside a namespace made by scripts/make-pcaps, e.g.

    ip netns exec ssc-srv python3 scripts/_agents_loss.py sink --port 80
    ip netns exec ssc-cli python3 scripts/_agents_loss.py upload --addr 198.18.2.2 --size 600000
    ip netns exec ssc-rtr python3 scripts/_agents_loss.py holdrelay --left if:r0 --right if:r1 --every 10 --hold 0.003

Every role is bounded in time (alarm) and in bytes / frames. Each prints one JSON line of what
it saw on stdout at the end (bytes moved, errors, frames held), which goes into the truth file.
"""

import argparse
import json
import os
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pcap_agents import Port, connect, is_tcp_data, listener, log, ready


def sink(a):
    """Accept one connection, read to EOF, answer 3 bytes, close."""
    ls = listener(a.addr, a.port)
    ls.settimeout(a.timeout)
    ready()
    c, _ = ls.accept()
    c.settimeout(a.timeout)
    got, err = 0, None
    try:
        while got < (1 << 26):
            d = c.recv(65536)
            if not d:
                break
            got += len(d)
        c.sendall(b"ok\n")
    except OSError as e:
        err = e.strerror or str(e)
    c.close()
    ls.close()
    print(json.dumps({"role": "sink", "received": got, "error": err}), flush=True)


def upload(a):
    """Connect, send a.size bytes, half-close, read the answer to EOF."""
    s = connect(a.addr, a.port, timeout=a.timeout)
    if not s:
        print(json.dumps({"role": "upload", "error": "connect failed"}), flush=True)
        sys.exit(2)
    chunk = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!\n" * 1024
    left, err, answer = a.size, None, b""
    try:
        while left > 0:
            left -= s.send(chunk[: min(left, len(chunk))])
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(4096)
            if not d:
                break
            answer += d
    except OSError as e:
        err = e.strerror or str(e)
    s.close()
    print(json.dumps({"role": "upload", "sent": a.size - left, "answer": answer.decode(errors="replace"), "error": err}), flush=True)


def holdrelay(a):
    """Userspace L2 wire between two ports that reorders without loss: every a.every-th TCP data
    frame going right->left is held a.hold seconds while later frames pass it; nothing is dropped."""
    left, right = Port(a.left), Port(a.right)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ready()
    deadline = time.monotonic() + a.timeout
    held = []  # (release time, frame), in release order
    ndata = nheld = nframes = 0
    while not stop and time.monotonic() < deadline and nframes < a.count:
        wait = 0.01
        if held:
            wait = max(0.0, min(wait, held[0][0] - time.monotonic()))
        try:
            r, _, _ = select.select([left.fd, right.fd], [], [], wait)
        except InterruptedError:
            continue
        now = time.monotonic()
        while held and held[0][0] <= now:
            left.write(held.pop(0)[1])
        for fd in r:
            if fd == left.fd:
                f = left.read()
                if f is not None:
                    nframes += 1
                    right.write(f)
            else:
                f = right.read()
                if f is None:
                    continue
                nframes += 1
                if is_tcp_data(f):
                    ndata += 1
                    if ndata % a.every == 0:
                        held.append((now + a.hold, f))
                        nheld += 1
                        continue
                left.write(f)
    for _, f in held:
        left.write(f)
    log(f"holdrelay: {nframes} frames, {ndata} data frames, {nheld} held {a.hold * 1000:.1f} ms")
    print(json.dumps({"role": "holdrelay", "frames": nframes, "data_frames": ndata, "held": nheld, "hold_s": a.hold, "dropped": 0}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["sink", "upload", "holdrelay"])
    p.add_argument("--addr", default="0.0.0.0")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--size", type=int, default=600000)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--left")
    p.add_argument("--right")
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--hold", type=float, default=0.003)
    p.add_argument("--count", type=int, default=200000)
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 15)
    {"sink": sink, "upload": upload, "holdrelay": holdrelay}[a.role](a)


if __name__ == "__main__":
    main()
