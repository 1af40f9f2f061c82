"""Where the fields synscope reads sit in Ethernet, IPv4, IPv6, TCP and ICMP headers: byte
offsets from the start of each header, and the sizes and bit masks that go with them.

The decoder reads headers two ways, with ``struct`` in the general path and byte by byte in the
fast path for the usual frame; both name their fields from here, so a field means the same
bytes in both.
"""

from typing import Final

# Ethernet II (IEEE 802.3): destination and source MAC, then the EtherType
ETH_TYPE: Final = 12
ETH_HLEN: Final = 14

# IPv4 (RFC 791)
IP4_VIHL: Final = 0  # version (high nibble) and header length in 32-bit words (low nibble)
IP4_TOS: Final = 1  # DSCP and, in the low two bits, ECN
IP4_TOTAL_LEN: Final = 2
IP4_ID: Final = 4
IP4_FRAG: Final = 6  # flags and fragment offset
IP4_TTL: Final = 8
IP4_PROTO: Final = 9
IP4_SRC: Final = 12
IP4_DST: Final = 16
IP4_MIN_HLEN: Final = 20
IP4_NO_OPTIONS: Final = 0x45  # the VIHL byte of an IPv4 header without options
IP4_MORE_FRAGMENTS: Final = 0x2000  # in the 16-bit IP4_FRAG field
IP4_OFFSET_MASK: Final = 0x1FFF  # fragment offset, in 8-byte units
ECN_MASK: Final = 3  # the ECN bits of the TOS byte / IPv6 traffic class

# IPv6 (RFC 8200): fixed header
IP6_NEXT: Final = 6
IP6_SRC: Final = 8
IP6_DST: Final = 24
IP6_HLEN: Final = 40

# TCP (RFC 9293)
TCP_SPORT: Final = 0
TCP_DPORT: Final = 2
TCP_SEQ: Final = 4
TCP_ACK: Final = 8
TCP_DOFF: Final = 12  # data offset (high nibble, in 32-bit words); its low bit is the NS/AE flag
TCP_FLAGS: Final = 13
TCP_WIN: Final = 14
TCP_MIN_HLEN: Final = 20

# ICMP and ICMPv6 errors (RFC 792, RFC 4443): type, code, checksum, 4 bytes, then the quote
ICMP_HLEN: Final = 8
ICMP4_NEXT_HOP_MTU: Final = 6  # 16 bits, in a 3/4 "fragmentation needed" (RFC 1191)
ICMP6_MTU: Final = 4  # 32 bits, in a "packet too big"
