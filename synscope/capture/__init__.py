"""The system's capture machinery, reached through ctypes: tcpdump filter expressions compiled by
libpcap (bpf.py) and the live AF_PACKET capture with its pcap writer (live.py). Below the read
path, which filters frames with bpf.FrameFilter; not compiled (mypyc cannot build ctypes code)."""
