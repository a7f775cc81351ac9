"""A ctypes binding of libwim (wimlib 1.13, Debian ``libwim15`` / ``wimtools``).

wimlib is the field's reference implementation of the WIM format, so
parallel-flash does not write WIMs itself: it asks libwim to capture a
directory or an NTFS volume image (NTFS-3G mode, no mount needed), to set the
boot index and to compress with LZX, and reads images back for the tests.
Binding the library rather than running ``wimlib-imagex`` gives progress
callbacks and exact error codes instead of scraped text.

The ctypes declarations, the library's loading and its error capture live in
:mod:`.libwim`; this module is what callers use. Every failure is a
:class:`~parallel_flash.errors.WimlibError` naming the file, the operation and
wimlib's own explanation (its error string plus whatever it printed).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import WimlibError
from ..formats.wim import WimInfo, read_wim_info
from .libwim import (
    ADD_FLAG_BOOT,
    ADD_FLAG_NTFS,
    ADD_FLAG_VERBOSE,
    ALL_IMAGES,
    CHANGE_BOOT_INDEX,
    COMPRESSION_TYPES,
    DELETE_FLAG_FORCE,
    DELETE_FLAG_RECURSIVE,
    ERR_ABORTED_BY_PROGRESS,
    ERR_UNKNOWN_PROGRESS_STATUS,
    EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE,
    EXTRACT_FLAG_NTFS,
    FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_REPARSE_POINT,
    ITERATE_CHILDREN,
    ITERATE_FUNC,
    ITERATE_RECURSIVE,
    MSG_EXTRACT_STREAMS,
    MSG_SCAN_BEGIN,
    MSG_SCAN_DENTRY,
    MSG_SCAN_END,
    MSG_WRITE_STREAMS,
    PROGRESS_ABORT,
    PROGRESS_CONTINUE,
    PROGRESS_FUNC,
    WRITE_FLAG_CHECK_INTEGRITY,
    DirEntry,
    ProgressExtract,
    ProgressScan,
    ProgressWriteStreams,
    StreamEntry,
    WimInfoStruct,
    WIMStructP,
    library,
    open_wim,
    operation,
)

Compression = Literal["none", "xpress", "lzx", "lzms"]

__all__ = (
    "Compression",
    "FileEntry",
    "WimInfo",
    "WimProgress",
    "WimProgressCallback",
    "apply",
    "capture",
    "extract_file",
    "list_dir",
    "read_tree",
    "wim_info",
)

logger = logging.getLogger(__name__)

# --- public value types -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One file or directory of a WIM image, as ``wimlib_iterate_dir_tree`` reports it."""

    path: str  #: absolute path inside the image, "/" separated
    size: int  #: bytes of the unnamed data stream (0 for directories and reparse points)
    is_dir: bool
    sha1: bytes | None  #: SHA-1 of the unnamed data stream; None when empty
    attributes: int
    reparse_tag: int
    named_streams: int

    @property
    def is_reparse_point(self) -> bool:
        return bool(self.attributes & FILE_ATTRIBUTE_REPARSE_POINT)


@dataclass(frozen=True, slots=True, kw_only=True)
class WimProgress:
    """A progress report from a long wimlib operation.

    ``stage`` is "scan" (reading the source tree; ``total`` is 0 because
    wimlib does not know it in advance), "write" (compressing and writing file
    data) or "extract"; img2wim adds "verify" (its hash check and extraction
    pass over the FFU, in FFU bytes), so one type and one
    :data:`WimProgressCallback` serve both.
    """

    stage: Literal["verify", "scan", "write", "extract"]
    done: int  #: bytes
    total: int  #: bytes, 0 if unknown
    path: str | None = None


WimProgressCallback = Callable[[WimProgress], None]


class _ProgressBridge:
    """Turns wimlib progress messages into WimProgress calls, never raising into C.

    A Python exception (including KeyboardInterrupt from Ctrl-C, which is only
    delivered while Python code runs, i.e. here) is stored and wimlib is asked
    to abort; the caller re-raises it once wimlib has unwound.
    """

    def __init__(self, callback: WimProgressCallback | None) -> None:
        self.callback = callback
        self.error: BaseException | None = None
        self.c_func = PROGRESS_FUNC(self._on_message)

    def _on_message(self, msg: int, info: int | None, _ctx: int | None) -> int:
        status = PROGRESS_ABORT
        try:  # first statement: nothing, not even a signal, escapes into C
            if self.error is None:
                report = self._translate(msg, info)
                if report is not None and self.callback is not None:
                    self.callback(report)
                status = PROGRESS_CONTINUE
        except BaseException as exc:  # must not propagate into C
            if self.error is None:
                self.error = exc
        return status

    def aborted(self, ret: int) -> bool:
        """Whether ``ret`` is libwim unwinding from an exception this bridge holds."""
        return self.error is not None and ret in (
            ERR_ABORTED_BY_PROGRESS,
            ERR_UNKNOWN_PROGRESS_STATUS,
        )

    @staticmethod
    def _translate(msg: int, info: int | None) -> WimProgress | None:
        if info is None:
            return None
        if msg in (MSG_SCAN_BEGIN, MSG_SCAN_DENTRY, MSG_SCAN_END):
            scan = ProgressScan.from_address(info)
            cur = scan.cur_path.decode(errors="replace") if msg == MSG_SCAN_DENTRY else None
            return WimProgress(stage="scan", done=scan.num_bytes_scanned, total=0, path=cur)
        if msg == MSG_WRITE_STREAMS:
            ws = ProgressWriteStreams.from_address(info)
            return WimProgress(stage="write", done=ws.completed_bytes, total=ws.total_bytes)
        if msg == MSG_EXTRACT_STREAMS:
            ex = ProgressExtract.from_address(info)
            return WimProgress(stage="extract", done=ex.completed_bytes, total=ex.total_bytes)
        return None

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


