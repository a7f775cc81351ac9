"""demo_image: generated WIMs are real, bootable-by-header and deterministic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.demo.inputs import build_demo_sdi, build_demo_wim, demo_inputs
from parallel_flash.formats.sdi import build_sdi, check_sdi_for_wim_boot, read_sdi_info
from parallel_flash.formats.wim import parse_wim_header, read_wim_info
from parallel_flash.img2wim import wimlib

pytestmark = pytest.mark.wimlib

Imagex = Callable[..., Any]
SIZE = 1 << 20


def content(wim: Path) -> dict[str, tuple[int, bytes | None]]:
    return {e.path: (e.size, e.sha1) for e in wimlib.read_tree(wim).values() if not e.is_dir}


def test_demo_wim_is_accepted_by_wimlib_imagex_and_our_checks(
    tmp_path: Path, wimlib_imagex: Imagex
) -> None:
    wim = build_demo_wim(tmp_path / "demo.wim", size=SIZE, files=7)
    assert wim == tmp_path / "demo.wim"
    data = wim.read_bytes()
    header = parse_wim_header(data, path=str(wim), file_size=len(data))
    assert (header.image_count, header.boot_index, header.compression) == (1, 1, "none")
    assert header.warnings == ()
    assert read_wim_info(wim).image_names == ("Demo",)
    shown = dict(
        (key.strip(), value.strip())
        for key, _, value in (
            line.partition(":") for line in wimlib_imagex("info", wim).stdout.splitlines()
        )
    )
    assert (shown["Boot Index"], shown["Image Count"], shown["Name"]) == ("1", "1", "Demo")
    wimlib_imagex("verify", wim)


def test_demo_tree_adds_up_to_the_size_and_is_deterministic(tmp_path: Path) -> None:
    first = content(build_demo_wim(tmp_path / "a.wim", size=SIZE, files=7, seed=3))
    again = content(build_demo_wim(tmp_path / "b.wim", size=SIZE, files=7, seed=3))
    other = content(build_demo_wim(tmp_path / "c.wim", size=SIZE, files=7, seed=4))
    assert len(first) == 7
    assert sum(size for size, _ in first.values()) == SIZE
    assert first == again
    assert first != other
    assert len({path.rsplit("/", 1)[0] for path in first}) == 5  # files spread over directories
    assert not list(tmp_path.glob(".demo-tree-*"))  # the generated tree is gone


def test_demo_wim_with_compression(tmp_path: Path) -> None:
    wim = build_demo_wim(tmp_path / "lzx.wim", size=64 << 10, files=2, compression="LZX")
    assert read_wim_info(wim).compression == "LZX"


def test_demo_wim_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        build_demo_wim(tmp_path / "x.wim", size=SIZE, compression="zip")
    with pytest.raises(ValueError, match="files"):
        build_demo_wim(tmp_path / "x.wim", size=SIZE, files=0)
    assert not (tmp_path / "x.wim").exists()


def test_demo_sdi(tmp_path: Path) -> None:
    sdi = build_demo_sdi(tmp_path / "sub" / "demo.sdi")
    assert sdi.read_bytes() == build_sdi()
    check_sdi_for_wim_boot(read_sdi_info(sdi))


def test_demo_inputs_are_cached(tmp_path: Path) -> None:
    wim, sdi = demo_inputs(tmp_path, wim_size=SIZE)
    assert (wim.parent, sdi.parent) == (tmp_path, tmp_path)
    stamps = (wim.stat().st_mtime_ns, wim.stat().st_ino, sdi.stat().st_mtime_ns)
    assert demo_inputs(tmp_path, wim_size=SIZE) == (wim, sdi)
    assert (wim.stat().st_mtime_ns, wim.stat().st_ino, sdi.stat().st_mtime_ns) == stamps
    other, _ = demo_inputs(tmp_path, wim_size=SIZE // 2)
    assert other != wim


def test_damaged_cached_inputs_are_rebuilt(tmp_path: Path) -> None:
    wim, sdi = demo_inputs(tmp_path, wim_size=SIZE)
    wim.write_bytes(wim.read_bytes()[:-100])  # truncated: a resource now ends past the file
    sdi.write_bytes(b"$SDI0001")
    wim2, sdi2 = demo_inputs(tmp_path, wim_size=SIZE)
    assert read_wim_info(wim2).boot_index == 1
    check_sdi_for_wim_boot(read_sdi_info(sdi2))
