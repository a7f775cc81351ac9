"""Input and output paths: only regular files, never a wait, never a surprise overwrite.

Every reader in this package goes through :func:`open_regular`. ``open()``
on a FIFO blocks until a writer appears (forever, in practice); on a
character device it may block, hang in a driver or stream without end; a
directory or socket cannot be read at all. So the path is opened with
``O_NONBLOCK`` (which makes the open itself return at once for a FIFO), the
*opened* file is checked with ``fstat`` (no window between a check and the
open), and anything but a regular file is refused with what it is.

Outputs get the mirror rule in :func:`check_output_path`: only a new (or,
when asked, an existing) regular file that is not one of the inputs.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from typing import BinaryIO

from ..errors import FormatError, InputError

__all__ = ("check_output_path", "describe_mode", "open_regular")

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def describe_mode(mode: int) -> str:
    """``"a FIFO (named pipe)"``: what a non-regular file is, for messages."""
    for test, what in _KINDS:
        if test(mode):
            return what
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str | os.PathLike[str], *, wanted: str = "an image file") -> BinaryIO:
    """Open ``path`` for reading if, and only if, it is a regular file.

    :param wanted: what to give instead, for the message (``"a report file"``)

    :raises ~parallel_flash.errors.FormatError: field ``file``, saying what
        the path is instead (missing, a directory, a FIFO, a device...) or
        why it cannot be opened.
    """
    name = os.fspath(path)
    # Checked before the open too: opening some devices has effects of its own
    # (a tape rewinds, a modem line hangs up); fstat below closes the race.
    with contextlib.suppress(OSError):  # the open below reports those
        _refuse_unless_regular(name, os.stat(name).st_mode, wanted)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise FormatError(name, "file", "does not exist") from None
    except IsADirectoryError:
        raise FormatError(name, "file", "is a directory, not a file") from None
    except OSError as exc:
        raise FormatError(name, "file", f"cannot be opened: {exc.strerror or exc}") from None
    try:
        _refuse_unless_regular(name, os.fstat(fd).st_mode, wanted)
        os.set_blocking(fd, True)  # regular files ignore it; reads stay plain
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _refuse_unless_regular(name: str, mode: int, wanted: str) -> None:
    if not stat.S_ISREG(mode):
        raise FormatError(
            name, "file", f"is {describe_mode(mode)}, not a regular file; give {wanted}"
        )


def check_output_path(
    path: str | os.PathLike[str],
    *,
    what: str,
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    overwrite_hint: str = "pass --force to replace it",
    check_parent: bool = True,
) -> None:
    """Refuse an output path that is not, or would not be, a plain new regular file.

    A device node, FIFO, socket or directory is refused whatever the flags
    (replacing ``/dev/null`` with a file is never what anyone meant), so is
    any of ``inputs`` under another name (same device and inode), and so is an
    existing file unless ``overwrite``. Nothing is created or changed here.

    :param what: names the output in messages ("WIM", "report file").
    :param check_parent: also refuse a missing or unwritable directory (off when
        the caller's own open reports that).
    :raises ~parallel_flash.errors.InputError: saying which rule refused it.
    """
    name = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(name))
    if check_parent and not os.path.isdir(parent):
        raise InputError(f"{name}: cannot write the {what}: directory {parent} does not exist")
    if check_parent and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{name}: cannot write the {what}: directory {parent} is not writable")
    try:
        target = os.stat(name)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"{name}: cannot use as the {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(target.st_mode):
        raise InputError(
            f"{name}: is {describe_mode(target.st_mode)}; the {what} must be a regular file "
            "(nothing was written)"
        )
    for source in inputs:
        try:
            same = os.path.samestat(target, os.stat(source))
        except OSError:
            continue
        if same:
            raise InputError(
                f"{name}: is the input file {os.fspath(source)}; the {what} must be another "
                "file (nothing was written)"
            )
    if not overwrite:
        raise InputError(f"{name}: already exists; {overwrite_hint}")
