"""The .secwim bundle: a signed SDI + WIM, sent as-is with SDI length 0.

Layout (formats.md ".secwim"), front to back::

    SDI | WIM, zero-padded to 4 | [plat block] | [devi block] | size block
        | catalog | u32 catalog length

The blocks are found from the end: the last 4 bytes give the catalog's
length, the 16-byte ``size`` block sits right before the catalog, and every
block after ``plat`` names the size of the block before it, so the chain is
walked backwards until a block says 0.

Our reading of formats.md, where it leaves room:

* A "u32 tag" is written so the file shows the name in reading order
  (``b"plat"`` on disk, i.e. the little-endian u32 0x74616C70). Nothing public
  pins the byte order of Microsoft's constant, so :func:`parse_secwim_tail`
  also accepts the reversed spelling (``b"talp"``) and records that it did.
* ``plat``'s second u32 is the "previous block size" slot, always 0 because
  nothing precedes it; its ids are ASCII, each NUL-terminated, followed by one
  more NUL, and the block is zero-padded to 4 bytes.
* ``devi`` GUIDs are 16 bytes in .NET order (first three fields little-endian),
  as every other GUID in these formats.
* The WIM length in ``size`` is the padded length, so SDI length + WIM length
  is the offset of the first block.

We never sign anything: :func:`build_secwim` (for tests) writes an unsigned
placeholder where the catalog goes, and nothing here checks a signature --
the device does that.
"""

from __future__ import annotations

import logging
import mmap
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from construct import Array, Bytes, ConstructError, Int32ul, Struct, this

from ..errors import FormatError
from ._files import open_regular
from .sdi import SdiInfo, check_sdi_for_wim_boot, parse_sdi
from .wim import WimInfo, check_boot_payload, parse_wim_header, with_image_names

__all__ = (
    "DEVI_BLOCK",
    "PLACEHOLDER_CATALOG",
    "SIZE_BLOCK",
    "TAG_DEVI",
    "TAG_PLAT",
    "TAG_SIZE",
    "SecWimInfo",
    "build_secwim",
    "parse_secwim",
    "parse_secwim_tail",
    "read_secwim_info",
)

logger = logging.getLogger(__name__)

TAG_PLAT = b"plat"
TAG_DEVI = b"devi"
TAG_SIZE = b"size"
#: What :func:`build_secwim` puts where the signed catalog goes.
PLACEHOLDER_CATALOG = b"parallel-flash unsigned placeholder catalog (not a signature)\0"

# formats.md ".secwim": the block right before the catalog.
SIZE_BLOCK = Struct(
    "tag"           / Bytes(4) * "b'size'",
    "previous_size" / Int32ul  * "bytes of the devi or plat block before it, 0 if none",
    "sdi_length"    / Int32ul  * "bytes of the SDI at the start of the file",
    "wim_length"    / Int32ul  * "bytes of the WIM after it, padded to 4",
)  # fmt: skip

DEVI_BLOCK = Struct(
    "tag"           / Bytes(4)                 * "b'devi'",
    "previous_size" / Int32ul                  * "bytes of the plat block before it, 0 if none",
    "count"         / Int32ul                  * "device GUIDs that follow",
    "devices"       / Array(this.count, Bytes(16)) * "GUIDs, .NET byte order",
)  # fmt: skip

PLAT_HEAD = Struct(
    "tag"  / Bytes(4) * "b'plat'",
    "zero" / Int32ul  * "previous-size slot: nothing precedes it",
)  # fmt: skip

_MIN_TRAILER = SIZE_BLOCK.sizeof() + 4


@dataclass(frozen=True, slots=True)
class SecWimInfo:
    """Where the parts of a .secwim are, and whom it targets."""

    path: str
    file_size: int
    sdi_length: int
    #: The WIM's length padded to 4, as the size block gives it.
    wim_length: int
    platforms: tuple[str, ...]
    devices: tuple[uuid.UUID, ...]
    catalog_offset: int
    catalog_length: int
    #: Offset of the first block after the padded WIM.
    trailer_offset: int
    #: True when the tags were spelled backwards on disk (see module notes).
    tags_reversed: bool = False
    #: Filled by :func:`parse_secwim` / :func:`read_secwim_info`.
    sdi: SdiInfo | None = None
    wim: WimInfo | None = None


