"""The image's SHA-256 on each record, awaited without blocking the event loop.

The image is read and hashed on a background thread while devices already
stream (:mod:`parallel_flash.image`), so a device can end -- refused, failed
at the handshake, or booted from a small image -- before the digest exists.
Its record must carry the digest, and asking :attr:`ImageBuffer.sha256` on
the loop would freeze every other device's pipeline, the live view and
signal handling until the whole file is read and hashed (seconds for a large
FFU on a slow share). So the engine awaits it here, on a worker thread, before
it finishes a record; the report then only reads what is known.

All of a line's devices waiting for one image share a single worker thread
(one :class:`anyio.CapacityLimiter` per image and event loop): a line of 64
failing devices does not take the thread pool the streams need.
"""

from __future__ import annotations

import contextlib
import time
from weakref import WeakKeyDictionary

import anyio
from anyio.lowlevel import RunVar

from ..errors import InputError
from ..image import ImageBuffer, ImageSet, primary_image
from .records import DeviceRecord

__all__ = ("image_digest", "note_image_digest")

_WAITS: RunVar[WeakKeyDictionary[ImageBuffer, anyio.CapacityLimiter]] = RunVar("digest_waits")


def _wait_hashed(image: ImageBuffer) -> None:
    # Bounded: the loader raises once it makes no progress for its stall time.
    with contextlib.suppress(InputError):
        _ = image.sha256


async def image_digest(image: ImageBuffer) -> str | None:
    """``image``'s SHA-256 once hashed; None if it could not be read. Never blocks the loop."""
    if not image.hashed:
        try:
            waits = _WAITS.get()
        except LookupError:
            waits = WeakKeyDictionary()
            _WAITS.set(waits)
        limiter = waits.get(image)
        if limiter is None:
            limiter = waits[image] = anyio.CapacityLimiter(1)
        await anyio.to_thread.run_sync(
            _wait_hashed, image, limiter=limiter, abandon_on_cancel=True
        )
    return image.sha256_if_known()


async def note_image_digest(record: DeviceRecord, image: ImageBuffer | ImageSet) -> float:
    """Put the digest of what ``record``'s device was sent on it, before it is finished.

    The record's own file if its loader chose one, else the line's first.
    Returns when it was asked (``time.monotonic()``): the device's end, which
    the record keeps -- waiting for the hash is not the device's time.
    """
    ended = time.monotonic()
    if record.image_sha256 is None:
        record.image_sha256 = await image_digest(record.image or primary_image(image))
    return ended
