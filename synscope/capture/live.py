"""Live capture: an AF_PACKET socket with a kernel BPF filter and kernel timestamps.

Shared by ``watch`` (follow an interface) and ``probe`` (capture the answers to
our SYNs). Frames come out as :class:`RawFrame` records, exactly like frames
read from a file, so everything downstream is the same code.
"""

from __future__ import annotations

import ctypes
import errno
import select
import socket
import struct
import time

from synscope.core.model import LinkType, RawFrame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
_TIMESPEC = struct.Struct("@ll")
_SLL = struct.Struct("!HHH8sH")
_STATS = struct.Struct("@II")
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: IntFlag arithmetic costs microseconds per packet

# Receive buffer asked of the kernel: bursts are absorbed here instead of dropped
DEFAULT_BUFFER = 32 * 1024 * 1024
DEFAULT_SNAPLEN = 262144

FIX_PRIVILEGE = 'raw sockets need root or CAP_NET_RAW: run as root, or setcap cap_net_raw,cap_net_admin+ep "$(readlink -f "$(command -v python3)")"'


class PrivilegeError(Exception):
    """Opening a raw socket was refused; the message says how to fix it."""


class InterfaceError(Exception):
    """The interface does not exist or is down."""


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def interface_linktype(iface: str) -> int:
    """pcap link type of an interface's frames on a SOCK_RAW packet socket."""
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            hatype = int(f.read())
    except OSError:
        raise InterfaceError(f"no interface named {iface!r} (see: ip -br link)") from None
    if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return LinkType.ETHERNET
    if hatype == ARPHRD_NONE:
        return LinkType.RAW
    return LinkType.LINUX_SLL  # anything else: capture cooked


def check_interface_up(iface: str) -> None:
    """Raise InterfaceError when the interface is missing or administratively down."""
    try:
        with open(f"/sys/class/net/{iface}/flags") as f:
            flags = int(f.read(), 16)
    except OSError:
        raise InterfaceError(f"no interface named {iface!r} (see: ip -br link)") from None
    if not flags & 0x1:
        raise InterfaceError(f"interface {iface} is down (ip link set {iface} up)")


def attach_filter(sock: socket.socket, instructions: list[tuple[int, int, int, int]]) -> object:
    """Attach a classic BPF program to a socket; returns the buffer, which must stay alive."""
    arr = (_SockFilter * len(instructions))(*[_SockFilter(*ins) for ins in instructions])
    prog = _SockFprog(len(instructions), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))
    return arr


