"""libwim as ctypes sees it: constants, structure layouts, prototypes, loading, errors.

The layouts follow ``include/wimlib.h`` of wimlib 1.13.6 on LP64 Linux; only
the handful of entry points :mod:`.wimlib` calls are declared. wimlib prints
the details behind an error code only to its error file, so that goes to a
private file and :func:`operation` quotes it in the
:class:`~parallel_flash.errors.WimlibError` it raises.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from ..errors import HostSetupError, WimlibError

__all__ = (
    "ADD_FLAG_BOOT",
    "ADD_FLAG_NTFS",
    "ADD_FLAG_VERBOSE",
    "ALL_IMAGES",
    "CHANGE_BOOT_INDEX",
    "COMPRESSION_TYPES",
    "DELETE_FLAG_FORCE",
    "DELETE_FLAG_RECURSIVE",
    "ERR_ABORTED_BY_PROGRESS",
    "ERR_UNKNOWN_PROGRESS_STATUS",
    "EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE",
    "EXTRACT_FLAG_NTFS",
    "FILE_ATTRIBUTE_DIRECTORY",
    "FILE_ATTRIBUTE_REPARSE_POINT",
    "ITERATE_CHILDREN",
    "ITERATE_FUNC",
    "ITERATE_RECURSIVE",
    "LIBRARY_NAME",
    "MSG_EXTRACT_STREAMS",
    "MSG_SCAN_BEGIN",
    "MSG_SCAN_DENTRY",
    "MSG_SCAN_END",
    "MSG_WRITE_STREAMS",
    "PROGRESS_ABORT",
    "PROGRESS_CONTINUE",
    "PROGRESS_FUNC",
    "WRITE_FLAG_CHECK_INTEGRITY",
    "WRITE_FLAG_FSYNC",
    "DirEntry",
    "ProgressExtract",
    "ProgressScan",
    "ProgressWriteStreams",
    "ResourceEntry",
    "StreamEntry",
    "Timespec",
    "WIMStructP",
    "WimInfoStruct",
    "library",
    "open_wim",
    "operation",
)

logger = logging.getLogger(__name__)

#: The soname Debian's libwim15 1.13.x installs.
LIBRARY_NAME = "libwim.so.15"

# enum wimlib_compression_type
COMPRESSION_TYPES: dict[str, int] = {"none": 0, "xpress": 1, "lzx": 2, "lzms": 3}

# add / write / extract / iterate / change flags (wimlib.h)
ADD_FLAG_NTFS = 0x00000001
ADD_FLAG_VERBOSE = 0x00000004
ADD_FLAG_BOOT = 0x00000008
WRITE_FLAG_CHECK_INTEGRITY = 0x00000001
WRITE_FLAG_FSYNC = 0x00000020
EXTRACT_FLAG_NTFS = 0x00000001
EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE = 0x00200000
ITERATE_RECURSIVE = 0x00000001
ITERATE_CHILDREN = 0x00000002
DELETE_FLAG_FORCE = 0x00000001
DELETE_FLAG_RECURSIVE = 0x00000002
CHANGE_BOOT_INDEX = 0x00000004
ALL_IMAGES = -1

ERR_ABORTED_BY_PROGRESS = 76
ERR_UNKNOWN_PROGRESS_STATUS = 77

# enum wimlib_progress_msg (only those we turn into WimProgress)
MSG_EXTRACT_STREAMS = 4
MSG_SCAN_BEGIN = 9
MSG_SCAN_DENTRY = 10
MSG_SCAN_END = 11
MSG_WRITE_STREAMS = 12
PROGRESS_CONTINUE = 0
PROGRESS_ABORT = 1

FILE_ATTRIBUTE_DIRECTORY = 0x00000010
FILE_ATTRIBUTE_REPARSE_POINT = 0x00000400


# --- structures (wimlib.h, LP64) -------------------------------------------


class WimInfoStruct(ctypes.Structure):
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


class ResourceEntry(ctypes.Structure):
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


class StreamEntry(ctypes.Structure):
    _fields_ = [
        ("stream_name", ctypes.c_char_p),
        ("resource", ResourceEntry),
        ("reserved", ctypes.c_uint64 * 4),
    ]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_long)]


class DirEntry(ctypes.Structure):
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
        ("creation_time", Timespec),
        ("last_write_time", Timespec),
        ("last_access_time", Timespec),
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


class ProgressWriteStreams(ctypes.Structure):
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


class ProgressScan(ctypes.Structure):
    _fields_ = [
        ("source", ctypes.c_char_p),
        ("cur_path", ctypes.c_char_p),
        ("status", ctypes.c_int),
        ("wim_target_path", ctypes.c_char_p),
        ("num_dirs_scanned", ctypes.c_uint64),
        ("num_nondirs_scanned", ctypes.c_uint64),
        ("num_bytes_scanned", ctypes.c_uint64),
    ]


class ProgressExtract(ctypes.Structure):
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


PROGRESS_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
ITERATE_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(DirEntry), ctypes.c_void_p)
WIMStructP = ctypes.c_void_p


# --- library loading and error capture -------------------------------------

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_messages: IO[str] | None = None


def library() -> ctypes.CDLL:
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
    wp = WIMStructP
    protos: dict[str, tuple[object, list[object]]] = {
        "wimlib_global_init": (c_int, [c_int]),
        "wimlib_set_error_file_by_name": (c_int, [c_char_p]),
        "wimlib_get_error_string": (c_char_p, [c_int]),
        "wimlib_create_new_wim": (c_int, [c_int, ctypes.POINTER(wp)]),
        "wimlib_open_wim": (c_int, [c_char_p, c_int, ctypes.POINTER(wp)]),
        "wimlib_free": (None, [wp]),
        "wimlib_register_progress_function": (None, [wp, PROGRESS_FUNC, c_void_p]),
        "wimlib_add_image": (c_int, [wp, c_char_p, c_char_p, c_char_p, c_int]),
        "wimlib_delete_path": (c_int, [wp, c_int, c_char_p, c_int]),
        "wimlib_get_wim_info": (c_int, [wp, ctypes.POINTER(WimInfoStruct)]),
        "wimlib_set_wim_info": (c_int, [wp, ctypes.POINTER(WimInfoStruct), c_int]),
        "wimlib_write": (c_int, [wp, c_char_p, c_int, c_int, ctypes.c_uint]),
        "wimlib_iterate_dir_tree": (c_int, [wp, c_int, c_char_p, c_int, ITERATE_FUNC, c_void_p]),
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
def operation(path: str | os.PathLike[str], name: str) -> Iterator[Callable[[int], None]]:
    """Yield a ``check(ret)`` that raises WimlibError for a non-zero wimlib return code."""
    lib = library()
    start = _message_offset()

    def check(ret: int) -> None:
        if ret == 0:
            return
        detail = (lib.wimlib_get_error_string(ret) or b"unknown error").decode(errors="replace")
        printed = _messages_since(start)
        raise WimlibError(os.fspath(path), name, ret, detail, printed)

    yield check
    if logger.isEnabledFor(logging.DEBUG):
        printed = _messages_since(start)
        if printed:
            logger.debug("wimlib (%s %s): %s", name, os.fspath(path), printed)


@contextmanager
def open_wim(path: str | os.PathLike[str]) -> Iterator[int]:
    lib = library()
    handle = WIMStructP()
    with operation(path, "open") as check:
        check(lib.wimlib_open_wim(os.fsencode(path), 0, ctypes.byref(handle)))
    assert handle.value is not None  # set on success by wimlib_open_wim
    try:
        yield handle.value
    finally:
        lib.wimlib_free(handle)
