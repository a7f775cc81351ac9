"""Reparse points (junctions) on an NTFS volume image, through libntfs-3g.

ImgToWIM drops MainOS's top-level junctions that lead to other partitions
(``Data`` -> the Data volume, ``EFIESP`` -> the ESP): on the device they
would point at volumes that do not exist in the RAM-booted WIM. To tell
where a junction leads we need its reparse data, which wimlib does not expose
in NTFS-3G capture mode, so we read it with libntfs-3g (the library wimlib
itself uses, Debian ``libntfs-3g89``). The tests and the demo also use it to
*make* junctions, since no Linux tool writes one into a volume image.

Only five entry points are bound; the volume is never mounted through FUSE.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import HostSetupError, InputError

__all__ = (
    "IO_REPARSE_TAG_MOUNT_POINT",
    "IO_REPARSE_TAG_SYMLINK",
    "ReparsePoint",
    "mount_point_data",
    "parse_reparse_data",
    "read_reparse_points",
    "set_reparse_data",
)

LIBRARY_NAMES = ("libntfs-3g.so.89", "libntfs-3g.so")
IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003
IO_REPARSE_TAG_SYMLINK = 0xA000000C
_NTFS_MNT_RDONLY = 0x00000001

_lib: ctypes.CDLL | None = None
_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            for name in LIBRARY_NAMES:
                try:
                    lib = ctypes.CDLL(name, use_errno=True)
                    break
                except OSError:
                    continue
            else:
                raise HostSetupError(
                    "libntfs-3g not found: install the Debian package libntfs-3g89 "
                    "(apt-get install libntfs-3g89)"
                )
            vp, cp = ctypes.c_void_p, ctypes.c_char_p
            lib.ntfs_mount.restype, lib.ntfs_mount.argtypes = vp, [cp, ctypes.c_ulong]
            lib.ntfs_umount.restype, lib.ntfs_umount.argtypes = ctypes.c_int, [vp, ctypes.c_int]
            lib.ntfs_pathname_to_inode.restype = vp
            lib.ntfs_pathname_to_inode.argtypes = [vp, vp, cp]
            lib.ntfs_inode_close.restype, lib.ntfs_inode_close.argtypes = ctypes.c_int, [vp]
            lib.ntfs_get_ntfs_reparse_data.restype = ctypes.c_int
            lib.ntfs_get_ntfs_reparse_data.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
            lib.ntfs_set_ntfs_reparse_data.restype = ctypes.c_int
            lib.ntfs_set_ntfs_reparse_data.argtypes = [vp, cp, ctypes.c_size_t, ctypes.c_int]
            _lib = lib
        return _lib


@dataclass(frozen=True, slots=True)
class ReparsePoint:
    tag: int
    substitute_name: str  #: what the system follows, e.g. ``\\??\\Volume{...}\\``
    print_name: str
    relative: bool = False  #: symlinks only


def parse_reparse_data(data: bytes) -> ReparsePoint | None:
    """Decode a mount-point or symlink REPARSE_DATA_BUFFER; None for other tags."""
    if len(data) < 8:
        return None
    tag, length, _reserved = struct.unpack_from("<IHH", data)
    body = data[8 : 8 + length]
    if tag not in (IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_SYMLINK) or len(body) < 8:
        return None
    sub_off, sub_len, print_off, print_len = struct.unpack_from("<HHHH", body)
    relative = False
    names = body[8:]
    if tag == IO_REPARSE_TAG_SYMLINK:
        if len(body) < 12:
            return None
        relative = bool(struct.unpack_from("<I", body, 8)[0] & 1)
        names = body[12:]
    sub = names[sub_off : sub_off + sub_len].decode("utf-16-le", errors="replace")
    prn = names[print_off : print_off + print_len].decode("utf-16-le", errors="replace")
    return ReparsePoint(tag, sub, prn, relative)


def mount_point_data(substitute_name: str, print_name: str = "") -> bytes:
    """A junction's REPARSE_DATA_BUFFER (each name NUL-terminated, as Windows writes them)."""
    sub = substitute_name.encode("utf-16-le")
    prn = print_name.encode("utf-16-le")
    names = sub + b"\0\0" + prn + b"\0\0"
    body = struct.pack("<HHHH", 0, len(sub), len(sub) + 2, len(prn)) + names
    return struct.pack("<IHH", IO_REPARSE_TAG_MOUNT_POINT, len(body), 0) + body


class _Volume:
    def __init__(self, image: str | os.PathLike[str], *, writable: bool) -> None:
        self.lib = _library()
        self.image = os.fspath(image)
        flags = 0 if writable else _NTFS_MNT_RDONLY
        self.handle = self.lib.ntfs_mount(os.fsencode(self.image), flags)
        if not self.handle:
            err = ctypes.get_errno()
            raise InputError(f"{self.image}: not a usable NTFS volume ({os.strerror(err)})")

    def inode(self, path: str) -> int | None:
        ni = self.lib.ntfs_pathname_to_inode(self.handle, None, path.encode())
        return int(ni) if ni else None

    def close(self) -> None:
        if self.handle:
            self.lib.ntfs_umount(self.handle, 0)
            self.handle = None


def read_reparse_points(
    image: str | os.PathLike[str], paths: Iterable[str]
) -> dict[str, ReparsePoint | None]:
    """The reparse point at each of ``paths`` ("/Data"), None where there is none we understand."""
    vol = _Volume(image, writable=False)
    out: dict[str, ReparsePoint | None] = {}
    try:
        for path in paths:
            ni = vol.inode(path)
            if ni is None:
                out[path] = None
                continue
            try:
                size = vol.lib.ntfs_get_ntfs_reparse_data(ni, None, 0)
                if size <= 0:
                    out[path] = None
                    continue
                buf = ctypes.create_string_buffer(size)
                got = vol.lib.ntfs_get_ntfs_reparse_data(ni, buf, size)
                out[path] = parse_reparse_data(buf.raw[:got]) if got > 0 else None
            finally:
                vol.lib.ntfs_inode_close(ni)
    finally:
        vol.close()
    return out


def set_reparse_data(image: str | os.PathLike[str], path: str, data: bytes) -> None:
    """Turn the existing (empty) file or directory ``path`` into a reparse point."""
    vol = _Volume(image, writable=True)
    try:
        ni = vol.inode(path)
        if ni is None:
            raise InputError(f"{vol.image}: no {path} on the volume")
        try:
            if vol.lib.ntfs_set_ntfs_reparse_data(ni, data, len(data), 0) != 0:
                err = ctypes.get_errno()
                raise InputError(
                    f"{vol.image}: cannot set reparse data on {path} ({os.strerror(err)})"
                )
        finally:
            vol.lib.ntfs_inode_close(ni)
    finally:
        vol.close()
