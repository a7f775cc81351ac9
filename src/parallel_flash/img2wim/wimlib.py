"""A ctypes binding of libwim (wimlib 1.13, Debian ``libwim15`` / ``wimtools``).

wimlib is the field's reference implementation of the WIM format, so
parallel-flash does not write WIMs itself: it asks libwim to capture a
directory or an NTFS volume image (NTFS-3G mode, no mount needed), to set the
boot index and to compress with LZX, and reads images back for the tests.
Binding the library rather than running ``wimlib-imagex`` gives progress
callbacks and exact error codes instead of scraped text.

Only the handful of entry points we need are declared; the structure layouts
follow ``include/wimlib.h`` of wimlib 1.13.6 on LP64 Linux. Every failure is a
:class:`~parallel_flash.errors.WimlibError` naming the file, the operation and
wimlib's own explanation (its error string plus whatever it printed).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from ..errors import HostSetupError, WimlibError
from ..formats.wim import WimInfo, read_wim_info

__all__ = (
    "Compression",
    "FileEntry",
    "WimInfo",
    "WimProgress",
    "apply",
    "capture",
    "extract_file",
    "list_dir",
    "read_tree",
    "wim_info",
)

logger = logging.getLogger(__name__)

#: The soname Debian's libwim15 1.13.x installs.
LIBRARY_NAME = "libwim.so.15"

Compression = Literal["none", "xpress", "lzx", "lzms"]

# enum wimlib_compression_type
_COMPRESSION_TYPES: dict[str, int] = {"none": 0, "xpress": 1, "lzx": 2, "lzms": 3}

# add / write / extract / iterate / change flags (wimlib.h)
_ADD_FLAG_NTFS = 0x00000001
_ADD_FLAG_VERBOSE = 0x00000004
_ADD_FLAG_BOOT = 0x00000008
_WRITE_FLAG_CHECK_INTEGRITY = 0x00000001
_WRITE_FLAG_FSYNC = 0x00000020
_EXTRACT_FLAG_NTFS = 0x00000001
_EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE = 0x00200000
_ITERATE_RECURSIVE = 0x00000001
_ITERATE_CHILDREN = 0x00000002
_DELETE_FLAG_FORCE = 0x00000001
_DELETE_FLAG_RECURSIVE = 0x00000002
_CHANGE_BOOT_INDEX = 0x00000004
_ALL_IMAGES = -1

_ERR_ABORTED_BY_PROGRESS = 76
_ERR_UNKNOWN_PROGRESS_STATUS = 77

# enum wimlib_progress_msg (only those we turn into WimProgress)
_MSG_EXTRACT_STREAMS = 4
_MSG_SCAN_BEGIN = 9
_MSG_SCAN_DENTRY = 10
_MSG_SCAN_END = 11
_MSG_WRITE_STREAMS = 12
_PROGRESS_CONTINUE = 0
_PROGRESS_ABORT = 1

FILE_ATTRIBUTE_DIRECTORY = 0x00000010
FILE_ATTRIBUTE_REPARSE_POINT = 0x00000400
REPARSE_TAG_MOUNT_POINT = 0xA0000003
REPARSE_TAG_SYMLINK = 0xA000000C


# --- structures (wimlib.h, LP64) -------------------------------------------


class _WimInfo(ctypes.Structure):
    _fields_ = [
        ("guid", ctypes.c_uint8 * 16),
        ("image_count", ctypes.c_uint32),
        ("boot_index", ctypes.c_uint32),
        ("wim_version", ctypes.c_uint32),
        ("chunk_size", ctypes.c_uint32),
        ("part_number", ctypes.c_uint16),
        ("total_parts", ctypes.c_uint16),
        ("compression_type", ctypes.c_int32),
        ("total_bytes", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),  # bitfield word: bit 0 has_integrity_table, ...
        ("reserved", ctypes.c_uint32 * 9),
    ]


class _ResourceEntry(ctypes.Structure):
    _fields_ = [
        ("uncompressed_size", ctypes.c_uint64),
        ("compressed_size", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
        ("sha1_hash", ctypes.c_uint8 * 20),
        ("part_number", ctypes.c_uint32),
        ("reference_count", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("raw_resource_offset_in_wim", ctypes.c_uint64),
        ("raw_resource_compressed_size", ctypes.c_uint64),
        ("raw_resource_uncompressed_size", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 1),
    ]


class _StreamEntry(ctypes.Structure):
    _fields_ = [
        ("stream_name", ctypes.c_char_p),
        ("resource", _ResourceEntry),
        ("reserved", ctypes.c_uint64 * 4),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_long)]


class _DirEntry(ctypes.Structure):
    _fields_ = [
        ("filename", ctypes.c_char_p),
        ("dos_name", ctypes.c_char_p),
        ("full_path", ctypes.c_char_p),
        ("depth", ctypes.c_size_t),
        ("security_descriptor", ctypes.c_void_p),
        ("security_descriptor_size", ctypes.c_size_t),
        ("attributes", ctypes.c_uint32),
        ("reparse_tag", ctypes.c_uint32),
        ("num_links", ctypes.c_uint32),
        ("num_named_streams", ctypes.c_uint32),
        ("hard_link_group_id", ctypes.c_uint64),
        ("creation_time", _Timespec),
        ("last_write_time", _Timespec),
        ("last_access_time", _Timespec),
        ("unix_uid", ctypes.c_uint32),
        ("unix_gid", ctypes.c_uint32),
        ("unix_mode", ctypes.c_uint32),
        ("unix_rdev", ctypes.c_uint32),
        ("object_id", ctypes.c_uint8 * 64),
        ("creation_time_high", ctypes.c_int32),
        ("last_write_time_high", ctypes.c_int32),
        ("last_access_time_high", ctypes.c_int32),
        ("reserved2", ctypes.c_int32),
        ("reserved", ctypes.c_uint64 * 4),
        # struct wimlib_stream_entry streams[num_named_streams + 1] follows
    ]


class _ProgressWriteStreams(ctypes.Structure):
    _fields_ = [
        ("total_bytes", ctypes.c_uint64),
        ("total_streams", ctypes.c_uint64),
        ("completed_bytes", ctypes.c_uint64),
        ("completed_streams", ctypes.c_uint64),
        ("num_threads", ctypes.c_uint32),
        ("compression_type", ctypes.c_int32),
        ("total_parts", ctypes.c_uint32),
        ("completed_parts", ctypes.c_uint32),
        ("completed_compressed_bytes", ctypes.c_uint64),
    ]


class _ProgressScan(ctypes.Structure):
    _fields_ = [
        ("source", ctypes.c_char_p),
        ("cur_path", ctypes.c_char_p),
        ("status", ctypes.c_int),
        ("wim_target_path", ctypes.c_char_p),
        ("num_dirs_scanned", ctypes.c_uint64),
        ("num_nondirs_scanned", ctypes.c_uint64),
        ("num_bytes_scanned", ctypes.c_uint64),
    ]


class _ProgressExtract(ctypes.Structure):
    _fields_ = [
        ("image", ctypes.c_uint32),
        ("extract_flags", ctypes.c_uint32),
        ("wimfile_name", ctypes.c_char_p),
        ("image_name", ctypes.c_char_p),
        ("target", ctypes.c_char_p),
        ("reserved", ctypes.c_char_p),
        ("total_bytes", ctypes.c_uint64),
        ("completed_bytes", ctypes.c_uint64),
        ("total_streams", ctypes.c_uint64),
        ("completed_streams", ctypes.c_uint64),
    ]


_PROGRESS_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_ITERATE_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_DirEntry), ctypes.c_void_p)
_WIMStructP = ctypes.c_void_p


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
    :data:`ProgressCallback` serve both.
    """

    stage: Literal["verify", "scan", "write", "extract"]
    done: int  #: bytes
    total: int  #: bytes, 0 if unknown
    path: str | None = None


