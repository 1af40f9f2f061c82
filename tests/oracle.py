"""tshark as the oracle for per-packet TCP analysis flags."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys

# tshark's tcp.analysis fields, by the names synscope's JSON uses
TSHARK_FLAGS = (
    "retransmission",
    "fast_retransmission",
    "spurious_retransmission",
    "out_of_order",
    "duplicate_ack",
    "lost_segment",
    "ack_lost_segment",
    "zero_window",
    "zero_window_probe",
    "zero_window_probe_ack",
    "window_full",
    "window_update",
    "keep_alive",
    "keep_alive_ack",
    "reused_ports",
)


def have_tshark() -> bool:
    """Is tshark installed?"""
    return shutil.which("tshark") is not None


def tshark_flags(path: str) -> dict[int, set[str]]:
    """frame number → set of tcp.analysis flag names, from a two-pass tshark run."""
    cmd = ["tshark", "-2", "-n", "-r", path, "-Y", "tcp", "-T", "fields", "-E", "separator=\t", "-e", "frame.number"]
    for name in TSHARK_FLAGS:
        cmd += ["-e", f"tcp.analysis.{name}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    result: dict[int, set[str]] = {}
    for line in out.splitlines():
        cols = line.split("\t")
        frame = int(cols[0])
        names = {name for name, val in zip(TSHARK_FLAGS, cols[1:], strict=False) if val.strip()}
        result[frame] = names
    return result


def synscope_flags(path: str, extra: tuple[str, ...] = ()) -> dict[int, set[str]]:
    """frame number → set of analysis flag names, from ``synscope read --json``."""
    result: dict[int, set[str]] = {}
    for conn in synscope_json(path, extra):
        for pkt in conn["packets"]:
            result[pkt["frame"]] = set(pkt["analysis"])
    return result


@functools.lru_cache(maxsize=64)
def synscope_json(path: str, extra: tuple[str, ...] = ()) -> tuple[dict, ...]:
    """The connection objects of ``synscope read --json`` (one run per file and options)."""
    proc = subprocess.run([sys.executable, "-m", "synscope", "read", "--json", *extra, path], capture_output=True, text=True, timeout=300)
    # (finding lines follow the connections: they are not connections)
    return tuple(c for c in (json.loads(line) for line in proc.stdout.splitlines()) if "finding" not in c)


def synscope_frames(path: str, extra: tuple[str, ...] = ()) -> set[int]:
    """Every frame number in synscope's JSON: its connections' packets and ICMP errors."""
    return {x["frame"] for conn in synscope_json(path, extra) for x in (*conn["packets"], *conn["icmp"])}


def diff(path: str) -> list[tuple[int, set[str], set[str]]]:
    """Frames where the two disagree: (frame, tshark's flags, synscope's flags)."""
    return diff_frames(tshark_flags(path), synscope_flags(path, ("--keep-duplicates",)))


def diff_frames(theirs: dict[int, set[str]], ours: dict[int, set[str]]) -> list[tuple[int, set[str], set[str]]]:
    """Frames whose flag sets differ: (frame, tshark's, synscope's)."""
    out = []
    for frame in sorted(set(theirs) | set(ours)):
        t, o = theirs.get(frame, set()), ours.get(frame, set())
        if t != o:
            out.append((frame, t, o))
    return out


if __name__ == "__main__":
    for p in sys.argv[1:]:
        d = diff(p)
        print(f"{p}: {len(d)} frames differ")
        for frame, t, o in d[:40]:
            print(f"  frame {frame}: tshark {sorted(t)}  synscope {sorted(o)}")


def frame_times(path: str) -> list[tuple[int, float]]:
    """(frame number, epoch time) of every frame, from tshark."""
    out = subprocess.run(
        ["tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return [(int(a), float(b)) for a, b in (line.split("\t") for line in out.splitlines())]


def time_sorted_flags(path: str, tmpdir: str) -> dict[int, set[str]]:
    """tshark's flags for a file analysed in time order (reordercap), keyed by the ORIGINAL frame numbers."""
    import os

    sorted_path = os.path.join(tmpdir, "sorted-" + os.path.basename(path))
    subprocess.run(["reordercap", "-n", path, sorted_path], capture_output=True, check=True, timeout=300)
    order = [f for f, _ in sorted(frame_times(path), key=lambda x: (x[1], x[0]))]
    flags = tshark_flags(sorted_path)
    return {order[new - 1]: names for new, names in flags.items()}


def _field_frames(path: str, dfilter: str, field: str) -> list[tuple[int, str]]:
    """(frame number, value of ``field``) of the frames matching ``dfilter``."""
    out = subprocess.run(
        ["tshark", "-n", "-r", path, "-Y", dfilter, "-T", "fields", "-e", "frame.number", "-e", field],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return [(int(a), b) for a, b in (line.split("\t") for line in out.splitlines())]


def per_tunnel_flags(path: str, tmpdir: str, field: str) -> dict[int, set[str]]:
    """tshark's flags with each tunnel (each value of ``field``, e.g. ``vxlan.vni``) analysed in a
    file of its own, keyed by the ORIGINAL frame numbers.

    tshark keys TCP conversations by the 4-tuple alone: the same 4-tuple in two VNIs is one
    conversation to it (the second SYN "reused_ports"), two connections to synscope and Zeek.
    """
    import os

    result: dict[int, set[str]] = {}
    frames = _field_frames(path, field, field)
    for value in sorted({v for _, v in frames}):
        part = os.path.join(tmpdir, f"{field}-{value}-" + os.path.basename(path))
        subprocess.run(["tshark", "-n", "-r", path, "-Y", f"{field}=={value}", "-w", part], capture_output=True, check=True, timeout=300)
        order = [f for f, v in frames if v == value]
        for new, names in tshark_flags(part).items():
            result[order[new - 1]] = names
    return result


def tshark_tcp_frames(path: str) -> set[int]:
    """Numbers of the frames tshark dissects as TCP (in a tunnel or not)."""
    return {f for f, _ in _field_frames(path, "tcp", "tcp.stream")}
