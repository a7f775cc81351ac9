"""SDI + WIM (or a .secwim, or an FFU), read once into one shared in-memory buffer.

Every device pipeline streams zero-copy slices of the same buffer, so memory
does not grow with the number of devices. The buffer is an *anonymous,
writable* mmap on purpose: python-libusb1 hands a writable buffer to libusb
in place, while ``bytes`` or a read-only file mapping are copied on every
submission (usb-testing.md). Being a private copy also means a file changed
or truncated on disk during a run cannot reach the devices: what was
validated and hashed is exactly what is sent.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError, InputError

__all__ = ("MAX_IMAGE_BYTES", "ImageBuffer", "ImageSet", "StrPath")

StrPath = str | os.PathLike[str]

logger = logging.getLogger(__name__)

#: protocol.md: both lengths are u32, so SDI + WIM must stay under 4 GiB.
MAX_IMAGE_BYTES = (1 << 32) - 1
#: Read and hash in blocks this big: large enough to amortise syscalls,
#: small enough to keep the page cache and the hash in step.
_READ_BLOCK = 8 << 20


@dataclass(frozen=True, slots=True)
class _Source:
    path: str
    size: int


class ImageBuffer:
    """The bytes every device receives: SDI (maybe empty), then the WIM; or a whole FFU.

    An FFU (for UFP devices' FFU-to-RAM boot) is held like a .secwim, as one
    file with SDI length 0; :attr:`kind` tells them apart, and
    :attr:`ffu_header_length` / :attr:`ffu_chunk_size` are what its loader
    needs to cut it.
    """

    def __init__(
        self,
        buffer: mmap.mmap,
        *,
        sdi_length: int,
        wim_length: int,
        sha256: str,
        wim_path: str,
        sdi_path: str | None,
        kind: str | None = None,
        ffu_header_length: int | None = None,
        ffu_chunk_size: int | None = None,
    ) -> None:
        self._mmap = buffer
        self.view = memoryview(buffer)
        self.sdi_length = sdi_length
        self.wim_length = wim_length
        self.sha256 = sha256
        self.wim_path = wim_path
        self.sdi_path = sdi_path
        #: "wim" (SDI + WIM), "secwim" or "ffu": which loaders can take it.
        self.kind = kind or ("secwim" if sdi_length == 0 else "wim")
        self.ffu_header_length = ffu_header_length
        self.ffu_chunk_size = ffu_chunk_size

    @property
    def total_length(self) -> int:
        return self.sdi_length + self.wim_length

    @property
    def is_secwim(self) -> bool:
        return self.kind == "secwim"

    # -- construction ------------------------------------------------------------

    @classmethod
    def load(cls, wim: StrPath, sdi: StrPath | None = None) -> ImageBuffer:
        """Validate, read and hash the inputs; :class:`InputError` before any device is touched.

        A plain WIM needs an SDI in front of it (``boot.sdi``); a ``.secwim``
        already holds its SDI and is sent as it is, with SDI length 0.
        """
        from .formats.detect import detect_file_type

        wim_source = _stat(wim, "WIM")
        kind = detect_file_type(wim_source.path)
        if kind == "ffu":
            if sdi is not None:
                raise InputError(f"{wim_source.path}: is an FFU, which is sent whole; drop --sdi")
            return cls._load_ffu(wim_source)
        if kind == "secwim":
            if sdi is not None:
                raise InputError(
                    f"{wim_source.path}: is a .secwim, which already holds its SDI; drop --sdi"
                )
            sources = [wim_source]
        elif kind in ("wim", "pipable-wim"):
            if sdi is None:
                raise InputError(
                    f"{wim_source.path}: a WIM needs an SDI sent in front of it: pass --sdi "
                    "boot.sdi (found in Windows ADK / WPDK installs)"
                )
            sources = [_stat(sdi, "SDI"), wim_source]
        elif kind is None:
            raise FormatError(wim_source.path, "magic", "not a WIM, .secwim, FFU or SDI file")
        else:
            raise FormatError(
                wim_source.path, "magic", f"is a {kind} file, not a WIM, .secwim or FFU"
            )
        total = sum(source.size for source in sources)
        if total > MAX_IMAGE_BYTES:
            names = " + ".join(f"{s.path} ({s.size} bytes)" for s in sources)
            raise InputError(f"{names} = {total} bytes; SDI + WIM must stay under 4 GiB")
        buffer, digest = _read_into_anonymous_map(sources, total)
        sdi_length = sources[0].size if len(sources) == 2 else 0
        image = cls(
            buffer,
            sdi_length=sdi_length,
            wim_length=total - sdi_length,
            sha256=digest,
            wim_path=wim_source.path,
            sdi_path=sources[0].path if sdi_length else None,
        )
        try:
            image._validate()
        except BaseException:
            image.close()
            raise
        logger.info(
            "loaded %s (%d bytes SDI + %d bytes WIM), SHA-256 %s",
            wim_source.path, image.sdi_length, image.wim_length, digest,
        )
        return image

    @classmethod
    def _load_ffu(cls, source: _Source) -> ImageBuffer:
        """An FFU for UFP devices: its headers checked, then read whole like a .secwim."""
        from .formats.ffu import read_ffu

        ffu = read_ffu(source.path)
        if source.size > MAX_IMAGE_BYTES:
            raise InputError(f"{source.path}: {source.size} bytes; an FFU must stay under 4 GiB")
        buffer, digest = _read_into_anonymous_map([source], source.size)
        logger.info("loaded FFU %s (%d bytes), SHA-256 %s", source.path, source.size, digest)
        return cls(
            buffer,
            sdi_length=0,
            wim_length=source.size,
            sha256=digest,
            wim_path=source.path,
            sdi_path=None,
            kind="ffu",
            ffu_header_length=ffu.stores[0].payload_offset,
            ffu_chunk_size=ffu.chunk_size,
        )

    @classmethod
    def from_bytes(
        cls, wim: bytes, sdi: bytes = b"", *, wim_path: str = "<wim>", sdi_path: str = "<sdi>"
    ) -> ImageBuffer:
        """Build an image from bytes already in memory (tests, generated demo inputs)."""
        total = len(sdi) + len(wim)
        if total > MAX_IMAGE_BYTES:
            raise InputError(f"SDI + WIM is {total} bytes; it must stay under 4 GiB")
        buffer = mmap.mmap(-1, max(total, 1))
        buffer[: len(sdi)] = sdi
        buffer[len(sdi) : total] = wim
        image = cls(
            buffer,
            sdi_length=len(sdi),
            wim_length=len(wim),
            sha256=hashlib.sha256(buffer[:total]).hexdigest(),
            wim_path=wim_path,
            sdi_path=sdi_path if sdi else None,
        )
        try:
            image._validate()
        except BaseException:
            image.close()
            raise
        return image

    def _validate(self) -> None:
        """Check the bytes we will send (not the file, which may change under us)."""
        from .formats.sdi import check_sdi_for_wim_boot, parse_sdi
        from .formats.secwim import parse_secwim
        from .formats.wim import parse_wim_header

        if self.is_secwim:
            parse_secwim(self.view[: self.wim_length], path=self.wim_path)
        else:
            sdi = parse_sdi(
                self.view[: min(self.sdi_length, 0x600)],
                path=self.sdi_path or "<sdi>",
                file_size=self.sdi_length,
            )
            check_sdi_for_wim_boot(sdi)
            wim = parse_wim_header(
                self.view[self.sdi_length : self.sdi_length + 208],
                path=self.wim_path,
                file_size=self.wim_length,
            )
            for warning in wim.warnings:
                logger.warning("%s: %s", self.wim_path, warning)

    # -- use -----------------------------------------------------------------------

    def close(self) -> None:
        """Release the buffer. Views still held elsewhere keep it alive until dropped."""
        self.view.release()
        try:
            self._mmap.close()
        except BufferError:
            # A pipeline still holds a slice; the map goes when that view does.
            logger.debug("image buffer still exported; leaving it to the garbage collector")

    def __enter__(self) -> ImageBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ImageSet:
    """Several images for one mixed line: each device takes the one its loader boots.

    ``parallel-flash boot x.secwim y.ffu``: SimpleIO and Lumia devices take
    the .secwim, UFP devices the FFU. Read-only attributes mirror
    :class:`ImageBuffer`'s so the report and the presentation name every file.
    """

    def __init__(self, images: list[ImageBuffer] | tuple[ImageBuffer, ...]) -> None:
        if not images:
            raise InputError("no image to boot")
        kinds = [image.kind for image in images]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                paths = ", ".join(i.wim_path for i in images if i.kind == kind)
                raise InputError(f"{paths}: more than one {kind} file; give one of each kind")
        self.images = tuple(images)

    def pick(self, kinds: frozenset[str]) -> ImageBuffer | None:
        """The image of one of ``kinds`` (a loader's file types), if there is one."""
        return next((image for image in self.images if image.kind in kinds), None)

    @property
    def wim_path(self) -> str:
        return " + ".join(image.wim_path for image in self.images)

    @property
    def sdi_path(self) -> str | None:
        return next((image.sdi_path for image in self.images if image.sdi_path), None)

    @property
    def sha256(self) -> str:
        """The first file's SHA-256; each device's record carries its own file's."""
        return self.images[0].sha256

    @property
    def total_length(self) -> int:
        return sum(image.total_length for image in self.images)

    @property
    def kind(self) -> str:
        return "+".join(image.kind for image in self.images)

    def close(self) -> None:
        for image in self.images:
            image.close()

    def __enter__(self) -> ImageSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _stat(path: str | os.PathLike[str], what: str) -> _Source:
    text = os.fspath(path)
    try:
        info = os.stat(text)
    except FileNotFoundError:
        raise InputError(f"{text}: {what} file not found") from None
    except OSError as exc:
        raise InputError(f"{text}: cannot read {what} file: {exc.strerror}") from None
    if not Path(text).is_file():
        raise InputError(f"{text}: {what} is not a regular file")
    if info.st_size == 0:
        raise FormatError(text, "size", f"{what} file is empty")
    return _Source(text, info.st_size)


def _read_into_anonymous_map(sources: list[_Source], total: int) -> tuple[mmap.mmap, str]:
    """Copy the files back to back into one anonymous map, hashing as we go."""
    buffer = mmap.mmap(-1, total)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    position = 0
    try:
        for source in sources:
            end = position + source.size
            try:
                with open(source.path, "rb", buffering=0) as stream:
                    while position < end:
                        with view[position : min(end, position + _READ_BLOCK)] as block:
                            count = stream.readinto(block) or 0
                            digest.update(block[:count])
                        if not count:
                            raise InputError(
                                f"{source.path}: file shrank while being read: got "
                                f"{position - (end - source.size)} of {source.size} bytes"
                            )
                        position += count
            except OSError as exc:
                raise InputError(f"{source.path}: cannot read: {exc.strerror}") from None
        view.release()
        return buffer, digest.hexdigest()
    except BaseException:
        view.release()
        buffer.close()
        raise
