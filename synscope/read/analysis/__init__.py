"""Per-segment analysis: Wireshark's tcp.analysis flags (flags.py), the ordered detector run
and per-direction facts (engine.py), and the timeline annotations (annotate.py)."""
