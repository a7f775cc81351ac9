"""formats.wim: the WIM header in both directions, and every boot check.

The byte fixture is the header wimlib-imagex 1.13.5 wrote for a small
uncompressed capture (``capture src t.wim Demo --boot --compress=none``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.errors import FormatError
from parallel_flash.formats.wim import (
    MAX_BOOT_PAYLOAD,
    RESOURCE_HEADER,
    WIM_HEADER,
    WIM_HEADER_SIZE,
    HeaderFlag,
    ResourceFlag,
    check_boot_payload,
    parse_wim_header,
    read_wim_info,
)

FILE_SIZE = 201_734

HEADER = b"".join(
    [
        b"MSWIM\0\0\0",                                   # magic
        bytes.fromhex("d0000000"),                        # header_size 208
        bytes.fromhex("000d0100"),                        # version 0x10d00
        bytes.fromhex("80000000"),                        # flags RP_FIX
        bytes.fromhex("00000000"),                        # chunk_size 0 (uncompressed)
        bytes.fromhex("e5c7bdcd12920712b30f565b42d8f6ec"),  # guid
        bytes.fromhex("0100"),                            # part_number 1
        bytes.fromhex("0100"),                            # total_parts 1
        bytes.fromhex("01000000"),                        # image_count 1
        bytes.fromhex("96000000000000"),                  # blob_table.size_in_wim 150
        bytes.fromhex("02"),                              # blob_table.flags METADATA
        bytes.fromhex("6610030000000000"),                # blob_table.offset 200806
        bytes.fromhex("9600000000000000"),                # blob_table.original_size 150
        bytes.fromhex("0a030000000000"),                  # xml_data.size_in_wim 778
        bytes.fromhex("02"),                              # xml_data.flags METADATA
        bytes.fromhex("fc10030000000000"),                # xml_data.offset 200956
        bytes.fromhex("0a03000000000000"),                # xml_data.original_size 778
        bytes.fromhex("50020000000000"),                  # boot_metadata.size_in_wim 592
        bytes.fromhex("02"),                              # boot_metadata.flags METADATA
        bytes.fromhex("160e030000000000"),                # boot_metadata.offset 200214
        bytes.fromhex("5002000000000000"),                # boot_metadata.original_size 592
        bytes.fromhex("01000000"),                        # boot_index 1
        bytes(24),                                        # integrity_table: absent
        bytes(60),                                        # unused
    ]
)  # fmt: skip

FIELDS: dict[str, Any] = {
    "header_size": 208,
    "version": 0x10D00,
    "flags": HeaderFlag.RP_FIX,
    "chunk_size": 0,
    "guid": bytes.fromhex("e5c7bdcd12920712b30f565b42d8f6ec"),
    "part_number": 1,
    "total_parts": 1,
    "image_count": 1,
    "blob_table": {"size_in_wim": 150, "flags": 2, "offset": 200806, "original_size": 150},
    "xml_data": {"size_in_wim": 778, "flags": 2, "offset": 200956, "original_size": 778},
    "boot_metadata": {"size_in_wim": 592, "flags": 2, "offset": 200214, "original_size": 592},
    "boot_index": 1,
}

Imagex = Callable[..., Any]


def header(**changes: Any) -> bytes:
    """The fixture header with some fields changed (built, not byte-patched)."""
    return WIM_HEADER.build({**FIELDS, **changes})


def fails(data: bytes, *, file_size: int | None = FILE_SIZE) -> FormatError:
    with pytest.raises(FormatError) as caught:
        parse_wim_header(data, path="t.wim", file_size=file_size)
    assert str(caught.value).startswith(f"t.wim: {caught.value.field}: ")
    return caught.value


# -- both directions ----------------------------------------------------------


def test_header_fixture_is_208_bytes() -> None:
    assert len(HEADER) == WIM_HEADER_SIZE == WIM_HEADER.sizeof()


def test_parse_fixture_every_field() -> None:
    info = parse_wim_header(HEADER, path="t.wim", file_size=FILE_SIZE)
    assert info.path == "t.wim"
    assert info.file_size == FILE_SIZE
    assert info.version == 0x10D00
    assert info.flags == 0x80
    assert info.flag_names == ("RP_FIX",)
    assert info.compression == "none"
    assert info.chunk_size == 0
    assert info.guid == uuid.UUID("cdbdc7e5-9212-1207-b30f-565b42d8f6ec")  # .NET byte order
    assert (info.part_number, info.total_parts) == (1, 1)
    assert info.image_count == 1
    assert info.boot_index == 1
    assert info.boot_metadata_size == 592
    assert info.has_integrity is False
    assert info.warnings == ()
    assert (info.blob_table.offset, info.blob_table.size_in_wim) == (200806, 150)
    assert info.blob_table.flags == ResourceFlag.METADATA
    assert (info.xml_data.offset, info.xml_data.size_in_wim, info.xml_data.original_size) == (
        200956,
        778,
        778,
    )
    assert info.boot_metadata.end == 200214 + 592
    assert not info.integrity_table.present
    assert info.image_names == ()


def test_build_fixture_from_fields() -> None:
    assert WIM_HEADER.build(FIELDS) == HEADER


def test_resource_header_both_directions() -> None:
    raw = bytes.fromhex("ba00000000000006160e0300000000005002000000000000")
    parsed = RESOURCE_HEADER.parse(raw)
    assert parsed.size_in_wim == 186
    assert parsed.flags.METADATA and parsed.flags.COMPRESSED and not parsed.flags.SOLID
    assert parsed.offset == 200214
    assert parsed.original_size == 592
    built = RESOURCE_HEADER.build(
        {"size_in_wim": 186, "flags": {"METADATA": True, "COMPRESSED": True},
         "offset": 200214, "original_size": 592}
    )  # fmt: skip
    assert built == raw


def test_size_in_wim_is_56_bits() -> None:
    raw = RESOURCE_HEADER.build(
        {"size_in_wim": (1 << 56) - 1, "flags": 0, "offset": 0, "original_size": 0}
    )
    assert raw[:8] == b"\xff" * 7 + b"\x00"


def test_trailing_data_and_memoryview_are_fine() -> None:
    info = parse_wim_header(memoryview(HEADER + b"\xaa" * 1000), file_size=FILE_SIZE)
    assert info.image_count == 1


def test_header_without_file_size_skips_bounds() -> None:
    info = parse_wim_header(header(blob_table={**FIELDS["blob_table"], "offset": 1 << 40}))
    assert info.file_size is None


# -- truncation and magic -----------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 7, 8, 100, 207])
def test_truncated_header_says_how_many_bytes(length: int) -> None:
    error = fails(HEADER[:length])
    assert error.field == "header"
    assert f"{length} bytes" in error.problem
    assert "208" in error.problem


def test_every_prefix_fails_cleanly() -> None:
    for length in range(WIM_HEADER_SIZE):
        with pytest.raises(FormatError):
            parse_wim_header(HEADER[:length])


def test_wrong_magic() -> None:
    error = fails(b"MZ\x90\x00" + HEADER[4:])
    assert error.field == "magic"
    assert "not a WIM file" in error.problem


def test_wrong_magic_named_before_truncation() -> None:
    assert fails(b"PK\x03\x04hello").field == "magic"


def test_pipable_magic_patched() -> None:
    error = fails(b"WLPWM\0\0\0" + HEADER[8:])
    assert error.field == "magic"
    assert "pipable WIM cannot be booted; convert it with wimlib-imagex optimize/export" in (
        error.problem
    )


# -- header fields ------------------------------------------------------------


def test_header_size() -> None:
    error = fails(header(header_size=200))
    assert (error.field, error.problem) == ("header_size", "200, expected 208")


def test_unknown_version() -> None:
    error = fails(header(version=0x10B00))
    assert error.field == "version"
    assert "0x10b00 is unknown" in error.problem


def test_solid_version_is_known() -> None:
    assert parse_wim_header(header(version=0xE00), file_size=FILE_SIZE).solid


def test_split_wim_patched_names_part_of_total() -> None:
    error = fails(header(part_number=2, total_parts=3))
    assert error.field == "part_number"
    assert "part 2 of 3" in error.problem
    assert "wimlib-imagex join" in error.problem


@pytest.mark.parametrize(("part", "total"), [(0, 1), (1, 0), (3, 2)])
def test_invalid_part_numbers(part: int, total: int) -> None:
    error = fails(header(part_number=part, total_parts=total))
    assert error.field == "part_number"
    assert f"part {part} of {total}" in error.problem


def test_spanned_flag_alone() -> None:
    error = fails(header(flags=HeaderFlag.SPANNED))
    assert error.field == "flags"
    assert "SPANNED" in error.problem


def test_write_in_progress() -> None:
    error = fails(header(flags=HeaderFlag.WRITE_IN_PROGRESS | HeaderFlag.RP_FIX))
    assert error.field == "flags"
    assert "WRITE_IN_PROGRESS" in error.problem


def test_two_compression_flags() -> None:
    flags = HeaderFlag.COMPRESSION | HeaderFlag.LZX | HeaderFlag.XPRESS
    error = fails(header(flags=flags, chunk_size=32768))
    assert error.field == "flags"
    assert "2 compression types set (XPRESS, LZX)" in error.problem


def test_compression_without_type() -> None:
    error = fails(header(flags=HeaderFlag.COMPRESSION, chunk_size=32768))
    assert error.field == "flags"
    assert "no compression type" in error.problem


def test_type_without_compression_is_a_warning() -> None:
    info = parse_wim_header(header(flags=HeaderFlag.LZX), file_size=FILE_SIZE)
    assert info.compression == "none"
    assert any("LZX is set without COMPRESSION" in w for w in info.warnings)


@pytest.mark.parametrize(
    ("flag", "name", "chunk"),
    [(HeaderFlag.XPRESS, "XPRESS", 4096), (HeaderFlag.LZX, "LZX", 1 << 21),
     (HeaderFlag.LZMS, "LZMS", 1 << 26), (HeaderFlag.XPRESS_2, "XPRESS_2", 1 << 16)],
)  # fmt: skip
def test_each_compression_type(flag: HeaderFlag, name: str, chunk: int) -> None:
    info = parse_wim_header(
        header(flags=HeaderFlag.COMPRESSION | flag, chunk_size=chunk), file_size=FILE_SIZE
    )
    assert (info.compression, info.chunk_size) == (name, chunk)
    assert info.flag_names == ("COMPRESSION", name)


@pytest.mark.parametrize("chunk", [0, 3000, 1 << 22])
def test_bad_chunk_size_for_lzx(chunk: int) -> None:
    error = fails(header(flags=HeaderFlag.COMPRESSION | HeaderFlag.LZX, chunk_size=chunk))
    assert error.field == "chunk_size"
    assert f"{chunk} is not valid for LZX" in error.problem


def test_image_count_zero() -> None:
    error = fails(header(image_count=0, boot_index=0))
    assert error.field == "image_count"


def test_boot_index_out_of_range() -> None:
    error = fails(header(boot_index=2))
    assert error.field == "boot_index"
    assert "2 is out of range" in error.problem
    assert "1..1" in error.problem


def test_boot_index_zero_is_a_warning() -> None:
    info = parse_wim_header(header(boot_index=0), file_size=FILE_SIZE)
    assert info.boot_index == 0
    assert any("the device will not know which image to boot" in w for w in info.warnings)


def test_boot_index_with_empty_boot_metadata() -> None:
    empty = {"size_in_wim": 0, "flags": 0, "offset": 0, "original_size": 0}
    error = fails(header(boot_metadata=empty))
    assert error.field == "boot_metadata"
    assert "boot index 1" in error.problem


def test_empty_blob_table() -> None:
    empty = {"size_in_wim": 0, "flags": 0, "offset": 0, "original_size": 0}
    assert fails(header(blob_table=empty)).field == "blob_table"


def test_resource_past_end_of_file() -> None:
    error = fails(HEADER, file_size=FILE_SIZE - 1)
    assert error.field == "xml_data"  # the last resource in the file
    assert f"ends at byte {FILE_SIZE}" in error.problem
    assert f"{FILE_SIZE - 1}-byte file" in error.problem


def test_integrity_table_past_end_of_file() -> None:
    table = {"size_in_wim": 32, "flags": 0, "offset": FILE_SIZE, "original_size": 32}
    error = fails(header(integrity_table=table))
    assert error.field == "integrity_table"


def test_resource_inside_header() -> None:
    error = fails(header(blob_table={**FIELDS["blob_table"], "offset": 100}))
    assert error.field == "blob_table"
    assert "inside the 208-byte header" in error.problem


def test_wim_of_4_gib_cannot_be_announced() -> None:
    error = fails(header(), file_size=MAX_BOOT_PAYLOAD)
    assert error.field == "file_size"
    assert "4 GiB" in error.problem


def test_check_boot_payload() -> None:
    check_boot_payload(3_170_304, MAX_BOOT_PAYLOAD - 3_170_305, path="x")
    with pytest.raises(FormatError, match="under 4 GiB") as caught:
        check_boot_payload(3_170_304, MAX_BOOT_PAYLOAD - 3_170_304, path="x")
    assert caught.value.field == "file_size"


def test_unknown_flag_bits_are_shown() -> None:
    info = parse_wim_header(header(flags=0x80 | 0x100000), file_size=FILE_SIZE)
    assert info.flag_names == ("RP_FIX", "0x100000")


def test_metadata_only_is_a_warning() -> None:
    info = parse_wim_header(header(flags=HeaderFlag.METADATA_ONLY), file_size=FILE_SIZE)
    assert any("METADATA_ONLY" in w for w in info.warnings)


def test_construct_errors_never_leak() -> None:
    """Random headers behind a valid magic: FormatError or a result, nothing else."""
    rng = random.Random(7)
    fields: set[str] = set()
    for _ in range(2000):
        data = b"MSWIM\0\0\0" + rng.randbytes(rng.randrange(0, 300))
        try:
            parse_wim_header(data, file_size=rng.choice([None, 10**6]))
        except FormatError as exc:
            fields.add(exc.field)
    assert {"header", "header_size"} <= fields


# -- real WIMs from the reference tool ------------------------------------------


@pytest.mark.wimlib
def test_read_real_wim_from_imagex(imagex_wim: Path) -> None:
    info = read_wim_info(imagex_wim)
    assert info.path == str(imagex_wim)
    assert info.file_size == imagex_wim.stat().st_size
    assert (info.compression, info.chunk_size) == ("LZX", 32768)
    assert (info.image_count, info.boot_index) == (1, 1)
    assert info.image_names == ("Imagex Demo",)
    assert info.has_integrity
    assert info.warnings == ()


@pytest.mark.wimlib
def test_read_real_wim_from_libwim(small_wim: Path) -> None:
    info = read_wim_info(small_wim)
    assert (info.compression, info.boot_index, info.image_names) == ("none", 1, ("Small",))
    assert not info.has_integrity


@pytest.mark.wimlib
def test_truncated_real_wim(imagex_wim: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.wim"
    cut.write_bytes(imagex_wim.read_bytes()[:-10])
    with pytest.raises(FormatError) as caught:
        read_wim_info(cut)
    assert caught.value.field == "integrity_table"  # wimlib writes it last
    assert "past the end" in caught.value.problem


@pytest.mark.wimlib
def test_split_wim_from_imagex(imagex_wim: Path, tmp_path: Path, wimlib_imagex: Imagex) -> None:
    wimlib_imagex("split", imagex_wim, tmp_path / "part.swm", "1")
    parts = sorted(tmp_path.glob("part*.swm"))
    assert len(parts) >= 2
    for number, part in enumerate(parts, start=1):
        with pytest.raises(FormatError) as caught:
            read_wim_info(part)
        assert caught.value.field == "part_number"
        assert f"part {number} of {len(parts)}" in caught.value.problem


@pytest.mark.wimlib
def test_pipable_wim_from_imagex(small_tree: Path, tmp_path: Path, wimlib_imagex: Imagex) -> None:
    pipable = tmp_path / "pipable.wim"
    wimlib_imagex("capture", small_tree, pipable, "P", "--pipable", "--boot")
    with pytest.raises(FormatError, match="pipable WIM cannot be booted") as caught:
        read_wim_info(pipable)
    assert caught.value.field == "magic"


@pytest.mark.wimlib
def test_wim_without_boot_index_from_imagex(
    small_tree: Path, tmp_path: Path, wimlib_imagex: Imagex
) -> None:
    wim = tmp_path / "noboot.wim"
    wimlib_imagex("capture", small_tree, wim, "No boot", "--compress=xpress")
    info = read_wim_info(wim)
    assert (info.boot_index, info.compression) == (0, "XPRESS")
    assert any("will not know which image to boot" in w for w in info.warnings)


@pytest.mark.wimlib
def test_solid_wim_from_imagex(small_tree: Path, tmp_path: Path, wimlib_imagex: Imagex) -> None:
    wim = tmp_path / "solid.esd"
    wimlib_imagex("capture", small_tree, wim, "Solid", "--solid", "--boot")
    info = read_wim_info(wim)
    assert info.solid
    assert info.boot_index == 1


@pytest.mark.wimlib
def test_two_images_names_in_order(small_tree: Path, tmp_path: Path, wimlib_imagex: Imagex) -> None:
    wim = tmp_path / "two.wim"
    wimlib_imagex("capture", small_tree, wim, "First", "--compress=none")
    wimlib_imagex("append", small_tree, wim, "Second", "--boot")
    info = read_wim_info(wim)
    assert info.image_names == ("First", "Second")
    assert (info.image_count, info.boot_index) == (2, 2)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as caught:
        read_wim_info(tmp_path / "missing.wim")
    assert caught.value.field == "file"


@pytest.mark.wimlib
def test_image_name_with_control_characters_comes_back_exactly(
    small_tree: Path, tmp_path: Path, wimlib_imagex: Imagex
) -> None:
    """wimlib stores the name verbatim, ESC included, though XML 1.0 forbids it."""
    wim = tmp_path / "esc.wim"
    wimlib_imagex("capture", small_tree, wim, "Name\x1b[31m\x07", "--boot")
    info = read_wim_info(wim)
    assert info.image_names == ("Name\x1b[31m\x07",)
    assert info.warnings == ()
