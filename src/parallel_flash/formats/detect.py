"""Tell WIM, pipable WIM, SDI, .secwim and FFU files apart by their bytes.

File names lie (a .secwim is often called .wim); magic bytes do not. A
.secwim starts with an SDI's magic, so it is told from a plain SDI by
whether its end parses as a .secwim trailer.
"""

from __future__ import annotations

import logging
import mmap
import os
from typing import Literal

from ..errors import FormatError
from ._files import open_regular
from .sdi import SDI_MAGIC
from .secwim import parse_secwim_tail
from .wim import PIPABLE_WIM_MAGIC, WIM_MAGIC

__all__ = ("FFU_SIGNATURE", "FileType", "detect_file_type", "detect_head")

logger = logging.getLogger(__name__)

FileType = Literal["wim", "sdi", "secwim", "ffu", "pipable-wim"]

#: An FFU starts with SECURITY_HEADER: u32 cbSize (32), then this signature.
FFU_SIGNATURE = b"SignedImage "
#: Bytes :func:`detect_head` looks at.
HEAD_SIZE = 16


def detect_head(head: bytes) -> FileType | None:
    """Classify a file from its first 16 bytes; an SDI magic gives "sdi".

    Cannot see a .secwim (that needs the file's end): use
    :func:`detect_file_type` for files.
    """
    if head.startswith(WIM_MAGIC):
        return "wim"
    if head.startswith(PIPABLE_WIM_MAGIC):
        return "pipable-wim"
    if head.startswith(SDI_MAGIC):
        return "sdi"
    if head[4:16] == FFU_SIGNATURE:
        return "ffu"
    return None


def detect_file_type(path: str | os.PathLike[str]) -> FileType | None:
    """Classify a file by its magic bytes (and, for an SDI, by its end).

    :return: the type, or None when no known magic matches.
    :raises ~parallel_flash.errors.FormatError: when the file cannot be read
        (field ``file``), so callers report it like any other bad input.
    """
    name = os.fspath(path)
    try:
        with open_regular(name) as f:
            kind = detect_head(f.read(HEAD_SIZE))
            if kind != "sdi" or os.fstat(f.fileno()).st_size == 0:
                return kind
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return "secwim" if _is_secwim(view, name) else "sdi"
    except IsADirectoryError:
        raise FormatError(name, "file", "is a directory, not a file") from None
    except FileNotFoundError:
        raise FormatError(name, "file", "does not exist") from None
    except OSError as exc:
        raise FormatError(name, "file", f"cannot be read: {exc.strerror or exc}") from None


def _is_secwim(view: mmap.mmap, path: str) -> bool:
    try:
        parse_secwim_tail(view, path=path)
    except FormatError as exc:
        logger.debug("%s: an SDI, not a .secwim: %s", path, exc)
        return False
    return True
