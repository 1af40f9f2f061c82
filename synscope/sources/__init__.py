"""Where frames come from: capture files (pcap.py), later live sockets.

Every source yields :class:`synscope.model.RawFrame` records and nothing else,
so decode and everything after it never know whether a frame came from a file,
a pipe or the wire.
"""

from synscope.sources.pcap import CaptureError, CaptureReader, open_capture

__all__ = ["CaptureError", "CaptureReader", "open_capture"]
