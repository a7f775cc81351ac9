"""How a zero-length packet reaches the wire: the one place that decides it.

*Whether* a transfer needs a ZLP is the protocol's rule
(:func:`parallel_flash.protocol.messages.needs_zero_packet`). *How* it is sent is
the transport's: as ``LIBUSB_TRANSFER_ADD_ZERO_PACKET`` on the transfer
itself (one URB, nothing extra on the bus), or, where libusb or the kernel
refuse that flag (no ``USBDEVFS_CAP_ZERO_PACKET``), as a separate
zero-length transfer right after it. A link starts with the flag and falls
back for good at the first refusal; both the single transfers and the
stream ask :meth:`ZeroPacketMode.pieces` what to submit.
"""

from __future__ import annotations

import logging

__all__ = ("EMPTY", "Piece", "ZeroPacketMode")

logger = logging.getLogger(__name__)

#: The buffer of a zero-length transfer (writable, so libusb never copies it).
EMPTY = bytearray()

#: What to submit: a buffer and whether to flag it ADD_ZERO_PACKET.
Piece = tuple[memoryview | bytearray, bool]


class ZeroPacketMode:
    """One link's way of sending ZLPs: by flag until refused, then as transfers."""

    __slots__ = ("by_flag", "port")

    def __init__(self, port: str) -> None:
        self.port = port
        #: False once libusb refused ADD_ZERO_PACKET (protocol.md step 7).
        self.by_flag = True

    def pieces(self, data: memoryview | bytearray, zero_packet: bool) -> tuple[Piece, ...]:
        """The transfers that send ``data`` and, if ``zero_packet``, its ZLP."""
        if zero_packet and not self.by_flag:
            return ((data, False), (EMPTY, False))
        return ((data, zero_packet),)

    def refused(self) -> None:
        """libusb refused a flagged transfer: send ZLPs as transfers from now on."""
        if self.by_flag:
            self.by_flag = False
            logger.info(
                "%s: this platform cannot add zero-length packets to a transfer; "
                "sending them as separate zero-length transfers",
                self.port,
            )
