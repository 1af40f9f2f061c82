"""tcpdump filter expressions, compiled by libpcap (through ctypes, no scapy needed).

Used two ways: offline, to test each frame of a file (``pcap_offline_filter``),
and live, to hand the compiled program to the kernel (``SO_ATTACH_FILTER``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


class FilterError(Exception):
    """The expression does not compile, or libpcap is missing."""


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


@lru_cache(maxsize=1)
def _libpcap() -> ctypes.CDLL:
    for name in (ctypes.util.find_library("pcap"), "libpcap.so.0.8", "libpcap.so.1", "libpcap.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_offline_filter.argtypes = [ctypes.POINTER(_BpfProgram), ctypes.POINTER(_PktHdr), ctypes.c_char_p]
        lib.pcap_offline_filter.restype = ctypes.c_int
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        return lib
    raise FilterError("libpcap is not installed (Debian: apt-get install libpcap0.8)")


class CompiledFilter:
    """One expression compiled for one link type."""

    def __init__(self, expression: str, linktype: int, snaplen: int = 262144) -> None:
        lib = _libpcap()
        self.expression = expression
        self.linktype = linktype
        self._lib = lib
        self._prog = _BpfProgram()
        handle = lib.pcap_open_dead(linktype, snaplen)
        if not handle:
            raise FilterError(f"libpcap cannot handle link type {linktype}")
        try:
            if lib.pcap_compile(handle, ctypes.byref(self._prog), expression.encode(), 1, 0xFFFFFFFF) != 0:
                err = lib.pcap_geterr(handle).decode(errors="replace")
                raise FilterError(f"filter {expression!r} does not compile: {err}")
        finally:
            lib.pcap_close(handle)
        self._hdr = _PktHdr()

    def matches(self, data: bytes, orig_len: int) -> bool:
        """Does a captured frame pass the filter?"""
        hdr = self._hdr
        hdr.caplen = len(data)
        hdr.len = orig_len
        return self._lib.pcap_offline_filter(ctypes.byref(self._prog), ctypes.byref(hdr), data) != 0

    def instructions(self) -> list[tuple[int, int, int, int]]:
        """The classic-BPF program as (code, jt, jf, k) tuples, for SO_ATTACH_FILTER."""
        prog = self._prog
        return [(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k) for i in range(prog.bf_len)]


class FrameFilter:
    """An expression compiled lazily per link type, as files mix them (pcapng)."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._by_linktype: dict[int, CompiledFilter] = {}
        CompiledFilter(expression, 1)  # fail early on a bad expression

    def matches(self, linktype: int, data: bytes, orig_len: int) -> bool:
        """Does this frame pass?"""
        compiled = self._by_linktype.get(linktype)
        if compiled is None:
            compiled = self._by_linktype[linktype] = CompiledFilter(self.expression, linktype)
        return compiled.matches(data, orig_len)
