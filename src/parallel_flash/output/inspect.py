"""Describe an input file for ``parallel-flash info``: pure data, no rich.

:func:`describe_file` runs the same checks a boot run would (a file that
would be refused there raises :class:`~parallel_flash.errors.FormatError`
here too) and returns a :class:`FileDescription`: a title, ordered
(label, value) rows for people, typed fields for programs (``info --json``,
schemas/info.schema.json) and warnings.

An FFU is described with the same checks img2wim makes: a damaged file
(a table out of range, sizes that cannot be, a hash mismatch) raises; one
that is sound but that img2wim would refuse (no MainOS or EFIESP, a MainOS
that is not NTFS) is described, with img2wim's message as a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from ..formats import open_regular
from ..formats.detect import detect_file_type
from ..formats.ffu import HASH_ALG_SHA256, Ffu, read_ffu
from ..formats.ffu_disk import StoreTable, find_mainos, read_partition_tables, written_bytes
from ..formats.ffu_payload import scan_payload
from ..formats.sdi import SdiInfo, check_sdi_for_wim_boot, read_sdi_info
from ..formats.secwim import read_secwim_info
from ..formats.wim import WimInfo, read_wim_info
from ..formats.wim_integrity import verify_integrity

__all__ = ("FileDescription", "describe_file", "format_size")

logger = logging.getLogger(__name__)

#: FullFlash manifest entries info shows.
_MANIFEST_KEYS = ("Version", "OSVersion", "Description")


@dataclass(frozen=True, slots=True)
class FileDescription:
    """What ``info`` shows about one file.

    Values are plain strings taken from the file (image names, platform ids):
    a presenter must show them literally, never interpret them as markup.
    """

    path: str
    #: The detected type: "wim", "sdi", "secwim", "ffu" (see formats.detect).
    kind: str
    title: str
    rows: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = field(default=())
    #: The same facts typed (numbers, booleans, lists), keyed as in
    #: schemas/info.schema.json: what scripts read.
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``info --json``); rows keep their order."""
        return {
            "path": self.path,
            "type": self.kind,
            "ok": True,
            "fields": self.fields,
            "warnings": list(self.warnings),
            "title": self.title,
            "rows": [{"label": label, "value": value} for label, value in self.rows],
        }


def describe_file(
    path: str | os.PathLike[str], *, verify_integrity: bool = False
) -> FileDescription:
    """Identify a file by its magic bytes, check it, and describe it.

    :param verify_integrity: also re-hash a WIM against its integrity table.
    :raises ~parallel_flash.errors.FormatError: when the file is missing,
        unreadable, of unknown type, or fails a check that a boot run would
        refuse it for.
    """
    name = os.fspath(path)
    kind = detect_file_type(name)
    if kind is None:
        raise FormatError(name, "type", _unknown_type(name))
    describe: Callable[[str, bool], FileDescription] = {
        "wim": _describe_wim,
        "pipable-wim": _describe_wim,  # read_wim_info says why it cannot boot
        "sdi": _describe_sdi,
        "secwim": _describe_secwim,
        "ffu": _describe_ffu,
    }[kind]
    return describe(name, verify_integrity)


def format_size(size: int) -> str:
    """``201,734 bytes (197.0 KiB)``: exact for records, scaled for people."""
    if size < 1024:
        return f"{size:,} bytes"
    scaled, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{size:,} bytes ({scaled:.1f} {unit})"


# -- per type -----------------------------------------------------------------


def _describe_wim(path: str, verify: bool) -> FileDescription:
    info = read_wim_info(path)
    integrity, verified = _integrity(path, info, verify)
    rows = [("type", "WIM (solid)" if info.solid else "WIM")]
    rows += [("size", format_size(info.file_size or 0))]
    rows += _wim_rows(info)
    rows += [("integrity table", integrity)]
    rows += [("GUID", str(info.guid))]
    rows += [("boot checks", "passed")]
    fields = {
        "file_size": info.file_size,
        **_wim_fields(info),
        "integrity": {
            "present": info.has_integrity,
            "size": info.integrity_table.size_in_wim if info.has_integrity else None,
            "verified": verified,
        },
        "boot_checks_passed": True,
    }
    return FileDescription(path, "wim", f"{path}: WIM", tuple(rows), info.warnings, fields)