class LiveCapture:
    """Packets from one interface (or all, ``iface=None``) with kernel receive timestamps.

    On loopback the kernel hands a packet socket every packet twice (the outgoing
    and the incoming copy); the outgoing copy is dropped here so each packet is
    seen once.
    """

    def __init__(
        self,
        iface: str | None,
        bpf: str | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        buffer_bytes: int = DEFAULT_BUFFER,
    ) -> None:
        self.iface = iface
        self.snaplen = snaplen
        self.frames = 0
        self.kernel_packets = 0
        self.kernel_drops = 0
        self._filter_buf: object = None
        # one receive buffer for every packet: recvmsg(262144) would allocate (and fault in) 256 KiB per
        # packet, ~25 µs each; recvmsg_into this buffer and a copy of the captured bytes costs ~4 µs
        self._rbuf = bytearray(snaplen)
        cooked = iface is None or iface == "any"
        if not cooked:
            check_interface_up(iface)  # type: ignore[arg-type]
            self.linktype = interface_linktype(iface)  # type: ignore[arg-type]
        else:
            self.linktype = LinkType.LINUX_SLL
        self._cooked = cooked or self.linktype == LinkType.LINUX_SLL
        kind = socket.SOCK_DGRAM if self._cooked else socket.SOCK_RAW
        try:
            self.sock = socket.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise PrivilegeError(FIX_PRIVILEGE) from None
        try:
            if bpf:
                from synscope.capture.bpf import CompiledFilter

                # cooked sockets hand the filter the packet from the network header on
                filter_linktype = LinkType.RAW_ALT12 if self._cooked else self.linktype  # DLT_RAW: pcap_open_dead takes DLT numbers
                self._filter_buf = attach_filter(self.sock, CompiledFilter(bpf, filter_linktype, snaplen).instructions())
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if not cooked:
                try:
                    self.sock.bind((iface, ETH_P_ALL))
                except OSError as e:
                    if e.errno == errno.ENODEV:
                        raise InterfaceError(f"no interface named {iface!r} (see: ip -br link)") from None
                    raise
            self._drain_stats()  # counters start now
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self._is_lo = {iface} if iface and _is_loopback(iface) else set()

    def fileno(self) -> int:
        """The socket's descriptor, for select()."""
        return self.sock.fileno()

    def read(self, timeout: float | None = 0.2, max_frames: int = 4096) -> list[RawFrame]:
        """Frames waiting in the socket (waits up to ``timeout`` for the first one)."""
        out: list[RawFrame] = []
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return out
        recvmsg_into = self.sock.recvmsg_into
        rbuf = [self._rbuf]
        view = memoryview(self._rbuf)
        snaplen = self.snaplen
        cooked = self._cooked
        anc_size = socket.CMSG_SPACE(_TIMESPEC.size)
        while len(out) < max_frames:
            try:
                nbytes, anc, msg_flags, addr = recvmsg_into(rbuf, anc_size, _MSG_TRUNC)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            ifname, proto, pkttype, hatype, hwaddr = addr
            if pkttype == PACKET_OUTGOING and (ifname in self._is_lo or (cooked and _is_loopback(ifname))):
                continue
            ts = None
            for level, ctype, cdata in anc:
                if level == socket.SOL_SOCKET and ctype == SCM_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    ts = sec + nsec * 1e-9
            if ts is None:
                ts = time.time()
            # with MSG_TRUNC in the flags, a packet socket returns the length on the wire, even past the buffer
            data = bytes(view[:nbytes] if nbytes <= snaplen else view)
            orig_len = nbytes
            if cooked:
                data = _SLL.pack(pkttype, hatype, len(hwaddr), hwaddr[:8].ljust(8, b"\0"), proto) + data
                orig_len += _SLL.size
            self.frames += 1
            out.append(RawFrame(self.frames, ts, self.linktype, data[:snaplen] if len(data) > snaplen else data, orig_len, pkttype))
        return out

    def _drain_stats(self) -> tuple[int, int]:
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        packets, drops = _STATS.unpack(raw)
        self.kernel_packets += packets
        self.kernel_drops += drops
        return packets, drops

    def stats(self) -> tuple[int, int]:
        """(packets the kernel passed the filter, packets it dropped) since the capture opened."""
        try:
            self._drain_stats()
        except OSError:
            pass
        return self.kernel_packets, self.kernel_drops

    def close(self) -> None:
        """Close the socket (statistics stay readable)."""
        try:
            self._drain_stats()
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_loopback(ifname: str) -> bool:
    try:
        with open(f"/sys/class/net/{ifname}/type") as f:
            return int(f.read()) == ARPHRD_LOOPBACK
    except OSError:
        return ifname == "lo"


class PcapWriter:
    """Writes frames to a pcap file as they arrive; every record is written through
    at once, so the file is valid up to the last packet even after SIGTERM or a crash."""

    def __init__(self, path: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> None:
        self.path = path
        self.count = 0
        # unbuffered: one write() per record, nothing waits in a user-space buffer
        self._f = open(path, "wb", buffering=0)
        self._f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype))  # ns timestamps
        self.linktype = linktype

    def write(self, frame: RawFrame) -> None:
        """Append one frame."""
        sec = int(frame.ts)
        nsec = int(round((frame.ts - sec) * 1e9))
        if nsec >= 1_000_000_000:
            sec, nsec = sec + 1, nsec - 1_000_000_000
        self._f.write(struct.pack("<IIII", sec, nsec, len(frame.data), max(frame.orig_len, len(frame.data))) + frame.data)
        self.count += 1

    def close(self) -> None:
        """Flush and close."""
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
