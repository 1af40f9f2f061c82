"""tshark as the oracle for per-packet TCP analysis flags."""

from __future__ import annotations

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
    proc = subprocess.run([sys.executable, "-m", "synscope", "read", "--json", *extra, path], capture_output=True, text=True, timeout=300)
    result: dict[int, set[str]] = {}
    for line in proc.stdout.splitlines():
        conn = json.loads(line)
        if "finding" in conn:  # finding lines follow the connections
            continue
        for pkt in conn["packets"]:
            result[pkt["frame"]] = set(pkt["analysis"])
    return result


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
