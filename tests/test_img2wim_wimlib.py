"""The libwim binding against the real library (Debian libwim15)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from parallel_flash.errors import HostSetupError, WimlibError
from parallel_flash.img2wim import libwim, wimlib

pytestmark = pytest.mark.wimlib


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"hello\n",
        "sub/b.bin": bytes(range(256)) * 300,
        "sub/deeper/c.txt": b"c" * 5000,
        "empty": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_capture_directory_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    reports: list[wimlib.WimProgress] = []
    info = wimlib.capture(src, tmp_path / "t.wim", image_name="Test", progress=reports.append)
    assert (info.image_count, info.boot_index, info.compression) == (1, 1, "LZX")
    assert {r.stage for r in reports} >= {"scan", "write"}
    write = [r for r in reports if r.stage == "write"]
    assert write[-1].done == write[-1].total == sum(len(d) for d in files.values())

    tree = wimlib.read_tree(tmp_path / "t.wim")
    assert set(tree) == {
        "/a.txt",
        "/sub",
        "/sub/b.bin",
        "/sub/deeper",
        "/sub/deeper/c.txt",
        "/empty",
    }
    for rel, data in files.items():
        entry = tree["/" + rel]
        assert not entry.is_dir and entry.size == len(data)
        assert entry.sha1 == (hashlib.sha1(data).digest() if data else None)
    assert tree["/sub"].is_dir

    wimlib.apply(tmp_path / "t.wim", tmp_path / "out")
    for rel, data in files.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    got = wimlib.extract_file(tmp_path / "t.wim", "/sub/deeper/c.txt", tmp_path)
    assert got.read_bytes() == files["sub/deeper/c.txt"]


def test_capture_options(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    info = wimlib.capture(
        src,
        tmp_path / "t.wim",
        image_name="Plain",
        compression="xpress",
        boot=False,
        delete_paths=["/sub/deeper"],
        prune=lambda top: [e.path for e in top if e.path == "/a.txt"],
    )
    assert (info.boot_index, info.compression) == (0, "XPRESS")
    assert set(wimlib.read_tree(tmp_path / "t.wim")) == {"/sub", "/sub/b.bin", "/empty"}
    assert [e.path for e in wimlib.list_dir(tmp_path / "t.wim", "/sub")] == ["/sub/b.bin"]


@pytest.mark.skipif(shutil.which("mkntfs") is None, reason="needs mkntfs (ntfs-3g)")
def test_ntfs_volume_capture(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    wimlib.capture(src, tmp_path / "plain.wim", image_name="x", boot=False)
    vol = tmp_path / "vol.img"
    with vol.open("wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkntfs", "-q", "-F", "-f", str(vol)], check=True, capture_output=True)
    wimlib.apply(tmp_path / "plain.wim", vol, ntfs=True)
    info = wimlib.capture(vol, tmp_path / "ntfs.wim", image_name="MainOS", ntfs=True)
    assert info.boot_index == 1
    tree = wimlib.read_tree(tmp_path / "ntfs.wim")
    for rel, data in files.items():
        assert tree["/" + rel].size == len(data)


def test_errors_name_file_and_operation(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wim"
    junk.write_bytes(b"not a wim at all" * 20)
    with pytest.raises(WimlibError) as excinfo:
        wimlib.wim_info(junk)
    assert str(junk) in str(excinfo.value) and "open" in str(excinfo.value)
    with pytest.raises(WimlibError, match="NTFS-3G"):
        wimlib.capture(junk, tmp_path / "out.wim", image_name="x", ntfs=True)
    assert not (tmp_path / "out.wim").exists()


def test_exception_in_progress_aborts_without_partial_wim(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)

    def interrupt(report: wimlib.WimProgress) -> None:
        if report.stage == "write":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wimlib.capture(src, tmp_path / "t.wim", image_name="x", progress=interrupt)
    assert not (tmp_path / "t.wim").exists()


def test_missing_library_names_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libwim, "_lib", None)
    monkeypatch.setattr(libwim, "LIBRARY_NAME", "libwim-does-not-exist.so.99")
    with pytest.raises(HostSetupError, match=r"install the Debian package libwim15"):
        wimlib.wim_info("/nonexistent.wim")