# --- public API ---------------------------------------------------------------


def wim_info(wim: str | os.PathLike[str]) -> WimInfo:
    """What the WIM's header says (:class:`~parallel_flash.formats.wim.WimInfo`, the one
    WIM description), once libwim has opened the file: a file libwim cannot read
    fails as WimlibError naming the operation."""
    with open_wim(wim):
        pass
    return read_wim_info(wim)


def capture(
    source: str | os.PathLike[str],
    wim: str | os.PathLike[str],
    *,
    image_name: str,
    compression: Compression = "lzx",
    ntfs: bool = False,
    boot: bool = True,
    progress: WimProgressCallback | None = None,
    delete_paths: Sequence[str] = (),
    prune: Callable[[list[FileEntry]], Sequence[str]] | None = None,
    check_integrity: bool = False,
    num_threads: int = 0,
    overwrite: bool = True,
) -> WimInfo:
    """Capture ``source`` as the only image of a new WIM file ``wim``.

    :param source: a directory, or (with ``ntfs=True``) an NTFS volume -- a
        block device or a file holding just the volume -- read through NTFS-3G,
        which keeps ACLs, reparse points, short names and named streams.
    :param image_name: the image's name (Microsoft's ImgToWIM uses "MainOS").
    :param boot: mark the image bootable and set the WIM's boot index to it.
    :param delete_paths: paths in the image (``/Data``) removed before writing.
    :param prune: called once after the scan with the image's top-level entries;
        returns more paths to remove (used to drop junctions to other volumes).
    :param num_threads: compressor threads, 0 = one per CPU.
    :param overwrite: replace ``wim`` if it exists (the default); when False an
        existing file there (even one created during the capture) is never replaced.
    :raises ~parallel_flash.errors.WimlibError: naming ``source`` or ``wim``.
    :return: what the written WIM's header says.
    """
    if compression not in COMPRESSION_TYPES:
        raise ValueError(f"unknown compression {compression!r}")
    lib = library()
    bridge = _ProgressBridge(progress)
    handle = WIMStructP()
    with operation(wim, "create WIM") as check:
        check(lib.wimlib_create_new_wim(COMPRESSION_TYPES[compression], ctypes.byref(handle)))
    try:
        lib.wimlib_register_progress_function(handle, bridge.c_func, None)
        flags = (ADD_FLAG_NTFS if ntfs else 0) | (ADD_FLAG_BOOT if boot else 0)
        if progress is not None:
            flags |= ADD_FLAG_VERBOSE  # per-file SCAN_DENTRY messages
        with operation(source, "capture (NTFS-3G)" if ntfs else "capture") as check:
            ret = lib.wimlib_add_image(
                handle, os.fsencode(source), image_name.encode(), None, flags
            )
            if bridge.aborted(ret):
                bridge.reraise()
            check(ret)
        removals = list(delete_paths)
        if prune is not None:
            removals += prune(_list_dir(handle.value or 0, source, 1, "/"))
        for path in removals:
            with operation(source, f"remove {path} from the image") as check:
                check(
                    lib.wimlib_delete_path(
                        handle, 1, path.encode(), DELETE_FLAG_FORCE | DELETE_FLAG_RECURSIVE
                    )
                )
        if boot:
            info = WimInfoStruct(boot_index=1)
            with operation(wim, "set boot index") as check:
                check(lib.wimlib_set_wim_info(handle, ctypes.byref(info), CHANGE_BOOT_INDEX))
        write_flags = WRITE_FLAG_CHECK_INTEGRITY if check_integrity else 0
        _write_atomically(handle.value or 0, wim, write_flags, num_threads, bridge, overwrite)
    finally:
        lib.wimlib_free(handle)
    return wim_info(wim)


