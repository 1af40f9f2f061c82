"""The read path: capture sources, decoding, the connection tracker, per-segment analysis
(one detector per Wireshark flag), the verdict, cross-connection findings, the pipeline that
runs them in order, the JSON Lines writer and the split run over worker processes.

Everything in this package (and in synscope.core) is compiled with mypyc when a compiler is
there; nothing here imports scapy or click, or anything above it (tests/test_layering.py)."""