def _wim_fields(info: WimInfo) -> dict[str, Any]:
    return {
        "version": info.version,
        "flags": list(info.flag_names),
        "compression": info.compression,
        "chunk_size": info.chunk_size,
        "solid": info.solid,
        "guid": str(info.guid),
        "image_count": info.image_count,
        "images": [
            {"index": index, "name": name, "boot": index == info.boot_index}
            for index, name in enumerate(info.image_names, start=1)
        ],
        "boot_index": info.boot_index,
        "boot_metadata_size": info.boot_metadata_size,
    }


def _wim_rows(info: WimInfo) -> list[tuple[str, str]]:
    rows = [
        ("version", f"0x{info.version:x}"),
        ("flags", ", ".join(info.flag_names) or "none"),
        ("compression", info.compression),
        ("chunk size", f"{info.chunk_size:,} bytes" if info.chunk_size else "0 (uncompressed)"),
        ("images", str(info.image_count)),
    ]
    for index, image_name in enumerate(info.image_names, start=1):
        boot = " (boot)" if index == info.boot_index else ""
        rows.append((f"image {index}", f"{image_name or '(no name)'}{boot}"))
    rows.append(("boot index", f"{info.boot_index}" if info.boot_index else "0 (none set)"))
    rows.append(("boot metadata", format_size(info.boot_metadata_size)))
    return rows


def _integrity(path: str, info: WimInfo, verify: bool) -> tuple[str, bool]:
    """The row's text, and whether every chunk was re-hashed and matched."""
    if not info.has_integrity:
        return ("absent (nothing to verify)" if verify else "absent"), False
    size = info.integrity_table.size_in_wim
    if not verify:
        return f"present ({size:,} bytes), not verified (--verify-integrity)", False
    verify_integrity(path)
    return f"present ({size:,} bytes), verified: every chunk matches", True


def _describe_sdi(path: str, verify: bool) -> FileDescription:
    info = read_sdi_info(path)
    rows = [("type", "SDI"), ("size", format_size(info.file_size))]
    rows += _sdi_rows(info)
    warnings = list(info.warnings)
    fields = {"file_size": info.file_size, **_sdi_fields(info)}
    try:
        check_sdi_for_wim_boot(info)
        rows.append(("WIM entry", f"OK: at 0x{info.file_size:x}, the SDI's end"))
        fields.update(wim_entry_ok=True, wim_entry_problem=None)
    except FormatError as exc:
        rows.append(("WIM entry", f"not OK: {exc.problem}"))
        warnings.append(f"{exc.field}: {exc.problem}")
        fields.update(wim_entry_ok=False, wim_entry_problem=exc.problem)
    return FileDescription(path, "sdi", f"{path}: SDI", tuple(rows), tuple(warnings), fields)


def _sdi_fields(info: SdiInfo) -> dict[str, Any]:
    return {
        "microsoft_boot_sdi": info.is_microsoft_boot_sdi,
        "sha256": info.sha256 or None,
        "page_alignment": info.page_alignment,
        "checksum_ok": info.checksum_ok,
        "blobs": [
            {"index": blob.index, "type": blob.type, "offset": blob.offset, "size": blob.size}
            for blob in info.blobs
        ],
    }


def _sdi_rows(info: SdiInfo) -> list[tuple[str, str]]:
    if info.is_microsoft_boot_sdi:
        microsoft = "yes (size and SHA-256 match Microsoft's boot.sdi)"
    else:
        microsoft = "no"
    rows = [
        ("Microsoft boot.sdi", microsoft),
        ("SHA-256", info.sha256 or "not computed (large file)"),
        ("page alignment", f"{info.page_alignment} x 4 KiB"),
        ("header checksum", "matches" if info.checksum_ok else "does not match (byte sum rule)"),
        ("blobs", str(len(info.blobs))),
    ]
    for blob in info.blobs:
        if blob.type == "WIM" and blob.size == 0:
            extent = "size 0 (the WIM that follows)"
        else:
            extent = format_size(blob.size)
        rows.append((f"blob {blob.index}", f"{blob.type} at 0x{blob.offset:x}, {extent}"))
    return rows