def _write_atomically(
    handle: int,
    wim: str | os.PathLike[str],
    flags: int,
    threads: int,
    bridge: _ProgressBridge,
    overwrite: bool = True,
) -> None:
    """wimlib_write to a temporary file beside ``wim``, renamed over it on success.

    wimlib leaves a half-written file behind when it fails or is aborted, and
    a WIM that exists must be a whole one.
    """
    lib = library()
    target = Path(wim)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        with operation(wim, "write") as check:
            ret = lib.wimlib_write(handle, os.fsencode(tmp_name), ALL_IMAGES, flags, threads)
            if bridge.aborted(ret):
                bridge.reraise()
            check(ret)
        os.chmod(tmp_name, 0o644)
        _rename_into_place(tmp_name, target, overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _rename_into_place(tmp_name: str, target: Path, overwrite: bool) -> None:
    """Rename, or without ``overwrite`` link-then-unlink, which fails if ``target``
    appeared meanwhile instead of replacing it."""
    if overwrite:
        os.replace(tmp_name, target)
        return
    try:
        os.link(tmp_name, target)
    except FileExistsError:
        raise WimlibError(
            os.fspath(target), "write", 0, "the file appeared during the capture; not replaced"
        ) from None
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(target):
            raise WimlibError(
                os.fspath(target), "write", 0, "the file appeared during the capture; not replaced"
            ) from None
        os.replace(tmp_name, target)
        return
    os.unlink(tmp_name)


def read_tree(wim: str | os.PathLike[str], image: int = 1) -> dict[str, FileEntry]:
    """Every file and directory of ``image`` (except the root), keyed by path."""
    with open_wim(wim) as handle:
        entries = _iterate(handle, wim, image, "/", ITERATE_RECURSIVE)
    return {e.path: e for e in entries if e.path != "/"}


def list_dir(wim: str | os.PathLike[str], path: str = "/", image: int = 1) -> list[FileEntry]:
    """The entries directly inside ``path`` of ``image``."""
    with open_wim(wim) as handle:
        return _list_dir(handle, wim, image, path)


def _list_dir(handle: int, name: str | os.PathLike[str], image: int, path: str) -> list[FileEntry]:
    return _iterate(handle, name, image, path, ITERATE_CHILDREN)


def _iterate(
    handle: int, name: str | os.PathLike[str], image: int, path: str, flags: int
) -> list[FileEntry]:
    lib = library()
    out: list[FileEntry] = []
    failure: list[BaseException] = []

    def on_entry(ptr: ctypes._Pointer[DirEntry], _ctx: int | None) -> int:
        try:
            out.append(_file_entry(ptr))
        except BaseException as exc:  # must not propagate into C
            failure.append(exc)
            return 1
        return 0

    callback = ITERATE_FUNC(on_entry)
    with operation(name, f"list image {image} at {path}") as check:
        ret = lib.wimlib_iterate_dir_tree(handle, image, path.encode(), flags, callback, None)
        if failure:
            raise failure[0]
        check(ret)
    return out


def _file_entry(ptr: ctypes._Pointer[DirEntry]) -> FileEntry:
    d = ptr.contents
    streams = (StreamEntry * (d.num_named_streams + 1)).from_address(
        ctypes.addressof(d) + ctypes.sizeof(DirEntry)
    )
    is_dir = bool(d.attributes & FILE_ATTRIBUTE_DIRECTORY)
    reparse = bool(d.attributes & FILE_ATTRIBUTE_REPARSE_POINT)
    # streams[0] is the unnamed data stream -- or the reparse data for a
    # reparse point, which is not file content.
    res = streams[0].resource
    size = 0 if (is_dir or reparse) else res.uncompressed_size
    sha1 = bytes(res.sha1_hash) if size else None
    return FileEntry(
        path=(d.full_path or b"/").decode(errors="surrogateescape"),
        size=size,
        is_dir=is_dir,
        sha1=sha1,
        attributes=d.attributes,
        reparse_tag=d.reparse_tag,
        named_streams=d.num_named_streams,
    )


def apply(
    wim: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    image: int = 1,
    ntfs: bool = False,
    progress: WimProgressCallback | None = None,
) -> None:
    """Extract ``image`` into the directory ``target`` (or, with ``ntfs=True``,
    onto the NTFS volume image ``target``, which must already be formatted)."""
    lib = library()
    bridge = _ProgressBridge(progress)
    with open_wim(wim) as handle:
        lib.wimlib_register_progress_function(handle, bridge.c_func, None)
        flags = EXTRACT_FLAG_NTFS if ntfs else 0
        with operation(target, f"apply image {image} of {os.fspath(wim)}") as check:
            ret = lib.wimlib_extract_image(handle, image, os.fsencode(target), flags)
            if bridge.aborted(ret):
                bridge.reraise()
            check(ret)


def extract_file(
    wim: str | os.PathLike[str],
    path: str,
    dest_dir: str | os.PathLike[str],
    *,
    image: int = 1,
) -> Path:
    """Extract the file ``path`` of ``image`` into ``dest_dir``; return where it landed."""
    lib = library()
    with open_wim(wim) as handle:
        paths = (ctypes.c_char_p * 1)(path.encode())
        with operation(wim, f"extract {path}") as check:
            check(
                lib.wimlib_extract_paths(
                    handle,
                    image,
                    os.fsencode(dest_dir),
                    paths,
                    1,
                    EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE,
                )
            )
    return Path(dest_dir) / path.rstrip("/").rsplit("/", 1)[-1]