def parse_secwim_tail(data: Any, *, path: str = "<secwim>") -> SecWimInfo:
    """Parse a .secwim's blocks and catalog length from its end.

    :param data: the whole file as a sliceable buffer (bytes, memoryview or an
        ``mmap``); only the trailer is touched.
    :raises ~parallel_flash.errors.FormatError: naming the block that is wrong.
    """
    size = len(data)
    if size < _MIN_TRAILER:
        raise FormatError(
            path,
            "trailer",
            f"truncated: {size} bytes, too short for a size block and a catalog length",
        )
    catalog_length = int.from_bytes(_take(data, size - 4, size), "little")
    catalog_offset = size - 4 - catalog_length
    size_offset = catalog_offset - SIZE_BLOCK.sizeof()
    if size_offset < 0:
        raise FormatError(
            path,
            "catalog_length",
            f"{catalog_length} bytes does not fit in the {size}-byte file",
        )
    size_block = _parse(SIZE_BLOCK, data, size_offset, size_offset + 16, path, "size block")
    reversed_tags = _tag(size_block.tag, TAG_SIZE, size_offset, path)

    platforms, devices, cursor = _optional_blocks(
        data, size_offset, size_block.previous_size, reversed_tags, path
    )

    sdi_length, wim_length = size_block.sdi_length, size_block.wim_length
    _check_lengths(sdi_length, wim_length, cursor, path)
    return SecWimInfo(
        path=path,
        file_size=size,
        sdi_length=sdi_length,
        wim_length=wim_length,
        platforms=platforms,
        devices=devices,
        catalog_offset=catalog_offset,
        catalog_length=catalog_length,
        trailer_offset=cursor,
        tags_reversed=reversed_tags,
    )


def _optional_blocks(
    data: Any, size_offset: int, previous: int, reversed_tags: bool, path: str
) -> tuple[tuple[str, ...], tuple[uuid.UUID, ...], int]:
    """Walk back from the size block through the optional devi and plat blocks;
    return the platforms, the devices and where the blocks start."""
    platforms: tuple[str, ...] = ()
    devices: tuple[uuid.UUID, ...] = ()
    cursor, seen = size_offset, TAG_SIZE
    while previous:
        start = cursor - previous
        if start < 0:
            raise FormatError(
                path,
                f"{seen.decode()} block",
                f"says the block before it is {previous} bytes, more than the "
                f"{cursor} bytes in front of it",
            )
        tag = _take(data, start, start + 4)
        if seen == TAG_SIZE and tag in (TAG_DEVI, TAG_DEVI[::-1]):
            devices, previous = _devi(data, start, cursor, path)
            seen = TAG_DEVI
        elif tag in (TAG_PLAT, TAG_PLAT[::-1]):
            platforms = _plat(data, start, cursor, path)
            previous, seen = 0, TAG_PLAT
        else:
            raise FormatError(
                path,
                f"block at offset {start}",
                f"tag {tag!r} is not 'plat' or 'devi' in the order the format allows",
            )
        if (tag == seen[::-1]) != reversed_tags:
            raise FormatError(
                path, f"{seen.decode()} block", "tag spelled the other way round from 'size'"
            )
        cursor = start
    return platforms, devices, cursor


def _check_lengths(sdi_length: int, wim_length: int, cursor: int, path: str) -> None:
    if sdi_length + wim_length != cursor:
        raise FormatError(
            path,
            "size block",
            f"SDI length {sdi_length} + WIM length {wim_length} = {sdi_length + wim_length}, "
            f"but the blocks after the WIM start at offset {cursor}",
        )
    if wim_length % 4:
        raise FormatError(path, "size block", f"WIM length {wim_length} is not padded to 4")
    if sdi_length == 0:
        raise FormatError(path, "size block", "SDI length 0: a .secwim starts with its SDI")


def parse_secwim(data: Any, *, path: str = "<secwim>") -> SecWimInfo:
    """Parse a whole .secwim: trailer, the SDI in front and the WIM after it.

    Runs the SDI's WIM-boot check and every WIM header check on the parts.

    :param data: the whole file as a sliceable buffer (an ``mmap`` is fine:
        only the SDI, the WIM header and the trailer are read).
    :raises ~parallel_flash.errors.FormatError: for any failed check; SDI and
        WIM problems are named ``<path>[sdi]`` and ``<path>[wim]``.
    """
    info = parse_secwim_tail(data, path=path)
    check_boot_payload(0, info.file_size, path=path)
    sdi = parse_sdi(_take(data, 0, info.sdi_length), path=f"{path}[sdi]", file_size=info.sdi_length)
    check_sdi_for_wim_boot(sdi)
    base = info.sdi_length
    wim = parse_wim_header(
        _take(data, base, base + 208), path=f"{path}[wim]", file_size=info.wim_length
    )
    wim = with_image_names(
        wim, lambda offset, size: _take(data, base + offset, base + offset + size)
    )
    return replace(info, sdi=sdi, wim=wim)


