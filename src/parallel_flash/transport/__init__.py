"""Transports: how bytes reach a device (real libusb, or the simulated line)."""

from .base import Link as Link
from .base import OutChunk as OutChunk
from .base import ProgressCallback as ProgressCallback

__all__ = ("Link", "OutChunk", "ProgressCallback")
