"""formats.sdi: header and table of contents both ways, the WIM-boot check, build_sdi."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.errors import FormatError
from parallel_flash.formats import sdi as sdi_module
from parallel_flash.formats.sdi import (
    MICROSOFT_BOOT_SDI_SIZE,
    SDI_HEAD,
    SDI_HEAD_SIZE,
    SDI_HEADER,
    SDI_TOC_ENTRY,
    build_sdi,
    check_sdi_for_wim_boot,
    parse_sdi,
    read_sdi_info,
    sdi_checksum,
)

# The 512-byte header build_sdi writes: everything zero but magic, alignment, checksum.
HEADER = b"".join(
    [
        b"$SDI0001",                          # magic
        bytes.fromhex("0000000000000000"),    # type (MDB type 0, unspecified)
        bytes.fromhex("0000000000000000"),    # boot_code_offset
        bytes.fromhex("0000000000000000"),    # boot_code_size
        bytes.fromhex("0000000000000000"),    # vendor_id
        bytes.fromhex("0000000000000000"),    # device_id
        bytes(16),                            # device_model GUID
        bytes.fromhex("0000000000000000"),    # device_role
        bytes(8),                             # reserved1
        bytes(16),                            # runtime_guid
        bytes.fromhex("0000000000000000"),    # runtime_oem_rev
        bytes(8),                             # reserved2
        bytes.fromhex("0100000000000000"),    # page_alignment 1 (x 4 KiB)
        bytes(384),                           # reserved3
        bytes.fromhex("3a00000000000000"),    # checksum 0x3a: bytes sum to 0 mod 256
    ]
)  # fmt: skip

PART_ENTRY = b"".join(
    [
        b"PART\0\0\0\0",                      # type
        bytes.fromhex("0000000000000000"),    # attributes
        bytes.fromhex("0020000000000000"),    # offset 0x2000
        bytes.fromhex("0000010000000000"),    # size 0x10000
        bytes.fromhex("0000000000000000"),    # base_address
        bytes(24),                            # reserved
    ]
)  # fmt: skip

WIM_ENTRY = b"".join(
    [
        b"WIM\0\0\0\0\0",                     # type
        bytes.fromhex("0000000000000000"),    # attributes
        bytes.fromhex("0020010000000000"),    # offset 0x12000 = the SDI's length
        bytes.fromhex("0000000000000000"),    # size 0: up to the end of what follows
        bytes.fromhex("0000000000000000"),    # base_address
        bytes(24),                            # reserved
    ]
)  # fmt: skip

SDI_LENGTH = 0x12000


def head(*entries: bytes, header: bytes = HEADER) -> bytes:
    """Header, the gap to 0x400, then up to 8 TOC entries (zero-filled)."""
    toc = b"".join(entries).ljust(8 * 64, b"\0")
    return header + bytes(0x200) + toc


def fails(data: bytes, *, file_size: int | None = SDI_LENGTH) -> FormatError:
    with pytest.raises(FormatError) as caught:
        parse_sdi(data, path="t.sdi", file_size=file_size)
    assert str(caught.value).startswith(f"t.sdi: {caught.value.field}: ")
    return caught.value


def entry(**fields: Any) -> bytes:
    return SDI_TOC_ENTRY.build(fields)


# -- both directions ----------------------------------------------------------


def test_header_fixture_both_directions() -> None:
    assert len(HEADER) == SDI_HEADER.sizeof() == 512
    parsed = SDI_HEADER.parse(HEADER)
    assert parsed.magic == b"$SDI0001"
    assert parsed.type == parsed.boot_code_offset == parsed.boot_code_size == 0
    assert parsed.vendor_id == parsed.device_id == parsed.device_role == 0
    assert parsed.device_model == parsed.runtime_guid == bytes(16)
    assert parsed.runtime_oem_rev == 0
    assert parsed.page_alignment == 1
    assert parsed.checksum == 0x3A
    assert SDI_HEADER.build({"page_alignment": 1, "checksum": 0x3A}) == HEADER


def test_checksum_matches_the_published_example() -> None:
    """Kolisnyk: an empty header with 1-page alignment has checksum 0x3A."""
    assert sdi_checksum(SDI_HEADER.build({})) == 0x3A
    assert sum(HEADER) % 256 == 0


def test_toc_entry_both_directions() -> None:
    assert len(PART_ENTRY) == SDI_TOC_ENTRY.sizeof() == 64
    parsed = SDI_TOC_ENTRY.parse(PART_ENTRY)
    assert (parsed.type, parsed.attributes) == (b"PART\0\0\0\0", 0)
    assert (parsed.offset, parsed.size, parsed.base_address) == (0x2000, 0x10000, 0)
    assert entry(type=b"PART\0\0\0\0", offset=0x2000, size=0x10000) == PART_ENTRY
    assert entry(type=b"WIM\0\0\0\0\0", offset=SDI_LENGTH) == WIM_ENTRY


def test_build_sdi_head_is_the_fixture() -> None:
    data = build_sdi()
    assert len(data) == SDI_LENGTH
    assert data[:SDI_HEAD_SIZE] == head(PART_ENTRY, WIM_ENTRY)
    raw = SDI_HEAD.parse(data)
    assert [e.type for e in raw.toc[:3]] == [b"PART\0\0\0\0", b"WIM\0\0\0\0\0", bytes(8)]


def test_parse_build_sdi_every_field() -> None:
    data = build_sdi()
    info = parse_sdi(data, path="own.sdi")
    assert info.path == "own.sdi"
    assert info.file_size == SDI_LENGTH
    assert [(b.index, b.type, b.offset, b.size) for b in info.blobs] == [
        (0, "PART", 0x2000, 0x10000),
        (1, "WIM", SDI_LENGTH, 0),
    ]
    assert info.wim_blob == info.blobs[1]
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.is_microsoft_boot_sdi is False
    assert info.page_alignment == 1
    assert info.checksum_ok
    assert info.warnings == ()
    check_sdi_for_wim_boot(info)


def test_build_sdi_is_deterministic_and_page_aligned() -> None:
    assert build_sdi() == build_sdi()
    small = build_sdi(part_size=1)
    assert len(small) == 0x3000
    check_sdi_for_wim_boot(parse_sdi(small))
    with pytest.raises(ValueError):
        build_sdi(part_size=0)


def test_build_sdi_with_microsofts_layout_is_not_microsofts_file() -> None:
    data = build_sdi(part_size=0x303C00)
    assert len(data) == MICROSOFT_BOOT_SDI_SIZE  # same structure: PART at 0x2000, WIM at 0x306000
    info = parse_sdi(data)
    assert info.wim_blob is not None and info.wim_blob.offset == 0x306000
    assert not info.is_microsoft_boot_sdi  # the hash tells them apart


def test_microsoft_file_is_recognised_by_size_and_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    data = build_sdi(part_size=0x303C00)
    monkeypatch.setattr(sdi_module, "MICROSOFT_BOOT_SDI_SHA256", hashlib.sha256(data).hexdigest())
    assert parse_sdi(data).is_microsoft_boot_sdi
    assert not parse_sdi(data + b"\0").is_microsoft_boot_sdi  # size differs


def test_trailing_data_is_not_the_sdi() -> None:
    data = build_sdi()
    info = parse_sdi(memoryview(data + b"MSWIM"), file_size=SDI_LENGTH)
    assert info.sha256 is None  # not the whole file, so no hash
    assert info.file_size == SDI_LENGTH


# -- failures -----------------------------------------------------------------


def test_bad_magic() -> None:
    error = fails(b"$SDI0002" + build_sdi()[8:])
    assert error.field == "magic"
    assert "not an SDI file" in error.problem


@pytest.mark.parametrize("length", [0, 7, 512, 0x5FF])
def test_truncated(length: int) -> None:
    error = fails(build_sdi()[:length])
    assert error.field == "header"
    assert f"truncated: {length} bytes" in error.problem
    assert "1536" in error.problem


def test_every_prefix_fails_cleanly() -> None:
    data = build_sdi()
    for length in range(SDI_HEAD_SIZE):
        with pytest.raises(FormatError):
            parse_sdi(data[:length])


def test_sdi_without_wim_entry() -> None:
    info = parse_sdi(head(PART_ENTRY), path="t.sdi", file_size=SDI_LENGTH)
    assert info.wim_blob is None
    with pytest.raises(FormatError) as caught:
        check_sdi_for_wim_boot(info)
    assert caught.value.field == "toc"
    assert "no WIM entry (entries: PART)" in caught.value.problem
    assert f"at offset {SDI_LENGTH} (0x12000)" in caught.value.problem


def test_wim_entry_at_wrong_offset() -> None:
    early = entry(type=b"WIM", offset=0x11000)
    info = parse_sdi(head(PART_ENTRY, early), path="t.sdi", file_size=SDI_LENGTH)
    with pytest.raises(FormatError) as caught:
        check_sdi_for_wim_boot(info)
    assert caught.value.field == "toc[1] (WIM)"
    assert "offset 69632 (0x11000), expected 73728 (0x12000)" in caught.value.problem


def test_blob_outside_file() -> None:
    error = fails(head(PART_ENTRY, WIM_ENTRY), file_size=0x11FFF)
    assert error.field == "toc[0] (PART)"
    assert "ends at byte 73728, past the end of the 73727-byte file" in error.problem


def test_wim_blob_with_a_size_must_fit() -> None:
    sized = entry(type=b"WIM", offset=SDI_LENGTH, size=10)
    assert fails(head(PART_ENTRY, sized)).field == "toc[1] (WIM)"


def test_blob_inside_the_header() -> None:
    error = fails(head(entry(type=b"PART", offset=0x200, size=0x100), WIM_ENTRY))
    assert error.field == "toc[0] (PART)"
    assert "inside the SDI header" in error.problem


def test_blob_type_must_be_ascii() -> None:
    error = fails(head(entry(type=b"PA\xffT", offset=0x2000, size=1)))
    assert error.field == "toc[0].type"


def test_unknown_type_and_second_wim_are_warnings() -> None:
    info = parse_sdi(
        head(entry(type=b"XTRA", offset=0x2000, size=1), WIM_ENTRY, WIM_ENTRY),
        file_size=SDI_LENGTH,
    )
    assert [b.type for b in info.blobs] == ["XTRA", "WIM", "WIM"]
    assert any("unknown blob type" in w for w in info.warnings)
    assert any("2 WIM entries" in w for w in info.warnings)


def test_toc_stops_at_the_first_empty_entry() -> None:
    info = parse_sdi(head(PART_ENTRY, bytes(64), WIM_ENTRY), file_size=SDI_LENGTH)
    assert [b.type for b in info.blobs] == ["PART"]


def test_bad_checksum_is_reported_not_fatal() -> None:
    data = bytearray(build_sdi())
    data[0x1F8] ^= 1
    assert not parse_sdi(bytes(data)).checksum_ok


# -- files --------------------------------------------------------------------


def test_read_sdi_info(small_sdi: Path) -> None:
    info = read_sdi_info(small_sdi)
    assert info.path == str(small_sdi)
    assert info.sha256 == hashlib.sha256(small_sdi.read_bytes()).hexdigest()
    check_sdi_for_wim_boot(info)


def test_read_large_sdi_reads_only_its_head(tmp_path: Path) -> None:
    big = tmp_path / "big.sdi"
    with open(big, "wb") as f:
        f.write(head(entry(type=b"PART", offset=0x2000, size=(65 << 20) - 0x2000)))
        f.truncate(65 << 20)  # sparse: cheap to make
    info = read_sdi_info(big)
    assert info.sha256 is None
    assert info.file_size == 65 << 20


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as caught:
        read_sdi_info(tmp_path / "nope.sdi")
    assert caught.value.field == "file"