def read_secwim_info(path: str | os.PathLike[str]) -> SecWimInfo:
    """Parse a .secwim file, reading only the parts :func:`parse_secwim` needs.

    :raises ~parallel_flash.errors.FormatError: for any failed check, or when
        the file cannot be read.
    """
    name = os.fspath(path)
    try:
        with open_regular(name) as f:
            if os.fstat(f.fileno()).st_size < _MIN_TRAILER:
                return parse_secwim(f.read(), path=name)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return parse_secwim(view, path=name)
    except OSError as exc:
        raise FormatError(name, "file", f"cannot be read: {exc.strerror or exc}") from None


def build_secwim(
    sdi: bytes,
    wim: bytes,
    *,
    platforms: Iterable[str] = (),
    devices: Iterable[uuid.UUID] = (),
) -> bytes:
    """Bundle an SDI and a WIM the way formats.md lays a .secwim out (for tests).

    The catalog is :data:`PLACEHOLDER_CATALOG`: the result is unsigned, so a
    real device would refuse it, but every byte position is as in a real one.

    :raises ~parallel_flash.errors.FormatError: when ``sdi`` or ``wim`` fails
        its own checks.
    :raises ValueError: for a platform id that is not NUL-free ASCII.
    """
    check_sdi_for_wim_boot(parse_sdi(sdi, path="<sdi>"))
    parse_wim_header(wim, path="<wim>", file_size=len(wim))
    padded_wim = wim + bytes(-len(wim) % 4)
    blocks = b""
    previous = 0
    ids = tuple(platforms)
    if ids:
        for pid in ids:
            if not pid or not pid.isascii() or "\0" in pid:
                raise ValueError(f"platform id {pid!r} must be non-empty ASCII without NUL")
        body = TAG_PLAT + bytes(4) + b"".join(pid.encode() + b"\0" for pid in ids) + b"\0"
        plat = body + bytes(-len(body) % 4)
        blocks += plat
        previous = len(plat)
    guids = [guid.bytes_le for guid in devices]
    if guids:
        devi: bytes = DEVI_BLOCK.build(
            {"tag": TAG_DEVI, "previous_size": previous, "count": len(guids), "devices": guids}
        )
        blocks += devi
        previous = len(devi)
    size_block: bytes = SIZE_BLOCK.build(
        {
            "tag": TAG_SIZE,
            "previous_size": previous,
            "sdi_length": len(sdi),
            "wim_length": len(padded_wim),
        }
    )
    catalog = PLACEHOLDER_CATALOG
    return sdi + padded_wim + blocks + size_block + catalog + len(catalog).to_bytes(4, "little")


# -- helpers ------------------------------------------------------------------


def _take(data: Any, start: int, end: int) -> bytes:
    """Copy a slice out of bytes, memoryview or mmap alike."""
    return bytes(data[start:end])


def _parse(struct: Any, data: Any, start: int, end: int, path: str, field: str) -> Any:
    try:
        return struct.parse(_take(data, start, end))
    except ConstructError as exc:
        raise FormatError(path, field, f"cannot be parsed at offset {start}: {exc}") from None


def _tag(found: bytes, tag: bytes, offset: int, path: str) -> bool:
    """Check a block's tag; return True when it is spelled backwards."""
    if found == tag:
        return False
    if found == tag[::-1]:
        return True
    raise FormatError(
        path,
        f"{tag.decode()} block",
        f"expected tag {tag.decode()!r} at offset {offset}, found {found!r}: "
        f"not a .secwim, or its catalog length is wrong",
    )


def _devi(data: Any, start: int, end: int, path: str) -> tuple[tuple[uuid.UUID, ...], int]:
    block = _parse(DEVI_BLOCK, data, start, end, path, "devi block")
    expected = 12 + 16 * block.count
    if expected != end - start:
        raise FormatError(
            path,
            "devi block",
            f"{block.count} device GUIDs take {expected} bytes, but the block is "
            f"{end - start} bytes",
        )
    return tuple(uuid.UUID(bytes_le=raw) for raw in block.devices), block.previous_size


def _plat(data: Any, start: int, end: int, path: str) -> tuple[str, ...]:
    head = _parse(PLAT_HEAD, data, start, start + 8, path, "plat block")
    if head.zero != 0:
        raise FormatError(path, "plat block", f"second u32 is {head.zero}, expected 0")
    body = _take(data, start + 8, end).rstrip(b"\0")
    try:
        ids = body.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(path, "plat block", "platform ids are not ASCII") from None
    return tuple(ids.split("\0")) if ids else ()