def _describe_secwim(path: str, verify: bool) -> FileDescription:
    info = read_secwim_info(path)
    assert info.sdi is not None and info.wim is not None  # read_secwim_info fills both
    rows = [
        ("type", ".secwim (signed SDI + WIM bundle)"),
        ("size", format_size(info.file_size)),
        ("SDI", f"{format_size(info.sdi_length)} at offset 0"),
        ("Microsoft boot.sdi", "yes" if info.sdi.is_microsoft_boot_sdi else "no"),
        ("WIM", f"{format_size(info.wim_length)} at offset {info.sdi_length:,} (padded to 4)"),
    ]
    rows += _wim_rows(info.wim)
    rows += [
        ("platforms", ", ".join(info.platforms) or "any (no plat block)"),
        ("devices", ", ".join(str(d) for d in info.devices) or "any (no devi block)"),
        ("catalog", f"{format_size(info.catalog_length)} at offset {info.catalog_offset:,}"),
        ("signature", "not checked here: the device verifies the catalog"),
        ("boot checks", "passed (sent as-is with SDI length 0)"),
    ]
    if info.tags_reversed:
        rows.append(("block tags", "spelled backwards on disk (accepted)"))
    warnings = info.sdi.warnings + info.wim.warnings
    fields = {
        "file_size": info.file_size,
        "sdi_length": info.sdi_length,
        "wim_length": info.wim_length,
        "microsoft_boot_sdi": info.sdi.is_microsoft_boot_sdi,
        "wim": _wim_fields(info.wim),
        "platforms": list(info.platforms),
        "devices": [str(device) for device in info.devices],
        "catalog_offset": info.catalog_offset,
        "catalog_length": info.catalog_length,
        "tags_reversed": info.tags_reversed,
        "boot_checks_passed": True,
    }
    return FileDescription(path, "secwim", f"{path}: .secwim", tuple(rows), warnings, fields)


def _describe_ffu(path: str, verify: bool) -> FileDescription:
    """Headers, stores, partition tables, img2wim's verdict and the hash check.

    Reads the whole file once to check the hash table; a corrupt or truncated
    FFU raises FormatError, as img2wim would refuse it.
    """
    ffu = read_ffu(path)
    tables = read_partition_tables(ffu)
    rows = _ffu_rows(ffu)
    for table in tables:
        rows += _store_rows(ffu, table)
    warnings = list(ffu.warnings)
    fields = _ffu_fields(ffu, tables)
    try:
        mainos = find_mainos(ffu, tables)
    except FormatError as exc:
        rows.append(("img2wim", f"refused: {exc.field}: {exc.problem}"))
        warnings.append(
            f"img2wim would refuse this FFU ({exc.field}: {exc.problem}); it may still be "
            "RAM bootable by other means"
        )
        fields["img2wim"] = {"convertible": False, "mainos_store": None, "problem": exc.problem}
    else:
        rows.append(("img2wim", f"MainOS (NTFS) in store {mainos.store.number}: can be converted"))
        fields["img2wim"] = {
            "convertible": True,
            "mainos_store": mainos.store.number,
            "problem": None,
        }
    result = scan_payload(ffu)
    rows.append(("hash check", f"OK: all {result.chunks_verified} chunks match the hash table"))
    fields["chunks_verified"] = result.chunks_verified
    return FileDescription(
        ffu.path, "ffu", f"{ffu.path}: FFU", tuple(rows), tuple(warnings), fields
    )


