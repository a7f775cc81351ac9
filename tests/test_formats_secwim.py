"""formats.secwim (trailer both ways, round trips) and formats.detect on every kind."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from parallel_flash.errors import FormatError
from parallel_flash.formats.detect import detect_file_type, detect_head
from parallel_flash.formats.sdi import build_sdi
from parallel_flash.formats.secwim import (
    PLACEHOLDER_CATALOG,
    SIZE_BLOCK,
    build_secwim,
    parse_secwim,
    parse_secwim_tail,
    read_secwim_info,
)
from parallel_flash.formats.wim import HeaderFlag

DEVICE = uuid.UUID("00000011-f151-a509-0000-000000000000")
SDI_LENGTH = 0x12000  # build_sdi()

# Everything after the padded WIM, for platforms ("A", "BC") and one device,
# up to the padded WIM length (which depends on the WIM; see trailer()).
TRAILER = b"".join(
    [
        b"plat",                               # plat: tag
        bytes.fromhex("00000000"),             # plat: 0 (nothing before it)
        b"A\0BC\0",                            # plat: NUL-terminated ids
        b"\0",                                 # plat: the extra NUL
        bytes(2),                              # plat: pad to 4 (16 bytes in all)
        b"devi",                               # devi: tag
        bytes.fromhex("10000000"),             # devi: previous (plat) block 16 bytes
        bytes.fromhex("01000000"),             # devi: 1 device
        bytes.fromhex("1100000051f109a50000000000000000"),  # devi: GUID, .NET order
        b"size",                               # size: tag
        bytes.fromhex("1c000000"),             # size: previous (devi) block 28 bytes
        bytes.fromhex("00200100"),             # size: SDI length 0x12000
    ]
)  # fmt: skip


def trailer(wim_length: int) -> bytes:
    """The fixture completed with the size block's last field, the padded WIM length."""
    return TRAILER + wim_length.to_bytes(4, "little")


def catalog_tail() -> bytes:
    return PLACEHOLDER_CATALOG + len(PLACEHOLDER_CATALOG).to_bytes(4, "little")


@pytest.fixture(scope="module")
def wim_bytes(small_wim: Path) -> bytes:
    return small_wim.read_bytes()


def fails(data: bytes) -> FormatError:
    with pytest.raises(FormatError) as caught:
        parse_secwim(data, path="x.secwim")
    return caught.value


# -- both directions ----------------------------------------------------------


def test_parse_trailer_fixture_every_field() -> None:
    body = bytes(SDI_LENGTH + 64)  # the tail parser looks only at the end
    data = body + trailer(64) + catalog_tail()
    info = parse_secwim_tail(data, path="x.secwim")
    assert info.path == "x.secwim"
    assert info.file_size == len(data)
    assert (info.sdi_length, info.wim_length) == (SDI_LENGTH, 64)
    assert info.platforms == ("A", "BC")
    assert info.devices == (DEVICE,)
    assert info.trailer_offset == SDI_LENGTH + 64
    assert info.catalog_length == len(PLACEHOLDER_CATALOG)
    assert info.catalog_offset == len(data) - 4 - len(PLACEHOLDER_CATALOG)
    assert not info.tags_reversed
    assert info.sdi is None and info.wim is None


def test_build_secwim_writes_the_fixture(wim_bytes: bytes) -> None:
    data = build_secwim(build_sdi(), wim_bytes, platforms=["A", "BC"], devices=[DEVICE])
    padded = len(wim_bytes) + (-len(wim_bytes) % 4)
    assert data[:SDI_LENGTH] == build_sdi()
    assert data[SDI_LENGTH : SDI_LENGTH + len(wim_bytes)] == wim_bytes
    assert data[SDI_LENGTH + len(wim_bytes) : SDI_LENGTH + padded] == bytes(padded - len(wim_bytes))
    assert data[SDI_LENGTH + padded :] == trailer(padded) + catalog_tail()


def test_size_block_both_directions() -> None:
    raw = b"size" + bytes.fromhex("000000000020010040000000")
    parsed = SIZE_BLOCK.parse(raw)
    assert (parsed.tag, parsed.previous_size, parsed.sdi_length, parsed.wim_length) == (
        b"size",
        0,
        SDI_LENGTH,
        64,
    )
    assert SIZE_BLOCK.build(parsed) == raw