ProgressCallback = Callable[[WimProgress], None]


# --- library loading and error capture -------------------------------------

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_messages: IO[str] | None = None


def _library() -> ctypes.CDLL:
    """Load libwim once, declare prototypes, and route its messages to a private file."""
    global _lib, _messages
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(LIBRARY_NAME)
        except OSError as exc:
            if "ntfs-3g" in str(exc):  # libwim is there, the library it links is not
                raise HostSetupError(
                    f"libntfs-3g not found ({LIBRARY_NAME} needs it): install the Debian "
                    "package libntfs-3g89 (apt-get install libntfs-3g89)"
                ) from None
            raise HostSetupError(
                f"{LIBRARY_NAME} not found: install the Debian package libwim15 "
                "(apt-get install libwim15; wimtools brings it too)"
            ) from None
        _declare(lib)
        lib.wimlib_global_init(0)
        # wimlib prints the details behind an error code (which file, which
        # errno) only to its error file. Send them to an unlinked temporary
        # file we keep open, so errors can quote them without touching stderr.
        fd, name = tempfile.mkstemp(prefix="parallel-flash-wimlib-", suffix=".log")
        try:
            if lib.wimlib_set_error_file_by_name(os.fsencode(name)) == 0:
                _messages = open(fd, encoding="utf-8", errors="replace")  # noqa: SIM115
            else:
                os.close(fd)
        finally:
            os.unlink(name)
        _lib = lib
        return lib


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_char_p, c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
    wp = _WIMStructP
    protos: dict[str, tuple[object, list[object]]] = {
        "wimlib_global_init": (c_int, [c_int]),
        "wimlib_set_error_file_by_name": (c_int, [c_char_p]),
        "wimlib_get_error_string": (c_char_p, [c_int]),
        "wimlib_create_new_wim": (c_int, [c_int, ctypes.POINTER(wp)]),
        "wimlib_open_wim": (c_int, [c_char_p, c_int, ctypes.POINTER(wp)]),
        "wimlib_free": (None, [wp]),
        "wimlib_register_progress_function": (None, [wp, _PROGRESS_FUNC, c_void_p]),
        "wimlib_add_image": (c_int, [wp, c_char_p, c_char_p, c_char_p, c_int]),
        "wimlib_delete_path": (c_int, [wp, c_int, c_char_p, c_int]),
        "wimlib_get_wim_info": (c_int, [wp, ctypes.POINTER(_WimInfo)]),
        "wimlib_set_wim_info": (c_int, [wp, ctypes.POINTER(_WimInfo), c_int]),
        "wimlib_write": (c_int, [wp, c_char_p, c_int, c_int, ctypes.c_uint]),
        "wimlib_iterate_dir_tree": (c_int, [wp, c_int, c_char_p, c_int, _ITERATE_FUNC, c_void_p]),
        "wimlib_extract_image": (c_int, [wp, c_int, c_char_p, c_int]),
        "wimlib_extract_paths": (
            c_int,
            [wp, c_int, c_char_p, ctypes.POINTER(c_char_p), ctypes.c_size_t, c_int],
        ),
        "wimlib_get_image_name": (c_char_p, [wp, c_int]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _message_offset() -> int:
    if _messages is None:
        return 0
    _messages.seek(0, os.SEEK_END)
    return _messages.tell()


def _messages_since(offset: int) -> str:
    """What wimlib printed since ``offset``, one line, trimmed to something readable."""
    if _messages is None:
        return ""
    _messages.seek(offset)
    lines = [ln.strip() for ln in _messages.read(16384).splitlines() if ln.strip()]
    return " / ".join(lines[-4:])


@contextmanager
def _operation(path: str | os.PathLike[str], operation: str) -> Iterator[Callable[[int], None]]:
    """Yield a ``check(ret)`` that raises WimlibError for a non-zero wimlib return code."""
    lib = _library()
    start = _message_offset()

    def check(ret: int) -> None:
        if ret == 0:
            return
        detail = (lib.wimlib_get_error_string(ret) or b"unknown error").decode(errors="replace")
        printed = _messages_since(start)
        raise WimlibError(os.fspath(path), operation, ret, detail, printed)

    yield check
    if logger.isEnabledFor(logging.DEBUG):
        printed = _messages_since(start)
        if printed:
            logger.debug("wimlib (%s %s): %s", operation, os.fspath(path), printed)


class _ProgressBridge:
    """Turns wimlib progress messages into WimProgress calls, never raising into C.

    A Python exception (including KeyboardInterrupt from Ctrl-C, which is only
    delivered while Python code runs, i.e. here) is stored and wimlib is asked
    to abort; the caller re-raises it once wimlib has unwound.
    """

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.error: BaseException | None = None
        self.c_func = _PROGRESS_FUNC(self._on_message)

    def _on_message(self, msg: int, info: int | None, _ctx: int | None) -> int:
        status = _PROGRESS_ABORT
        try:  # first statement: nothing, not even a signal, escapes into C
            if self.error is None:
                report = self._translate(msg, info)
                if report is not None and self.callback is not None:
                    self.callback(report)
                status = _PROGRESS_CONTINUE
        except BaseException as exc:  # must not propagate into C
            if self.error is None:
                self.error = exc
        return status

    def aborted(self, ret: int) -> bool:
        """Whether ``ret`` is libwim unwinding from an exception this bridge holds."""
        return self.error is not None and ret in (
            _ERR_ABORTED_BY_PROGRESS,
            _ERR_UNKNOWN_PROGRESS_STATUS,
        )

    @staticmethod
    def _translate(msg: int, info: int | None) -> WimProgress | None:
        if info is None:
            return None
        if msg in (_MSG_SCAN_BEGIN, _MSG_SCAN_DENTRY, _MSG_SCAN_END):
            scan = _ProgressScan.from_address(info)
            cur = scan.cur_path.decode(errors="replace") if msg == _MSG_SCAN_DENTRY else None
            return WimProgress(stage="scan", done=scan.num_bytes_scanned, total=0, path=cur)
        if msg == _MSG_WRITE_STREAMS:
            ws = _ProgressWriteStreams.from_address(info)
            return WimProgress(stage="write", done=ws.completed_bytes, total=ws.total_bytes)
        if msg == _MSG_EXTRACT_STREAMS:
            ex = _ProgressExtract.from_address(info)
            return WimProgress(stage="extract", done=ex.completed_bytes, total=ex.total_bytes)
        return None

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


@contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[int]:
    lib = _library()
    handle = _WIMStructP()
    with _operation(path, "open") as check:
        check(lib.wimlib_open_wim(os.fsencode(path), 0, ctypes.byref(handle)))
    assert handle.value is not None  # set on success by wimlib_open_wim
    try:
        yield handle.value
    finally:
        lib.wimlib_free(handle)


# --- public API ---------------------------------------------------------------


def wim_info(wim: str | os.PathLike[str]) -> WimInfo:
    """What the WIM's header says (:class:`~parallel_flash.formats.wim.WimInfo`, the one
    WIM description), once libwim has opened the file: a file libwim cannot read
    fails as WimlibError naming the operation."""
    with _open(wim):
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
    progress: ProgressCallback | None = None,
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
    if compression not in _COMPRESSION_TYPES:
        raise ValueError(f"unknown compression {compression!r}")
    lib = _library()
    bridge = _ProgressBridge(progress)
    handle = _WIMStructP()
    with _operation(wim, "create WIM") as check:
        check(lib.wimlib_create_new_wim(_COMPRESSION_TYPES[compression], ctypes.byref(handle)))
    try:
        lib.wimlib_register_progress_function(handle, bridge.c_func, None)
        flags = (_ADD_FLAG_NTFS if ntfs else 0) | (_ADD_FLAG_BOOT if boot else 0)
        if progress is not None:
            flags |= _ADD_FLAG_VERBOSE  # per-file SCAN_DENTRY messages
        with _operation(source, "capture (NTFS-3G)" if ntfs else "capture") as check:
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
            with _operation(source, f"remove {path} from the image") as check:
                check(
                    lib.wimlib_delete_path(
                        handle, 1, path.encode(), _DELETE_FLAG_FORCE | _DELETE_FLAG_RECURSIVE
                    )
                )
        if boot:
            info = _WimInfo(boot_index=1)
            with _operation(wim, "set boot index") as check:
                check(lib.wimlib_set_wim_info(handle, ctypes.byref(info), _CHANGE_BOOT_INDEX))
        write_flags = _WRITE_FLAG_CHECK_INTEGRITY if check_integrity else 0
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
    lib = _library()
    target = Path(wim)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        with _operation(wim, "write") as check:
            ret = lib.wimlib_write(handle, os.fsencode(tmp_name), _ALL_IMAGES, flags, threads)
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
    with _open(wim) as handle:
        entries = _iterate(handle, wim, image, "/", _ITERATE_RECURSIVE)
    return {e.path: e for e in entries if e.path != "/"}


def list_dir(wim: str | os.PathLike[str], path: str = "/", image: int = 1) -> list[FileEntry]:
    """The entries directly inside ``path`` of ``image``."""
    with _open(wim) as handle:
        return _list_dir(handle, wim, image, path)


def _list_dir(handle: int, name: str | os.PathLike[str], image: int, path: str) -> list[FileEntry]:
    return _iterate(handle, name, image, path, _ITERATE_CHILDREN)


def _iterate(
    handle: int, name: str | os.PathLike[str], image: int, path: str, flags: int
) -> list[FileEntry]:
    lib = _library()
    out: list[FileEntry] = []
    failure: list[BaseException] = []

    def on_entry(ptr: ctypes._Pointer[_DirEntry], _ctx: int | None) -> int:
        try:
            out.append(_file_entry(ptr))
        except BaseException as exc:  # must not propagate into C
            failure.append(exc)
            return 1
        return 0

    callback = _ITERATE_FUNC(on_entry)
    with _operation(name, f"list image {image} at {path}") as check:
        ret = lib.wimlib_iterate_dir_tree(handle, image, path.encode(), flags, callback, None)
        if failure:
            raise failure[0]
        check(ret)
    return out


def _file_entry(ptr: ctypes._Pointer[_DirEntry]) -> FileEntry:
    d = ptr.contents
    streams = (_StreamEntry * (d.num_named_streams + 1)).from_address(
        ctypes.addressof(d) + ctypes.sizeof(_DirEntry)
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
    progress: ProgressCallback | None = None,
) -> None:
    """Extract ``image`` into the directory ``target`` (or, with ``ntfs=True``,
    onto the NTFS volume image ``target``, which must already be formatted)."""
    lib = _library()
    bridge = _ProgressBridge(progress)
    with _open(wim) as handle:
        lib.wimlib_register_progress_function(handle, bridge.c_func, None)
        flags = _EXTRACT_FLAG_NTFS if ntfs else 0
        with _operation(target, f"apply image {image} of {os.fspath(wim)}") as check:
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
    lib = _library()
    with _open(wim) as handle:
        paths = (ctypes.c_char_p * 1)(path.encode())
        with _operation(wim, f"extract {path}") as check:
            check(
                lib.wimlib_extract_paths(
                    handle,
                    image,
                    os.fsencode(dest_dir),
                    paths,
                    1,
                    _EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE,
                )
            )
    return Path(dest_dir) / path.rstrip("/").rsplit("/", 1)[-1]
