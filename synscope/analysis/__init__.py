"""Per-segment analysis (Wireshark's tcp.analysis flags) and per-connection facts."""
