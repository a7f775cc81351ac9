"""Property tests: every parser, fed mutated and random bytes, either parses or raises
FormatError naming the field -- never another exception, never unbounded work.

The bounded "ci" profile runs with the suite; ``bash scripts/run.sh fuzz`` runs
the "long" one (see tests/conftest.py).
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from _hostile import FfuSpec, craft_ffu, gpt_disk_head
from parallel_flash.errors import FormatError
from parallel_flash.formats.detect import detect_file_type, detect_head
from parallel_flash.formats.ffu import read_ffu
from parallel_flash.formats.ffu_disk import find_mainos, read_partition_tables, written_bytes
from parallel_flash.formats.ffu_payload import scan_payload
from parallel_flash.formats.gpt import parse_gpt
from parallel_flash.formats.sdi import build_sdi, check_sdi_for_wim_boot, parse_sdi
from parallel_flash.formats.secwim import build_secwim, parse_secwim, parse_secwim_tail
from parallel_flash.formats.wim import parse_wim_header, with_image_names
from parallel_flash.output.inspect import describe_file

pytestmark = pytest.mark.fuzz

#: construct's own wording must never reach a user.
_INTERNAL = ("Error in path", "stream read less than", "parsing) ->", "struct.error")


def _clean(exc: FormatError) -> None:
    text = str(exc)
    assert exc.field and exc.problem
    assert not any(marker in text for marker in _INTERNAL), text


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, *, hot: int | None = None) -> bytes:
    """``seed`` with a few bytes overwritten (mostly in its first ``hot`` bytes,
    where the fields are), maybe truncated or extended."""
    data = bytearray(seed)
    limit = min(hot or len(data), len(data))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(limit - 1, 0)))
        value = draw(
            st.sampled_from([b"\x00", b"\xff", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80",
                             b"\x01", b"\x02\x00\x00\x00"])
            | st.binary(min_size=1, max_size=8)
        )  # fmt: skip
        data[at : at + len(value)] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        del data[cut:]
    data += draw(st.binary(max_size=64))
    return bytes(data)


# -- WIM ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wim_bytes(small_wim: Path) -> bytes:
    return small_wim.read_bytes()


@given(data=st.data())
def test_wim_header_never_raises_anything_else(wim_bytes: bytes, data: st.DataObject) -> None:
    raw = data.draw(mutated(wim_bytes, hot=208))
    try:
        info = parse_wim_header(raw, path="fuzz.wim", file_size=len(raw))
        info = with_image_names(info, lambda offset, size: raw[offset : offset + size])
    except FormatError as exc:
        _clean(exc)
    else:
        assert 1 <= info.boot_index <= info.image_count or info.boot_index == 0


@given(st.binary(max_size=512))
def test_wim_header_random_bytes(raw: bytes) -> None:
    try:
        parse_wim_header(raw, path="r.wim", file_size=len(raw))
    except FormatError as exc:
        _clean(exc)


# -- SDI and .secwim ---------------------------------------------------------------


_SDI = build_sdi(part_size=0x4000)


@given(data=st.data())
def test_sdi_never_raises_anything_else(data: st.DataObject) -> None:
    raw = data.draw(mutated(_SDI, hot=0x600))
    try:
        info = parse_sdi(raw, path="fuzz.sdi", file_size=len(raw))
        check_sdi_for_wim_boot(info)
    except FormatError as exc:
        _clean(exc)


@given(data=st.data())
def test_secwim_never_raises_anything_else(wim_bytes: bytes, data: st.DataObject) -> None:
    seed = build_secwim(_SDI, wim_bytes, platforms=("Fuzz.Platform",))
    tail = len(seed) - 512
    raw = bytearray(data.draw(mutated(seed[tail:])))
    raw = bytearray(seed[:tail]) + raw
    if data.draw(st.booleans()):
        head = data.draw(mutated(bytes(raw[:0x600])))
        raw[: len(head)] = head
    try:
        parse_secwim_tail(bytes(raw), path="fuzz.secwim")
        parse_secwim(bytes(raw), path="fuzz.secwim")
    except FormatError as exc:
        _clean(exc)


# -- detect ------------------------------------------------------------------------


@given(st.binary(max_size=32))
def test_detect_head_is_total(head: bytes) -> None:
    assert detect_head(head) in (None, "wim", "pipable-wim", "sdi", "ffu")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_detect_and_describe_any_file(
    wim_bytes: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    seed = data.draw(
        st.sampled_from([wim_bytes[:4096], _SDI, b"\x20\0\0\0SignedImage " + bytes(64)])
    )
    path = tmp_path / "any.bin"
    path.write_bytes(data.draw(mutated(seed, hot=64)))
    try:
        detect_file_type(path)
        describe_file(path)
    except FormatError as exc:
        _clean(exc)


# -- GPT ---------------------------------------------------------------------------


_GPT = gpt_disk_head([("EFIESP", 2048, 4095), ("MainOS", 8192, 16383)], backup_lba=1 << 20)


@given(data=st.data())
def test_gpt_never_raises_anything_else(data: st.DataObject) -> None:
    disk = data.draw(mutated(_GPT, hot=1024 + 512))
    sector = data.draw(st.sampled_from([512, 4096]))

    def read(offset: int, size: int) -> bytes:
        assert size <= 1 << 20  # the entry array is bounded before it is read
        return disk[offset : offset + size].ljust(size, b"\0")

    try:
        gpt = parse_gpt(read, sector, source="fuzz")
    except FormatError as exc:
        _clean(exc)
    else:
        assert all(p.last_lba <= gpt.backup_lba for p in gpt.partitions)


# -- FFU ---------------------------------------------------------------------------


def _ffu_seed() -> bytes:
    from _hostile import Descriptor, ntfs_boot_sector

    spec = FfuSpec()
    head = gpt_disk_head([("EFIESP", 48, 63), ("MainOS", 64, 191)], backup_lba=255)
    spec.descriptors.append(Descriptor([(0, 0)], head.ljust(20480, b"\0")))
    spec.descriptors.append(Descriptor([(0, 8)], ntfs_boot_sector().ljust(4096, b"\0")))
    spec.descriptors.append(Descriptor([(0, 9), (2, 0)], bytes(range(256)) * 16))
    spec.validation = struct.pack("<III", 0, 0, 4) + b"\xeb\x52\x90N"
    spec.validation_count = 1
    return craft_ffu(spec)


_FFU = _ffu_seed()
#: where the fields are: security header, image header + manifest, store header
_FFU_HOT = 0x4000 + 0x4000 + 512


@given(data=st.data())
def test_ffu_never_raises_anything_else(data: st.DataObject) -> None:
    raw = data.draw(mutated(_FFU, hot=_FFU_HOT))
    assume(len(raw) > 32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.ffu"
        path.write_bytes(raw)
        try:
            ffu = read_ffu(path)
            tables = read_partition_tables(ffu)
            for table in tables:
                if table.gpt is not None:
                    written_bytes(ffu, table.store, table.gpt, disk=table.disk)
            try:
                find_mainos(ffu, tables)
            except FormatError as exc:
                _clean(exc)
            scan_payload(ffu)
        except FormatError as exc:
            _clean(exc)


def test_the_ffu_seed_is_sound() -> None:
    """The properties above start from a file every step accepts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.ffu"
        path.write_bytes(_FFU)
        ffu = read_ffu(path)
        main = find_mainos(ffu, read_partition_tables(ffu))
        assert main.partition.name == "MainOS"
        assert scan_payload(ffu).chunks_verified == ffu.chunk_count