@pytest.mark.parametrize(
    ("platforms", "devices"),
    [((), ()), (("Qualcomm.MSM8960.P4301",), ()), ((), (DEVICE, uuid.UUID(int=7))),
     (("a", "bb", "ccc", "dddd"), (DEVICE,))],
)  # fmt: skip
def test_round_trip(
    wim_bytes: bytes, platforms: tuple[str, ...], devices: tuple[uuid.UUID, ...]
) -> None:
    data = build_secwim(build_sdi(), wim_bytes, platforms=platforms, devices=devices)
    info = parse_secwim(data, path="x.secwim")
    assert (info.platforms, info.devices) == (platforms, devices)
    assert info.sdi_length == SDI_LENGTH
    assert info.wim_length == len(wim_bytes) + (-len(wim_bytes) % 4)
    assert info.sdi is not None and info.sdi.path == "x.secwim[sdi]"
    assert info.wim is not None and info.wim.boot_index == 1
    assert info.wim.path == "x.secwim[wim]"
    assert info.wim.image_names == ("Small",)  # read through the bundle


def test_read_secwim_info(wim_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bundle.secwim"
    path.write_bytes(build_secwim(build_sdi(), wim_bytes, platforms=["P"]))
    info = read_secwim_info(path)
    assert info.path == str(path)
    assert info.platforms == ("P",)
    assert info.wim is not None and info.wim.image_count == 1


def test_reversed_tags_are_accepted(wim_bytes: bytes) -> None:
    data = build_secwim(build_sdi(), wim_bytes, platforms=["A"], devices=[DEVICE])
    cut = SDI_LENGTH + len(wim_bytes) + (-len(wim_bytes) % 4)
    tail = data[cut:]
    for tag in (b"plat", b"devi", b"size"):
        tail = tail.replace(tag, tag[::-1], 1)
    info = parse_secwim(data[:cut] + tail)
    assert info.tags_reversed
    assert (info.platforms, info.devices) == (("A",), (DEVICE,))


def test_mixed_tag_spelling_is_refused(wim_bytes: bytes) -> None:
    data = build_secwim(build_sdi(), wim_bytes, platforms=["A"])
    error = fails(data.replace(b"plat", b"talp"))
    assert error.field == "plat block"


# -- failures -----------------------------------------------------------------


def test_too_short() -> None:
    error = fails(b"$SDI0001" + bytes(8))
    assert (error.field, error.problem[:10]) == ("trailer", "truncated:")


def test_catalog_length_beyond_the_file(wim_bytes: bytes) -> None:
    data = build_secwim(build_sdi(), wim_bytes)
    error = fails(data[:-4] + (len(data)).to_bytes(4, "little"))
    assert error.field == "catalog_length"


def test_wrong_size_tag(wim_bytes: bytes) -> None:
    data = build_secwim(build_sdi(), wim_bytes)
    error = fails(data[:-4] + (len(PLACEHOLDER_CATALOG) - 1).to_bytes(4, "little"))
    assert error.field == "size block"
    assert "expected tag 'size'" in error.problem


def test_lengths_that_do_not_add_up(wim_bytes: bytes) -> None:
    data = bytearray(build_secwim(build_sdi(), wim_bytes))
    at = len(data) - 4 - len(PLACEHOLDER_CATALOG) - 4  # the size block's WIM length
    data[at : at + 4] = (int.from_bytes(data[at : at + 4], "little") + 4).to_bytes(4, "little")
    error = fails(bytes(data))
    assert error.field == "size block"
    assert "but the blocks after the WIM start at offset" in error.problem


def test_devi_count_disagrees_with_block_size(wim_bytes: bytes) -> None:
    data = bytearray(build_secwim(build_sdi(), wim_bytes, devices=[DEVICE]))
    at = data.index(b"devi") + 8
    data[at : at + 4] = (2).to_bytes(4, "little")
    assert fails(bytes(data)).field == "devi block"


def test_plat_second_word_must_be_zero(wim_bytes: bytes) -> None:
    data = bytearray(build_secwim(build_sdi(), wim_bytes, platforms=["A"]))
    at = data.rindex(b"plat") + 4
    data[at] = 1
    error = fails(bytes(data))
    assert (error.field, error.problem) == ("plat block", "second u32 is 1, expected 0")


def test_unknown_block_before_size(wim_bytes: bytes) -> None:
    data = build_secwim(build_sdi(), wim_bytes, platforms=["A"])
    assert fails(data.replace(b"plat", b"xxxx")).field.startswith("block at offset")


def test_sdi_inside_is_checked(wim_bytes: bytes) -> None:
    data = bytearray(build_secwim(build_sdi(), wim_bytes))
    data[0x400 + 64 + 16] += 0x10  # the SDI's WIM entry offset, now past the SDI's end
    error = fails(bytes(data))
    assert str(error).startswith("x.secwim[sdi]: toc[1] (WIM): ")


def test_wim_inside_is_checked(wim_bytes: bytes) -> None:
    wim = bytearray(wim_bytes)
    wim[0x10:0x14] = (HeaderFlag.WRITE_IN_PROGRESS).to_bytes(4, "little")
    data = build_secwim(build_sdi(), wim_bytes)
    data = data[:SDI_LENGTH] + bytes(wim) + data[SDI_LENGTH + len(wim) :]
    error = fails(data)
    assert str(error).startswith("x.secwim[wim]: flags: WRITE_IN_PROGRESS")


def test_build_refuses_bad_inputs(wim_bytes: bytes) -> None:
    with pytest.raises(FormatError, match=r"^<wim>: magic"):
        build_secwim(build_sdi(), b"not a wim" * 30)
    with pytest.raises(FormatError, match=r"^<sdi>: magic"):
        build_secwim(b"x" * 0x600, wim_bytes)
    with pytest.raises(ValueError, match="platform id"):
        build_secwim(build_sdi(), wim_bytes, platforms=["bad\0id"])


# -- detect_file_type ---------------------------------------------------------


def test_detect_each_kind(tmp_path: Path, small_wim: Path, small_sdi: Path) -> None:
    wim = small_wim.read_bytes()
    kinds = {
        "a.wim": wim,
        "b.wim": b"WLPWM\0\0\0" + wim[8:],
        "c.sdi": build_sdi(),
        "d.secwim": build_secwim(build_sdi(), wim),
        "e.ffu": (32).to_bytes(4, "little") + b"SignedImage " + bytes(16),
        "f.txt": b"hello world, not an image\n",
        "g.empty": b"",
    }
    for name, data in kinds.items():
        (tmp_path / name).write_bytes(data)
    assert {name: detect_file_type(tmp_path / name) for name in kinds} == {
        "a.wim": "wim",
        "b.wim": "pipable-wim",
        "c.sdi": "sdi",
        "d.secwim": "secwim",
        "e.ffu": "ffu",
        "f.txt": None,
        "g.empty": None,
    }
    assert detect_file_type(small_sdi) == "sdi"


def test_detect_head_cannot_see_secwim() -> None:
    assert detect_head(build_sdi()[:16]) == "sdi"
    assert detect_head(b"MSWIM\0\0\0") == "wim"
    assert detect_head(b"") is None


def test_detect_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as caught:
        detect_file_type(tmp_path / "missing.wim")
    assert (caught.value.field, caught.value.problem) == ("file", "does not exist")
    with pytest.raises(FormatError) as caught:
        detect_file_type(tmp_path)
    assert caught.value.field == "file"


@pytest.mark.parametrize(
    "module_name",
    ["parallel_flash.formats", "parallel_flash.formats.wim", "parallel_flash.formats.sdi",
     "parallel_flash.formats.secwim", "parallel_flash.formats.detect",
     "parallel_flash.output.inspect", "parallel_flash.demo.inputs"],
)  # fmt: skip
def test_all_lists_the_public_names(module_name: str) -> None:
    import importlib
    import inspect

    module = importlib.import_module(module_name)
    assert isinstance(module.__all__, tuple)
    assert all(hasattr(module, name) for name in module.__all__)
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module_name
    }
    assert defined <= set(module.__all__)