def _ffu_fields(ffu: Ffu, tables: list[StoreTable]) -> dict[str, Any]:
    full_flash = ffu.manifest.first("FullFlash")
    stores = []
    for table in tables:
        s = table.store
        store: dict[str, Any] = {
            "number": s.number,
            "device_path": s.device_path or None,
            "sector_size": s.sector_size,
            "descriptor_count": s.descriptor_count,
            "payload_blocks": s.payload_blocks,
            "payload_size": s.payload_size,
            "validation_entries": len(s.validation_entries),
            "disk_size": None,
            "partitions": [],
            "partition_problem": None,
        }
        if table.gpt is None:
            store["partition_problem"] = table.problem or "no GPT"
        else:
            written = written_bytes(ffu, s, table.gpt, disk=table.disk)
            store["disk_size"] = table.gpt.disk_size
            store["partitions"] = [
                {
                    "number": part.index + 1,
                    "name": part.name,
                    "first_lba": part.first_lba,
                    "last_lba": part.last_lba,
                    "size": part.size,
                    "written_bytes": written[part.index],
                }
                for part in table.gpt.partitions
            ]
        stores.append(store)
    return {
        "file_size": ffu.file_size,
        "version": ffu.version,
        "platform_ids": list(ffu.platform_ids),
        "chunk_size": ffu.chunk_size,
        "block_sizes": sorted({s.block_size for s in ffu.stores}),
        "hash_algorithm": "sha256" if ffu.hash_algorithm == HASH_ALG_SHA256 else None,
        "catalog_size": ffu.catalog_size,
        "manifest": {key: full_flash[key] for key in _MANIFEST_KEYS if key in full_flash},
        "targeting_count": ffu.targeting_count,
        "stores": stores,
    }


def _ffu_rows(ffu: Ffu) -> list[tuple[str, str]]:
    full_flash = ffu.manifest.first("FullFlash")
    stores = len(ffu.stores)
    rows: list[tuple[str, str]] = [
        ("type", f"FFU v{ffu.version} ({stores} store{'s' if stores > 1 else ''})"),
        ("size", format_size(ffu.file_size)),
        ("platform id", ", ".join(ffu.platform_ids) or "(none)"),
        ("chunk size", format_size(ffu.chunk_size)),
        ("block size", ", ".join(sorted({format_size(s.block_size) for s in ffu.stores}))),
        ("hash algorithm", "SHA-256" if ffu.hash_algorithm == HASH_ALG_SHA256 else "?"),
        ("catalog", f"{format_size(ffu.catalog_size)}, signature not verified"),
    ]
    for key in _MANIFEST_KEYS:
        if key in full_flash:
            rows.append((f"manifest {key}", full_flash[key]))
    if ffu.targeting_count:
        rows.append(("device targeting infos", str(ffu.targeting_count)))
    return rows


def _store_rows(ffu: Ffu, table: StoreTable) -> list[tuple[str, str]]:
    s = table.store
    label = f"store {s.number}"
    detail = [
        f"sector size {s.sector_size}",
        f"{s.descriptor_count} write descriptors",
        f"{s.payload_blocks} blocks ({_short_size(s.payload_size)})",
        f"{len(s.validation_entries)} validation entries",
    ]
    if s.device_path:
        detail.insert(0, f"device {s.device_path}")
    rows = [(label, ", ".join(detail))]
    if table.gpt is None:
        return [*rows, (f"{label} partitions", table.problem or "no GPT")]
    written = written_bytes(ffu, s, table.gpt, disk=table.disk)
    rows.append((f"{label} disk", format_size(table.gpt.disk_size)))
    for part in table.gpt.partitions:
        amount = written[part.index]
        state = f"{_short_size(amount)} written" if amount else "not written"
        rows.append(
            (
                f"{label} partition {part.index + 1}",
                f"{part.name}: LBA {part.first_lba}-{part.last_lba}, "
                f"{_short_size(part.size)}, {state}",
            )
        )
    return rows


def _short_size(size: int) -> str:
    """``4.0 MiB``: the short form for sizes inside a row."""
    scaled, unit = float(size), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{size} bytes" if unit == "bytes" else f"{scaled:.1f} {unit}"


def _unknown_type(path: str) -> str:
    try:
        with open_regular(path) as f:  # never blocks, even if a FIFO was swapped in
            head = f.read(16)
    except FormatError as exc:  # raced with a delete or a swap; say so plainly
        return exc.problem
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not head:
        return "the file is empty"
    return (
        f"not a WIM, SDI, .secwim or FFU file (it starts with {head.hex(' ')}, "
        f"no known magic bytes)"
    )
