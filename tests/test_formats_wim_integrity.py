"""formats.wim_integrity: re-hashing a WIM against its integrity table (real WIMs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from parallel_flash.errors import FormatError
from parallel_flash.formats.wim import read_wim_info
from parallel_flash.formats.wim_integrity import verify_integrity


@pytest.mark.wimlib
def test_verify_integrity_of_real_wim(imagex_wim: Path) -> None:
    verify_integrity(imagex_wim)


@pytest.mark.wimlib
def test_verify_integrity_finds_the_damaged_chunk(imagex_wim: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.wim"
    shutil.copy(imagex_wim, damaged)
    with open(damaged, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    read_wim_info(damaged)  # the header is still fine
    with pytest.raises(FormatError) as caught:
        verify_integrity(damaged)
    assert caught.value.field == "integrity_table"
    assert "chunk 0 of 1 (bytes 208.." in caught.value.problem


@pytest.mark.wimlib
def test_verify_integrity_without_a_table(small_wim: Path) -> None:
    with pytest.raises(FormatError, match="absent") as caught:
        verify_integrity(small_wim)
    assert caught.value.field == "integrity_table"
