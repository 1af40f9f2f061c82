"""Where frames come from: capture files (pcap.py, with pcapng, gzip and stdin); live sockets are synscope.capture.live.

Every source yields :class:`synscope.core.model.RawFrame` records and nothing else,
so decode and everything after it never know whether a frame came from a file,
a pipe or the wire.
"""

from synscope.read.sources.pcap import CaptureError, CaptureReader, open_capture

__all__ = ["CaptureError", "CaptureReader", "open_capture"]
