"""SDI + WIM (or a .secwim, or an FFU), read once into one shared in-memory buffer.

Every device pipeline streams zero-copy slices of the same buffer, so memory
does not grow with the number of devices. The buffer is a private, *writable*
mapping on purpose (an anonymous memory file on Linux, see :func:`_allocate`):
python-libusb1 hands a writable buffer to libusb in place, while ``bytes`` or
a read-only file mapping are copied on every submission (usb-testing.md).
Being a private copy also means a file changed or truncated on disk once it
was read cannot reach the devices: what was validated and hashed is exactly
what is sent.

Reading and hashing are off the critical path (issue 10: command to first
image byte <= 0.5 s with a 256 MiB WIM; reading 268 MB alone takes 0.21 s
of it): :meth:`ImageBuffer.load` checks the headers and returns while a
background thread reads the rest into the buffer -- while devices are found,
opened and identified, and while the first ones stream -- then hashes it at
low CPU priority. :attr:`ImageBuffer.loaded_length` says how much is in
without waiting (the engine streams that much and awaits more),
:meth:`ImageBuffer.available` waits for a prefix, :attr:`ImageBuffer.view`
for all of it, :attr:`ImageBuffer.sha256` for the digest. Only bytes already
copied into the private buffer are ever sent, and the digest is of that
buffer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import mmap
import os
import threading
from collections.abc import Callable
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
#: The loading thread's niceness while it hashes (Linux: per thread):
#: streaming comes first; whoever needs the digest waits for it, and a
#: waiting thread leaves the CPU to the hash.
_HASH_NICENESS = 19
#: Seconds a wait for image bytes (or the digest) may go without the loading
#: thread making progress before it is an error (a hung disk or NFS mount).
_LOAD_STALL = 60.0


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
        sha256: str | None,
        wim_path: str,
        sdi_path: str | None,
        kind: str | None = None,
        ffu_header_length: int | None = None,
        ffu_chunk_size: int | None = None,
        loader: _Loader | None = None,
    ) -> None:
        self._mmap = buffer
        self._view = memoryview(buffer)
        #: Reads (then hashes) the buffer in the background; None: all there.
        self._loader = loader
        self.sdi_length = sdi_length
        self.wim_length = wim_length
        self._sha256 = sha256
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
    def view(self) -> memoryview:
        """The whole buffer, once it is read completely (waits for the loading thread)."""
        return self.available(self.total_length)

    @property
    def loaded_length(self) -> int:
        """Bytes from the start already in the buffer, without waiting (any thread).

        Only grows; the total once loading is done. A stream may send
        ``buffer[:loaded_length]`` now and wait (:meth:`available`) for more.
        """
        loader = self._loader
        return self.total_length if loader is None else loader.loaded

    def available(self, end: int) -> memoryview:
        """The whole buffer, once its first ``end`` bytes are read: streaming starts early.

        :raises ~parallel_flash.errors.InputError: if reading the files failed.
        """
        loader = self._loader
        if loader is not None and loader.loaded < end:
            loader.wait_for(end)
        return self._view

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes sent (waits for the background hash if still running)."""
        if self._sha256 is None:
            assert self._loader is not None
            self._sha256 = self._loader.digest()
        return self._sha256

    @property
    def hashed(self) -> bool:
        """Whether :attr:`sha256` answers at once: the digest is known, or loading failed.

        The engine waits for the digest off the event loop until this is true,
        so a record is never written with the loop blocked on the hash.
        """
        loader = self._loader
        return self._sha256 is not None or loader is None or loader.settled

    def sha256_if_known(self) -> str | None:
        """The digest if it is known now; None while hashing or if reading failed. Never waits."""
        if self._sha256 is None and self._loader is not None:
            self._sha256 = self._loader.hex_digest
        return self._sha256

    def when_hashed(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(digest)`` once the image is hashed (None: it could not be read).

        At once if that is known already, else from the loading thread: the
        callback must be quick and thread-safe (hand the digest to a loop).
        """
        if self._loader is None:
            callback(self._sha256)
        else:
            self._loader.when_settled(callback)

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
        buffer, memfd = _allocate(total)
        sdi_length = sources[0].size if len(sources) == 2 else 0
        image = cls(
            buffer,
            sdi_length=sdi_length,
            wim_length=total - sdi_length,
            sha256=None,
            wim_path=wim_source.path,
            sdi_path=sources[0].path if sdi_length else None,
            loader=_Loader(buffer, sources, total, memfd),
        )
        try:
            image._validate()
        except BaseException:
            image.close()
            raise
        logger.info(
            "loading %s (%d bytes SDI + %d bytes WIM) in the background",
            wim_source.path, image.sdi_length, image.wim_length,
        )
        return image

    @classmethod
    def _load_ffu(cls, source: _Source) -> ImageBuffer:
        """An FFU for UFP devices: its headers checked, then read whole like a .secwim."""
        from .formats.ffu import read_ffu

        ffu = read_ffu(source.path)
        if source.size > MAX_IMAGE_BYTES:
            raise InputError(f"{source.path}: {source.size} bytes; an FFU must stay under 4 GiB")
        buffer, memfd = _allocate(source.size)
        logger.info("loading FFU %s (%d bytes) in the background", source.path, source.size)
        return cls(
            buffer,
            sdi_length=0,
            wim_length=source.size,
            sha256=None,
            loader=_Loader(buffer, [source], source.size, memfd),
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
            # Only the headers: the loading thread reads on while devices are found.
            headers = self.available(min(self.total_length, self.sdi_length + 208))
            sdi = parse_sdi(
                headers[: min(self.sdi_length, 0x600)],
                path=self.sdi_path or "<sdi>",
                file_size=self.sdi_length,
            )
            check_sdi_for_wim_boot(sdi)
            wim = parse_wim_header(
                headers[self.sdi_length : self.sdi_length + 208],
                path=self.wim_path,
                file_size=self.wim_length,
            )
            for warning in wim.warnings:
                logger.warning("%s: %s", self.wim_path, warning)

    # -- use -----------------------------------------------------------------------

    def close(self) -> None:
        """Release the buffer. Views still held elsewhere keep it alive until dropped."""
        if self._loader is not None:
            self._loader.cancel()
        self._view.release()
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

    @property
    def primary(self) -> ImageBuffer:
        """The file that names the line (its digest in the summary and the station's status)."""
        return self.images[0]

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
        return self.primary.sha256

    def sha256_if_known(self) -> str | None:
        """The first file's digest if it is known now (see :meth:`ImageBuffer.sha256_if_known`)."""
        return self.primary.sha256_if_known()

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


def _allocate(size: int) -> tuple[mmap.mmap, int | None]:
    """A writable buffer of ``size`` bytes, and the memory file behind it if there is one.

    On Linux an anonymous memory file (memfd) mapped shared and filled by
    sendfile: the kernel copies from the page cache straight into it, with
    no page zeroed first and no page fault per 4 KiB, about 40 % less CPU
    than ``readinto`` an anonymous map (0.19 s against 0.31 s for 268 MB on
    this machine). Still a private copy: the file on disk can change
    afterwards without reaching the devices. Elsewhere, an anonymous map.
    """
    if hasattr(os, "memfd_create"):
        try:
            memfd = os.memfd_create("parallel-flash-image", os.MFD_CLOEXEC)
        except OSError:
            return mmap.mmap(-1, size), None
        try:
            os.ftruncate(memfd, size)
            buffer = mmap.mmap(
                memfd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError:  # e.g. a file size limit (RLIMIT_FSIZE) applies to memory files too
            os.close(memfd)
            return mmap.mmap(-1, size), None
        except BaseException:
            os.close(memfd)
            raise
        return buffer, memfd
    return mmap.mmap(-1, size), None


class _Loader:
    """Reads the files back to back into the buffer on a thread, then hashes it.

    ``readinto`` and hashlib release the GIL, so this runs on whatever core
    is free while the loop finds, opens and streams to devices. Waiters are
    woken per block; an error is kept and raised to each of them.
    """

    def __init__(
        self, buffer: mmap.mmap, sources: list[_Source], total: int, memfd: int | None
    ) -> None:
        self._view = memoryview(buffer)[:total]
        #: The memory file behind ``buffer`` (filled with sendfile), or None.
        self._memfd = memfd
        self._sources = sources
        self._name = sources[-1].path
        #: Bytes read so far (only grows; read without the lock on the fast path).
        self.loaded = 0
        #: Blocks read or hashed so far: what "no progress" is judged by.
        self._progress = 0
        self._hex: str | None = None
        self._error: InputError | None = None
        self._stop = False
        self._done = False
        self._on_settled: list[Callable[[str | None], None]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name="parallel-flash-image-load", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            try:
                self._read()
            finally:
                if self._memfd is not None:
                    os.close(self._memfd)  # the mapping stays
            with contextlib.suppress(OSError, AttributeError):  # not Linux: same priority
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _HASH_NICENESS)
            digest = hashlib.sha256()
            for offset in range(0, len(self._view), _READ_BLOCK):
                if self._stop:
                    return
                with self._view[offset : offset + _READ_BLOCK] as block:
                    digest.update(block)
                self._progress += 1
            self._hex = digest.hexdigest()
        except InputError as exc:
            self._error = exc
        except BaseException as exc:  # kept for the waiters: this thread has no one to tell
            self._error = InputError(f"{self._name}: cannot load the image: {exc!r}")
        finally:
            self._view.release()
            with self._changed:
                self._done = True
                self._changed.notify_all()
                callbacks, self._on_settled = self._on_settled, []
            for callback in callbacks:
                try:
                    callback(self._hex)
                except Exception:  # a listener's bug must not end the loader's bookkeeping
                    logger.exception("image hashed: a listener failed")

    def _read(self) -> None:
        position = 0
        for source in self._sources:
            end = position + source.size
            try:
                with open(source.path, "rb", buffering=0) as stream:
                    while position < end:
                        if self._stop:
                            raise InputError(f"{source.path}: image closed while being read")
                        count = self._copy(stream, position, min(end, position + _READ_BLOCK))
                        if not count:
                            raise InputError(
                                f"{source.path}: file shrank while being read: got "
                                f"{position - (end - source.size)} of {source.size} bytes"
                            )
                        position += count
                        with self._changed:
                            self.loaded = position
                            self._progress += 1
                            self._changed.notify_all()
            except OSError as exc:
                raise InputError(f"{source.path}: cannot read: {exc.strerror}") from None

    def _copy(self, stream: io.FileIO, start: int, end: int) -> int:
        """Copy the next bytes of ``stream`` to ``start``..``end`` of the buffer; bytes copied."""
        if self._memfd is not None:
            # The memory file is written in order, so its offset is ``start``.
            return os.sendfile(self._memfd, stream.fileno(), None, end - start)
        with self._view[start:end] as block:
            return stream.readinto(block) or 0

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Until ``ready()`` or an error; an error if the thread makes no progress for long."""
        with self._changed:
            while not ready():
                if self._error is not None:
                    raise InputError(str(self._error))
                if self._done:
                    raise InputError(f"{self._name}: image closed while being loaded")
                before = self._progress
                self._changed.wait(_LOAD_STALL)
                if self._progress == before and not self._done and not ready():
                    raise InputError(
                        f"{self._name}: reading the image made no progress for "
                        f"{_LOAD_STALL:g} s (a hung disk or network mount?)"
                    )

    def wait_for(self, end: int) -> None:
        """Until the first ``end`` bytes are in the buffer."""
        self._wait(lambda: self.loaded >= end)

    def when_settled(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(digest or None)`` when hashing ends (at once if it has)."""
        with self._changed:
            if not self._done:
                self._on_settled.append(callback)
                return
        callback(self._hex)

    @property
    def settled(self) -> bool:
        """Whether :meth:`digest` returns at once: hashed, or ended with an error."""
        return self._hex is not None or self._done

    @property
    def hex_digest(self) -> str | None:
        """The hex SHA-256 if hashing is done, else None (never waits)."""
        return self._hex

    def digest(self) -> str:
        """The hex SHA-256 once read and hashed (hashing takes ~0.3 s of CPU per 256 MiB)."""
        self._wait(lambda: self._hex is not None)
        assert self._hex is not None
        return self._hex

    def cancel(self) -> None:
        """Stop reading or hashing (the image is being closed); waits for the thread."""
        self._stop = True
        self._thread.join(_LOAD_STALL)


def primary_image(image: ImageBuffer | ImageSet) -> ImageBuffer:
    """The file a line is named by: the one given, or a mixed line's first."""
    return image.primary if isinstance(image, ImageSet) else image
